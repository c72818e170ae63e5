"""Account closure after a forced termination (the Benin utility's rule).

Rules implemented (reviewed by every credit-control run; ``[closure]`` in the credit file):

- **Forced termination** of a postpaid account when (a) ``unpaid_bills`` (2) bills are past due and
  not fully paid, (b) its payment arrangement was broken, or (c) a penalty is still unpaid
  ``penalty_days`` (30) after its due date. An open dispute holds (a) and (c); indigent households are
  not terminated for unpaid bills (they are exempt from disconnection). Termination ends the
  contract (``account.closed_on``: no further bills) and the meter is removed at once: a ``removal``
  work order. An ``account_closure`` case is opened, to be settled within ``manual_days`` (30).
- **Automatic closure** when the net balance (owed minus the deposit held) is zero: the deposit
  offsets the debt (two ``deposit_offset`` entries: the deposit book and the account book) and the
  case is ``closed``.
- Otherwise the case is **manual**: the customer may pay, or the utility refund a credit, within the
  30 days (each run closes it automatically as soon as the net balance is zero). ``close_case`` closes
  it by hand at any time. On its due date (or by hand) a remaining debt is settled: the deposit
  offsets it and the **unpaid balance goes to litigation** (an entry moving it from the account book
  to the litigation book); the case ends as ``litigation``. A net credit in the customer's favour is
  never closed automatically: refund it first (``releve account refund``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field

from billing import ledger, workorders


class ClosureError(Exception):
    """A closure request that cannot be honoured."""


class ClosureRules(BaseModel):
    """The ``[closure]`` section of the credit-control file (``billing.credit.CreditConfig.closure``).

    It lives here, with the rules it sets, so that closure never imports credit (credit calls closure).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unpaid_bills: int = Field(2, ge=1)
    penalty_days: int = Field(30, ge=0)
    manual_days: int = Field(30, ge=0)


def _reason(
    rules: ClosureRules,
    pos: ledger.Balance,
    kinds: dict[int, tuple[str, date]],
    acc: int,
    indigent: bool,
    disputed: bool,
    on: date,
    broken: set[int],
) -> str | None:
    if acc in broken:
        return "broken_arrangement"
    if disputed or not pos.overdue:
        return None
    kinds = {e: kinds[e] for e in pos.unpaid}
    bills = [e for e, (k, due) in kinds.items() if k == "bill" and due < on]
    if len(bills) >= rules.unpaid_bills and not indigent:
        return "two_unpaid_bills"
    if any(k == "penalty" and due + timedelta(days=rules.penalty_days) < on for k, due in kinds.values()):
        return "unpaid_penalty"
    return None


def terminate(
    conn: Connection, rules: ClosureRules, acc: int, reason: str, on: date, at: datetime | None = None
) -> int:
    """Forced termination: end the contract, order the meter's removal, open the closure case."""
    row = conn.execute(
        "INSERT INTO account_closure (account_id, reason, terminated_on, manual_due) VALUES (%s, %s, %s, %s) "
        "RETURNING id",
        (acc, reason, on, on + timedelta(days=rules.manual_days)),
    ).fetchone()
    assert row is not None
    cid = int(row[0])
    conn.execute(
        "UPDATE account SET closed_on = %s WHERE id = %s AND (closed_on IS NULL OR closed_on > %s)", (on, acc, on)
    )
    meter = conn.execute(
        """SELECT i.meter_id FROM installation i JOIN account a ON a.service_point_id = i.service_point_id
           WHERE a.id = %s AND i.removed_at IS NULL""",
        (acc,),
    ).fetchone()
    if meter is not None:
        why = reason.replace("_", " ")
        order, _ = workorders.create(
            conn,
            "removal",
            source=f"closure {cid}",
            source_key=f"closure:{cid}:removal",
            account=acc,
            meter=meter[0],
            priority=1,
            now=at,
            description=f"forced termination ({why}): remove the meter",
        )
        conn.execute("UPDATE account_closure SET work_order_id = %s WHERE id = %s", (order, cid))
    return cid


def _offset_deposit(conn: Connection, cid: int, acc: int, pos: ledger.Balance, on: date) -> Decimal:
    """Set the deposit held against the debt (never beyond it)."""
    amount = min(pos.deposit, pos.balance)
    if amount <= 0:
        return Decimal(0)
    ledger.post(
        conn,
        acc,
        "deposit_offset",
        amount,
        on,
        book="deposit",
        source_key=f"closure:{cid}:deposit",
        reference=f"closure {cid}",
        note="deposit released to offset the debt",
    )
    ledger.post(
        conn,
        acc,
        "deposit_offset",
        -amount,
        on,
        source_key=f"closure:{cid}:offset",
        reference=f"closure {cid}",
        note="deposit set against the debt",
    )
    return amount


