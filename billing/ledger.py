"""The account ledger: immutable money movements, balances, ageing, payments and statements.

Rules implemented:

- Every movement is one ``ledger_entry`` row in ``numeric`` (``Decimal`` here, never a float):
  bills, payments, deposits, adjustments, refunds, penalties, charges. Positive = the customer owes
  more, negative = a credit. Entries are never changed or deleted (a database trigger refuses it);
  a mistake is undone by a **reversal**: a new entry of the opposite amount pointing at the original
  (``reverses_id``, unique: an entry is reversed at most once; a reversal is never reversed; a bill
  is undone only by its cancel bill, so the ledger never disagrees with the bills).
- Books: ``account`` (receivable), ``deposit`` (security held: a paid deposit is a negative entry;
  the deposit held is minus its sum), ``litigation`` (debt handed over at closure). The balance of a
  book is the sum of its entries, always.
- Postings are idempotent by ``source_key``: ``bill:<bill id>``, ``payment:<source>:<reference>``,
  ``deposit:<reference>`` …; posting the same key twice adds nothing and returns the first entry.
- Bills: each bill a run issues posts its total due on its due date (``bill:<id>``); a ``cancel``
  bill posts as the reversal of the cancelled bill's entry; the ``rebill`` posts as a new bill.
- Ageing: credits (payments, reversals of debits …) settle the oldest debts first (by due date, then
  entry); a reversed entry and its reversal drop out of ageing together. Each debit's outstanding
  part is aged by days past its due date (the effective date when it has none) on the given day:
  ``current`` (not yet due or < 30 days), ``30`` (30–59), ``60`` (60–89), ``90+``.
- Prepaid vending is paid up front: it appears in statements (view ``account_activity``, book
  ``prepaid``) but never in the amount owed.
- Payment files (CSV, header required): ``reference,account,amount,paid_at[,source][,note]``.
  Each line is checked alone; good lines are posted, bad lines are reported with file and line and
  kept in ``rejected_input`` (source ``payments``), never blocking the good ones. Re-importing a
  file adds nothing twice (the key is the payment's source and reference).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from psycopg import Connection

#: The money quantum of amounts typed in or imported (cents).
CENT = Decimal("0.01")
#: No single movement reaches this (a typo or a hostile file, not a payment).
MAX_AMOUNT = Decimal("1e12")
BUCKETS = ("current", "30", "60", "90+")
KINDS = (
    "bill",
    "payment",
    "deposit",
    "adjustment",
    "refund",
    "penalty",
    "charge",
    "reversal",
    "deposit_offset",
    "litigation",
)
PAYMENT_COLUMNS = ("reference", "account", "amount", "paid_at")


class LedgerError(Exception):
    """A posting or query that cannot be done (unknown account, bad amount, double reversal …)."""


def parse_amount(text: str, where: str = "amount", positive: bool = True) -> Decimal:
    """An exact amount in cents from text; refuses floats' garbage, NaN, infinities and fractions of cents."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise LedgerError(f"{where}: not a number: {text!r}") from exc
    if not value.is_finite():
        raise LedgerError(f"{where}: not a finite number: {text!r}")
    if abs(value) >= MAX_AMOUNT:
        raise LedgerError(f"{where}: implausibly large amount: {text!r}")
    if value != value.quantize(CENT):
        raise LedgerError(f"{where}: more than 2 decimals: {text!r}")
    if positive and value <= 0:
        raise LedgerError(f"{where}: must be positive: {text!r}")
    return value.quantize(CENT)


# --------------------------------------------------------------------------------------------- posting


def account_id(conn: Connection, number: str) -> int:
    """The id of account ``number``."""
    row = conn.execute("SELECT id FROM account WHERE number = %s", (number,)).fetchone()
    if row is None:
        raise LedgerError(f"no account {number!r}")
    return int(row[0])


