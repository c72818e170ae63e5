"""Account closure after a forced termination (the Benin utility's rule) on a real PostgreSQL."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from billing import closure, credit, ledger

from .fleet import Fleet
from .test_credit import editor, owe, run

D = Decimal
CFG = credit.load_config(credit.EXAMPLE)

pytestmark = pytest.mark.db


def deposit(db, acc, amount):
    with editor(db) as conn:
        ledger.post(conn, acc, "deposit", -D(amount), date(2025, 1, 1), book="deposit", source_key=f"dep:{acc}")


def test_two_unpaid_bills_terminate_and_a_zero_net_balance_closes_automatically(db):
    f = Fleet(db)
    acc = f.simple("zero")
    deposit(db, acc, "60.00")
    owe(db, acc, "25.00", date(2026, 3, 2), date(2026, 3, 12))
    owe(db, acc, "35.00", date(2026, 4, 2), date(2026, 4, 12))
    s = run(db, date(2026, 4, 13))
    assert s.closures == [
        "account A-zero terminated (two unpaid bills): closure case 1",
        "closure case 1 (A-zero): closed",
    ]
    assert f.one("SELECT closed_on FROM account") == date(2026, 4, 13)
    assert f.one("SELECT kind FROM work_order") == "removal"  # the meter is removed at once
    with editor(db) as conn:
        pos = ledger.balance(conn, acc, date(2026, 4, 13))
        assert (pos.balance, pos.deposit, pos.net) == (0, 0, 0)
        assert closure.list_cases(conn) == [
            (1, "A-zero", "two_unpaid_bills", date(2026, 4, 13), date(2026, 5, 13), "closed", D("60.00"), D(0))
        ]
    assert run(db, date(2026, 4, 14)).closures == []  # a closed account is not reviewed again


def test_a_debt_is_manual_for_30_days_then_deposit_offsets_it_and_the_rest_goes_to_litigation(db):
    f = Fleet(db)
    acc = f.simple("debt")
    deposit(db, acc, "20.00")
    owe(db, acc, "50.00", date(2026, 3, 2), date(2026, 3, 12))
    owe(db, acc, "50.00", date(2026, 4, 2), date(2026, 4, 12))
    s = run(db, date(2026, 4, 13))
    assert s.closures == ["account A-debt terminated (two unpaid bills): closure case 1"]
    with editor(db) as conn:
        ledger.pay(conn, "A-debt", D("30.00"), "P-1", date(2026, 4, 20))
    assert run(db, date(2026, 5, 12)).closures == []  # still within the 30 days
    s = run(db, date(2026, 5, 13))
    assert s.closures == ["closure case 1 (A-debt): litigation"]
    with editor(db) as conn:
        pos = ledger.balance(conn, acc, date(2026, 5, 13))
        # 100 owed − 30 paid = 70: the 20 deposit offsets it, 50 goes to litigation
        assert (pos.balance, pos.deposit, pos.litigation) == (0, 0, D("50.00"))
        case = closure.list_cases(conn)[0]
        assert case[5:] == ("litigation", D("20.00"), D("50.00"))
    total = f.one("SELECT sum(amount) FROM ledger_entry")
    assert total == D("100.00") - D("30.00") - D("20.00")  # nothing created or lost: the litigation book holds 50


def test_unpaid_penalty_terminates_and_a_credit_waits_for_a_refund(db):
    f = Fleet(db)
    acc = f.simple("pen")
    deposit(db, acc, "40.00")
    with editor(db) as conn:
        ledger.post(conn, acc, "penalty", D("30.00"), date(2026, 3, 1), due=date(2026, 3, 11), source_key="pen:1")
    assert run(db, date(2026, 4, 10)).closures == []  # 30 days after its due date: not yet
    s = run(db, date(2026, 4, 11))
    assert s.closures == ["account A-pen terminated (unpaid penalty): closure case 1"]
    with editor(db) as conn, conn.transaction(), pytest.raises(closure.ClosureError, match=r"in credit by 10\.00"):
        closure.settle(conn, 1, date(2026, 4, 12), force=True)
    assert run(db, date(2026, 5, 30)).closures == []  # a credit is never closed automatically
    with editor(db) as conn:
        ledger.post(conn, acc, "refund", D("10.00"), date(2026, 5, 30), book="deposit", source_key="ref:1")
    assert run(db, date(2026, 5, 31)).closures == ["closure case 1 (A-pen): closed"]


def test_open_dispute_and_indigent_hold_termination_for_unpaid_bills(db):
    f = Fleet(db)
    a = f.simple("d")
    b = f.simple("i", indigent=True)
    for acc in (a, b):
        owe(db, acc, "10.00", date(2026, 3, 2), date(2026, 3, 12))
        owe(db, acc, "10.00", date(2026, 4, 2), date(2026, 4, 12))
    with editor(db) as conn:
        credit.open_dispute(conn, "A-d", "dispute", "two bills for one month", date(2026, 4, 1))
    assert run(db, date(2026, 4, 20)).closures == []
