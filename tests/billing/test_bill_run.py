"""Bill runs on a hand-built fleet in a real PostgreSQL: every rule with exact amounts."""

from __future__ import annotations

import csv
import json
from datetime import date
from decimal import Decimal

import pytest

from billing import tenant
from releve import db as releve_db

from .fleet import BOOK, ISSUE, Fleet, ts

D = Decimal

pytestmark = pytest.mark.db


def codes(bill):
    return sorted({r.split(":")[0] for r in bill[7]})


def test_a_plain_bill_its_due_date_freeze_feed_and_an_idempotent_rerun(db, tmp_path):
    f = Fleet(db)
    f.simple("plain")
    f.reads("M-plain", [(ts(3, 2), 100.0), (ts(3, 15), 105.0), (ts(4, 1), 112.0)])
    s = f.run(out=tmp_path)
    assert (s.accounts, s.issued, s.held) == (1, 1, 0)
    b = f.live("A-plain")
    # 12 m3: fixed 4.50 + 6 × 0.50 + 6 × 1.20 = 14.70; VAT 5.5 % = 0.8085 -> 0.81
    assert (b[1], b[2], b[3], b[4], b[5], b[6]) == ("regular", "issued", D("12.000"), D("14.70"), D("0.81"), D("15.51"))
    assert (b[8], b[9]) == (ISSUE, date(2026, 4, 12))
    assert f.determinants(b[0]) == [("M-plain", D("100.000"), D("112.000"), "actual", "actual", D(1), D("12.000"))]
    assert f.sql("SELECT frozen_to, reference FROM reading_freeze") == [(ts(4, 1), f"bill {b[0]}")]
    with db.connect() as conn:
        assert conn.execute("SELECT reading_is_frozen(m.id, NULL, %s) FROM meter m", (ts(3, 20),)).fetchone()[0]
    with (tmp_path / f"bills-A-2026-03-31-run{s.run_id}.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["account"], r["total"], r["due_date"], r["start_quality"]) for r in rows] == [
        ("A-plain", "15.51", "2026-04-12", "actual")
    ]
    doc = json.loads((tmp_path / f"bills-A-2026-03-31-run{s.run_id}.json").read_text())
    assert doc["bills"][0]["lines"][0]["code"] == "fixed" and doc["bills"][0]["determinants"][0]["meter"] == "M-plain"
    again = f.run()
    assert (again.unchanged, again.issued, again.held, again.rebilled) == (1, 0, 0, 0)
    assert len(f.bills("A-plain")) == 1


def test_meter_exchange_inside_the_cycle_uses_removal_and_install_indexes(db):
    f = Fleet(db)
    sp = f.point("SP-x")
    f.meter("OLD")
    f.meter("NEW", multiplier=1)
    f.install("OLD", sp, at=ts(1, 1), removed=ts(3, 16), removal_index=520.5)
    f.install("NEW", sp, at=ts(3, 16), index=0.0)
    f.account("A-x", sp, "W")
    f.reads("OLD", [(ts(3, 2), 500.0), (ts(3, 10), 512.0)])
    f.reads("NEW", [(ts(3, 20), 3.0), (ts(4, 1), 9.5)])
    f.run()
    b = f.live("A-x")
    assert f.determinants(b[0]) == [
        ("OLD", D("500.000"), D("520.500"), "actual", "removal", D(1), D("20.500")),
        ("NEW", D("0.000"), D("9.500"), "install", "actual", D(1), D("9.500")),
    ]
    # 30 m3 > lifeline limit: 6 × 1.20 + 14 × 1.20 + 10 × 2.40 + 4.50 = 52.50; VAT 2.8875 -> 2.89
    assert (b[2], b[3], b[4], b[5], b[6]) == ("issued", D("30.000"), D("52.50"), D("2.89"), D("55.39"))


def test_interpolated_ends_multiplier_and_mid_cycle_tariff_change(db):
    f = Fleet(db)
    f.simple("interp", tariff="W2", multiplier=1)
    # start: 100 at 1 Mar 12:00, 104 at 3 Mar 12:00 -> 101 at 2 Mar 00:00; end: 107 and 111 around 1 Apr -> 109
    f.reads("M-interp", [(ts(3, 1, 12), 100.0), (ts(3, 3, 12), 104.0), (ts(3, 31), 107.0), (ts(4, 2), 111.0)])
    f.run()
    b = f.live("A-interp")
    assert f.determinants(b[0]) == [
        ("M-interp", D("101.000"), D("109.000"), "interpolated", "interpolated", D(1), D("8.000"))
    ]
    # 10 days old tariff (2.667 m3), 20 days new (5.333 m3):
    # old: fixed 1.50, 2.000 × 0.50 = 1.00, 0.667 × 1.20 = 0.80 -> 3.30, VAT 0.18
    # new: fixed 4.00, 4.000 × 0.60 = 2.40, 1.333 × 1.50 = 2.00 -> 8.40, VAT 0.46
    assert (b[4], b[5], b[6]) == (D("11.70"), D("0.64"), D("12.34"))


