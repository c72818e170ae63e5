"""Shared by the benchmarks: a database of their own, on a throwaway server or the one named by
``RELEVE_BENCH_DATABASE_URL`` (a server where a new database may be created)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn

import psycopg
from psycopg import sql

from releve import migrate
from releve.pgserver import PostgresServer
from releve.settings import Settings


def exit_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, ``kill``, a service manager) unwind the bench as Ctrl-C does.

    Python's default for SIGTERM ends the process on the spot: no ``finally`` and no ``with`` exit
    runs, so a bench stopped that way left its throwaway PostgreSQL server (and Mosquitto) running
    with their data directories. Raised as ``SystemExit`` instead, the bench stops and removes them.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def bench_database() -> Iterator[tuple[str, Settings, str]]:
    """Yield (url, settings, server description) for a fresh migrated database; drop it after.

    A SIGTERM while it is open stops and removes the throwaway server too (:func:`exit_on_sigterm`).
    """
    exit_on_sigterm()
    external = os.environ.get("RELEVE_BENCH_DATABASE_URL")
    root: Path | None = None
    server: PostgresServer | None = None
    if external:
        admin = external
        where = "external server"
    else:
        root = Path(tempfile.mkdtemp(prefix="releve-bench-"))
        root.chmod(0o755)
        server = PostgresServer(root / "data", durable=True)
        server.start()
        admin = server.url()
        where = f"throwaway {server.version()} (durable settings: fsync on)"
    name = f"releve_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(admin)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    settings = Settings(database={"url": url, "role_prefix": name})  # type: ignore[arg-type]
    try:
        migrate.upgrade(url, settings)
        yield url, settings, where
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            for role in (*migrate.role_names(settings), migrate.owner_role(settings)):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        if server is not None:
            server.stop()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
