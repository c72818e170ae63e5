"""``releve dashboard``: serve the web app, add a login, take screenshots of every page."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from releve.settings import Settings


def register(sub: Any) -> None:
    """Add ``releve dashboard`` and its subcommands."""
    p = sub.add_parser("dashboard", help="the web app: control room, meter page, fraud unit, billing",
                       description="Serve the dashboards (default http://127.0.0.1:8050).")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    p.add_argument("--refresh", type=float, default=30.0, help="control-room refresh period in seconds")
    p.set_defaults(func=cmd_serve)
    d = p.add_subparsers(dest="dashboard_command", metavar="ACTION")
    a = d.add_parser("adduser", help="create a login (or reset its password and roles); the password is prompted",
                     description="Roles: fraud (fraud unit page), billing (billing page, review queue), "
                     "admin (every page). The password is read from the terminal, or from stdin with "
                     "--password-stdin; never from the command line.")  # fmt: skip
    a.add_argument("username")
    a.add_argument("--role", action="append", required=True, choices=("fraud", "billing", "admin"),
                   help="a role (repeat for several)")  # fmt: skip
    a.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    a.set_defaults(func=cmd_adduser)
    s = d.add_parser("screenshots", help="PNG of every page at 1440x900 (headless Chromium)",
                     description="Serve the app in-process, log in with a temporary admin user (removed "
                     "afterwards) and save one PNG per page.")  # fmt: skip
    s.add_argument("--out", type=Path, default=Path("screenshots"), help="output folder (default screenshots/)")
    s.add_argument("--meter", help="serial for the meter page (default: the meter with most open exceptions)")
    s.set_defaults(func=cmd_screenshots)


def _url(settings: Settings) -> str:
    from releve import db, migrate
    from releve.pgserver import ServerError

    try:
        url = db.database_url(settings)
    except ServerError as exc:
        from releve.cli import CommandError

        raise CommandError(str(exc)) from exc
    migrate.upgrade(url, settings)
    return url


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the dashboards until Ctrl-C."""
    from dashboards.app import create_app

    url = _url(settings)
    app = create_app(url, settings, refresh_ms=int(args.refresh * 1000))
    print(f"dashboards on http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    app.run(host=args.host, port=args.port, debug=False)
    return 0


def cmd_adduser(args: argparse.Namespace, settings: Settings) -> int:
    """Create or update a dashboard login."""
    from dashboards.auth import AuthError, add_user
    from releve import db
    from releve.cli import CommandError

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.username}: ")
        if password != getpass.getpass("again: "):
            raise CommandError("the passwords differ")
    url = _url(settings)
    try:
        with db.connect(url, autocommit=True) as conn:
            add_user(conn, args.username, password, sorted(set(args.role)))
    except AuthError as exc:
        raise CommandError(str(exc)) from exc
    print(f"user {args.username}: roles {', '.join(sorted(set(args.role)))}")
    return 0


def cmd_screenshots(args: argparse.Namespace, settings: Settings) -> int:
    """Save a PNG of every page."""
    from dashboards.screenshots import take_screenshots

    url = _url(settings)
    for path in take_screenshots(url, settings, args.out, meter=args.meter):
        print(path)
    return 0
