"""The account ledger on a real PostgreSQL: bills from the bill run, payments, reversals, ageing, statements."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from billing import ledger
from releve import db as releve_db

from .fleet import Fleet, ts

D = Decimal

pytestmark = pytest.mark.db


def editor(db):
    return releve_db.connect(db.url, role=releve_db.editor_role(db.settings), autocommit=True)


def test_issued_cancel_and_rebill_bills_reach_the_ledger_once(db):
    f = Fleet(db)
    acc = f.simple("l")
    f.reads("M-l", [(ts(3, 2), 100.0), (ts(3, 9), 103.0), (ts(3, 16), 106.0), (ts(3, 23), 109.0), (ts(4, 1), 112.0)])
    f.run()
    f.run()  # unchanged: nothing posted twice
    with editor(db) as conn:
        pos = ledger.balance(conn, acc, date(2026, 4, 2))
        assert pos.balance == D("15.51")
        assert pos.ageing["current"] == D("15.51") and pos.overdue == 0
    # VEE corrects the billed end read: cancel + rebill reach the ledger, the cancel reversing the first bill
    f.version("M-l", ts(4, 1), 113.0, kind="adjustment", quality="S", replaced=112.0)
    assert f.run(issue=date(2026, 4, 20)).rebilled == 1
    assert f.run(issue=date(2026, 4, 21)).unchanged == 1
    entries = f.sql(
        "SELECT e.id, e.kind, e.amount, e.reverses_id, e.due_date, b.kind FROM ledger_entry e "
        "JOIN bill b ON b.id = e.bill_id ORDER BY e.id"
    )
    first, rebill, cancel = entries
    assert (first[1], first[2], first[3], first[5]) == ("bill", D("15.51"), None, "regular")
    assert (rebill[1], rebill[2], rebill[4], rebill[5]) == ("bill", D("16.77"), date(2026, 4, 30), "rebill")
    assert (cancel[1], cancel[2], cancel[3], cancel[5]) == ("reversal", D("-15.51"), first[0], "cancel")
    with editor(db) as conn:
        pos = ledger.balance(conn, acc, date(2026, 5, 10))
        assert pos.balance == D("16.77") == sum(e[2] for e in entries)
        # the cancelled bill and its reversal drop out of ageing together: only the rebill is overdue
        assert pos.unpaid == {rebill[0]: D("16.77")} and pos.oldest_due == date(2026, 4, 30)
        with pytest.raises(ledger.LedgerError, match="undone by its cancel bill"):
            ledger.reverse(conn, rebill[0], "customer complains")


def test_entries_are_immutable_and_reversed_once(db):
    f = Fleet(db)
    acc = f.simple("imm")
    with editor(db) as conn:
        eid, new = ledger.pay(conn, "A-imm", D("20.00"), "R-1", date(2026, 4, 3), "bank")
        assert new
        with pytest.raises(psycopg.errors.Error):
            conn.execute("UPDATE ledger_entry SET amount = -1 WHERE id = %s", (eid,))
    with db.connect() as conn, pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("DELETE FROM ledger_entry WHERE id = %s", (eid,))
    with editor(db) as conn:
        rev = ledger.reverse(conn, eid, "cheque bounced", date(2026, 4, 5))
        with pytest.raises(ledger.LedgerError, match="already reversed"):
            ledger.reverse(conn, eid, "again")
        with pytest.raises(ledger.LedgerError, match="itself a reversal"):
            ledger.reverse(conn, rev, "undo the undo")
        assert ledger.balance(conn, acc, date(2026, 4, 30)).balance == 0
        # the same payment reference again is recognised; with other values it is refused
        assert ledger.pay(conn, "A-imm", D("20.00"), "R-1", date(2026, 4, 3), "bank") == (eid, False)
        with pytest.raises(ledger.LedgerError, match="already posted with other values"):
            ledger.pay(conn, "A-imm", D("25.00"), "R-1", date(2026, 4, 3), "bank")


def test_payment_file_import_is_idempotent_and_keeps_bad_lines(db, tmp_path):
    f = Fleet(db)
    acc = f.simple("p1")
    f.simple("p2")
    with editor(db) as conn:
        ledger.post(conn, acc, "bill", D("50.00"), date(2026, 1, 5), due=date(2026, 1, 15), source_key="t:1")
        ledger.post(conn, acc, "bill", D("30.00"), date(2026, 2, 5), due=date(2026, 2, 15), source_key="t:2")
    path = tmp_path / "bank.csv"
    path.write_bytes((Path(__file__).parent / "data" / "payments_hostile.csv").read_bytes())
    with editor(db) as conn:
        r = ledger.import_payments(conn, path)
        assert (r.added, r.present, r.total) == (2, 0, D("52.50"))
        assert [m.split(":")[1] for m in r.rejected] == [str(n) for n in range(4, 14)]
        assert "no account 'A-nope'" in r.rejected[0]
        assert (
            "implausibly large" in r.rejected[1]
            and "more than 2 decimals" in r.rejected[2]
            and "must be positive" in r.rejected[3]
        )
        assert "needs its offset" in r.rejected[4] and "needs its reference" in r.rejected[5]
        assert "not a finite number" in r.rejected[6] and "more fields than the header" in r.rejected[7]
        assert "not a number: '1,000.00'" in r.rejected[8] and "not an ISO date" in r.rejected[9]
        again = ledger.import_payments(conn, path)
        assert (again.added, again.present) == (0, 2)
        pos = ledger.balance(conn, acc, date(2026, 4, 20))
        # 40 paid settles the January bill first: 10 of it and the February bill remain, aged by due date
        assert pos.balance == D("40.00") and pos.overdue == D("40.00")
        assert pos.ageing == {"current": D(0), "30": D(0), "60": D("30.00"), "90+": D("10.00")}
        assert pos.oldest_due == date(2026, 1, 15)
    kept = f.sql("SELECT origin, reason FROM rejected_input WHERE source = 'payments' ORDER BY id")
    assert [o for o, _ in kept[:10]] == [f"bank.csv:{n}" for n in range(4, 14)]
    with editor(db) as conn:
        missing = tmp_path / "bad.csv"
        missing.write_text("ref,account\nx,y\n")
        with pytest.raises(ledger.LedgerError, match="missing column"):
            ledger.import_payments(conn, missing)


def test_statement_with_deposit_and_prepaid_vending(db):
    f = Fleet(db)
    acc = f.simple("st")
    pp = f.simple("pp", tariff="E", commodity="electricity", prepaid=True)
    f.sql(
        "INSERT INTO vending (account_id, vended_at, units, amount, token) VALUES (%s, %s, 50, 10.00, 'T1')",
        (pp, ts(3, 3)),
    )
    with editor(db) as conn:
        ledger.post(conn, acc, "deposit", D("-25.00"), date(2026, 2, 1), book="deposit", source_key="deposit:D1")
        ledger.post(conn, acc, "bill", D("40.00"), date(2026, 2, 5), due=date(2026, 2, 15), source_key="t:1")
        ledger.pay(conn, "A-st", D("15.00"), "R9", date(2026, 3, 1))
        ledger.post(conn, acc, "adjustment", D("-5.00"), date(2026, 3, 2), note="meter read wrong")
        st = ledger.statement(conn, acc, date(2026, 2, 1), date(2026, 3, 31))
        assert (st.opening, st.closing) == (D(0), D("20.00"))
        assert [(li.kind, li.amount, li.balance) for li in st.lines] == [
            ("deposit", D("-25.00"), None),
            ("bill", D("40.00"), D("40.00")),
            ("payment", D("-15.00"), D("25.00")),
            ("adjustment", D("-5.00"), D("20.00")),
        ]
        assert st.position.deposit == D("25.00") and st.position.net == D("-5.00")
        csv_text = ledger.statement_csv(st)
        assert csv_text.splitlines()[0] == ",".join(ledger.STATEMENT_COLUMNS)
        assert csv_text.splitlines()[-1].endswith(",20.00")
        text = ledger.statement_text(st)
        assert "Amount owed: 20.00" in text and "deposit held: 25.00" in text
        prepaid = ledger.statement(conn, pp, date(2026, 3, 1), date(2026, 3, 31))
        assert [(li.kind, li.book, li.amount, li.units, li.balance) for li in prepaid.lines] == [
            ("vending", "prepaid", D("10.00"), D(50), None)
        ]
        assert prepaid.closing == 0
