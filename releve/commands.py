"""Core subcommands: ``releve db …``, ``releve settings``, and ``releve demo``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from releve import db, migrate
from releve.pgserver import ServerError
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
    p = db_sub.add_parser("stop", help="stop the embedded server (its data is kept)")
    p.set_defaults(func=cmd_db_stop)
    p = db_sub.add_parser("url", help="print the database URL (starting the embedded server if needed)")
    p.set_defaults(func=cmd_db_url)

    p = sub.add_parser("settings", help="show the effective settings, or a commented sample file")
    p.add_argument("--sample", action="store_true", help="print a commented releve.toml with every default")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser(
        "demo",
        help="run Relevé on its embedded defaults (for now: database up, schema applied, status shown)",
        description="Start the embedded PostgreSQL in database.data_dir, apply the schema, print its "
        "status, and keep running until Ctrl-C (then stop the server, keeping its data).",
    )
    p.add_argument("--once", action="store_true", help="print the status and exit instead of waiting")
    p.set_defaults(func=cmd_demo)


def _url(settings: Settings) -> str:
    try:
        return db.database_url(settings)
    except ServerError as exc:
        from releve.cli import CommandError

        raise CommandError(str(exc)) from exc


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations."""
    done = migrate.upgrade(_url(settings), settings)
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
    info = db.status(_url(settings))
    if args.json:
        print(json.dumps(info, default=str))
    else:
        _print_status(info)
    return 0


def cmd_db_stop(args: argparse.Namespace, settings: Settings) -> int:
    """Stop the embedded server."""
    if settings.database.url:
        print("database.url is set: nothing embedded to stop", file=sys.stderr)
        return 1
    db.embedded_server(settings).stop()
    return 0


def cmd_db_url(args: argparse.Namespace, settings: Settings) -> int:
    """Print the URL the other commands use."""
    print(_url(settings))
    return 0


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    """Print settings."""
    if args.sample:
        print(sample_toml())
    else:
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Bring the embedded database up with the schema, show its status, wait for Ctrl-C."""
    print("starting the database …", file=sys.stderr)
    url = _url(settings)
    done = migrate.upgrade(url, settings)
    print(f"schema ready ({len(done)} migration(s) applied now)", file=sys.stderr)
    print(f"database  {url}")
    _print_status(db.status(url))
    if args.once:
        return 0
    print("running; Ctrl-C stops", file=sys.stderr)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    if not settings.database.url:
        db.embedded_server(settings).stop()
        print("embedded database stopped; data kept in " + str(settings.database.data_dir), file=sys.stderr)
    return 0
