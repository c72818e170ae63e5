"""``releve bill …``: bill runs, the CIS feed, tenant changes, prepaid vending and tariff checks."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from releve.cli import db_url
from releve.settings import Settings


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def default_tariffs() -> Path:
    """``tariffs.toml`` in the working directory when present, else the shipped example."""
    local = Path("tariffs.toml")
    if local.exists():
        return local
    from billing.tariffs import EXAMPLE

    return EXAMPLE


def register(sub: Any) -> None:
    """Add ``releve bill`` and its subcommands."""
    p_bill = sub.add_parser("bill", help="billing: bill runs, CIS feed, tenant changes, prepaid vending")
    bill = p_bill.add_subparsers(dest="bill_command", metavar="ACTION", required=True)

    def tariffs_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tariffs",
            type=Path,
            default=None,
            help="tariff file (default: ./tariffs.toml, else billing/tariffs.example.toml)",
        )

    p = bill.add_parser("run", help="bill one cycle for the 30 days ending on --period-end (idempotent)")
    p.add_argument("--cycle", required=True, help="billing cycle (route/book), account.billing_cycle")
    p.add_argument("--period-end", type=_date, required=True, help="last day of the period, YYYY-MM-DD")
    p.add_argument("--issue-date", type=_date, default=None, help="issue date (default today); due = +due_days")
    p.add_argument("--out", type=Path, default=None, help="write the CIS feed (CSV + JSON) and notices here")
    tariffs_arg(p)
    p.set_defaults(func=cmd_run)

    p = bill.add_parser("feed", help="write the CIS feed (CSV + JSON) of a bill run")
    p.add_argument("--run", type=int, required=True, help="bill run id")
    p.add_argument("--out", type=Path, required=True, help="directory")
    p.set_defaults(func=cmd_feed)

    p = bill.add_parser("tariffs", help="validate a tariff file and list its tariffs")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_tariffs)

    p = bill.add_parser("notes", help="why accounts were skipped, and the warnings, of a bill run")
    p.add_argument("--run", type=int, required=True, help="bill run id")
    p.set_defaults(func=cmd_notes)

    p_t = bill.add_parser("tenant", help="water change of occupant: record, proof, expiry")
    tenant = p_t.add_subparsers(dest="tenant_command", metavar="ACTION", required=True)
    p = tenant.add_parser("change", help="record move-out and move-in indexes; opens a case above the tolerance")
    p.add_argument("--account", required=True, help="the newcomer's account number")
    p.add_argument("--predecessor", default=None, help="the previous occupant's account (default: found)")
    p.add_argument("--move-out-index", type=_decimal, required=True)
    p.add_argument("--move-out-date", type=_date, required=True)
    p.add_argument("--move-in-index", type=_decimal, required=True)
    p.add_argument("--move-in-date", type=_date, required=True)
    p.add_argument(
        "--requested-on",
        type=_date,
        default=None,
        help="the day the customer asked for the subscription; the proof days run from it (default today)",
    )
    tariffs_arg(p)
    p.set_defaults(func=cmd_tenant_change)
    p = tenant.add_parser("proof", help="record the proof (index and date) brought for an open case")
    p.add_argument("case", type=int)
    p.add_argument(
        "--index",
        type=_decimal,
        default=None,
        help="the index the proof shows (omit when it shows none: the predecessor's index at --date applies)",
    )
    p.add_argument("--date", type=_date, required=True, help="the date the proof shows")
    p.add_argument("--document", required=True, help="what the proof is (deed of sale, entry inventory …)")
    p.add_argument("--today", type=_date, default=None, help="date of receipt (default today)")
    p.set_defaults(func=cmd_tenant_proof)
    p = tenant.add_parser("expire", help="default open cases whose proof is overdue; write the notices")
    p.add_argument("--as-of", type=_date, default=None, help="default today")
    p.add_argument("--out", type=Path, default=None, help="write notices/tenant-case-<id>.txt here")
    tariffs_arg(p)
    p.set_defaults(func=cmd_tenant_expire)

    p_v = bill.add_parser("vending", help="prepaid vending records")
    vending = p_v.add_subparsers(dest="vending_command", metavar="ACTION", required=True)
    p = vending.add_parser("import", help="import a vending CSV (account|meter, vended_at, units|amount, token)")
    p.add_argument("file", type=Path)
    tariffs_arg(p)
    p.set_defaults(func=cmd_vending_import)


def _book(args: argparse.Namespace) -> Any:
    from billing.tariffs import TariffError, load_tariffs
    from releve.cli import CommandError

    try:
        return load_tariffs(args.tariffs or default_tariffs())
    except TariffError as exc:
        raise CommandError(str(exc)) from exc


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run a cycle."""
    from billing.run import run_bills
    from releve import db
    from releve.cli import CommandError

    book = _book(args)
    url = db_url(settings)
    with db.connect(url, role=db.reader_role(settings)) as conn:
        cycles = [c for (c,) in conn.execute("SELECT DISTINCT billing_cycle FROM account ORDER BY 1")]
    if args.cycle not in cycles:
        known = ", ".join(cycles) if cycles else "none: no account is registered yet"
        raise CommandError(f"cycle {args.cycle!r} has no accounts, nothing to bill (cycles with accounts: {known})")
    if settings.database.shard_urls:  # sharding by meter: bills on the coordinator, series from the shards
        from billing.sharded import ShardsNotAttachedError, run_bills_sharded

        try:
            summary = run_bills_sharded(url, settings, book, args.cycle, args.period_end, args.issue_date, args.out)
        except ShardsNotAttachedError as exc:
            raise CommandError(str(exc)) from exc
    else:
        summary = run_bills(url, settings, book, args.cycle, args.period_end, args.issue_date, args.out)
    print(summary.text())
    return 0


