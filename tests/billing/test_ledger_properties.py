"""Property tests for ledger arithmetic: balances are sums of entries; nothing creates or loses a cent."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import ledger
from billing.ledger import Item, outstanding
from releve import db as releve_db

from .fleet import Fleet

D = Decimal
cents = st.integers(min_value=1, max_value=10_000_000).map(lambda c: D(c).scaleb(-2))
DAY0 = date(2026, 1, 1)


@st.composite
def books(draw):
    """Debits and credits with due dates, some of them reversed (a reversal points at an earlier entry)."""
    n = draw(st.integers(0, 30))
    items: list[Item] = []
    for k in range(1, n + 1):
        amount = draw(cents) * draw(st.sampled_from([1, -1]))
        due = DAY0 + timedelta(days=draw(st.integers(0, 400)))
        items.append(Item(k, amount, due))
    reversible = [i for i in items if i.reverses is None]
    chosen = draw(
        st.lists(st.sampled_from(reversible), unique_by=lambda i: i.id, max_size=len(reversible))
        if reversible
        else st.just([])
    )
    for k, original in enumerate(chosen, start=n + 1):
        items.append(Item(k, -original.amount, DAY0, reverses=original.id))
    return items


@given(books())
def test_outstanding_plus_credit_equals_the_sum_of_entries(items):
    left, credit = outstanding(items)
    assert sum(left.values(), D(0)) - credit == sum((i.amount for i in items), D(0))
    assert credit >= 0 and all(v >= 0 for v in left.values())
    # a debt is outstanding only when no credit is left over (credits settle debts first)
    assert credit == 0 or all(v == 0 for v in left.values())
    # the oldest debts are settled first: once one is (partly) open, every later one is untouched
    gone = {i.reverses for i in items if i.reverses} | {i.id for i in items if i.reverses}
    debits = sorted((i for i in items if i.amount > 0 and i.id not in gone), key=lambda i: (i.due, i.id))
    opened = False
    for d in debits:
        if opened:
            assert left[d.id] == d.amount
        opened = opened or left[d.id] > 0


@given(st.integers(-1000, 1000))
def test_ageing_buckets_cover_every_day(days):
    assert ledger.bucket(days) == ("current" if days < 30 else "30" if days < 60 else "60" if days < 90 else "90+")


@given(st.text(max_size=20))
def test_parse_amount_accepts_only_exact_cents(text):
    try:
        value = ledger.parse_amount(text)
    except ledger.LedgerError:
        return
    assert value > 0 and value == value.quantize(ledger.CENT) and value.is_finite()


# --------------------------------------------------------------------------------------------- database

ops = st.lists(
    st.one_of(
        st.tuples(st.just("bill"), cents),
        st.tuples(st.just("rebill"), cents),
        st.tuples(st.just("pay"), cents),
        st.tuples(st.just("reverse"), st.integers(0, 50)),
        st.tuples(st.just("adjust"), cents.map(lambda c: -c)),
    ),
    min_size=1,
    max_size=12,
)


def _bill(conn, run, acc, total, kind="regular", replaces=None, period_end=date(2026, 3, 31)):
    row = conn.execute(
        """INSERT INTO bill (run_id, account_id, cycle, period_start, period_end, days, kind, status, replaces_bill_id,
                             tariff_code, commodity, unit, consumption, subtotal, tax, total, currency, issue_date,
                             due_date, fingerprint)
           VALUES (%s, %s, 'P', %s, %s, 30, %s, 'issued', %s, 'W', 'water', 'm3', 1, %s, 0, %s, 'X', %s, %s, %s)
           RETURNING id""",
        (
            run,
            acc,
            period_end - timedelta(days=29),
            period_end,
            kind,
            replaces,
            total,
            total,
            period_end,
            period_end + timedelta(days=10),
            f"fp{total}",
        ),
    ).fetchone()
    return row[0]


@pytest.mark.db
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops)
def test_no_sequence_of_payments_reversals_and_rebills_creates_or_loses_a_cent(db, steps):
    f = Fleet(db)
    name = f"P{next(COUNTER)}"
    acc = f.simple(name)
    number = f"A-{name}"
    expected = D(0)  # what the customer should owe, computed without the ledger
    live: list[tuple[int, D]] = []  # live bills (id, total), oldest first
    with releve_db.connect(db.url, role=releve_db.editor_role(db.settings), autocommit=True) as conn:
        run = conn.execute(
            "INSERT INTO bill_run (cycle, period_start, period_end, issue_date) "
            "VALUES ('P', '2026-03-02', '2026-03-31', '2026-04-02') RETURNING id"
        ).fetchone()[0]
        period = date(2026, 3, 31)
        for op, value in steps:
            if op == "bill":
                period += timedelta(days=30)
                live.append((_bill(conn, run, acc, value, period_end=period), value))
                expected += value
            elif op == "rebill" and live:
                old, old_total = live.pop()
                end = conn.execute("SELECT period_end FROM bill WHERE id = %s", (old,)).fetchone()[0]
                conn.execute("UPDATE bill SET status = 'cancelled' WHERE id = %s", (old,))
                new = _bill(conn, run, acc, value, "rebill", old, end)
                _bill(conn, run, acc, -old_total, "cancel", old, end)
                live.append((new, value))
                expected += value - old_total
            elif op == "pay":
                ledger.pay(conn, number, value, f"R{next(COUNTER)}", DAY0)
                expected -= value
            elif op == "adjust":
                ledger.post(conn, acc, "adjustment", value, DAY0)
                expected += value
            elif op == "reverse":
                ids = [
                    r[0]
                    for r in conn.execute(
                        """SELECT id FROM ledger_entry e WHERE account_id = %s AND kind IN ('payment', 'adjustment')
                       AND NOT EXISTS (SELECT 1 FROM ledger_entry r WHERE r.reverses_id = e.id) ORDER BY id""",
                        (acc,),
                    )
                ]
                if ids:
                    eid = ids[value % len(ids)]
                    amount = conn.execute("SELECT amount FROM ledger_entry WHERE id = %s", (eid,)).fetchone()[0]
                    ledger.reverse(conn, eid, "property test")
                    expected -= amount
            ledger.post_bills(conn, run)
            ledger.post_bills(conn, run)  # posting twice adds nothing
        pos = ledger.balance(conn, acc, date(2030, 1, 1))
        total = conn.execute(
            "SELECT coalesce(sum(amount), 0) FROM ledger_entry WHERE account_id = %s", (acc,)
        ).fetchone()[0]
    assert pos.balance == total == expected
    assert sum(pos.unpaid.values(), D(0)) - pos.credit == pos.balance


COUNTER = itertools.count()
