"""``releve account …``, ``releve credit …`` and ``releve work …``: the ledger, credit control, field work.

Exit codes: 0 done; 1 the work failed or was refused (message on stderr), also when a payment file
had rejected lines (the good lines are posted, the bad ones listed); 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from psycopg import Connection

from billing.cli import _date
from releve.cli import db_url
from releve.settings import Settings


def _money(text: str) -> Decimal:
    from billing.ledger import LedgerError, parse_amount

    try:
        return parse_amount(text)
    except LedgerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _signed_money(text: str) -> Decimal:
    from billing.ledger import LedgerError, parse_amount

    try:
        value = parse_amount(text, positive=False)
    except LedgerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if value == 0:
        raise argparse.ArgumentTypeError("an adjustment of zero moves nothing")
    return value


def _instant(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO instant: {text!r}") from exc
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"an instant needs its offset or Z: {text!r}")
    return at


def _instalment(text: str) -> tuple[date, Decimal]:
    day, _, amount = text.partition(":")
    if not amount:
        raise argparse.ArgumentTypeError(f"an instalment is DATE:AMOUNT, not {text!r}")
    return _date(day), _money(amount)


def _today(value: date | None) -> date:
    return value or datetime.now(UTC).date()


@contextmanager
def _editor(settings: Settings) -> Iterator[Connection]:
    """A transaction as the editor role; domain errors become command errors (exit 1)."""
    from billing.closure import ClosureError
    from billing.credit import CreditError
    from billing.ledger import LedgerError
    from billing.workorders import WorkOrderError
    from releve import db
    from releve.cli import CommandError
    from releve.meter_commands import MeterCommandError

    try:
        with db.connect(db_url(settings), role=db.editor_role(settings)) as conn, conn.transaction():
            yield conn
    except (LedgerError, CreditError, WorkOrderError, ClosureError, MeterCommandError) as exc:
        raise CommandError(str(exc)) from exc


def _cmd(p: argparse.ArgumentParser, func: Callable[[argparse.Namespace, Settings], int]) -> None:
    p.set_defaults(func=func)


def register(sub: Any) -> None:
    """Add ``releve account``, ``releve credit`` and ``releve work``."""
    _register_account(sub)
    _register_credit(sub)
    _register_work(sub)


# --------------------------------------------------------------------------------------------- account


def _register_account(sub: Any) -> None:
    p_acc = sub.add_parser(
        "account",
        help="account ledger: balance, statement, payments, deposits, adjustments",
        description="The account ledger: every movement is an immutable entry; mistakes are "
        "undone by reversals. Amounts are exact, in cents.",
    )
    acc = p_acc.add_subparsers(dest="account_command", metavar="ACTION", required=True)

    p = acc.add_parser("balance", help="balance, overdue, ageing (current/30/60/90+), deposit held")
    p.add_argument("account", help="account number")
    p.add_argument("--as-of", type=_date, default=None, help="day (default today)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _cmd(p, cmd_balance)

    p = acc.add_parser("statement", help="movements over a period with a running balance (text, CSV)")
    p.add_argument("account")
    p.add_argument("--from", dest="start", type=_date, required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="end", type=_date, default=None, help="last day (default today)")
    p.add_argument("--csv", type=Path, default=None, help="write the CSV here")
    p.add_argument("--text", type=Path, default=None, help="write the readable statement here (default: stdout)")
    _cmd(p, cmd_statement)

    p = acc.add_parser("pay", help="post one payment (idempotent by source and reference)")
    p.add_argument("account")
    p.add_argument("--amount", type=_money, required=True)
    p.add_argument("--reference", required=True, help="the receipt or bank reference")
    p.add_argument("--date", type=_date, default=None, help="paid on (default today)")
    p.add_argument("--source", default="cash", help="bank, agent or cash desk (default cash)")
    _cmd(p, cmd_pay)

    p = acc.add_parser(
        "import-payments", help="import a payment file: reference,account,amount,paid_at[,source][,note]"
    )
    p.add_argument("file", type=Path)
    p.add_argument("--source", default="bank", help="source when the file has no source column (default bank)")
    _cmd(p, cmd_import)

    p = acc.add_parser("deposit", help="record a deposit paid (held as security, offset at closure)")
    p.add_argument("account")
    p.add_argument("--amount", type=_money, required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--date", type=_date, default=None)
    _cmd(p, cmd_deposit)

    p = acc.add_parser("adjust", help="post an adjustment (negative: a credit to the customer)")
    p.add_argument("account")
    p.add_argument("--amount", type=_signed_money, required=True, help="signed amount, e.g. -12.50")
    p.add_argument("--reason", required=True)
    p.add_argument("--date", type=_date, default=None)
    _cmd(p, cmd_adjust)

    p = acc.add_parser("charge", help="post a charge or a penalty")
    p.add_argument("account")
    p.add_argument("--amount", type=_money, required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--penalty", action="store_true", help="a penalty (unpaid 30 days after due: termination)")
    p.add_argument("--due-days", type=int, default=10, help="due this many days after the date (10)")
    p.add_argument("--date", type=_date, default=None)
    _cmd(p, cmd_charge)

    p = acc.add_parser("refund", help="pay back a credit balance (or, with --deposit, the deposit)")
    p.add_argument("account")
    p.add_argument("--amount", type=_money, required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--deposit", action="store_true", help="refund from the deposit held")
    p.add_argument("--date", type=_date, default=None)
    _cmd(p, cmd_refund)

    p = acc.add_parser("reverse", help="undo a ledger entry with a reversal entry")
    p.add_argument("entry", type=int, help="ledger entry id")
    p.add_argument("--reason", required=True)
    p.add_argument("--date", type=_date, default=None)
    _cmd(p, cmd_reverse)


def cmd_balance(args: argparse.Namespace, settings: Settings) -> int:
    """Print an account's position."""
    from billing import ledger

    with _editor(settings) as conn:
        pos = ledger.balance(conn, ledger.account_id(conn, args.account), _today(args.as_of))
    if args.json:
        print(
            json.dumps(
                {
                    "account": pos.account,
                    "as_of": str(pos.as_of),
                    "balance": str(pos.balance),
                    "overdue": str(pos.overdue),
                    "oldest_due": str(pos.oldest_due or ""),
                    "ageing": {k: str(v) for k, v in pos.ageing.items()},
                    "deposit": str(pos.deposit),
                    "net": str(pos.net),
                    "litigation": str(pos.litigation),
                }
            )
        )
    else:
        print(pos.text())
    return 0


