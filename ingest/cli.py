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
        "and events.csv, all or nothing: a line that cannot be read stops the load and leaves the database as it "
        "was. Impossible values (a negative index or interval, a power factor beyond 1) go to dead letters "
        "(rejected_input) with the reason. Idempotent: loading the same files twice changes nothing. "
        "Formats: docs/simulators.md.",
    )
    load.add_argument("directory", type=Path)
    load.add_argument(
        "--reads",
        choices=["remote", "manual"],
        default="remote",
        help="remote: register_reads.csv + intervals.csv (default); manual: manual_reads.csv only",
    )
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
        raise CommandError(f"{exc} (nothing was loaded: a load lands whole or not at all)") from exc
    print(
        f"{s.meters} meters, {s.areas} areas, {s.accounts} accounts, {s.exchanges} exchanges; "
        f"{s.readings:,} readings ({s.duplicates:,} duplicates, {s.conflicts:,} conflicts, "
        f"{s.rejected:,} rejected), {s.events} events"
    )
    if s.rejected:
        print(f"rejected: {s.rejected:,} row(s) kept in rejected_input with the reason, file and line")
    if s.conflicts:
        shown = "; ".join(
            f"{m} {c} {t:%Y-%m-%dT%H:%M}Z stored {old:g}, file {new:g}" for m, c, t, old, new in s.conflict_examples
        )
        more = " …" if s.conflicts > len(s.conflict_examples) else ""
        print(
            f"conflicts: {s.conflicts:,} reading(s) already stored with another value, kept in "
            f"reading_conflict (the stored value stands): {shown}{more}"
        )
    return 0
