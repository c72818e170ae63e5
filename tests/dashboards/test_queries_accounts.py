"""The accounts page's SQL ageing is billing.ledger's rule: any ledger, any day, the same figures to the cent."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import ledger
from dashboards.queries import Pool
from dashboards.queries_accounts import AccountQueries
from releve import db as releve_db
from tests.billing.fleet import Fleet

D = Decimal
DAY0 = date(2026, 1, 1)
cents = st.integers(min_value=1, max_value=1_000_000).map(lambda c: D(c).scaleb(-2))
days = st.integers(0, 200).map(lambda n: DAY0 + timedelta(days=n))
COUNTER = itertools.count()

#: Movements: debits with or without a due date, credits, deposits, litigation, and reversals of earlier ones.
movements = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["charge", "penalty", "adjustment"]), cents, days, st.one_of(st.none(), days)),
        st.tuples(st.sampled_from(["payment", "refund_credit"]), cents, days, st.none()),
        st.tuples(st.just("deposit"), cents, days, st.none()),
        st.tuples(st.just("litigation"), cents, days, st.none()),
        st.tuples(st.just("reverse"), st.integers(0, 40).map(D), days, st.none()),
    ),
    min_size=1,
    max_size=14,
)


@pytest.mark.db
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=movements, as_of=st.integers(-10, 260).map(lambda n: DAY0 + timedelta(days=n)))
def test_the_sql_position_of_an_account_is_the_ledgers_to_the_cent(db, steps, as_of):
    f = Fleet(db)
    acc = f.simple(f"Q{next(COUNTER)}")
    with releve_db.connect(db.url, role=releve_db.editor_role(db.settings), autocommit=True) as conn:
        for kind, amount, on, due in steps:
            if kind == "reverse":
                ids = [
                    r[0]
                    for r in conn.execute(
                        """SELECT id FROM ledger_entry e WHERE account_id = %s AND kind <> 'reversal'
                       AND NOT EXISTS (SELECT 1 FROM ledger_entry r WHERE r.reverses_id = e.id) ORDER BY id""",
                        (acc,),
                    )
                ]
                if ids:
                    ledger.reverse(conn, ids[int(amount) % len(ids)], "property test", on)
            elif kind == "payment":
                ledger.post(conn, acc, "payment", -amount, on)
            elif kind == "refund_credit":
                ledger.post(conn, acc, "adjustment", -amount, on)
            elif kind == "deposit":
                ledger.post(conn, acc, "deposit", -amount, on, book="deposit")
            elif kind == "litigation":
                ledger.post(conn, acc, "litigation", amount, on, book="litigation")
            else:
                ledger.post(conn, acc, kind, amount, on, due=due)
        expected = ledger.balance(conn, acc, as_of)
    pool = Pool(db.url, releve_db.reader_role(db.settings), size=1)
    try:
        got = AccountQueries(pool).positions(as_of).get(acc)
    finally:
        pool.close()
    if got is None:  # nothing effective yet on that day
        assert (expected.balance, expected.deposit, expected.litigation) == (0, 0, 0)
        return
    ages = {"current": got["age_current"], "30": got["age_30"], "60": got["age_60"], "90+": got["age_90"]}
    assert (
        got["balance"],
        got["deposit"],
        got["litigation"],
        got["net"],
        got["overdue"],
        got["oldest_due"],
        got["credit"],
        ages,
    ) == (
        expected.balance,
        expected.deposit,
        expected.litigation,
        expected.net,
        expected.overdue,
        expected.oldest_due,
        expected.credit,
        expected.ageing,
    )
