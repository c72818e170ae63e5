"""``releve vee …``: validation runs, the CSV file check, the review queue and the audit trail."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from releve.cli import db_url
from releve.settings import Settings


def register(sub: Any) -> None:
    """Add ``releve vee`` and its subcommands to the ``releve`` parser."""
    p_vee = sub.add_parser("vee", help="validation, estimation and editing of meter data (see docs/vee.md)")
    vee = p_vee.add_subparsers(dest="vee_command", metavar="ACTION", required=True)

    p = vee.add_parser("run", help="validate what landed since the last run (incremental, watermark in the database)")
    p.add_argument("--who", default="vee", help="recorded as the author of estimates (default: vee)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tz", default="UTC", help="local time zone for interval day counts of meters without one")
    p.set_defaults(func=cmd_run)

    p = vee.add_parser(
        "check",
        help="validate register reads from a CSV file; write exceptions and suggestions as CSV",
        description="Input columns: meter,read_at,index,read_type[,unit,register_digits] (see docs/vee.md). "
        "Bad lines are reported as file:line and skipped; exit code 1 when there were any.",
    )
    p.add_argument("file", type=Path, help="reads CSV")
    p.add_argument("-o", "--output", type=Path, help="exceptions CSV (default: standard output)")
    p.add_argument("--tz", default="UTC", help="time zone of read_at values without an offset (default UTC)")
    p.set_defaults(func=cmd_check)

    p_review = vee.add_parser("review", help="the review queue: list, accept, edit, reject")
    review = p_review.add_subparsers(dest="review_command", metavar="ACTION", required=True)
    p = review.add_parser("list", help="open exceptions, errors first")
    p.add_argument("--meter", help="only this meter (serial)")
    p.add_argument("--status", default="open", help="open, accepted, edited, rejected, superseded, noted or all")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--limit", type=int, default=50, help="list at most this many (50); the total is said")
    shown.add_argument("--all", action="store_true", help="list every exception, however many")
    p.add_argument("--info", action="store_true", help="include info findings (rollovers, exchanges)")
    p.set_defaults(func=cmd_review_list)
    for name, help_text in (
        ("accept", "apply a suggested correction (a new version; the raw read stays)"),
        ("edit", "replace the value with one you give (a new version; the raw read stays)"),
        ("reject", "the read is right: close the exception, keep the raw value"),
    ):
        p = review.add_parser(name, help=help_text)
        p.add_argument("id", type=int, help="exception id (from 'review list')")
        if name == "accept":
            p.add_argument("--choice", type=int, default=1, help="which suggestion (1 = first)")
        if name == "edit":
            p.add_argument("value", type=float, help="the new value")
        p.add_argument("--who", default=getpass.getuser(), help="who decides (default: your user name)")
        p.add_argument("--note", default="", help="why (kept in the audit trail)")
        p.set_defaults(func=cmd_review_decide, action=name)

    p = vee.add_parser("audit", help="who changed which value of a meter, from what, and why")
    p.add_argument("meter", help="meter serial")
    p.add_argument("--ts", type=datetime.fromisoformat, help="only this instant (ISO 8601)")
    p.set_defaults(func=cmd_audit)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Incremental run with a progress bar and a summary; on every shard at once when sharded."""
    from tqdm import tqdm

    from analytics.vee.run import run_vee, run_vee_shards

    if settings.database.shard_urls:  # sharding by meter: each shard validates its own meters
        for k, shard in enumerate(run_vee_shards(settings.database.shard_urls, settings, args.who, args.tz)):
            for line in shard.lines():
                print(f"shard {k}: {line}")
        return 0

    bar = tqdm(unit=" reads", unit_scale=True, disable=args.no_progress or not sys.stderr.isatty(), file=sys.stderr)

    def total(n: int) -> None:
        bar.total = n
        bar.refresh()

    try:
        summary = run_vee(
            db_url(settings), settings, who=args.who, progress=bar.update, on_total=total, default_tz=args.tz
        )
    finally:
        bar.close()
    for line in summary.lines():
        print(line)
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """File mode: reads CSV in, exceptions CSV out."""
    from zoneinfo import ZoneInfoNotFoundError

    from analytics.vee.csvfile import CsvFormatError, check_file
    from releve.cli import CommandError

    if not args.file.is_file():
        raise CommandError(f"{args.file}: no such file")
    try:
        if args.output:
            with args.output.open("w", newline="", encoding="utf-8") as out:
                exceptions, errors = check_file(args.file, out, args.tz)
        else:
            exceptions, errors = check_file(args.file, sys.stdout, args.tz)
    except CsvFormatError as exc:
        raise CommandError(str(exc)) from exc
    except ZoneInfoNotFoundError as exc:
        raise CommandError(f"unknown time zone {args.tz!r}") from exc
    for line in errors:
        print(line, file=sys.stderr)
    alarms = sum(1 for e in exceptions if e.finding.severity.value != "info")
    print(
        f"{args.file}: {len(exceptions)} finding(s), {alarms} exception(s), {len(errors)} bad line(s)"
        + (f"; written to {args.output}" if args.output else ""),
        file=sys.stderr,
    )
    return 1 if errors else 0


