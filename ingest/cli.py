"""``releve ingest …``: load files into the database through the write path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from releve.settings import Settings


def register(sub: Any) -> None:
    """Add ``ingest`` to the ``releve`` parser."""
    p = sub.add_parser("ingest", help="load readings from files into the database")
    actions = p.add_subparsers(dest="ingest_command", metavar="ACTION", required=True)
    load = actions.add_parser(
        "load",
        help="load a directory of CSV files (a simulator backfill or an export in the same formats)",
        description="Load meters.csv/areas.csv (registry, customers, accounts, installations), readings "
        "and events.csv. Idempotent: loading the same files twice changes nothing. Formats: docs/simulators.md.",
    )
    load.add_argument("directory", type=Path)
    load.add_argument("--reads", choices=["remote", "manual"], default="remote",
                      help="remote: register_reads.csv + intervals.csv (default); manual: manual_reads.csv only")
    load.set_defaults(func=cmd_load)


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    """Load a directory."""
    from ingest.importer import LoadError, load_directory
    from releve import migrate
    from releve.cli import CommandError
    from releve.db import database_url

    if not args.directory.is_dir():
        raise CommandError(f"{args.directory}: not a directory")
    url = database_url(settings)
    migrate.upgrade(url, settings)
    try:
        s = load_directory(url, settings, args.directory, reads=args.reads, progress=sys.stderr.isatty())
    except LoadError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{s.meters} meters, {s.areas} areas, {s.accounts} accounts, {s.exchanges} exchanges; "
          f"{s.readings:,} readings ({s.duplicates:,} duplicates, {s.rejected:,} rejected), {s.events} events")
    return 0