def cmd_statement(args: argparse.Namespace, settings: Settings) -> int:
    """Write a statement."""
    from billing import ledger

    with _editor(settings) as conn:
        st = ledger.statement(conn, ledger.account_id(conn, args.account), args.start, _today(args.end))
    if args.csv:
        args.csv.write_text(ledger.statement_csv(st), encoding="utf-8")
        print(f"wrote {args.csv}", file=sys.stderr)
    text = ledger.statement_text(st)
    if args.text:
        args.text.write_text(text, encoding="utf-8")
        print(f"wrote {args.text}", file=sys.stderr)
    elif not args.csv:
        print(text, end="")
    return 0


def cmd_pay(args: argparse.Namespace, settings: Settings) -> int:
    """Post a payment."""
    from billing import ledger

    with _editor(settings) as conn:
        eid, new = ledger.pay(conn, args.account, args.amount, args.reference, _today(args.date), args.source)
    print(f"payment {args.reference}: entry {eid}" + ("" if new else " (already posted)"))
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """Import a payment file."""
    from billing import ledger

    with _editor(settings) as conn:
        r = ledger.import_payments(conn, args.file, args.source)
    print(f"{r.added} payment(s) posted ({r.total}), {r.present} already present, {len(r.rejected)} rejected")
    for message in r.rejected:
        print(f"releve account: rejected {message}", file=sys.stderr)
    return 1 if r.rejected else 0


def _post(settings: Settings, number: str, kind: str, amount: Decimal, on: date, **kw: Any) -> int:
    from billing import ledger

    with _editor(settings) as conn:
        eid = ledger.post(conn, ledger.account_id(conn, number), kind, amount, on, **kw)
    print(f"{kind} posted: entry {eid}")
    return 0


def cmd_deposit(args: argparse.Namespace, settings: Settings) -> int:
    """Record a deposit."""
    return _post(
        settings,
        args.account,
        "deposit",
        -args.amount,
        _today(args.date),
        book="deposit",
        reference=args.reference,
        source_key=f"deposit:{args.account}:{args.reference}",
    )