def post(
    conn: Connection,
    account: int,
    kind: str,
    amount: Decimal,
    effective: date,
    *,
    book: str = "account",
    due: date | None = None,
    reference: str = "",
    source_key: str | None = None,
    note: str = "",
    bill_id: int | None = None,
    reverses: int | None = None,
) -> int:
    """Post one entry; with a ``source_key`` already posted, nothing is added and the first entry's id returned."""
    if kind not in KINDS:
        raise LedgerError(f"unknown entry kind {kind!r}")
    if amount == 0:
        raise LedgerError("an entry of zero moves nothing")
    row = conn.execute(
        """INSERT INTO ledger_entry (account_id, book, kind, amount, effective_date, due_date, reference, source_key,
                                     note, bill_id, reverses_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (source_key) DO NOTHING RETURNING id""",
        (account, book, kind, amount, effective, due, reference, source_key, note, bill_id, reverses),
    ).fetchone()
    if row is not None:
        return int(row[0])
    found = conn.execute("SELECT id FROM ledger_entry WHERE source_key = %s", (source_key,)).fetchone()
    assert found is not None
    return int(found[0])


def reverse(conn: Connection, entry: int, reason: str, on: date | None = None) -> int:
    """Undo entry ``entry`` with a reversal entry of the opposite amount in the same book."""
    row = conn.execute(
        "SELECT account_id, book, kind, amount, reverses_id, reference FROM ledger_entry WHERE id = %s",
        (entry,),
    ).fetchone()
    if row is None:
        raise LedgerError(f"no ledger entry {entry}")
    acc, book, kind, amount, reverses, reference = row
    if reverses is not None or kind == "reversal":
        raise LedgerError(f"entry {entry} is itself a reversal: post a new entry instead")
    if kind == "bill":
        raise LedgerError(
            f"entry {entry} is a bill: a bill is undone by its cancel bill (re-run the cycle after "
            "correcting the data), or corrected with an adjustment"
        )
    if conn.execute("SELECT 1 FROM ledger_entry WHERE reverses_id = %s", (entry,)).fetchone():
        raise LedgerError(f"entry {entry} is already reversed")
    return post(
        conn,
        acc,
        "reversal",
        -Decimal(amount),
        on or datetime.now(UTC).date(),
        book=book,
        reference=reference,
        note=reason,
        reverses=entry,
        source_key=f"reversal:{entry}",
    )


def post_bills(conn: Connection, run_id: int) -> int:
    """Post the bills issued by bill run ``run_id`` (idempotent); return the number of entries added.

    A ``cancel`` bill reverses the cancelled bill's entry (or posts its negative total when that bill
    was issued before the ledger existed); every other issued bill posts its total on its due date.
    """
    cur = conn.execute(
        """INSERT INTO ledger_entry (account_id, book, kind, amount, effective_date, due_date, reference, source_key,
                                     bill_id, reverses_id, note)
           SELECT b.account_id, 'account', CASE WHEN o.id IS NULL THEN 'bill' ELSE 'reversal' END, b.total,
                  b.issue_date, CASE WHEN o.id IS NULL THEN b.due_date END,
                  'bill ' || b.id || ' ' || b.period_start || '–' || b.period_end, 'bill:' || b.id, b.id, o.id,
                  b.kind
           FROM bill b
           LEFT JOIN ledger_entry o ON b.kind = 'cancel' AND o.source_key = 'bill:' || b.replaces_bill_id
                                   AND NOT EXISTS (SELECT 1 FROM ledger_entry r WHERE r.reverses_id = o.id)
           WHERE b.run_id = %s AND b.issue_date IS NOT NULL AND b.total <> 0
           ORDER BY b.id
           ON CONFLICT (source_key) DO NOTHING""",
        (run_id,),
    )
    return cur.rowcount


# --------------------------------------------------------------------------------------------- balances


@dataclass(frozen=True)
class Item:
    """What ageing needs of one entry of the account book."""

    id: int
    amount: Decimal
    due: date
    reverses: int | None = None