def _editor(settings: Settings) -> Any:
    from releve import db

    return db.connect(db_url(settings), role=db.editor_role(settings), autocommit=True)


def cmd_review_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print the queue."""
    from analytics.vee.review import list_queue, queue_size
    from releve.cli import CommandError

    if not args.all and args.limit < 1:
        raise CommandError(f"--limit must be at least 1, not {args.limit} (--all lists everything)")
    with _editor(settings) as conn:
        total = queue_size(conn, args.meter, args.status, args.info)
        items = list_queue(conn, args.meter, args.status, total if args.all else args.limit, args.info)
    if not items:
        print("no exceptions")
        return 0
    for it in items:
        sugg = ", ".join(f"[{i}] {v:g}" for i, v in enumerate(it.suggestions, 1))
        print(
            f"{it.id:>7} {it.severity:<7} {it.rule:<12} {it.serial} {it.channel} {it.ts:%Y-%m-%d %H:%M}Z "
            f"value {it.value if it.value is not None else '-'}  {it.message}"
            + (f"  suggestions: {sugg}" if sugg else "")
        )
    if len(items) < total:
        print(
            f"showing {len(items)} of {total} exceptions (the first by severity, meter and time); "
            f"--limit N or --all for more"
        )
    else:
        print(f"{total} exception(s)")
    return 0


def cmd_review_decide(args: argparse.Namespace, settings: Settings) -> int:
    """Accept, edit or reject one exception."""
    from analytics.vee import review
    from releve.cli import CommandError

    with _editor(settings) as conn:
        try:
            if args.action == "accept":
                vid, kind = review.accept(conn, args.id, args.who, args.choice, args.note)
                print(f"exception {args.id} accepted: version {vid} ({kind})")
            elif args.action == "edit":
                vid, kind = review.edit(conn, args.id, args.value, args.who, args.note)
                print(f"exception {args.id} edited: version {vid} ({kind})")
            else:
                rid = review.reject(conn, args.id, args.who, args.note)
                print(f"exception {args.id} rejected" + (f": raw value reinstated as version {rid}" if rid else ""))
        except review.ReviewError as exc:
            raise CommandError(str(exc)) from exc
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """Print the audit trail of a meter."""
    from analytics.vee.review import audit

    with _editor(settings) as conn:
        rows = audit(conn, args.meter, args.ts)
    if not rows:
        print(f"no versions for meter {args.meter}")
    for r in rows:
        print(
            f"{r['ts']:%Y-%m-%d %H:%M}Z {r['channel']} v{r['version']} {r['kind']:<10} {r['quality']} "
            f"method {r['method']} reason {r['reason']}: {r['replaced_value']} (v{r['replaced_version']}) → "
            f"{r['value']} by {r['created_by']} at {r['created_at']:%Y-%m-%d %H:%M} — {r['comment']}"
            + (f" [{r['rule']}]" if r["rule"] else "")
        )
    return 0