def cmd_adjust(args: argparse.Namespace, settings: Settings) -> int:
    """Post an adjustment."""
    return _post(settings, args.account, "adjustment", args.amount, _today(args.date), note=args.reason)


def cmd_charge(args: argparse.Namespace, settings: Settings) -> int:
    """Post a charge or penalty."""
    from datetime import timedelta

    on = _today(args.date)
    return _post(
        settings,
        args.account,
        "penalty" if args.penalty else "charge",
        args.amount,
        on,
        note=args.reason,
        due=on + timedelta(days=args.due_days),
    )


def cmd_refund(args: argparse.Namespace, settings: Settings) -> int:
    """Post a refund."""
    return _post(
        settings,
        args.account,
        "refund",
        args.amount,
        _today(args.date),
        note=args.reason,
        book="deposit" if args.deposit else "account",
    )


def cmd_reverse(args: argparse.Namespace, settings: Settings) -> int:
    """Reverse an entry."""
    from billing import ledger

    with _editor(settings) as conn:
        eid = ledger.reverse(conn, args.entry, args.reason, _today(args.date))
    print(f"entry {args.entry} reversed by entry {eid}")
    return 0


# --------------------------------------------------------------------------------------------- credit


def _register_credit(sub: Any) -> None:
    p_cr = sub.add_parser(
        "credit",
        help="credit control: runs, cases, arrangements, disputes, indigent register",
        description="Credit control: reminder, final notice, disconnection and reconnection per "
        "customer class (a TOML file), payment arrangements, disputes, the indigent register "
        "and account closure.",
    )
    cr = p_cr.add_subparsers(dest="credit_command", metavar="ACTION", required=True)

    p = cr.add_parser("run", help="run credit control for a day (idempotent per day); write the notices")
    p.add_argument("--date", type=_date, default=None, help="the day (default today)")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="credit-control file (default ./credit.toml, else billing/credit.example.toml)",
    )
    p.add_argument("--out", type=Path, default=None, help="write notices-<date>.csv and .txt here")
    _cmd(p, cmd_credit_run)

    p = cr.add_parser("list", help="open credit cases (or closure cases)")
    p.add_argument("--all", action="store_true", help="closed cases too")
    p.add_argument("--closures", action="store_true", help="account closure cases instead")
    _cmd(p, cmd_credit_list)

    p = cr.add_parser("arrange", help="agree a payment arrangement: --instalment DATE:AMOUNT, repeated")
    p.add_argument("account")
    p.add_argument("--instalment", type=_instalment, action="append", required=True)
    p.add_argument("--date", type=_date, default=None, help="agreed on (default today)")
    _cmd(p, cmd_arrange)

    p_d = cr.add_parser("dispute", help="disputes and complaints (hold collection while open)")
    dsub = p_d.add_subparsers(dest="dispute_command", metavar="ACTION", required=True)
    p = dsub.add_parser("open", help="record a dispute or complaint")
    p.add_argument("account")
    p.add_argument("--kind", choices=("dispute", "complaint"), default="dispute")
    p.add_argument("--description", required=True)
    p.add_argument("--received-at", type=_instant, default=None, help="when it was received (default now)")
    p.add_argument("--amount", type=_money, default=None, help="the amount disputed")
    _cmd(p, cmd_dispute_open)
    p = dsub.add_parser("close", help="close a dispute: upheld, rejected or withdrawn")
    p.add_argument("dispute", type=int)
    p.add_argument("--status", choices=("upheld", "rejected", "withdrawn"), required=True)
    p.add_argument("--resolution", required=True)
    _cmd(p, cmd_dispute_close)

    p_i = cr.add_parser("indigent", help="the indigent register (free basic units, never disconnected)")
    isub = p_i.add_subparsers(dest="indigent_command", metavar="ACTION", required=True)
    p = isub.add_parser("add", help="register the customer of an account")
    p.add_argument("account")
    p.add_argument("--evidence", required=True, help="social survey, certificate …")
    p.add_argument("--expires", type=_date, default=None)
    p.add_argument("--date", type=_date, default=None)
    _cmd(p, cmd_indigent_add)
    p = isub.add_parser("remove", help="take the customer of an account off the register")
    p.add_argument("account")
    p.add_argument("--reason", required=True)
    p.add_argument("--date", type=_date, default=None)
    _cmd(p, cmd_indigent_remove)
    p = isub.add_parser("list", help="customers on the register")
    _cmd(p, cmd_indigent_list)

    p = cr.add_parser("close", help="settle a closure case by hand: deposit offset, any rest to litigation")
    p.add_argument("case", type=int)
    p.add_argument("--date", type=_date, default=None)
    _cmd(p, cmd_close)