def outstanding(items: Iterable[Item]) -> tuple[dict[int, Decimal], Decimal]:
    """Settle credits against the oldest debits first: (outstanding part per debit, credit left over).

    A reversed entry and its reversal are left out together. Always
    ``sum(outstanding) - left over == sum of the amounts``.
    """
    items = list(items)
    gone = {i.reverses for i in items if i.reverses is not None}
    live = [i for i in items if i.reverses is None and i.id not in gone]
    credit = -sum((i.amount for i in live if i.amount < 0), Decimal(0))
    out: dict[int, Decimal] = {}
    for d in sorted((i for i in live if i.amount > 0), key=lambda i: (i.due, i.id)):
        take = min(credit, d.amount)
        out[d.id] = d.amount - take
        credit -= take
    return out, credit


def bucket(days_past_due: int) -> str:
    """The ageing bucket of a debt ``days_past_due`` days past its due date (negative: not yet due)."""
    if days_past_due < 30:
        return "current"
    if days_past_due < 60:
        return "30"
    if days_past_due < 90:
        return "60"
    return "90+"


@dataclass
class Balance:
    """An account's position on a day."""

    account: str
    as_of: date
    balance: Decimal = Decimal(0)  # owed on the account book (negative: in credit)
    deposit: Decimal = Decimal(0)  # deposit held
    litigation: Decimal = Decimal(0)  # handed over to litigation
    ageing: dict[str, Decimal] = field(default_factory=lambda: {b: Decimal(0) for b in BUCKETS})
    credit: Decimal = Decimal(0)  # credit not yet set against a debt
    overdue: Decimal = Decimal(0)  # outstanding past its due date
    oldest_due: date | None = None  # due date of the oldest outstanding debt past due
    unpaid: dict[int, Decimal] = field(default_factory=dict)  # entry id -> outstanding part

    @property
    def net(self) -> Decimal:
        """What the customer owes once the deposit held is set against it."""
        return self.balance - self.deposit

    def text(self) -> str:
        """A human summary."""
        ages = ", ".join(f"{b} {v}" for b, v in self.ageing.items())
        return (
            f"{self.account} on {self.as_of}: balance {self.balance} (overdue {self.overdue}; {ages}); "
            f"deposit held {self.deposit}; net {self.net}"
            + (f"; litigation {self.litigation}" if self.litigation else "")
        )


def balance(conn: Connection, account: int, as_of: date | None = None) -> Balance:
    """Balance, deposit, litigation and ageing of ``account`` from its entries effective up to ``as_of``."""
    found = balances(conn, [account], as_of)
    if account not in found:
        raise LedgerError(f"no account id {account}")
    return found[account]


def balances(conn: Connection, accounts: list[int], as_of: date | None = None) -> dict[int, Balance]:
    """:func:`balance` of many accounts with one query (credit-control runs, closure reviews)."""
    as_of = as_of or datetime.now(UTC).date()
    out = {
        int(i): Balance(n, as_of)
        for i, n in conn.execute(
            "SELECT id, number FROM account WHERE id IN (SELECT unnest(%s::integer[]))", (accounts,)
        )
    }
    items: dict[int, list[Item]] = {a: [] for a in out}
    for acc, eid, book, amount, eff, due, reverses in conn.execute(
        """SELECT account_id, id, book, amount, effective_date, due_date, reverses_id FROM ledger_entry
           WHERE account_id IN (SELECT unnest(%s::integer[])) AND effective_date <= %s ORDER BY account_id, id""",
        (accounts, as_of),
    ):
        pos = out[acc]
        if book == "deposit":
            pos.deposit -= amount
        elif book == "litigation":
            pos.litigation += amount
        else:
            pos.balance += amount
            items[acc].append(Item(eid, amount, due or eff, reverses))
    for acc, pos in out.items():
        _age(pos, items[acc])
    return out