def cmd_feed(args: argparse.Namespace, settings: Settings) -> int:
    """Write a run's feed."""
    from billing.feed import write_feed
    from releve.cli import CommandError

    try:
        paths = write_feed(db_url(settings), settings, args.run, args.out)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from exc
    for path in paths:
        print(path)
    return 0


def cmd_notes(args: argparse.Namespace, settings: Settings) -> int:
    """Print a run's notes: one line per account and reason."""
    from releve import db
    from releve.cli import CommandError

    with db.connect(db_url(settings), role=db.reader_role(settings)) as conn:
        if conn.execute("SELECT 1 FROM bill_run WHERE id = %s", (args.run,)).fetchone() is None:
            raise CommandError(f"no bill run {args.run}")
        rows = conn.execute(
            """SELECT n.kind, a.number, n.message, n.bill_id FROM bill_run_note n JOIN account a ON a.id = n.account_id
               WHERE n.run_id = %s ORDER BY n.kind, a.number, n.code""",
            (args.run,),
        ).fetchall()
    for kind, number, message, bill_id in rows:
        print(f"{kind}\t{number}\t{'' if bill_id is None else f'bill {bill_id}'}\t{message}")
    print(f"bill run {args.run}: {len(rows)} note(s)")
    return 0


def cmd_tariffs(args: argparse.Namespace, settings: Settings) -> int:
    """Check a tariff file and list its versions with the charges each carries."""
    from billing.components import COMPONENTS

    args.tariffs = args.file
    book = _book(args)
    for t in book.data.tariff:
        charges = ", ".join(c.kind for c in COMPONENTS if t.uses(c))
        print(f"{t.code:<10} {t.commodity:<12} from {t.effective_from}  {charges}")
    print(f"{book.path}: ok ({len(book.data.tariff)} tariff version(s))")
    return 0


def _today(value: date | None) -> date:
    return value or datetime.now(UTC).date()


def cmd_tenant_change(args: argparse.Namespace, settings: Settings) -> int:
    """Record a change of occupant."""
    from billing.tenant import TenantError, record_change
    from releve import db
    from releve.cli import CommandError

    book = _book(args)
    try:
        with db.connect(db_url(settings), role=db.editor_role(settings)) as conn, conn.transaction():
            case = record_change(
                conn,
                book,
                args.account,
                args.move_out_index,
                args.move_out_date,
                args.move_in_index,
                args.move_in_date,
                args.predecessor,
                _today(args.requested_on),
            )
    except TenantError as exc:
        raise CommandError(str(exc)) from exc
    if case.status == "accepted":
        print(f"case {case.id}: accepted, subscription starts at {case.start_index} on {case.start_date}")
    else:
        print(
            f"case {case.id}: open — indexes {abs(case.move_in_index - case.move_out_index)} apart; "
            f"no subscription until proof (due {case.proof_due})"
        )
    return 0


def cmd_tenant_proof(args: argparse.Namespace, settings: Settings) -> int:
    """Record a proof."""
    from billing.tenant import TenantError, record_proof
    from releve import db
    from releve.cli import CommandError

    try:
        with db.connect(db_url(settings), role=db.editor_role(settings)) as conn, conn.transaction():
            case = record_proof(conn, args.case, args.index, args.date, args.document, _today(args.today))
    except TenantError as exc:
        raise CommandError(str(exc)) from exc
    print(f"case {case.id}: proven, subscription starts at {case.start_index} on {case.start_date}")
    return 0


def cmd_tenant_expire(args: argparse.Namespace, settings: Settings) -> int:
    """Default overdue cases."""
    from billing.tenant import expire_cases
    from releve import db

    book = _book(args)
    with db.connect(db_url(settings), role=db.editor_role(settings)) as conn, conn.transaction():
        done = expire_cases(conn, book, _today(args.as_of), args.out)
    print(f"{len(done)} case(s) defaulted" + (": " + ", ".join(map(str, done)) if done else ""))
    return 0


def cmd_vending_import(args: argparse.Namespace, settings: Settings) -> int:
    """Import vending records."""
    from billing.feed import VendingError, import_vending
    from releve.cli import CommandError

    try:
        added, present = import_vending(db_url(settings), settings, args.file, book=_book(args))
    except VendingError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{added} vending record(s) added, {present} already present")
    return 0
