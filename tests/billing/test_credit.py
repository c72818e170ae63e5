"""Credit control on a real PostgreSQL: steps, the relay command loop, holds, indigent, arrangements."""

from __future__ import annotations

import csv
from datetime import date
from decimal import Decimal

import pytest

from billing import credit, ledger, workorders
from releve import db as releve_db
from releve import meter_commands

from .fleet import Fleet, ts

D = Decimal
CFG = credit.load_config(credit.EXAMPLE)

pytestmark = pytest.mark.db


def editor(db):
    return releve_db.connect(db.url, role=releve_db.editor_role(db.settings), autocommit=True)


def run(db, on, out=None):
    with editor(db) as conn, conn.transaction():
        return credit.run_credit(conn, CFG, on, out)


def owe(db, acc, amount="50.00", issued=date(2026, 4, 2), due=date(2026, 4, 12), key=None):
    with editor(db) as conn:
        return ledger.post(conn, acc, "bill", D(amount), issued, due=due, source_key=key or f"t:{acc}:{issued}")


def collector_confirms(db, serial, relay):
    """What the collector does: claim the meter's command, read back the relay, confirm it."""
    with releve_db.connect(db.url, role=releve_db.writer_role(db.settings), autocommit=True) as conn:
        meter = meter_commands.resolve_meter(conn, serial)
        cmd = meter_commands.claim_next(conn, meter, "collector-1")
        assert cmd is not None
        meter_commands.confirm(conn, cmd.id, "collector-1", {"relay": relay})
        return cmd


def test_unpaid_bill_walks_to_disconnection_and_back_on_payment(db, tmp_path):
    f = Fleet(db)
    acc = f.simple("late", tariff="E", commodity="electricity")
    f.sql("UPDATE meter SET protocol = 'modbus-tcp' WHERE serial = 'M-late'")
    f.sql("UPDATE customer SET phone = '+22900000000'")
    f.reads("M-late", [(ts(3, 2), 1000.0), (ts(4, 1), 1012.5)], commodity="electricity")
    f.run()  # the bill run posts the bill, due 12 April
    total = f.one("SELECT amount FROM ledger_entry WHERE kind = 'bill'")
    # 12.5 kWh: fixed 8.00 + 12.5 × 0.08 = 9.00; VAT 20 % 1.80
    assert total == D("10.80") == f.one("SELECT total FROM bill")

    assert sum(run(db, date(2026, 4, 12)).actions.values()) == 0  # due today: not overdue yet
    s = run(db, date(2026, 4, 13), tmp_path)
    assert dict(s.actions) == {"reminder": 1}
    again = run(db, date(2026, 4, 13), tmp_path)  # idempotent per day
    assert sum(again.actions.values()) == 0
    with (tmp_path / "notices-2026-04-13.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["account"], r["phone"], r["channel"], r["step"], r["overdue"]) for r in rows] == [
        ("A-late", "+22900000000", "sms", "reminder", "10.80")
    ]
    assert sum(run(db, date(2026, 4, 20)).actions.values()) == 0  # final notice comes at 15 days
    s = run(db, date(2026, 4, 27), tmp_path)
    assert dict(s.actions) == {"final_notice": 1}
    assert "FINAL NOTICE" in (tmp_path / "notices-2026-04-27.txt").read_text()
    assert sum(run(db, date(2026, 5, 1)).actions.values()) == 0  # 7 days after the final notice, 30 days late
    s = run(db, date(2026, 5, 12))
    assert dict(s.actions) == {"disconnect": 1}
    (order,) = s.work_orders
    with editor(db) as conn:
        (o,) = workorders.list_orders(conn, kind="disconnect")
        assert (o.id, o.status, o.account, o.meter) == (order, "awaiting_command", "A-late", "M-late")
        cmd = meter_commands.command_status(conn, o.command_id)
        assert (cmd.kind, cmd.state, cmd.work_order_id) == ("disconnect", "queued", order)
        assert ledger.balance(conn, acc, date(2026, 5, 12)).balance == D("17.80")  # + 2.00 + 5.00 charges
        with pytest.raises(workorders.WorkOrderError, match="waits for meter command"):
            workorders.complete(conn, order, "done by hand")

    collector_confirms(db, "M-late", "open")
    with editor(db) as conn, conn.transaction():
        assert workorders.sync_commands(conn) == (1, 0)
        (o,) = workorders.list_orders(conn, kind="disconnect")
        assert (o.status, o.outcome) == ("done", "confirmed")
        ledger.pay(conn, "A-late", D("17.80"), "BANK-77", date(2026, 5, 13), "bank")
    s = run(db, date(2026, 5, 13))
    assert dict(s.actions) == {"reconnect": 1}
    with editor(db) as conn:
        (r,) = workorders.list_orders(conn, kind="reconnect")
        assert (r.status, r.account) == ("awaiting_command", "A-late")
        assert meter_commands.command_status(conn, r.command_id).kind == "reconnect"
        pos = ledger.balance(conn, acc, date(2026, 5, 13))
        assert pos.balance == D("10.00") and pos.overdue == 0  # the reconnection charge, due in 10 days
        assert credit.list_cases(conn) == []
        trail = [e[1] for e in workorders.events(conn, order)]
        assert trail == ["created", "command_queued", "command_confirmed"]
    collector_confirms(db, "M-late", "closed")
    run(db, date(2026, 5, 14))  # the run syncs the commands too
    assert f.one("SELECT status FROM work_order WHERE kind = 'reconnect'") == "done"