def test_electricity_multiplier(db):
    f = Fleet(db)
    f.simple("ct", tariff="E", commodity="electricity", multiplier=40)
    f.reads("M-ct", [(ts(3, 2), 1000.0), (ts(4, 1), 1012.5)], commodity="electricity")
    f.run()
    b = f.live("A-ct")
    # 12.5 × 40 = 500 kWh: 8.00 + 100 × 0.08 + 300 × 0.18 + 100 × 0.25 = 95.00; VAT 19.00
    assert f.determinants(b[0])[0][5:] == (D(40), D("500.000"))
    assert (b[3], b[4], b[5], b[6]) == (D("500.000"), D("95.00"), D("19.00"), D("114.00"))


def test_holds_estimated_exceptions_no_read_and_band(db):
    f = Fleet(db)
    # estimated end: 1 of 3 reads is a VEE estimate (33 % > 25 %)
    f.simple("est")
    f.reads("M-est", [(ts(3, 2), 10.0), (ts(3, 16), 15.0)])
    f.version("M-est", ts(4, 1), 20.0)  # a gap estimate, no raw read
    # an open VEE exception on the meter inside the cycle
    f.simple("exc")
    f.reads("M-exc", [(ts(3, 2), 10.0), (ts(3, 16), 15.0), (ts(4, 1), 20.0)])
    exc = f.exception("M-exc", ts(3, 16))
    # no read for too long: 1 Jan then 20 Apr
    f.simple("silent")
    f.reads("M-silent", [(ts(1, 1), 10.0), (ts(4, 20), 30.0)])
    # band: 10 m3 in February's cycle, then 40 m3 (> 3 × 10)
    f.simple("band")
    f.reads("M-band", [(ts(1, 31), 0.0), (ts(3, 2), 10.0), (ts(4, 1), 50.0)])
    f.run(period_end=date(2026, 3, 1), issue=date(2026, 3, 3))
    s = f.run()
    est, exc_bill, silent, band = (f.live(n) for n in ("A-est", "A-exc", "A-silent", "A-band"))
    assert (est[2], codes(est)) == ("held", ["estimated"])
    assert "33.3% of 3 reads" in est[7][0]
    assert f.determinants(est[0])[0][3:5] == ("actual", "estimated")
    assert (exc_bill[2], codes(exc_bill)) == ("held", ["vee_exceptions"])
    assert (silent[2], codes(silent)) == ("held", ["no_read"])
    assert (band[2], codes(band)) == ("held", ["band"])
    assert band[7] == ["band: consumption 40.000 outside 3.000–30.000 (expected 10.000 from 1 bill(s))"]
    assert s.held == 4 and s.issued == 0
    assert (est[8], est[9]) == (None, None)  # a held bill is not issued
    # held bills freeze nothing; once the exception is resolved, the re-run issues the bill
    assert (
        f.one(
            "SELECT count(*) FROM reading_freeze WHERE reference <> %s",
            (f"bill {f.bills('A-band', date(2026, 3, 1))[0][0]}",),
        )
        == 0
    )
    f.sql("UPDATE vee_exception SET status = 'accepted' WHERE id = %s", (exc,))
    s2 = f.run()
    assert (s2.issued, s2.held, s2.unchanged) == (1, 0, 3)
    statuses = [(b[1], b[2]) for b in f.bills("A-exc")]
    assert statuses == [("regular", "superseded"), ("regular", "issued")]
    assert f.live("A-exc")[6] == D("12.98")  # 10 m3: 4.50 + 3.00 + 4 × 1.20 = 12.30; VAT 0.6765 -> 0.68


def test_validated_data_changing_after_billing_gives_cancel_and_rebill(db):
    f = Fleet(db)
    f.simple("adj")
    # five reads, so that one edited read (20 %) stays under the 25 % estimated/edited gate
    f.reads("M-adj", [(ts(3, 2), 100.0), (ts(3, 9), 103.0), (ts(3, 16), 106.0), (ts(3, 23), 109.0), (ts(4, 1), 112.0)])
    f.run()
    first = f.live("A-adj")
    assert f.run().unchanged == 1
    # VEE corrects the frozen end read: an adjustment version (the billed value stays in validated_reading)
    f.version("M-adj", ts(4, 1), 113.0, kind="adjustment", quality="S", replaced=112.0)
    s = f.run(issue=date(2026, 4, 20))
    assert s.rebilled == 1
    bills = f.bills("A-adj")
    assert [(b[1], b[2], b[10]) for b in bills] == [
        ("regular", "cancelled", None),
        ("rebill", "issued", first[0]),
        ("cancel", "issued", first[0]),
    ]
    rebill, cancel = bills[1], bills[2]
    assert (cancel[3], cancel[6]) == (-first[3], -first[6])
    # 13 m3: 4.50 + 3.00 + 7 × 1.20 = 15.90; VAT 0.8745 -> 0.87
    assert (rebill[3], rebill[6], rebill[8], rebill[9]) == (
        D("13.000"),
        D("16.77"),
        date(2026, 4, 20),
        date(2026, 4, 30),
    )
    assert f.determinants(rebill[0])[0][4] == "edited"
    assert f.run(issue=date(2026, 4, 21)).unchanged == 1  # and stays put