def cmd_credit_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run credit control."""
    from billing.credit import load_config, run_credit

    try:
        cfg = load_config(args.config)
    except Exception as exc:
        from releve.cli import CommandError

        raise CommandError(str(exc)) from exc
    with _editor(settings) as conn:
        summary = run_credit(conn, cfg, _today(args.date), args.out)
    print(summary.text())
    return 0


def cmd_credit_list(args: argparse.Namespace, settings: Settings) -> int:
    """List cases."""
    from billing import closure, credit

    with _editor(settings) as conn:
        if args.closures:
            for cid, number, reason, term, due, status, offset, lit in closure.list_cases(conn, not args.all):
                print(
                    f"closure {cid} {number}: {reason.replace('_', ' ')} on {term}, settle by {due}: {status}"
                    + (f", deposit offset {offset}" if offset else "")
                    + (f", litigation {lit}" if lit else "")
                )
        else:
            for number, case, opened, steps, disconnected, last in credit.list_cases(conn, not args.all):
                print(
                    f"case {case} {number}: opened {opened}, {steps} step(s), last {last or '-'}"
                    + (", disconnected" if disconnected else "")
                )
    return 0


def cmd_arrange(args: argparse.Namespace, settings: Settings) -> int:
    """Agree an arrangement."""
    from billing.credit import arrange

    with _editor(settings) as conn:
        pid = arrange(conn, args.account, args.instalment, _today(args.date))
    print(f"arrangement {pid}: {len(args.instalment)} instalment(s)")
    return 0


def cmd_dispute_open(args: argparse.Namespace, settings: Settings) -> int:
    """Record a dispute or complaint."""
    from billing.credit import open_dispute

    with _editor(settings) as conn:
        did = open_dispute(
            conn, args.account, args.kind, args.description, args.received_at or datetime.now(UTC), args.amount
        )
    print(f"{args.kind} {did} recorded: collection on hold for {args.account} while it is open")
    return 0


def cmd_dispute_close(args: argparse.Namespace, settings: Settings) -> int:
    """Close a dispute."""
    from billing.credit import close_dispute

    with _editor(settings) as conn:
        close_dispute(conn, args.dispute, args.status, args.resolution, datetime.now(UTC))
    print(f"dispute {args.dispute} {args.status}")
    return 0


def cmd_indigent_add(args: argparse.Namespace, settings: Settings) -> int:
    """Register an indigent customer."""
    from billing.credit import register_indigent

    with _editor(settings) as conn:
        rid = register_indigent(conn, args.account, args.evidence, _today(args.date), args.expires)
    print(f"registration {rid}: the customer of {args.account} is on the indigent register")
    return 0


def cmd_indigent_remove(args: argparse.Namespace, settings: Settings) -> int:
    """End a registration."""
    from billing.credit import end_indigent

    with _editor(settings) as conn:
        end_indigent(conn, args.account, _today(args.date), args.reason)
    print(f"the customer of {args.account} is off the indigent register")
    return 0


def cmd_indigent_list(args: argparse.Namespace, settings: Settings) -> int:
    """List the register."""
    with _editor(settings) as conn:
        rows = conn.execute(
            """SELECT c.name, string_agg(a.number, ' ' ORDER BY a.number), r.registered_on, r.expires_on, r.evidence
               FROM indigent_registration r JOIN customer c ON c.id = r.customer_id
               LEFT JOIN account a ON a.customer_id = c.id
               WHERE r.ended_on IS NULL GROUP BY r.id, c.name ORDER BY c.name"""
        ).fetchall()
    for name, accounts, since, expires, evidence in rows:
        print(f"{name} ({accounts}): since {since}" + (f" until {expires}" if expires else "") + f" — {evidence}")
    return 0


def cmd_close(args: argparse.Namespace, settings: Settings) -> int:
    """Settle a closure case by hand."""
    from billing.closure import settle

    with _editor(settings) as conn:
        status = settle(conn, args.case, _today(args.date), force=True)
    print(f"closure {args.case}: {status}")
    return 0


# --------------------------------------------------------------------------------------------- work


def _register_work(sub: Any) -> None:
    from billing.workorders import KINDS

    p_w = sub.add_parser(
        "work",
        help="field work orders: list, create, assign, complete, from theft / VEE, SLA",
        description="Work orders for every field intervention, with an append-only event trail, "
        "due times and service-level timers.",
    )
    w = p_w.add_subparsers(dest="work_command", metavar="ACTION", required=True)

    p = w.add_parser("list", help="work orders, most urgent first")
    p.add_argument("--kind", choices=KINDS, default=None)
    p.add_argument("--status", choices=("open", "assigned", "awaiting_command", "done", "cancelled"), default=None)
    p.add_argument("--open", action="store_true", help="open orders only")
    _cmd(p, cmd_work_list)

    p = w.add_parser("show", help="one order and its event trail")
    p.add_argument("order", type=int)
    _cmd(p, cmd_work_show)

    p = w.add_parser("create", help="create an order (a fault report, a meter reader's note …)")
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--account", default=None, help="account number")
    p.add_argument("--meter", default=None, help="meter serial")
    p.add_argument("--description", required=True)
    p.add_argument("--source", default="manual", help="who reported it (meter reader, call centre …)")
    p.add_argument("--reported-at", type=_instant, default=None, help="when it was reported (default now)")
    p.add_argument("--priority", type=int, default=3, help="1 (urgent) … 5")
    _cmd(p, cmd_work_create)

    p = w.add_parser("assign", help="give an order to a crew or person (its routing time)")
    p.add_argument("order", type=int)
    p.add_argument("--to", dest="assignee", required=True)
    _cmd(p, cmd_work_assign)

    p = w.add_parser("complete", help="record an order's outcome (once)")
    p.add_argument("order", type=int)
    p.add_argument(
        "--outcome",
        required=True,
        help="inspection: fraud, meter_fault, nothing, no_access; check: ok or faulty; else free text",
    )
    p.add_argument("--note", default="")
    p.add_argument("--campaign", default="", help="inspection campaign (theft report)")
    p.add_argument("--penalty", type=_money, default=None, help="fraud penalty (default: the credit file's)")
    p.add_argument("--old-index", type=float, default=None, help="exchange: the old meter's final index")
    p.add_argument("--new-meter", default=None, help="exchange: the new meter's serial")
    p.add_argument("--new-index", type=float, default=None, help="exchange: the new meter's initial index")
    p.add_argument("--at", type=_instant, default=None, help="exchange: when (default now)")
    p.add_argument("--config", type=Path, default=None, help="credit-control file (fraud penalty)")
    _cmd(p, cmd_work_complete)

    p = w.add_parser("cancel", help="cancel an open order")
    p.add_argument("order", type=int)
    p.add_argument("--reason", required=True)
    _cmd(p, cmd_work_cancel)

    p = w.add_parser("from-theft", help="inspection orders for the top of a theft run, in route order")
    p.add_argument("--run", type=int, required=True, help="theft run id")
    p.add_argument("--top", type=int, default=30, help="how many candidates (inspection capacity, 30)")
    _cmd(p, cmd_work_from_theft)

    p = w.add_parser("from-vee", help="meter exchange / check orders for open VEE exceptions")
    _cmd(p, cmd_work_from_vee)

    p = w.add_parser("sync", help="complete orders whose meter command was confirmed; reopen failed ones")
    _cmd(p, cmd_work_sync)

    p = w.add_parser("sla", help="service-level breaches: routing (5 min faults), complaints (10 min), overdue")
    p.add_argument("--now", type=_instant, default=None)
    _cmd(p, cmd_work_sla)


def cmd_work_list(args: argparse.Namespace, settings: Settings) -> int:
    """List orders."""
    from billing.workorders import list_orders

    with _editor(settings) as conn:
        for o in list_orders(conn, args.status, args.kind, args.open):
            print(o.text())
    return 0


def cmd_work_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show an order's trail."""
    from billing.workorders import WorkOrderError, events, list_orders

    with _editor(settings) as conn:
        found = [o for o in list_orders(conn) if o.id == args.order]
        if not found:
            raise WorkOrderError(f"no work order {args.order}")
        print(found[0].text())
        for at, event, by, details in events(conn, args.order):
            print(f"  {at:%Y-%m-%d %H:%M:%S} {event:<18} {by}  {json.dumps(details)}")
    return 0


