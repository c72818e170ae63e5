"""``releve dashboard``: serve the web app (waitress), manage logins, take screenshots of every page."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psycopg import Connection

from releve.cli import db_url
from releve.settings import Settings

ROLES = ("operator", "fraud", "billing", "field", "admin")  # as dashboards.auth.ROLES (a test checks)


ROLE_HELP = (
    "operator (control room, meter pages), fraud (fraud unit), billing (billing, review queue, accounts), "
    "field (field work: work orders, SLA breaches), admin (users page); repeat --role for several"
)


def register(sub: Any) -> None:
    """Add ``releve dashboard`` and its subcommands."""
    p = sub.add_parser(
        "dashboard",
        help="the web app: control room, meter page, fraud unit, billing, users",
        description="Serve the dashboards with waitress (default http://127.0.0.1:8050; "
        "dashboard.host / dashboard.port in the settings). Every page needs a login: create one "
        "with 'releve dashboard adduser'.",
    )
    p.add_argument("--host", help="address to listen on (default: dashboard.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: dashboard.port, 8050)")
    p.add_argument("--refresh", type=float, default=30.0, help="control-room refresh period in seconds")
    p.set_defaults(func=cmd_serve)
    d = p.add_subparsers(dest="dashboard_command", metavar="ACTION")
    a = d.add_parser(
        "adduser",
        help="create a login; the password is prompted",
        description=f"Roles: {ROLE_HELP}. The password (at least 10 characters) is read from the "
        "terminal, or from stdin with --password-stdin; never from the command line.",
    )
    a.add_argument("username")
    a.add_argument("--role", action="append", required=True, choices=ROLES, help="a role (repeat for several)")
    a.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    a.set_defaults(func=cmd_adduser)
    w = d.add_parser(
        "passwd",
        help="set a new password (and, with --role, new roles); open sessions end",
        description=f"Roles: {ROLE_HELP}. Without --role the roles are kept.",
    )
    w.add_argument("username")
    w.add_argument("--role", action="append", choices=ROLES, help="replace the roles (repeat for several)")
    w.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    w.set_defaults(func=cmd_passwd)
    r = d.add_parser("deluser", help="remove a login; its open sessions end at their next request")
    r.add_argument("username")
    r.set_defaults(func=cmd_deluser)
    s = d.add_parser(
        "screenshots",
        help="PNG of every page at 1440x900 (headless Chromium)",
        description="Serve the app in-process, log in with a temporary user holding every role "
        "(removed afterwards) and save one PNG per page.",
    )
    s.add_argument("--out", type=Path, default=Path("screenshots"), help="output folder (default screenshots/)")
    s.add_argument("--meter", help="serial for the meter page (default: the meter with most open exceptions)")
    s.set_defaults(func=cmd_screenshots)


def _upgraded_url(settings: Settings) -> str:
    """The database URL, its schema brought up to date when it is not (``releve db upgrade``'s work)."""
    from releve import migrate

    url = db_url(settings)
    if not _schema_current(url, settings):
        migrate.upgrade(url, settings)
    return url


def _schema_current(url: str, settings: Settings) -> bool:
    """Whether every migration is applied, asked as the reader role (the dashboards need no more)."""
    import psycopg

    from releve import db, migrate

    try:
        with db.connect(url, role=db.reader_role(settings), autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('schema_migration')").fetchone() == (None,):
                return False
            have = {v for (v,) in conn.execute("SELECT version FROM schema_migration")}
    except psycopg.errors.InvalidParameterValue:  # no reader role yet: a database never upgraded
        return False
    return {m.version for m in migrate.discover()} <= have


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the dashboards with waitress until Ctrl-C."""
    from dashboards.app import create_app
    from dashboards.server import serve

    host = args.host or settings.dashboard.host
    port = settings.dashboard.port if args.port is None else args.port
    url = _upgraded_url(settings)
    app = create_app(url, settings, refresh_ms=int(args.refresh * 1000))
    print(f"dashboards on http://{host}:{port}/ (Ctrl-C stops)", file=sys.stderr)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"dashboards: listening on {host}: serve it behind a TLS reverse proxy (docs/operations.md)",
            file=sys.stderr,
        )
    serve(app.server, host, port, threads=settings.dashboard.threads)
    return 0


def _password(args: argparse.Namespace) -> str:
    from releve.cli import CommandError

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass(f"password for {args.username}: ")
    if password != getpass.getpass("again: "):
        raise CommandError("the passwords differ")
    return password


@contextmanager
def _logins(settings: Settings) -> Iterator[Connection]:
    """A connection to the (migrated) database for managing logins; an AuthError becomes a command error (exit 1)."""
    from dashboards.auth import AuthError
    from releve import db
    from releve.cli import CommandError

    url = _upgraded_url(settings)
    try:
        with db.connect(url, autocommit=True) as conn:
            yield conn
    except AuthError as exc:
        raise CommandError(str(exc)) from exc


def cmd_adduser(args: argparse.Namespace, settings: Settings) -> int:
    """Create or update a dashboard login."""
    from dashboards.auth import add_user

    password = _password(args)
    with _logins(settings) as conn:
        add_user(conn, args.username, password, sorted(set(args.role)))
    print(f"user {args.username}: roles {', '.join(sorted(set(args.role)))}")
    return 0


def cmd_passwd(args: argparse.Namespace, settings: Settings) -> int:
    """Set a user's password (and roles)."""
    from dashboards.auth import set_password

    password = _password(args)
    with _logins(settings) as conn:
        set_password(conn, args.username, password, sorted(set(args.role)) if args.role else None)
    print(f"user {args.username}: new password" + (f", roles {', '.join(sorted(set(args.role)))}" if args.role else ""))
    return 0


def cmd_deluser(args: argparse.Namespace, settings: Settings) -> int:
    """Remove a user."""
    from dashboards.auth import delete_user

    with _logins(settings) as conn:
        delete_user(conn, args.username)
    print(f"user {args.username}: removed")
    return 0


def cmd_screenshots(args: argparse.Namespace, settings: Settings) -> int:
    """Save a PNG of every page."""
    from dashboards.screenshots import take_screenshots

    url = _upgraded_url(settings)
    for path in take_screenshots(url, settings, args.out, meter=args.meter):
        print(path)
    return 0
