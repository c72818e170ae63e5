"""The meter-command queue (migration 0019, releve/meter_commands.py) on a real PostgreSQL."""

from datetime import timedelta

import pytest
from psycopg import errors

from releve import meter_commands as mc
from releve import migrate

pytestmark = pytest.mark.db


def test_queue_records_who_asked_and_why_and_is_idempotent_per_kind(db):
    db.add_meters(["M1"])
    editor = migrate.role_names(db.settings)[2]
    with db.connect(role=editor) as conn:
        first = mc.queue_command(conn, "M1", "disconnect", "credit-control", reason="arrears 120.00", work_order_id=7)
        again = mc.queue_command(conn, "M1", "disconnect", "alice")
        cmd = mc.command_status(conn, first)
        events = mc.command_events(conn, first)
    assert again == first
    assert (cmd.serial, cmd.kind, cmd.state, cmd.requested_by, cmd.work_order_id) == (
        "M1",
        "disconnect",
        "queued",
        "credit-control",
        7,
    )
    assert cmd.expires_at - cmd.requested_at == mc.DEFAULT_EXPIRES_IN
    assert [(e.state, e.actor, e.detail) for e in events] == [
        ("queued", "credit-control", {"reason": "arrears 120.00", "work_order_id": 7})
    ]


def test_a_reconnect_supersedes_a_disconnect_not_yet_sent(db):
    db.add_meters(["M1"])
    with db.connect() as conn:
        off = mc.queue_command(conn, "M1", "disconnect", "credit-control")
        on = mc.queue_command(conn, "M1", "reconnect", "cashier")
        assert mc.command_status(conn, off).state == "cancelled"
        assert mc.command_status(conn, off).error == f"superseded by command {on}"
        assert [c.id for c in mc.pending_commands(conn, ["M1"])] == [on]


def test_a_reconnect_queues_behind_a_disconnect_already_sent(db):
    db.add_meters(["M1"])
    with db.connect() as conn:
        meter_id = mc.resolve_meter(conn, "M1")
        off = mc.queue_command(conn, "M1", "disconnect", "credit-control")
        assert mc.claim_next(conn, meter_id, "col-1").id == off
        on = mc.queue_command(conn, "M1", "reconnect", "cashier")
        assert mc.claim_next(conn, meter_id, "col-1") is None  # one at a time, in order
        mc.confirm(conn, off, "col-1", {"relay": "open"})
        assert mc.claim_next(conn, meter_id, "col-1").id == on
        assert mc.relay_state(conn, "M1") == "disconnected"


def test_only_a_queued_command_can_be_cancelled(db):
    db.add_meters(["M1"])
    with db.connect() as conn:
        meter_id = mc.resolve_meter(conn, "M1")
        a = mc.queue_command(conn, meter_id, "clock_sync", "ops")
        cancelled = mc.cancel_command(conn, a, "ops", reason="wrong meter")
        assert (cancelled.state, cancelled.error) == ("cancelled", "wrong meter")
        assert cancelled.finished_at is not None
        b = mc.queue_command(conn, meter_id, "demand_reset", "ops")
        mc.claim_next(conn, meter_id, "col-1")
        with pytest.raises(mc.MeterCommandError, match="is sent: only a queued command can be cancelled"):
            mc.cancel_command(conn, b, "ops")
        with pytest.raises(mc.MeterCommandError, match="no meter command 999"):
            mc.cancel_command(conn, 999, "ops")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("NOPE", "disconnect", "ops"), "no meter with serial 'NOPE'"),
        ((424242, "disconnect", "ops"), "no meter with id 424242"),
        (("M1", "explode", "ops"), "unknown command kind 'explode'"),
        (("M1", "disconnect", "  "), "requested_by must name who asks"),
    ],
)
def test_bad_requests_say_what_is_wrong(db, args, message):
    db.add_meters(["M1"])
    with db.connect() as conn, pytest.raises(mc.MeterCommandError, match=message):
        mc.queue_command(conn, *args)


def test_retry_then_expiry_leaves_the_whole_trail(db):
    db.add_meters(["M1"])
    with db.connect() as conn:
        meter_id = mc.resolve_meter(conn, "M1")
        cid = mc.queue_command(conn, "M1", "disconnect", "ops", expires_in=timedelta(seconds=1))
        mc.claim_next(conn, meter_id, "col-1")
        mc.retry_later(conn, cid, "col-1", "timeout", timedelta(seconds=30))
        assert mc.claim_next(conn, meter_id, "col-1") is None  # not before the backoff
        conn.execute("UPDATE meter_command SET expires_at = now() - interval '1 s' WHERE id = %s", (cid,))
        assert mc.expire_overdue(conn, "col-1", in_flight=[cid]) == []  # its answer is on the way: wait for it
        assert mc.expire_overdue(conn, "col-1") == [cid]
        cmd = mc.command_status(conn, cid)
        trail = [(e.state, e.actor) for e in mc.command_events(conn, cid)]
    assert (cmd.state, cmd.attempts, cmd.error) == ("expired", 1, "expired after 1 attempt(s) without confirmation")
    assert trail == [("queued", "ops"), ("sent", "col-1"), ("queued", "col-1"), ("expired", "col-1")]


def test_final_states_and_the_audit_cannot_be_rewritten(db):
    db.add_meters(["M1"])
    with db.connect() as conn:
        meter_id = mc.resolve_meter(conn, "M1")
        cid = mc.queue_command(conn, "M1", "reconnect", "ops")
        mc.claim_next(conn, meter_id, "col-1")
        mc.fail(conn, cid, "col-1", "Modbus exception 0x02 (illegal data address)")
        with pytest.raises(errors.CheckViolation, match="final"):
            conn.execute("UPDATE meter_command SET state = 'queued' WHERE id = %s", (cid,))
        with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
            conn.execute("UPDATE meter_command_event SET actor = 'x'")
        with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
            conn.execute("DELETE FROM meter_command_event")
        with pytest.raises(errors.InsufficientPrivilege, match="never deleted"):
            conn.execute("DELETE FROM meter_command")
        other = mc.queue_command(conn, "M1", "clock_sync", "ops")
        with pytest.raises(errors.CheckViolation, match="queued -> confirmed is not a valid transition"):
            conn.execute("UPDATE meter_command SET state = 'confirmed', confirmed_at = now() WHERE id = %s", (other,))


def test_the_collector_role_executes_and_the_editor_role_queues(db):
    db.add_meters(["M1"])
    writer, reader, editor = migrate.role_names(db.settings)
    with db.connect(role=editor) as conn:
        cid = mc.queue_command(conn, "M1", "disconnect", "ops")
    with db.connect(role=writer) as conn:
        meter_id = mc.resolve_meter(conn, "M1")
        assert mc.claim_next(conn, meter_id, "col-1").id == cid
        mc.confirm(conn, cid, "col-1", {"relay_register": 0})
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO meter_command (meter_id, kind, requested_by, expires_at) "
                "VALUES (%s, 'reconnect', 'x', now() + interval '1 h')",
                (meter_id,),
            )
    with db.connect(role=reader) as conn:
        assert mc.command_status(conn, cid).state == "confirmed"
        with pytest.raises(errors.InsufficientPrivilege):
            mc.queue_command(conn, "M1", "reconnect", "ops")
