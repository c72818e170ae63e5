"""``releve command queue|list|show|cancel``: commands to meters from the command line.

Exit codes: 0 done, 1 the request was refused (unknown meter or command, a command that can no
longer be cancelled), 2 bad usage. The collectors execute what is queued (docs/collectors.md).
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from datetime import datetime, timedelta
from typing import Any

from releve import db
from releve import meter_commands as mc
from releve.cli import db_url
from releve.settings import Settings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d`` as a timedelta (argparse type)."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration like 90s, 15m, 24h or 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def instant(text: str) -> datetime:
    """An ISO 8601 instant with its zone (argparse type)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +01:00)")
    return value


def register(sub: Any) -> None:
    """Add ``releve command`` to the ``releve`` parser."""
    p_cmd = sub.add_parser(
        "command",
        help="commands to meters: relay disconnect/reconnect, clock sync, demand reset",
        description="Queue commands for the collectors to execute on meters, follow them, cancel them. "
        "States: queued -> sent -> confirmed | failed | expired; a queued command can be cancelled.",
    )
    cmd_sub = p_cmd.add_subparsers(dest="command_action", metavar="ACTION", required=True)

    p = cmd_sub.add_parser("queue", help="queue a command; prints its id")
    p.add_argument("meter", help="meter serial")
    p.add_argument("kind", choices=mc.KINDS, help="what the meter is to do")
    p.add_argument("--by", default=None, help="who asks (default: the login name)")
    p.add_argument("--reason", help="why (kept in the audit)")
    p.add_argument("--work-order", type=int, help="the work order this command belongs to")
    p.add_argument(
        "--expires-in",
        type=duration,
        default=mc.DEFAULT_EXPIRES_IN,
        help="give up after this long (90s, 15m, 24h, 7d; default 24h)",
    )
    p.add_argument("--not-before", type=instant, help="not before this instant (ISO 8601 with zone)")
    p.set_defaults(func=cmd_queue)

    p = cmd_sub.add_parser("list", help="commands, newest first")
    p.add_argument("--meter", help="only this meter (serial)")
    p.add_argument("--state", action="append", choices=mc.STATES, help="only these states (repeatable)")
    p.add_argument("--open", action="store_true", help="only queued and sent commands")
    p.add_argument("--kind", action="append", choices=mc.KINDS, help="only these kinds (repeatable)")
    p.add_argument("--work-order", type=int, help="only this work order's commands")
    p.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.set_defaults(func=cmd_list)

    p = cmd_sub.add_parser("show", help="one command and its audit trail")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    p = cmd_sub.add_parser("cancel", help="cancel a queued command (one already sent cannot be)")
    p.add_argument("id", type=int)
    p.add_argument("--by", default=None, help="who cancels (default: the login name)")
    p.add_argument("--reason", help="why (kept in the audit)")
    p.set_defaults(func=cmd_cancel)


def _fail(exc: Exception) -> int:
    print(f"releve command: {exc}", file=sys.stderr)
    return 1


def _who(by: str | None) -> str:
    return by or getpass.getuser()


def _row(c: mc.MeterCommand) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in c.__dict__.items()}


def cmd_queue(args: argparse.Namespace, settings: Settings) -> int:
    """Queue a command and print its id."""
    with db.connect(db_url(settings), role=db.editor_role(settings), autocommit=True) as conn:
        try:
            command_id = mc.queue_command(
                conn,
                args.meter,
                args.kind,
                _who(args.by),
                reason=args.reason,
                work_order_id=args.work_order,
                expires_in=args.expires_in,
                not_before=args.not_before,
            )
        except mc.MeterCommandError as exc:
            return _fail(exc)
        cmd = mc.command_status(conn, command_id)
    print(command_id)
    print(f"{cmd.kind} {cmd.serial}: {cmd.state}, expires {cmd.expires_at:%Y-%m-%d %H:%M:%S%z}", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print commands."""
    states = list(mc.OPEN_STATES) if args.open else args.state
    with db.connect(db_url(settings), role=db.reader_role(settings), autocommit=True) as conn:
        try:
            commands = mc.list_commands(
                conn, meter=args.meter, states=states, kinds=args.kind, work_order_id=args.work_order, limit=args.limit
            )
        except mc.MeterCommandError as exc:
            return _fail(exc)
    if args.json:
        for c in commands:
            print(json.dumps(_row(c)))
        return 0
    print(f"{'id':>6}  {'meter':<12} {'kind':<12} {'state':<9} {'tries':>5}  {'requested':<19}  {'by':<16} error")
    for c in commands:
        print(
            f"{c.id:>6}  {c.serial:<12} {c.kind:<12} {c.state:<9} {c.attempts:>5}  "
            f"{c.requested_at:%Y-%m-%d %H:%M:%S}  {c.requested_by:<16} {c.error or ''}"
        )
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print one command and its audit trail."""
    with db.connect(db_url(settings), role=db.reader_role(settings), autocommit=True) as conn:
        try:
            cmd = mc.command_status(conn, args.id)
        except mc.MeterCommandError as exc:
            return _fail(exc)
        events = mc.command_events(conn, args.id)
    if args.json:
        out = _row(cmd)
        out["events"] = [
            {"at": e.at.isoformat(), "state": e.state, "actor": e.actor, "detail": e.detail} for e in events
        ]
        print(json.dumps(out))
        return 0
    for key, value in _row(cmd).items():
        if value is not None:
            print(f"{key:<14} {json.dumps(value) if isinstance(value, dict) else value}")
    print("audit:")
    for e in events:
        print(f"  {e.at:%Y-%m-%d %H:%M:%S.%f}  {e.state:<9} {e.actor:<16} {json.dumps(e.detail)}")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel a queued command."""
    with db.connect(db_url(settings), role=db.editor_role(settings), autocommit=True) as conn:
        try:
            cmd = mc.cancel_command(conn, args.id, _who(args.by), reason=args.reason)
        except mc.MeterCommandError as exc:
            return _fail(exc)
    print(f"command {cmd.id} ({cmd.kind} {cmd.serial}) cancelled")
    return 0