def cmd_work_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create an order."""
    from billing import ledger
    from billing.workorders import WorkOrderError, create

    with _editor(settings) as conn:
        acc = ledger.account_id(conn, args.account) if args.account else None
        meter = None
        if args.meter:
            row = conn.execute("SELECT id FROM meter WHERE serial = %s", (args.meter,)).fetchone()
            if row is None:
                raise WorkOrderError(f"no meter {args.meter!r}")
            meter = int(row[0])
        oid, _ = create(
            conn,
            args.kind,
            source=args.source,
            account=acc,
            meter=meter,
            description=args.description,
            priority=args.priority,
            reported_at=args.reported_at,
        )
    print(f"work order {oid} created")
    return 0


def cmd_work_assign(args: argparse.Namespace, settings: Settings) -> int:
    """Assign an order."""
    from billing.workorders import assign

    with _editor(settings) as conn:
        assign(conn, args.order, args.assignee)
    print(f"work order {args.order} assigned to {args.assignee}")
    return 0


def cmd_work_complete(args: argparse.Namespace, settings: Settings) -> int:
    """Complete an order."""
    from billing.credit import CreditError, load_config
    from billing.workorders import complete
    from releve.cli import CommandError

    details: dict[str, Any] = {
        k: v
        for k, v in (
            ("note", args.note),
            ("campaign", args.campaign),
            ("old_index", args.old_index),
            ("new_meter", args.new_meter),
            ("new_index", args.new_index),
            ("at", args.at.isoformat() if args.at else None),
        )
        if v
    }
    penalty, due_days = args.penalty, 10
    if args.outcome == "fraud":
        try:
            cfg = load_config(args.config)
        except CreditError as exc:
            raise CommandError(str(exc)) from exc
        penalty, due_days = penalty or cfg.fraud.penalty, cfg.fraud.penalty_due_days
    with _editor(settings) as conn:
        done = complete(conn, args.order, args.outcome, details=details, penalty=penalty, penalty_due_days=due_days)
    out = f"work order {args.order}: {args.outcome}"
    if done.inspection_id:
        out += f"; theft outcome {done.inspection_id} recorded"
    if done.penalty_entry:
        out += f"; penalty {penalty} posted (entry {done.penalty_entry})"
    if done.follow_up:
        out += f"; follow-up order {done.follow_up}"
    print(out)
    return 0


def cmd_work_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel an order."""
    from billing.workorders import cancel

    with _editor(settings) as conn:
        cancel(conn, args.order, args.reason)
    print(f"work order {args.order} cancelled")
    return 0


