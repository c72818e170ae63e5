"""Versioned schema migrations: ``NNNN_name.sql`` files and ``NNNN_name.py`` modules with ``upgrade``."""
