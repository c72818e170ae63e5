"""Field work orders on a real PostgreSQL: theft inspections, fraud, meter exchange, VEE, service levels."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from analytics.theft.store import training_labels
from billing import credit, ledger, workorders
from releve import db as releve_db
from releve import meter_commands

from .fleet import Fleet, ts

D = Decimal
CFG = credit.load_config(credit.EXAMPLE)

pytestmark = pytest.mark.db


def editor(db):
    return releve_db.connect(db.url, role=releve_db.editor_role(db.settings), autocommit=True)


def theft_list(f, serials):
    """A stored theft run listing ``serials`` in rank order, at spread coordinates."""
    run = f.one("INSERT INTO theft_run (source) VALUES ('test') RETURNING id")
    coords = [(6.40, 2.40), (6.50, 2.50), (6.41, 2.41)]
    for rank, serial in enumerate(serials, start=1):
        lat, lon = coords[rank - 1]
        f.sql(
            """INSERT INTO theft_candidate (run_id, rank, serial, meter_id, latitude, longitude, risk, expected_value,
                     unbilled_energy, signal, reasons, evidence, inputs)
                 VALUES (%s, %s, %s, (SELECT id FROM meter WHERE serial = %s), %s, %s, %s, 10, 50, 'drop', %s, '{}', %s)""",
            (
                run,
                rank,
                serial,
                serial,
                lat,
                lon,
                0.9 - rank / 10,
                json.dumps([f"drop {rank}"]),
                json.dumps({"rule": 0.5, "forest": 0.5}),
            ),
        )
    return run


def test_theft_candidates_become_inspections_whose_outcome_reaches_the_feedback_once(db):
    f = Fleet(db)
    for name in ("t1", "t2", "t3"):
        f.simple(name, tariff="E", commodity="electricity")
    run = theft_list(f, ["M-t1", "M-t2", "M-t3"])
    with editor(db) as conn:
        made = workorders.from_theft(conn, run, top=3)
        assert len(made) == 3
        assert workorders.from_theft(conn, run, top=3) == []  # idempotent
        orders = {o.meter: o for o in workorders.list_orders(conn, kind="inspection")}
        # route order: start at the top-ranked meter, then the nearest (t3 is next to t1)
        assert {m: o.route_order for m, o in orders.items()} == {"M-t1": 1, "M-t3": 2, "M-t2": 3}
        assert "night inspection with police" in orders["M-t1"].description
        t2 = orders["M-t2"].id
        workorders.assign(conn, t2, "night crew 3")
        done = workorders.complete(conn, t2, "nothing", details={"campaign": "2026-W15", "note": "seal intact"})
        assert done.inspection_id is not None and done.penalty_entry is None
        with pytest.raises(workorders.WorkOrderError, match="recorded once"):
            workorders.complete(conn, t2, "fraud", penalty=D(100))
        with pytest.raises(workorders.WorkOrderError, match="one of fraud"):
            workorders.complete(conn, orders["M-t3"].id, "maybe")
        labels = training_labels(conn)
    assert labels.serials == ["M-t2"] and list(labels.y) == [0]
    assert f.sql("SELECT serial, result, campaign FROM theft_inspection") == [("M-t2", "nothing", "2026-W15")]


def test_fraud_outcome_creates_disconnection_and_penalty_and_reconnects_once_paid(db):
    f = Fleet(db)
    acc = f.simple("thief", tariff="E", commodity="electricity")
    f.sql("UPDATE meter SET protocol = 'mqtt' WHERE serial = 'M-thief'")
    run = theft_list(f, ["M-thief"])
    day = datetime(2026, 4, 10, 22, tzinfo=UTC)
    with editor(db) as conn:
        (order,) = workorders.from_theft(conn, run, top=5, now=day)
        done = workorders.complete(
            conn, order, "fraud", penalty=CFG.fraud.penalty, now=day, details={"note": "bypass cable on the neutral"}
        )
        pos = ledger.balance(conn, acc, date(2026, 4, 11))
        assert pos.balance == D("150.00") and pos.unpaid == {done.penalty_entry: D("150.00")}
        (dis,) = workorders.list_orders(conn, kind="disconnect")
        assert (dis.id, dis.status, dis.priority) == (done.follow_up, "awaiting_command", 1)
        assert meter_commands.command_status(conn, dis.command_id).kind == "disconnect"
    assert f.sql("SELECT result FROM theft_inspection") == [("fraud",)]
    with releve_db.connect(db.url, role=releve_db.writer_role(db.settings), autocommit=True) as conn:
        cmd = meter_commands.claim_next(conn, meter_commands.resolve_meter(conn, "M-thief"), "mqtt-1")
        meter_commands.confirm(conn, cmd.id, "mqtt-1", {"relay": "open"})
    with editor(db) as conn, conn.transaction():
        s = credit.run_credit(conn, CFG, date(2026, 4, 12))
        assert s.work_orders == []  # the penalty is not paid: no reconnection
        ledger.pay(conn, "A-thief", D("150.00"), "P-1", date(2026, 4, 15))
    with editor(db) as conn, conn.transaction():
        s = credit.run_credit(conn, CFG, date(2026, 4, 15))
        assert s.actions["fraud_reconnect"] == 1
        assert credit.run_credit(conn, CFG, date(2026, 4, 16)).work_orders == []  # once
        (rec,) = workorders.list_orders(conn, kind="reconnect")
        assert rec.status == "awaiting_command" and "penalty paid" in rec.description


def test_meter_exchange_goes_into_the_installation_history_with_both_indexes(db):
    f = Fleet(db)
    f.simple("ex")
    f.meter("NEW-1")
    with editor(db) as conn:
        oid, new = workorders.create(
            conn,
            "meter_exchange",
            source="test",
            source_key="t:ex",
            meter=f.one("SELECT id FROM meter WHERE serial = 'M-ex'"),
        )
        assert new and workorders.create(conn, "meter_exchange", source="test", source_key="t:ex") == (oid, False)
        with pytest.raises(workorders.WorkOrderError, match="needs old_index"):
            workorders.complete(conn, oid, "exchanged", details={"new_meter": "NEW-1"})
        workorders.complete(
            conn,
            oid,
            "exchanged",
            details={"old_index": 523.4, "new_meter": "NEW-1", "new_index": 0.2, "at": "2026-03-16T10:00:00+00:00"},
        )
    hist = f.sql("""SELECT m.serial, i.installed_at, i.install_index, i.removed_at, i.removal_index
                    FROM installation i JOIN meter m ON m.id = i.meter_id ORDER BY i.installed_at""")
    assert hist == [("M-ex", ts(1, 1), 0.0, ts(3, 16, 10), 523.4), ("NEW-1", ts(3, 16, 10), 0.2, None, None)]
    # and the bill across the exchange uses both indexes
    f.reads("M-ex", [(ts(3, 2), 500.0)])
    f.reads("NEW-1", [(ts(4, 1), 9.7)])
    f.run()
    assert [d[1:3] for d in f.determinants(f.live("A-ex")[0])] == [
        (D("500.000"), D("523.400")),
        (D("0.200"), D("9.700")),
    ]


def test_vee_exceptions_become_meter_checks_and_exchanges(db):
    f = Fleet(db)
    f.simple("fz")
    f.simple("neg")
    f.simple("hl")
    f.exception("M-fz", ts(3, 5), rule="FROZEN")
    f.exception("M-fz", ts(3, 6), rule="FROZEN")
    f.exception("M-neg", ts(3, 5), rule="NEGATIVE", severity="error")
    f.exception("M-hl", ts(3, 5), rule="HILO_HIGH")  # a high read needs a review, not a visit
    with editor(db) as conn:
        made = workorders.from_vee(conn)
        assert workorders.from_vee(conn) == []
        orders = sorted((o.meter, o.kind) for o in workorders.list_orders(conn) if o.id in made)
        assert orders == [("M-fz", "meter_exchange"), ("M-neg", "meter_check")]
        check = next(o for o in workorders.list_orders(conn, kind="meter_check"))
        done = workorders.complete(conn, check.id, "faulty")
        assert workorders.list_orders(conn, kind="meter_exchange", status="open")[-1].id == done.follow_up


def test_service_levels_fault_routing_and_complaint_recording(db):
    f = Fleet(db)
    f.simple("sla")
    t0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
    with editor(db) as conn:
        quick, _ = workorders.create(
            conn,
            "fault",
            source="call centre",
            account=f.one("SELECT id FROM account"),
            reported_at=t0,
            now=t0,
            description="no supply",
        )
        slow, _ = workorders.create(
            conn, "fault", source="call centre", reported_at=t0, now=t0, description="sparks at the pole"
        )
        note, _ = workorders.create(
            conn,
            "reading_anomaly",
            source="meter reader",
            now=t0,
            account=f.one("SELECT id FROM account"),
            description="seal broken, dial fogged",
        )
        workorders.assign(conn, quick, "crew 1", now=t0 + timedelta(minutes=4))
        workorders.assign(conn, slow, "crew 2", now=t0 + timedelta(minutes=9))
        credit.open_dispute(conn, "A-sla", "complaint", "rude agent", t0 - timedelta(minutes=25))
        breaches = workorders.sla(conn, now=t0 + timedelta(minutes=30))
        assert [(b.what, b.id, int(b.late_by.total_seconds() // 60)) for b in breaches][:1] == [("work order", slow, 4)]
        assert [b.what for b in breaches] == ["work order", "complaint"]
        assert "recorded within 10 min" in breaches[1].text()
        late = workorders.sla(conn, now=t0 + timedelta(days=6))
        assert note in [b.id for b in late if "due time" in b.target]
        workorders.cancel(conn, note, "duplicate of a reader's earlier note")
        with pytest.raises(workorders.WorkOrderError, match="is cancelled"):
            workorders.assign(conn, note, "crew 1")
