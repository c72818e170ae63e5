"""Core subcommands: ``releve db …`` and ``releve settings`` (``releve demo`` is in the demo package)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from releve import db, demostate, migrate
from releve.cli import db_url
from releve.settings import Settings, sample_toml


def register(sub: Any) -> None:
    """Add the core subcommands to the ``releve`` parser."""
    p_db = sub.add_parser("db", help="database: upgrade the schema, show status, start/stop the embedded server")
    db_sub = p_db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = db_sub.add_parser("upgrade", help="apply pending schema migrations (idempotent)")
    p.set_defaults(func=cmd_db_upgrade)
    p = db_sub.add_parser("status", help="server, storage kind, schema version and row counts")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_db_status)
    p = db_sub.add_parser("refresh", help="refresh the daily aggregate over what landed since the last refresh")
    p.set_defaults(func=cmd_db_refresh)
    p = db_sub.add_parser("stop", help="stop the embedded server (its data is kept)")
    p.set_defaults(func=cmd_db_stop)
    p = db_sub.add_parser("url", help="print the database URL (starting the embedded server if needed)")
    p.set_defaults(func=cmd_db_url)

    p = sub.add_parser("settings", help="show the effective settings, or a commented sample file")
    p.add_argument("--sample", action="store_true", help="print a commented releve.toml with every default")
    p.set_defaults(func=cmd_settings)


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations."""
    done = migrate.upgrade(db_url(settings), settings)
    print(f"applied {len(done)} migration(s)" + (": " + ", ".join(m.path.name for m in done) if done else ""))
    return 0


def _print_status(info: dict[str, object]) -> None:
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<18} {v}")
        else:
            print(f"{key:<20} {value}")


def cmd_db_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the database status."""
    url = db_url(settings)
    info: dict[str, object] = {"database": _redacted(url)}
    state = getattr(args, "demo_state", None)
    if state is not None:
        running = bool(state.pid and state.running())
        info["source"] = (
            f"the demo running in this folder (pid {state.pid}, {demostate.state_file()})"
            if running
            else f"the stopped demo's data ({state.database_data_dir})"
        )
    info.update(db.status(url))
    if args.json:
        print(json.dumps(info, default=str))
    else:
        _print_status(info)
    return 0


def _redacted(url: str) -> str:
    """The URL without a password (embedded URLs name a password file, never the password)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def cmd_db_refresh(args: argparse.Namespace, settings: Settings) -> int:
    """Refresh daily_reading and hourly_series incrementally."""
    batches, days = db.refresh_daily(db_url(settings), role=db.writer_role(settings))
    print(f"daily aggregate: {batches} new batch(es), {days} day(s) refreshed")
    batches, days = db.refresh_hourly(db_url(settings), role=db.writer_role(settings))
    print(f"hourly series: {batches} new batch(es), {days} day(s) refreshed")
    return 0


def cmd_db_stop(args: argparse.Namespace, settings: Settings) -> int:
    """Stop the embedded server."""
    state = getattr(args, "demo_state", None)
    if state is not None and state.pid and state.running():
        print(
            f"the demo (pid {state.pid}) runs this database: stop the demo (Ctrl-C) instead; it stops its "
            "database with it",
            file=sys.stderr,
        )
        return 1
    if settings.database.url:
        print("database.url is set: nothing embedded to stop", file=sys.stderr)
        return 1
    server = db.embedded_server(settings)
    if not server.is_running():
        print(f"the embedded PostgreSQL in {server.data_dir} is not running: nothing to stop")
        return 0
    server.stop()
    print(f"stopped the embedded PostgreSQL in {server.data_dir} (port {server.port}); its data is kept")
    return 0


def cmd_db_url(args: argparse.Namespace, settings: Settings) -> int:
    """Print the URL the other commands use."""
    print(db_url(settings))
    return 0


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    """Print settings."""
    if args.sample:
        print(sample_toml())
    else:
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0