def test_indigent_customer_is_never_disconnected(db):
    f = Fleet(db)
    acc = f.simple("poor", tariff="E", commodity="electricity")
    with editor(db) as conn:
        credit.register_indigent(conn, "A-poor", "social survey 2026/14", date(2026, 1, 10))
        with pytest.raises(credit.CreditError, match="already on the indigent register"):
            credit.register_indigent(conn, "A-poor", "again", date(2026, 1, 11))
    assert f.one("SELECT indigent FROM customer") is True
    owe(db, acc)
    for day in (date(2026, 4, 13), date(2026, 4, 27), date(2026, 5, 12), date(2026, 6, 30), date(2026, 8, 30)):
        run(db, day)
    steps = f.sql("SELECT step, action FROM credit_action ORDER BY id")
    assert steps == [("reminder", "notice"), ("final_notice", "notice"), ("disconnect", "exempt")]
    assert f.sql("SELECT count(*) FROM work_order")[0][0] == 0
    assert f.sql("SELECT count(*) FROM account_closure")[0][0] == 0
    with editor(db) as conn:
        credit.end_indigent(conn, "A-poor", date(2026, 9, 1), "income above the threshold")
    assert f.one("SELECT indigent FROM customer") is False


def test_open_dispute_holds_collection_until_it_is_closed(db):
    f = Fleet(db)
    acc = f.simple("disp")
    owe(db, acc)
    with editor(db) as conn:
        d = credit.open_dispute(conn, "A-disp", "dispute", "the March index is wrong", ts(4, 13, 9))
    for day in (date(2026, 4, 13), date(2026, 5, 30)):
        s = run(db, day)
        assert dict(s.held) == {"dispute": 1} and sum(s.actions.values()) == 0
    with editor(db) as conn:
        credit.close_dispute(conn, d, "rejected", "index confirmed by a second read", ts(6, 1, 10))
        with pytest.raises(credit.CreditError, match="already rejected"):
            credit.close_dispute(conn, d, "upheld", "x", ts(6, 1, 11))
    assert dict(run(db, date(2026, 6, 1)).actions) == {"reminder": 1}


def test_a_missed_instalment_breaks_the_arrangement(db):
    f = Fleet(db)
    acc = f.simple("plan")
    owe(db, acc, "90.00")
    run(db, date(2026, 4, 13))  # reminder
    with editor(db) as conn:
        plan = credit.arrange(
            conn,
            "A-plan",
            [(date(2026, 4, 20), D("30.00")), (date(2026, 5, 20), D("30.00")), (date(2026, 6, 20), D("30.00"))],
            date(2026, 4, 14),
        )
        ledger.pay(conn, "A-plan", D("30.00"), "I-1", date(2026, 4, 19))
    s = run(db, date(2026, 5, 1))
    assert dict(s.held) == {"arrangement": 1} and not s.broken
    assert f.one("SELECT status FROM payment_arrangement") == "active"
    # the second instalment is not paid by 20 May + 5 days of grace
    assert run(db, date(2026, 5, 25)).broken == []
    s = run(db, date(2026, 5, 26))
    assert s.broken == [plan]
    assert f.sql("SELECT status, reason FROM payment_arrangement")[0] == (
        "broken",
        "missed instalment: paid 30.00 of 60.00 due by 2026-05-20",
    )
    # a broken plan is a forced termination (the Benin rule): the meter is removed, a closure case opens
    assert any("terminated (broken arrangement)" in c for c in s.closures)
    assert f.one("SELECT kind FROM work_order") == "removal"