def test_tenant_change_five_m3_rule_proof_and_fifteen_day_default(db, tmp_path):
    f = Fleet(db)
    book = BOOK
    for name in ("ok", "default", "proof"):
        sp = f.point(f"SP-{name}")
        f.meter(f"M-{name}")
        f.install(f"M-{name}", sp)
        f.account(f"OLD-{name}", sp, "W", closed=date(2026, 3, 10))
        f.account(f"NEW-{name}", sp, "W", opened=date(2026, 3, 10))
        f.reads(f"M-{name}", [(ts(3, 2), 200.0), (ts(3, 20), 220.0), (ts(4, 1), 230.0)])
    with releve_db.connect(db.url, role=releve_db.editor_role(db.settings)) as conn:
        ok = tenant.record_change(conn, book, "NEW-ok", D(210), date(2026, 3, 10), D(214), date(2026, 3, 10))
        late = tenant.record_change(conn, book, "NEW-default", D(210), date(2026, 3, 10), D(218), date(2026, 3, 10))
        proof = tenant.record_change(conn, book, "NEW-proof", D(210), date(2026, 3, 10), D(218), date(2026, 3, 10))
        conn.commit()
        assert (ok.status, late.status, late.proof_due) == ("accepted", "open", date(2026, 3, 25))
        tenant.record_proof(conn, proof.id, D(216), date(2026, 3, 10), "entry inventory", today=date(2026, 3, 20))
        # on day 15 the case is still open; the day after, the predecessor's index applies
        assert tenant.expire_cases(conn, book, date(2026, 3, 25)) == []
        conn.commit()
    s = f.run(period_end=date(2026, 3, 31), issue=date(2026, 3, 25))
    assert [a for a, _ in s.skipped] == ["NEW-default"]  # no subscription while the case is open
    assert f.one("SELECT code FROM bill_run_note WHERE run_id = %s AND kind = 'skipped'", (s.run_id,)) == "tenant_case"
    assert f.live("NEW-default") is None
    s = f.run(issue=date(2026, 3, 26), out=tmp_path)
    assert s.notices == [late.id]
    notice = (tmp_path / "notices" / f"tenant-case-{late.id}.txt").read_text()
    assert "starts at the previous occupant's move-out index, 210 m³, on 2026-03-10" in notice
    assert f.one("SELECT notice FROM tenant_case WHERE id = %s", (late.id,)) == notice
    # predecessor: 200 -> move-out 210 over 8 days: fixed 1.20, 1.6 × 1.20, 3.733 × 1.20, 4.667 × 2.40 = 18.80 + 1.03
    old = f.live("OLD-ok")
    assert f.determinants(old[0])[0][1:5] == (D("200.000"), D("210"), "actual", "move-out")
    assert (old[3], old[6]) == (D("10.000"), D("19.83"))
    # newcomer within 5 m3: from the move-in index 214, 22 days, 16 m3 > prorated lifeline limit 11:
    # fixed 3.30 + 4.4 × 1.20 + 10.267 × 1.20 + 1.333 × 2.40 = 3.30 + 5.28 + 12.32 + 3.20 = 24.10; VAT 1.33
    new_ok = f.live("NEW-ok")
    assert f.determinants(new_ok[0])[0][1:5] == (D("214"), D("230.000"), "move-in", "actual")
    assert (new_ok[3], new_ok[6]) == (D("16.000"), D("25.43"))
    # no proof within 15 days: from the predecessor's 210 on 10 Mar: 20 m3 -> 5.28 + 12.32 + 12.80 + 3.30 = 33.70
    new_late = f.live("NEW-default")
    assert f.determinants(new_late[0])[0][1:5] == (D("210"), D("230.000"), "move-out", "actual")
    assert (new_late[3], new_late[4], new_late[6]) == (D("20.000"), D("33.70"), D("35.55"))
    # proof: from its index 216: 14 m3 -> 3.30 + 5.28 + 9.6 × 1.20 = 20.10; VAT 1.11
    new_proof = f.live("NEW-proof")
    assert f.determinants(new_proof[0])[0][1:5] == (D("216"), D("230.000"), "proof", "actual")
    assert (new_proof[3], new_proof[6]) == (D("14.000"), D("21.21"))


