"""The ``releve`` command line.

Each subcommand lives next to the code it drives: a package exposes ``register(subparsers)``, and
this module imports it only when building the parser, so the core stays free of upward imports at
import time. Exit codes: 0 success, 1 the work failed, 2 bad usage or bad settings. An expected
failure (a database that cannot be reached, a bad file, a refused login) is one line on stderr; ``-v``
adds its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

import psycopg

from releve import __version__, db, demostate
from releve.logs import configure
from releve.pgserver import ServerError
from releve.settings import Settings, SettingsError, load_settings

log = logging.getLogger("releve")

#: Modules that add subcommands, in the order they appear in ``releve --help``.
COMMAND_MODULES = (
    "releve.commands",
    "demo.cli",
    "releve.command_cli",
    "simulators.cli",
    "collectors.cli",
    "ingest.cli",
    "analytics.cli",
    "analytics.theft.cli",
    "billing.cli",
    "billing.accounts_cli",
    "dashboards.cli",
)


class CommandError(Exception):
    """A command failed for a reason the user can act on; printed without a traceback."""


def one_line(exc: BaseException) -> str:
    """The reason of an expected failure on one line (libpq's messages span several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    if isinstance(exc, psycopg.OperationalError) and text.startswith("connection is bad: invalid"):
        return f"the database URL is not valid: {text.removeprefix('connection is bad: ')}"
    if isinstance(exc, psycopg.OperationalError):
        return f"cannot reach the database: {text or type(exc).__name__}"
    if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None:  # libpq could not parse the URL
        return f"the database URL is not valid: {text}"
    if isinstance(exc, psycopg.Error):
        return f"database error: {text}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or text}"
    return text or type(exc).__name__


def db_url(settings: Settings) -> str:
    """The database URL a command works on (what ``releve db url`` prints).

    ``database.url`` from the settings, else the embedded server's, started when it is not running
    (:func:`releve.db.database_url`). A server that cannot start is a :class:`CommandError`: one line
    on stderr and exit code 1, like any other expected failure. Every package's CLI asks here.
    """
    try:
        return db.database_url(settings)
    except ServerError as exc:
        raise CommandError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every package's subcommands."""
    parser = argparse.ArgumentParser(
        prog="releve",
        description="Relevé: meter data collection, validation, theft detection and billing.",
    )
    parser.add_argument("--version", action="version", version=f"releve {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logs (-v info, -vv debug)")
    parser.add_argument("--log-json", action="store_true", help="logs as JSON lines on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):  # a missing dependency, not a missing module
                raise
            continue
        register: Callable[[argparse._SubParsersAction], None] | None = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``releve`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"releve: {exc}", file=sys.stderr)
        return 2
    if args.command != "demo":  # the demo decides for itself; every other command follows a running demo
        args.demo_state = demostate.apply(settings)
    level = ["WARNING", "INFO", "DEBUG"][min(args.verbose, 2)] if args.verbose else settings.logging.level
    configure(level, "json" if args.log_json else settings.logging.format)
    try:
        result = args.func(args, settings)
    except (CommandError, SettingsError, ServerError, psycopg.Error, OSError) as exc:
        # Expected failures: one line on stderr; the traceback only when asked for (-v).
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"releve {args.command}: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("releve: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    # ``python -m releve.cli`` runs this file as __main__; the subcommands import releve.cli, a second
    # copy whose CommandError this copy's main() would not catch. Run that copy's main() instead.
    from releve.cli import main as releve_main

    sys.exit(releve_main())