def settle(conn: Connection, cid: int, on: date, force: bool = False, pos: ledger.Balance | None = None) -> str:
    """Close case ``cid`` when its net balance is zero; with ``force`` (due date or by hand) send a debt to litigation.

    Returns the case's status afterwards. ``pos``: the account's position on ``on``, when known.
    """
    row = conn.execute(
        "SELECT account_id, status, manual_due FROM account_closure WHERE id = %s FOR UPDATE", (cid,)
    ).fetchone()
    if row is None:
        raise ClosureError(f"no closure case {cid}")
    acc, status, due = row
    if status != "open":
        return str(status)
    pos = pos or ledger.balance(conn, acc, on)
    if pos.net == 0:
        offset = _offset_deposit(conn, cid, acc, pos, on)
        conn.execute(
            "UPDATE account_closure SET status = 'closed', closed_on = %s, deposit_offset = %s, "
            "note = 'net balance zero: closed automatically' WHERE id = %s",
            (on, offset, cid),
        )
        return "closed"
    if not (force or on >= due):
        return "open"
    if pos.net < 0:
        if force:
            raise ClosureError(f"closure {cid}: the customer is in credit by {-pos.net}: refund it first")
        return "open"
    offset = _offset_deposit(conn, cid, acc, pos, on)
    rest = pos.balance - offset
    ledger.post(
        conn,
        acc,
        "litigation",
        -rest,
        on,
        source_key=f"closure:{cid}:litigation:account",
        reference=f"closure {cid}",
        note="unpaid balance handed to litigation",
    )
    ledger.post(
        conn,
        acc,
        "litigation",
        rest,
        on,
        book="litigation",
        source_key=f"closure:{cid}:litigation",
        reference=f"closure {cid}",
        note="unpaid balance handed to litigation",
    )
    conn.execute(
        "UPDATE account_closure SET status = 'litigation', closed_on = %s, deposit_offset = %s, "
        "litigation_amount = %s, note = %s WHERE id = %s",
        (on, offset, rest, "unpaid balance to litigation" + (" (by hand)" if force else ""), cid),
    )
    return "litigation"


def review(
    conn: Connection, rules: ClosureRules, on: date, broken: list[tuple[int, int]], at: datetime | None = None
) -> list[str]:
    """Terminate the accounts that meet a trigger, then settle the open cases; return what happened, in words."""
    at = at or datetime.now(UTC)
    out = []
    broken_accounts = {acc for _, acc in broken}
    disputed = {r[0] for r in conn.execute("SELECT DISTINCT account_id FROM dispute WHERE status = 'open'")}
    candidates = conn.execute(
        """SELECT a.id, a.number, c.indigent FROM account a JOIN customer c ON c.id = a.customer_id
           WHERE NOT a.prepaid AND (a.closed_on IS NULL OR a.closed_on > %s)
             AND NOT EXISTS (SELECT 1 FROM account_closure k WHERE k.account_id = a.id)
             AND (a.id IN (SELECT unnest(%s::integer[]))
                  OR EXISTS (SELECT 1 FROM ledger_entry e WHERE e.account_id = a.id))
           ORDER BY a.id""",
        (on, list(broken_accounts)),
    ).fetchall()
    positions = ledger.balances(conn, [c[0] for c in candidates], on)
    unpaid = [e for p in positions.values() if p.overdue for e in p.unpaid]
    kinds: dict[int, tuple[str, date]] = {
        int(e): (k, due)
        for e, k, due in conn.execute(
            "SELECT id, kind, coalesce(due_date, effective_date) FROM ledger_entry "
            "WHERE id IN (SELECT unnest(%s::bigint[]))",
            (unpaid,),
        )
    }
    for acc, number, indigent in candidates:
        reason = _reason(rules, positions[acc], kinds, acc, indigent, acc in disputed, on, broken_accounts)
        if reason is not None:
            cid = terminate(conn, rules, acc, reason, on, at)
            out.append(f"account {number} terminated ({reason.replace('_', ' ')}): closure case {cid}")
    cases = conn.execute(
        "SELECT k.id, a.number, a.id FROM account_closure k JOIN account a ON a.id = k.account_id "
        "WHERE k.status = 'open' ORDER BY k.id"
    ).fetchall()
    positions = ledger.balances(conn, [c[2] for c in cases], on)
    for cid, number, acc in cases:
        status = settle(conn, cid, on, pos=positions[acc])
        if status != "open":
            out.append(f"closure case {cid} ({number}): {status}")
    return out


def list_cases(
    conn: Connection, open_only: bool = False
) -> list[tuple[int, str, str, date, date, str, Decimal, Decimal]]:
    """Closure cases: (id, account, reason, terminated, manual due, status, deposit offset, litigation)."""
    return [
        tuple(r)
        for r in conn.execute(
            """SELECT k.id, a.number, k.reason, k.terminated_on, k.manual_due, k.status, k.deposit_offset,
                  k.litigation_amount
           FROM account_closure k JOIN account a ON a.id = k.account_id
           WHERE NOT %s OR k.status = 'open' ORDER BY k.id""",
            (open_only,),
        )
    ]
