"""Versioned migrations: apply each file in ``releve/migrations`` once, in order, under a lock.

A migration is ``NNNN_name.sql`` (run as is) or ``NNNN_name.py`` (its ``upgrade(conn, ctx)`` is
called). Each runs in its own transaction and is recorded in ``schema_migration`` with a checksum;
``releve db upgrade`` is idempotent and safe to run from several processes at once (an advisory
lock serialises them). A migration file changed after it was applied is reported, not re-run.

From migration 0012 on, the schema belongs to the NOLOGIN role ``<prefix>_owner``: each later
migration, and the lookup and partition upkeep that ends every upgrade, runs as it
(``SET LOCAL ROLE``), so new objects are born its own. A migration that needs the login's own
rights (CREATE ROLE, CREATE EXTENSION) uses ``RESET ROLE`` and switches back after.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psycopg
from psycopg import Connection, sql

from releve import catalogue
from releve.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LOCK_KEY = 0x52454C45  # "RELE"
#: The migration that creates the owner role and hands it the schema.
OWNER_MIGRATION = 12


@dataclass(frozen=True)
class MigrationContext:
    """What a Python migration may need beyond the connection."""

    settings: Settings
    timescale: bool

    @property
    def roles(self) -> tuple[str, str, str]:
        """(writer, reader, editor) role names."""
        return role_names(self.settings)

    @property
    def owner(self) -> str:
        """The NOLOGIN role that owns the schema."""
        return owner_role(self.settings)


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, to notice a migration edited after it was applied."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def role_names(settings: Settings) -> tuple[str, str, str]:
    """The writer, reader and editor role names for these settings."""
    prefix = settings.database.role_prefix
    return (f"{prefix}_writer", f"{prefix}_reader", f"{prefix}_editor")


def owner_role(settings: Settings) -> str:
    """The NOLOGIN role that owns the schema (tables, partitions, views, routines)."""
    return f"{settings.database.role_prefix}_owner"


def _as_owner(conn: Connection, settings: Settings, have: dict[int, str]) -> None:
    """Switch to the owner role for the current transaction, once migration 0012 made it."""
    if OWNER_MIGRATION not in have:
        return
    owner = owner_role(settings)
    row = conn.execute(
        "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s", (owner,)
    ).fetchone()
    if row and row[0]:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
    else:
        log.warning("this login cannot SET ROLE %s; running as itself", owner)


def discover() -> list[Migration]:
    """All migration files, in version order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.iterdir()):
        if path.suffix not in (".sql", ".py") or not path.name[:4].isdigit():
            continue
        found.append(Migration(int(path.name[:4]), path.stem[5:], path))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"two migrations share a version number in {MIGRATIONS_DIR}")
    return found


def timescale_available(conn: Connection) -> bool:
    """True when this server can load the timescaledb extension."""
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def earlier(stem: str) -> ModuleType:
    """A Python migration's module by its file's stem (``0029_hourly_months``), loaded afresh.

    For a later migration that reads the SQL an earlier one defined (read, not run again).
    """
    return _module(f"releve_migration_{stem}", MIGRATIONS_DIR / f"{stem}.py")


def _run(conn: Connection, migration: Migration, ctx: MigrationContext) -> None:
    if migration.path.suffix == ".sql":
        conn.execute(migration.path.read_bytes())
        return
    _module(f"releve_migration_{migration.version}", migration.path).upgrade(conn, ctx)


def applied(conn: Connection) -> dict[int, str]:
    """Applied versions and their checksums (empty on a new database)."""
    exists = conn.execute("SELECT to_regclass('schema_migration')").fetchone()
    if not exists or exists[0] is None:
        return {}
    return dict(conn.execute("SELECT version, checksum FROM schema_migration").fetchall())


def upgrade(url: str, settings: Settings) -> list[Migration]:
    """Apply pending migrations to the database at ``url``; return those applied."""
    done: list[Migration] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migration (
                       version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            ctx = MigrationContext(settings, timescale_available(conn))
            have = applied(conn)
            for migration in discover():
                if migration.version in have:
                    if have[migration.version] != migration.checksum:
                        log.warning("migration %s changed after it was applied", migration.path.name)
                    continue
                log.info("applying migration %s", migration.path.name)
                with conn.transaction():
                    _as_owner(conn, settings, have)
                    _run(conn, migration, ctx)
                    conn.execute(
                        "INSERT INTO schema_migration (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                done.append(migration)
                have[migration.version] = migration.checksum
            with conn.transaction():
                _as_owner(conn, settings, have)
                catalogue.sync(conn)
                months = settings.database.partition_months_ahead
                conn.execute(
                    "SELECT ensure_reading_partitions(now() - interval '1 month', now() + make_interval(months => %s))",
                    (months,),
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return done