def _age(pos: Balance, items: list[Item]) -> None:
    left, pos.credit = outstanding(items)
    due_of = {i.id: i.due for i in items}
    for eid, owed in left.items():
        if owed == 0:
            continue
        pos.unpaid[eid] = owed
        late = (pos.as_of - due_of[eid]).days
        pos.ageing[bucket(late)] += owed
        if late > 0:
            pos.overdue += owed
            pos.oldest_due = min(pos.oldest_due or due_of[eid], due_of[eid])


# --------------------------------------------------------------------------------------------- payments


def pay(
    conn: Connection, number: str, amount: Decimal, reference: str, paid_on: date, source: str = "cash", note: str = ""
) -> tuple[int, bool]:
    """Post a payment; return (entry id, True when new). Idempotent by (source, reference)."""
    if amount <= 0:
        raise LedgerError(f"payment {reference!r}: amount must be positive, not {amount}")
    if not reference.strip():
        raise LedgerError("a payment needs its reference (the bank's or agent's receipt number)")
    acc = account_id(conn, number)
    key = f"payment:{source}:{reference.strip()}"
    before = conn.execute("SELECT id, account_id, amount FROM ledger_entry WHERE source_key = %s", (key,)).fetchone()
    if before is not None:
        if before[1] != acc or Decimal(before[2]) != -amount:
            raise LedgerError(
                f"payment {reference!r} from {source} was already posted with other values "
                f"(entry {before[0]}: {-Decimal(before[2])} on account id {before[1]})"
            )
        return int(before[0]), False
    return post(
        conn, acc, "payment", -amount, paid_on, reference=reference.strip(), source_key=key, note=note or source
    ), True


@dataclass
class ImportResult:
    """What a payment file import did."""

    added: int = 0
    present: int = 0
    total: Decimal = Decimal(0)
    rejected: list[str] = field(default_factory=list)


def _instant(text: str, where: str) -> date:
    text = text.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise LedgerError(f"{where}: not an ISO date or instant: {text!r}") from exc
    if at.tzinfo is None:
        raise LedgerError(f"{where}: an instant needs its offset or Z: {text!r}")
    return at.astimezone(UTC).date()


def import_payments(conn: Connection, path: Path, source: str = "bank") -> ImportResult:
    """Post the payments of a CSV file (see the module docstring); bad lines are reported and kept."""
    result = ImportResult()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{path}: cannot read: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in PAYMENT_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise LedgerError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
    for n, row in enumerate(reader, start=2):
        where = f"{path.name}:{n}"
        try:
            if None in row:
                raise LedgerError(f"{where}: more fields than the header")
            amount = parse_amount(row["amount"] or "", f"{where}: amount")
            paid_on = _instant(row["paid_at"] or "", f"{where}: paid_at")
            src = (row.get("source") or "").strip() or source
            with conn.transaction():
                _, new = pay(
                    conn,
                    (row["account"] or "").strip(),
                    amount,
                    row["reference"] or "",
                    paid_on,
                    src,
                    (row.get("note") or "").strip(),
                )
        except LedgerError as exc:
            message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            result.rejected.append(message)
            raw = ",".join(f"{k}={v}" for k, v in row.items())
            conn.execute(
                "INSERT INTO rejected_input (source, origin, reason, payload) VALUES ('payments', %s, %s, %s)",
                (where, message, raw),
            )
            continue
        if new:
            result.added += 1
            result.total += amount
        else:
            result.present += 1
    return result


# --------------------------------------------------------------------------------------------- statements


@dataclass
class StatementLine:
    """One line of a statement."""

    on: date
    kind: str
    book: str
    reference: str
    note: str
    amount: Decimal | None
    balance: Decimal | None
    due: date | None = None
    units: Decimal | None = None


@dataclass
class Statement:
    """An account's movements over a period, with opening and closing balances (account book)."""

    account: str
    customer: str
    start: date
    end: date
    opening: Decimal
    closing: Decimal
    lines: list[StatementLine]
    position: Balance


