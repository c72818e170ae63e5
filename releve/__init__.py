"""Relevé core: settings, the shared data model, the database (connection, schema, migrations) and the CLI.

The core imports nothing from the other packages except lazily, from the command line, to dispatch
a subcommand. Every other package may import from ``releve``.
Data flows one way: simulators → collectors → ingest → analytics → billing / dashboards.
"""

__version__ = "0.1.0"
