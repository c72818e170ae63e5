"""The dashboard pages: each module has ``layout(...)`` and ``register(app, queries)``."""
