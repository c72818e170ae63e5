"""The forwarder: outage or refusal, one batch per source, quarantine — on a real PostgreSQL."""

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from collectors.forward import Forwarder, is_outage, source_batches
from collectors.spool import Batch, Spool
from releve.model import EventKind, MeterEvent, Reading, Rejected, Source
from releve.pgserver import free_port

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)


def reading(meter, k, source):
    return Reading(meter, "1-0:1.8.0", T0 + timedelta(minutes=15 * k), 100.0 + k, "kWh", source)


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("connection refused"),
        errors.AdminShutdown("terminating connection due to administrator command"),
        errors.CannotConnectNow("the database system is starting up"),
        errors.DiskFull("could not extend file"),
        errors.DeadlockDetected("deadlock detected"),
        errors.InsufficientPrivilege("permission denied for table reading"),  # a deployment fault, not the data's
        psycopg.InterfaceError("the connection is closed"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_outages_are_retried(exc):
    assert is_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        errors.CharacterNotInRepertoire('invalid byte sequence for encoding "UTF8": 0x00'),
        errors.UntranslatableCharacter("unsupported Unicode escape sequence"),
        psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),  # refused by psycopg itself
        errors.UniqueViolation("duplicate key"),
        errors.CheckViolation("new row violates check constraint"),
        errors.ProgramLimitExceeded("row is too big"),
        ValueError("naive timestamp"),
        OverflowError("Python int too large to convert to C short"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_refusals_are_not_outages(exc):
    assert not is_outage(exc)


def test_a_mixed_segment_lands_as_one_batch_per_source_with_stable_keys():
    key = uuid.uuid4()
    event = MeterEvent("E1", T0, EventKind.MAGNETIC_FIELD, Source.MODBUS)
    dead = Rejected("mqtt x", "bad", b"\x00", Source.MQTT)
    batch = Batch(
        [reading("E1", 0, Source.MQTT), reading("E2", 0, Source.MODBUS), reading("E1", 1, Source.MQTT)], [event], [dead]
    )
    parts = source_batches(batch, key)
    assert [{r.source for r in p[0]} for p in parts] == [{Source.MODBUS}, {Source.MQTT}]
    assert [len(p[0]) for p in parts] == [1, 2]
    assert parts[0][3] == key and parts[1][3] == uuid.uuid5(key, "source mqtt")
    assert parts[0][1:3] == ([], []) and parts[1][1:3] == ([event], [dead])  # events and dead letters once
    assert source_batches(batch, key) == parts  # a replay after a crash finds the same keys
    single = Batch([reading("E1", 0, Source.MQTT)], [], [])
    assert source_batches(single, key) == [(single.readings, [], [], key)]


def rows_by_source(db):
    with db.connect() as conn:
        return dict(
            conn.execute(
                """SELECT m.serial || ' ' || to_char(r.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI'), s.name
               FROM reading_all r JOIN meter m ON m.id = r.meter_id JOIN reading_source s ON s.id = r.source_id""",
            ).fetchall()
        )


def stamp(k):
    return (T0 + timedelta(minutes=15 * k)).strftime("%Y-%m-%dT%H:%M")


def test_each_reading_keeps_its_own_source_through_the_spool(db, tmp_path):
    db.add_meters(["E1", "E2"])
    spool = Spool(tmp_path / "spool")
    spool.append([reading("E1", 0, Source.MQTT)])  # the segment's first reading is MQTT …
    spool.append([reading("E2", k, Source.MODBUS) for k in range(3)])  # … and most are Modbus
    spool.append([reading("E1", 1, Source.MQTT)])
    spool.seal()
    forwarder = Forwarder(spool, db.url, db.settings)
    assert forwarder.drain_once() == 5
    forwarder.stop(drain=False)
    assert rows_by_source(db) == {
        f"E1 {stamp(0)}": "mqtt",
        f"E1 {stamp(1)}": "mqtt",
        f"E2 {stamp(0)}": "modbus",
        f"E2 {stamp(1)}": "modbus",
        f"E2 {stamp(2)}": "modbus",
    }


def test_a_poisoned_segment_is_quarantined_and_the_rest_drains(db, tmp_path):
    db.add_meters(["E1", "E2"])
    spool = Spool(tmp_path / "spool", segment_bytes=1 << 20)
    spool.append([reading("E1", 0, Source.MQTT)])
    spool.seal()  # segment 1: fine
    spool.append([reading("E1", 1, Source.MQTT)])
    spool.append([reading("E\x00vil", 1, Source.MQTT)])  # a serial PostgreSQL cannot even be sent
    spool.append([reading("E2", 1, Source.MODBUS)], rejected=[Rejected("mqtt x", "bad", b"\x00\xff", Source.MQTT)])
    spool.seal()  # segment 2: one record of three is poison
    spool.append([reading("E1", 2, Source.MQTT)])
    spool.seal()  # segment 3: behind the poison, must not wait for it
    forwarder = Forwarder(spool, db.url, db.settings)
    assert forwarder.alarm() is None
    assert forwarder.drain_once() == 4
    forwarder.stop(drain=False)
    assert spool.sealed() == []
    assert rows_by_source(db) == {
        f"E1 {stamp(0)}": "mqtt",
        f"E1 {stamp(1)}": "mqtt",
        f"E2 {stamp(1)}": "modbus",
        f"E1 {stamp(2)}": "mqtt",
    }
    [held] = spool.quarantined()
    assert held["records"] == [1] and held["records_in_segment"] == 3
    assert "record 1: DataError" in held["reason"] and "NUL" in held["reason"]
    assert forwarder.refused_records == 1
    assert "1 spool segment(s) quarantined" in forwarder.alarm()
    with db.connect() as conn:
        assert conn.execute("SELECT payload_bytes FROM rejected_input").fetchall() == [(b"\x00\xff",)]
    # Landed again (a crash before the segment's removal): nothing doubles.
    forwarder2 = Forwarder(spool, db.url, db.settings)
    assert forwarder2.drain_once() == 0
    assert spool.quarantined() == [held]
    # Requeued as it is (the cause not fixed), it is refused again and stays whole: nothing lost.
    spool.requeue()
    assert forwarder2.drain_once() == 0
    [again] = spool.quarantined()
    assert again["records"] == [0] and "NUL" in again["reason"]


def test_a_segment_refused_whole_goes_to_quarantine_whole(db, tmp_path):
    db.add_meters(["E1"])
    spool = Spool(tmp_path / "spool")
    # jsonb cannot hold \u0000: the server refuses the event's details (SQLSTATE 22P05).
    spool.append(events=[MeterEvent("E1", T0, EventKind.MAGNETIC_FIELD, Source.MQTT, {"note": "\x00"})])
    spool.seal()
    [segment] = spool.sealed()
    original = segment.path.read_bytes()
    forwarder = Forwarder(spool, db.url, db.settings)
    assert forwarder.drain_once() == 0
    forwarder.stop(drain=False)
    assert spool.sealed() == []
    [held] = spool.quarantined()
    assert held["records"] == [0] and "22P05" in held["reason"]
    assert Path(held["path"]).read_bytes() == original


def test_an_outage_keeps_the_segment_and_quarantines_nothing(db, tmp_path):
    db.add_meters(["E1"])
    spool = Spool(tmp_path / "spool")
    spool.append([reading("E1", 0, Source.MQTT)])
    spool.seal()
    down = f"postgresql://releve@127.0.0.1:{free_port()}/releve?connect_timeout=2"
    forwarder = Forwarder(spool, down, db.settings)
    with pytest.raises(psycopg.OperationalError):
        forwarder.drain_once()
    assert len(spool.sealed()) == 1
    assert spool.quarantined() == []
    forwarder.stop(drain=False)
    later = Forwarder(spool, db.url, db.settings)
    assert later.drain_once() == 1


def test_a_spool_that_does_not_drain_raises_the_alarm_and_clears_it_when_it_drains(db, tmp_path):
    import time

    db.add_meters(["E1"])
    spool = Spool(tmp_path / "spool")
    spool.append([reading("E1", 0, Source.MQTT)])
    spool.seal()
    down = f"postgresql://releve@127.0.0.1:{free_port()}/releve?connect_timeout=2"
    forwarder = Forwarder(spool, down, db.settings, seal_seconds=0.1, stall_alarm_s=0.5)
    forwarder.start()
    deadline = time.monotonic() + 20
    while forwarder.alarm() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    forwarder.stop(drain=False)
    assert "spool not draining for" in forwarder.alarm()
    assert "OperationalError" in forwarder.alarm()
    assert forwarder.database_ok is False
    forwarder.url = db.url  # the database is back
    forwarder.start()
    while forwarder.alarm() is not None and time.monotonic() < deadline + 20:
        time.sleep(0.1)
    forwarder.stop(drain=False)
    assert forwarder.alarm() is None and forwarder.landed_rows == 1