def test_prepaid_accounts_get_no_bill_and_consumption_without_vending_is_flagged(db, tmp_path):
    from billing.feed import import_vending

    f = Fleet(db)
    f.simple("pp-ok", tariff="E", commodity="electricity", prepaid=True)
    f.simple("pp-thief", tariff="E", commodity="electricity", prepaid=True)
    for name in ("pp-ok", "pp-thief"):
        f.reads(f"M-{name}", [(ts(3, 2), 1000.0), (ts(4, 1), 1100.0)], commodity="electricity")
    vend = tmp_path / "vending.csv"
    vend.write_text(
        "account,meter,vended_at,units,amount,token\n"
        "A-pp-ok,,2026-03-05T08:00:00Z,50,,T1\n"
        ",M-pp-ok,2026-03-20T08:00:00Z,,9.00,T2\n"
        "A-pp-thief,,2026-03-05T08:00:00Z,20,,T3\n"
    )
    assert import_vending(db.url, db.settings, vend) == (3, 0)
    assert import_vending(db.url, db.settings, vend) == (0, 3)
    s = f.run()
    assert (s.prepaid, s.prepaid_flagged, s.issued) == (2, 1, 0)
    assert f.bills("A-pp-ok") == [] and f.bills("A-pp-thief") == []
    rows = f.sql(
        "SELECT a.number, p.consumption, p.vended, p.closing_balance, p.flagged, p.reason FROM prepaid_check p "
        "JOIN account a ON a.id = p.account_id ORDER BY 1"
    )
    assert rows[0][:5] == ("A-pp-ok", D("100.000"), D("100.000"), D("0.000"), False)
    assert rows[1][:5] == ("A-pp-thief", D("100.000"), D("20"), D("-80.000"), True)
    assert "consumption without vending" in rows[1][5]
    # the theft module reads it as the reader role
    with releve_db.connect(db.url, role=releve_db.reader_role(db.settings)) as conn:
        assert conn.execute("SELECT count(*) FROM prepaid_check WHERE flagged").fetchone()[0] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("account,vended_at,units,token\nA-pp-ok,yesterday,5,T9\n")
    from billing.feed import VendingError

    with pytest.raises(VendingError, match=r"bad\.csv:2: vended_at: not an ISO instant"):
        import_vending(db.url, db.settings, bad)


def test_time_of_use_and_demand_from_interval_data(db):
    from datetime import timedelta

    from releve.model import Reading, ReadType, Source

    from .fleet import write

    f = Fleet(db)
    f.simple("tou", tariff="ETOU", commodity="electricity")
    readings = []
    step = timedelta(minutes=15)
    t = ts(3, 2) + step  # intervals are stamped at their end: this one covers 00:00–00:15 on 2 March
    total = 0.0
    while t <= ts(4, 1):
        began = t - step
        peak = began.isoweekday() <= 5 and (7 <= began.hour < 11 or 17 <= began.hour < 21)
        v = 0.5 if peak else 0.25
        if began == ts(3, 8, 3):
            v = 1.5  # Sunday night: the maximum demand, 1.5 kWh in 15 min = 6 kW
        total += v
        readings.append(Reading("M-tou", "1-0:1.29.0", t, v, "kWh", Source.MODBUS, ReadType.ACTUAL))
        t += step
    write(db, readings)
    assert f.one("SELECT count(*) FROM reading_block") == 30  # a block a day: the bill reads them by its window
    f.reads("M-tou", [(ts(3, 2), 1000.0), (ts(4, 1), 1000.0 + total)], commodity="electricity")
    f.run()
    b = f.live("A-tou")
    assert b[2] == "issued"
    assert f.lines(b[0]) == {
        "fixed": D("25.00"),
        "tou:peak": D("98.56"),
        "tou:offpeak": D("59.98"),
        "demand": D("39.00"),
        "tax:VAT": D("44.51"),
    }
    assert b[6] == D("267.05")
    assert f.one("SELECT tou FROM bill_determinant WHERE bill_id = %s", (b[0],)) == {
        "peak": "352.000",
        "offpeak": "545.250",
    }
    assert f.one("SELECT max_demand FROM bill_determinant WHERE bill_id = %s", (b[0],)) == D("6.000")


def test_billing_writes_as_the_editor_role_only_where_granted(db):
    import psycopg

    f = Fleet(db)
    f.simple("role")
    f.reads("M-role", [(ts(3, 2), 100.0), (ts(4, 1), 112.0)])
    f.run()
    with (
        releve_db.connect(db.url, role=releve_db.editor_role(db.settings)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("UPDATE bill SET total = 0")