def cmd_work_from_theft(args: argparse.Namespace, settings: Settings) -> int:
    """Inspection orders from a theft run."""
    from billing.workorders import from_theft

    if args.top < 1:
        from releve.cli import CommandError

        raise CommandError("--top must be at least 1")
    with _editor(settings) as conn:
        made = from_theft(conn, args.run, args.top)
    print(f"{len(made)} inspection order(s) created" + (": " + ", ".join(map(str, made)) if made else ""))
    return 0


def cmd_work_from_vee(args: argparse.Namespace, settings: Settings) -> int:
    """Orders from VEE exceptions."""
    from billing.workorders import from_vee

    with _editor(settings) as conn:
        made = from_vee(conn)
    listed = ": " + ", ".join(map(str, made)) if made else ""
    print(f"{len(made)} meter exchange / check order(s) created{listed}")
    return 0


def cmd_work_sync(args: argparse.Namespace, settings: Settings) -> int:
    """Sync orders with their meter commands."""
    from billing.workorders import sync_commands

    with _editor(settings) as conn:
        done, reopened = sync_commands(conn)
    print(f"{done} order(s) completed by a confirmed command, {reopened} reopened")
    return 0


def cmd_work_sla(args: argparse.Namespace, settings: Settings) -> int:
    """List SLA breaches (exit 0 even when there are some: they are the answer, not a failure)."""
    from billing.workorders import sla

    with _editor(settings) as conn:
        breaches = sla(conn, args.now)
    for b in breaches:
        print(b.text())
    print(f"{len(breaches)} breach(es)")
    return 0