def test_an_arrangement_kept_in_full(db):
    f = Fleet(db)
    acc = f.simple("kept")
    owe(db, acc, "40.00")
    with editor(db) as conn:
        credit.arrange(
            conn, "A-kept", [(date(2026, 4, 20), D("20.00")), (date(2026, 5, 20), D("20.00"))], date(2026, 4, 14)
        )
        with pytest.raises(credit.CreditError, match="already has an arrangement"):
            credit.arrange(conn, "A-kept", [(date(2026, 4, 20), D("1.00"))], date(2026, 4, 14))
        ledger.pay(conn, "A-kept", D("40.00"), "K-1", date(2026, 4, 19))
    run(db, date(2026, 4, 20))
    assert f.one("SELECT status FROM payment_arrangement") == "kept"


def test_config_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "credit.toml"
    bad.write_text('[[class]]\nname = "residential"\nsteps = [{ name = "x", days_overdue = 1, action = "shout" }]\n')
    with pytest.raises(credit.CreditError) as err:
        credit.load_config(bad)
    assert "credit.toml" in str(err.value) and "class.0.steps.0.action" in str(err.value)
    bad.write_text('[[class]]\nname = "residential"\nsteps = [{ name = "x", days_overdue = 1, action = "notice" }]\n')
    with pytest.raises(credit.CreditError, match='a \\[\\[class\\]\\] named "default" is needed'):
        credit.load_config(bad)
    assert CFG.steps_for("industrial").name == "default"
    assert CFG.steps_for("commercial").reconnection_charge == D("25.00")


def test_payment_before_the_meter_was_told_withdraws_the_disconnection(db):
    f = Fleet(db)
    acc = f.simple("quick", tariff="E", commodity="electricity")
    f.sql("UPDATE meter SET protocol = 'modbus-rtu' WHERE serial = 'M-quick'")
    owe(db, acc, "20.00")
    for day in (date(2026, 4, 13), date(2026, 4, 27), date(2026, 5, 12)):
        run(db, day)
    with editor(db) as conn:
        (o,) = workorders.list_orders(conn, kind="disconnect")
        ledger.pay(conn, "A-quick", D("27.00"), "Q-1", date(2026, 5, 12))
    s = run(db, date(2026, 5, 13))
    assert s.work_orders == [] and sum(s.actions.values()) == 0
    with editor(db) as conn:
        (o,) = workorders.list_orders(conn, kind="disconnect")
        assert (o.status, o.outcome) == ("cancelled", "cancelled")
        assert meter_commands.command_status(conn, o.command_id).state == "cancelled"
        assert workorders.list_orders(conn, kind="reconnect") == []


def pdf_pages_and_text(body: bytes) -> tuple[int, str]:
    """Page count and the text drawn by a PDF's (deflated) content streams, as fpdf2 writes them."""
    import re
    import zlib

    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", body))
    parts = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", body, re.S):
        try:
            parts.append(zlib.decompress(stream).decode("latin-1"))
        except zlib.error:
            continue
    return pages, " ".join("".join(re.findall(r"\((.*?)\)\s*Tj", part)) for part in parts)


def test_mail_letters_of_the_day_are_one_pdf_with_a_page_per_letter(db, tmp_path):
    f = Fleet(db)
    accounts = {name: f.simple(name) for name in ("pdf1", "pdf2")}
    for name, acc in accounts.items():
        f.sql(
            "UPDATE customer SET name = %s WHERE id = (SELECT customer_id FROM account WHERE id = %s)",
            (f"Customer {name.title()}", acc),
        )
        owe(db, acc, "42.50")
    run(db, date(2026, 4, 13), tmp_path)  # the reminders go by SMS: no letter to post, no PDF
    assert not (tmp_path / "notices-2026-04-13.pdf").exists()
    s = run(db, date(2026, 4, 27), tmp_path)  # final notices go by mail
    pdf = tmp_path / "notices-2026-04-27.pdf"
    assert pdf in s.files and s.files[:2] == [tmp_path / "notices-2026-04-27.csv", tmp_path / "notices-2026-04-27.txt"]
    body = pdf.read_bytes()
    assert body.startswith(b"%PDF-")
    pages, text = pdf_pages_and_text(body)
    assert pages == 2  # one page per mail letter
    for name in accounts:
        assert f"Customer {name.title()}" in text and f"Account A-{name}" in text
    assert "FINAL NOTICE" in text and "Final notice - account A-pdf1" in text
    assert "42.50" in text and "2.00" in text  # the amount overdue and the step's charge
    letters = (tmp_path / "notices-2026-04-27.txt").read_text().split("\f\n")
    assert len(letters) == pages