def statement(conn: Connection, account: int, start: date, end: date) -> Statement:
    """Movements effective in ``[start, end]`` (ledger and prepaid vending), running balance of the account book."""
    if end < start:
        raise LedgerError(f"statement period ends ({end}) before it starts ({start})")
    row = conn.execute(
        "SELECT a.number, c.name FROM account a JOIN customer c ON c.id = a.customer_id WHERE a.id = %s", (account,)
    ).fetchone()
    if row is None:
        raise LedgerError(f"no account id {account}")
    opening_row = conn.execute(
        "SELECT coalesce(sum(amount), 0) FROM ledger_entry WHERE account_id = %s AND book = 'account' "
        "AND effective_date < %s",
        (account, start),
    ).fetchone()
    assert opening_row is not None
    running = Decimal(opening_row[0])
    opening = running
    lines = []
    for eff, book, kind, amount, due, reference, note, units in conn.execute(
        """SELECT effective_date, book, kind, amount, due_date, reference, note, units FROM account_activity
           WHERE account_id = %s AND effective_date BETWEEN %s AND %s
           ORDER BY effective_date, posted_at, entry_id NULLS LAST""",
        (account, start, end),
    ):
        amount = None if amount is None else Decimal(amount)
        if book == "account" and amount is not None:
            running += amount
        lines.append(
            StatementLine(
                eff,
                kind,
                book,
                reference or "",
                note or "",
                amount,
                running if book == "account" else None,
                due,
                None if units is None else Decimal(units),
            )
        )
    return Statement(row[0], row[1], start, end, opening, running, lines, balance(conn, account, end))


STATEMENT_COLUMNS = ("account", "date", "book", "kind", "reference", "note", "due_date", "amount", "units", "balance")


def statement_csv(st: Statement) -> str:
    """The statement as CSV (amounts as exact decimal strings; an opening and a closing row)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(STATEMENT_COLUMNS)
    w.writerow([st.account, st.start, "account", "opening", "", "", "", "", "", st.opening])
    for li in st.lines:
        w.writerow(
            [
                st.account,
                li.on,
                li.book,
                li.kind,
                li.reference,
                li.note,
                li.due or "",
                "" if li.amount is None else li.amount,
                "" if li.units is None else li.units,
                "" if li.balance is None else li.balance,
            ]
        )
    w.writerow([st.account, st.end, "account", "closing", "", "", "", "", "", st.closing])
    return buf.getvalue()


def statement_text(st: Statement, currency: str = "") -> str:
    """The statement as readable text (for print or a mailing)."""
    cur = f" {currency}" if currency else ""
    out = [
        f"Statement of account {st.account} — {st.customer}",
        f"Period {st.start} to {st.end}",
        "",
        f"{'date':<10}  {'movement':<14}  {'reference':<30}  {'amount':>12}  {'balance':>12}",
        f"{st.start!s:<10}  {'opening':<14}  {'':<30}  {'':>12}  {st.opening:>12}",
    ]
    for li in st.lines:
        what = li.kind if li.book == "account" else f"{li.kind} ({li.book})"
        amount = "" if li.amount is None else f"{li.amount}"
        if li.units is not None:
            what, amount = f"{li.kind} {li.units} u", amount
        bal = "" if li.balance is None else f"{li.balance}"
        out.append(f"{li.on!s:<10}  {what:<14.14}  {li.reference:<30.30}  {amount:>12}  {bal:>12}")
    p = st.position
    out += [
        f"{st.end!s:<10}  {'closing':<14}  {'':<30}  {'':>12}  {st.closing:>12}",
        "",
        f"Amount owed{cur}: {st.closing}   overdue: {p.overdue}   deposit held: {p.deposit}",
        "Ageing: " + ", ".join(f"{b} {v}" for b, v in p.ageing.items()),
    ]
    return "\n".join(out) + "\n"
