import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from psycopg import errors

from ingest import BatchWriter, ReadingFrame
from releve import migrate
from releve.model import EventKind, MeterEvent, Reading, ReadType, Rejected, Source

pytestmark = pytest.mark.db

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
IMPORT = "1-0:1.8.0"


def r(meter, minutes, value, channel=IMPORT, unit="kWh", ts=None, read_type=ReadType.ACTUAL):
    return Reading(meter, channel, ts or T0 + timedelta(minutes=minutes), value, unit, Source.MODBUS, read_type)


def stored(db):
    with db.connect() as conn:
        return conn.execute(
            "SELECT m.serial, c.code, r.ts, r.value FROM reading_all r JOIN meter m ON m.id = r.meter_id "
            "JOIN channel c ON c.id = r.channel_id ORDER BY 1, 2, 3"
        ).fetchall()


def test_fresh_batch_lands_every_row_once_with_its_values(db):
    db.add_meters(["M1", "M2"])
    readings = [r("M1", 15 * i, 100 + i) for i in range(4)] + [r("M2", 15 * i, 7.5 * i) for i in range(4)]
    with BatchWriter(db.url, db.settings) as writer:
        result = writer.write(readings)
    assert (result.inserted, result.duplicates, result.conflicts, result.rejected) == (8, 0, 0, 0)
    rows = stored(db)
    assert len(rows) == 8
    assert rows[0] == ("M1", IMPORT, T0, 100.0)
    assert rows[-1] == ("M2", IMPORT, T0 + timedelta(minutes=45), 22.5)


def test_mixed_batch_lands_exactly_as_specified(db):
    """Duplicates, conflicts, late data and invalid rows in one batch, counted row by row."""
    db.add_meters(["M1", "M2"])
    with BatchWriter(db.url, db.settings) as writer:
        first = writer.write([r("M1", 0, 10.0), r("M1", 15, 11.0), r("M2", 0, 5.0)])
        assert first.inserted == 3
        batch = [
            r("M1", 15, 11.0),  # duplicate of a stored reading
            r("M1", 0, 10.5),  # conflicts with the stored 10.0
            r("M1", 30, 12.0),  # new
            r("M1", 30, 12.0),  # duplicate inside the batch
            r("M2", 15, 6.0),  # new
            r("M2", 15, 6.1),  # conflicts inside the batch
            r("M2", 0, 0, ts=datetime(2021, 6, 1, tzinfo=UTC)),  # late data, years back: accepted
            r("M9", 0, 1.0),  # unknown meter
            r("M1", 45, float("nan")),  # NaN
            r("M1", 0, 1.0, ts=datetime(1990, 1, 1, tzinfo=UTC)),  # impossible timestamp
            r("M1", 0, 1.0, ts=datetime.now(UTC) + timedelta(days=3)),  # from the future
            r("M1", 0, 1.0, channel="9-9:9.9.9"),  # unknown channel
        ]
        result = writer.write(batch)
    assert result.rows == 12
    assert result.inserted == 3
    assert result.duplicates == 2
    assert result.conflicts == 2
    assert result.rejected == 5
    rows = stored(db)
    assert len(rows) == 6
    assert ("M1", IMPORT, T0, 10.0) in rows  # the stored value was not overwritten
    assert ("M2", IMPORT, datetime(2021, 6, 1, tzinfo=UTC), 0.0) in rows
    with db.connect() as conn:
        conflicts = conn.execute(
            "SELECT m.serial, stored_value, new_value FROM reading_conflict c JOIN meter m ON m.id = c.meter_id ORDER BY 1"
        ).fetchall()
        dead = conn.execute("SELECT reason, payload FROM rejected_input ORDER BY id").fetchall()
        batch_row = conn.execute(
            "SELECT n_rows, n_inserted, n_duplicates, n_conflicts, n_rejected FROM ingest_batch WHERE id = %s",
            (result.batch_id,),
        ).fetchone()
    assert conflicts == [("M1", 10.0, 10.5), ("M2", 6.0, 6.1)]
    reasons = [d[0] for d in dead]
    assert any("unknown meter 'M9'" in x for x in reasons)
    assert any("not a finite number" in x for x in reasons)
    assert any("before 2000-01-01" in x for x in reasons)
    assert any("in the future" in x for x in reasons)
    assert any("unknown channel '9-9:9.9.9'" in x for x in reasons)
    assert json.loads(dead[0][1])["meter"] == "M9"  # the payload is kept whole for inspection
    assert batch_row == (12, 3, 2, 2, 5)


def test_same_batch_delivered_twice_lands_once(db):
    db.add_meters(["M1"])
    key = uuid.uuid4()
    readings = [r("M1", 15 * i, float(i)) for i in range(10)]
    with BatchWriter(db.url, db.settings) as writer:
        first = writer.write(readings, batch_key=key)
        again = writer.write(readings, batch_key=key)
    assert first.inserted == 10 and not first.replayed
    assert again.replayed and again.inserted == 0
    assert len(stored(db)) == 10


def test_same_readings_in_a_new_batch_are_counted_as_duplicates(db):
    db.add_meters(["M1"])
    readings = [r("M1", 15 * i, float(i)) for i in range(10)]
    with BatchWriter(db.url, db.settings) as writer:
        writer.write(readings)
        again = writer.write(readings[::-1])
    assert (again.inserted, again.duplicates, again.conflicts) == (0, 10, 0)
    assert len(stored(db)) == 10


def test_out_of_order_data_across_months_lands(db):
    db.add_meters(["M1"])
    times = [datetime(2023, m, 3, tzinfo=UTC) for m in (7, 1, 12, 4)]
    with BatchWriter(db.url, db.settings) as writer:
        result = writer.write([r("M1", 0, float(i), ts=t) for i, t in enumerate(times)])
    assert result.inserted == 4
    assert [row[2] for row in stored(db)] == sorted(times)


def test_events_land_once_and_unknown_meters_go_to_dead_letters(db):
    db.add_meters(["M1"])
    events = [
        MeterEvent("M1", T0, EventKind.TERMINAL_COVER_OPEN, details={"note": "cover"}),
        MeterEvent("M1", T0, EventKind.TERMINAL_COVER_OPEN),
        MeterEvent("M7", T0, EventKind.MAGNETIC_FIELD),
    ]
    with BatchWriter(db.url, db.settings) as writer:
        result = writer.write([], events=events)
    assert result.events == 1 and result.rejected == 1
    with db.connect() as conn:
        assert conn.execute("SELECT kind, code FROM meter_event").fetchall() == [("terminal_cover_open", 40)]


def test_collector_dead_letters_are_kept_with_the_batch(db):
    db.add_meters(["M1"])
    bad = Rejected("mqtt tele/x/SENSOR", "payload is not JSON", "{garbage", Source.MQTT)
    with BatchWriter(db.url, db.settings) as writer:
        result = writer.write([r("M1", 0, 1.0)], rejected=[bad])
    assert (result.inserted, result.rejected) == (1, 1)
    with db.connect() as conn:
        row = conn.execute("SELECT source, origin, reason, payload FROM rejected_input").fetchone()
    assert row == ("mqtt", "mqtt tele/x/SENSOR", "payload is not JSON", "{garbage")


def test_columnar_frames_land_like_objects(db):
    db.add_meters(["A", "B"])
    ts = np.array([np.datetime64(T0.replace(tzinfo=None), "us") + np.timedelta64(900 * i, "s") for i in range(3)])
    frame = ReadingFrame.from_columns(
        meter=["A", "A", "B"], channel=[IMPORT] * 3, ts=ts, value=np.array([1.0, 2.0, 3.0]), unit=["kWh"] * 3
    )
    with BatchWriter(db.url, db.settings) as writer:
        assert writer.write(frame).inserted == 3
    assert [row[3] for row in stored(db)] == [1.0, 2.0, 3.0]


def test_writer_runs_as_the_ingest_role(db):
    db.add_meters(["M1"])
    with BatchWriter(db.url, db.settings) as writer:
        role = writer.conn.execute("SELECT current_user").fetchone()[0]
        assert role == migrate.role_names(db.settings)[0]
        with pytest.raises(errors.InsufficientPrivilege):
            writer.conn.execute("DELETE FROM reading")
        writer.conn.rollback()


def test_naive_timestamps_are_refused_before_the_database():
    with pytest.raises(ValueError, match="timezone-aware"):
        ReadingFrame.from_readings([Reading("M1", IMPORT, datetime(2024, 1, 1), 1.0, "kWh")])


def test_redelivered_batch_lands_only_what_is_new_and_keeps_conflicts(db):
    """Stored rows inside the batch's windows that the batch does not carry are neither counted nor touched."""
    db.add_meters(["M1", "M2"])
    far = datetime(2024, 11, 30, 23, 45, tzinfo=UTC)  # another month, and a gap of years inside M1's rows
    with BatchWriter(db.url, db.settings) as writer:
        writer.write(
            [r("M1", 15 * i, float(i)) for i in range(0, 20, 2)]  # M1 every 30 min
            + [r("M2", 15 * i, 100.0 + i) for i in range(8)]
            + [r("M1", 0, -1.0, ts=far)]
        )
        batch = (
            [r("M1", 15 * i, float(i)) for i in range(0, 8, 2)]  # 4 exact duplicates
            + [r("M1", 15 * i, float(i)) for i in range(1, 8, 2)]  # 4 new, between stored rows
            + [r("M1", 15 * 8, 99.0)]  # conflicts with the stored 8.0
            + [r("M2", 15 * i, 100.0 + i) for i in range(6, 12)]  # 2 duplicates, 4 new
            + [r("M2", 15 * 7, 7.7)]  # second value inside the batch
            + [r("M1", 0, -1.0, ts=far), r("M1", 0, -2.0, ts=far + timedelta(minutes=15))]  # 1 dup. a month away, 1 new
        )
        result = writer.write(batch)
    assert (result.inserted, result.duplicates, result.conflicts) == (9, 7, 2)
    rows = stored(db)
    assert len(rows) == 10 + 8 + 1 + 9
    assert ("M1", IMPORT, T0 + timedelta(minutes=120), 8.0) in rows  # never overwritten
    assert len(set((m, c, t) for m, c, t, _ in rows)) == len(rows)
    with db.connect() as conn:
        conflicts = conn.execute(
            "SELECT m.serial, c.ts, stored_value, new_value FROM reading_conflict c JOIN meter m ON m.id = c.meter_id "
            "ORDER BY 1"
        ).fetchall()
    assert conflicts == [
        ("M1", T0 + timedelta(minutes=120), 8.0, 99.0),
        ("M2", T0 + timedelta(minutes=105), 107.0, 7.7),
    ]


def test_all_duplicate_and_all_conflicting_batches_change_nothing_stored(db):
    db.add_meters(["M1", "M2"])
    readings = [r(m, 15 * i, float(i)) for m in ("M1", "M2") for i in range(50)]
    with BatchWriter(db.url, db.settings) as writer:
        writer.write(readings)
        dup = writer.write(readings)
        changed = writer.write([r(x.meter, 0, x.value + 0.5, ts=x.ts) for x in readings])
        # the first key in order is new, the rest stored: the plain COPY is tried, fails, and the batch is merged
        new_first = writer.write([r("M1", -15, 5.0), *readings[:10]])
    assert (new_first.inserted, new_first.duplicates, new_first.conflicts) == (1, 10, 0)
    assert (dup.inserted, dup.duplicates, dup.conflicts) == (0, 100, 0)
    assert (changed.inserted, changed.duplicates, changed.conflicts) == (0, 0, 100)
    assert [row[3] for row in stored(db)] == [5.0] + [x.value for x in readings]
    with db.connect() as conn:
        assert (
            conn.execute("SELECT count(*) FROM reading_conflict WHERE new_value = stored_value + 0.5").fetchone()[0]
            == 100
        )


def test_redelivery_reads_the_batchs_windows_not_the_table(db):
    """The check for stored rows costs in proportion to the batch: a large month is not scanned."""
    db.add_meters(["M1", "M2"])
    with db.connect() as conn:
        conn.execute("INSERT INTO ingest_batch (batch_key) VALUES (gen_random_uuid())")
        conn.execute("SELECT ensure_reading_partitions(%s, %s)", (T0 - timedelta(days=40), T0))
        conn.execute(  # 2 meters x 40 days of minute data before T0: about 115,000 rows
            "INSERT INTO reading SELECT m.id, c.id, %s - g * interval '1 minute', g, u.id, 1, 1, 0, now(), b.id "
            "FROM meter m, channel c, unit u, ingest_batch b, generate_series(1, 57600) g "
            "WHERE c.code = %s AND u.code = 'kWh'",
            (T0, IMPORT),
        )
        conn.execute("ANALYZE reading")
    batch = [r(m, -i, float(57600 - (57600 - i))) for m in ("M1", "M2") for i in range(1, 6)]  # stored
    batch += [r(m, i, 0.0) for m in ("M1", "M2") for i in range(0, 5)]  # new
    with BatchWriter(db.url, db.settings) as writer, writer.conn.transaction():
        result = writer.write(batch)
        read = writer.conn.execute(
            "SELECT sum(pg_stat_get_xact_tuples_returned(inhrelid) + pg_stat_get_xact_tuples_fetched(inhrelid)) "
            "FROM pg_inherits WHERE inhparent = 'reading'::regclass"
        ).fetchone()[0]
    assert (result.inserted, result.duplicates, result.conflicts) == (10, 10, 0)
    assert read <= 4 * len(batch)  # the windows hold 20 rows; the table 115,200
    # Instants weeks apart in one batch: each is its own window, the weeks between are not read.
    sparse = [r(m, -g, float(g)) for m in ("M1", "M2") for g in (1, 30_000, 57_000)]
    with BatchWriter(db.url, db.settings) as writer, writer.conn.transaction():
        result = writer.write(sparse)
        read = writer.conn.execute(
            "SELECT sum(pg_stat_get_xact_tuples_returned(inhrelid) + pg_stat_get_xact_tuples_fetched(inhrelid)) "
            "FROM pg_inherits WHERE inhparent = 'reading'::regclass"
        ).fetchone()[0]
    assert (result.inserted, result.duplicates, result.conflicts) == (0, 6, 0)
    assert read <= 4 * len(sparse)


def test_a_batch_copied_in_pieces_falls_back_whole_when_its_last_piece_meets_a_stored_row(db):
    """The fast path sends its COPY in pieces: a stored key in the last piece still rolls the whole COPY back."""
    from ingest.writer import _COPY_PIECE

    meters = [f"P{i:03d}" for i in range(40)]
    db.add_meters(meters)
    n = _COPY_PIECE // len(meters) + 10  # intervals per meter: more rows than one piece
    end = np.datetime64(T0.replace(tzinfo=None), "us")
    quarter = np.timedelta64(900, "s")

    def frame(last: np.datetime64, extra: tuple[int, np.datetime64, float] | None = None) -> ReadingFrame:
        """Every meter's n intervals up to ``last``, time-major; plus one more row (meter, ts, value)."""
        meter_idx = np.tile(np.arange(len(meters), dtype=np.int32), n)
        ts = last - np.repeat(np.arange(n)[::-1], len(meters)) * quarter
        value = np.arange(len(ts), dtype=float)
        if extra:
            meter_idx, ts, value = np.r_[meter_idx, extra[0]], np.r_[ts, extra[1]], np.r_[value, extra[2]]
        k = len(ts)
        return ReadingFrame(
            meters,
            meter_idx.astype(np.int32),
            [IMPORT],
            np.zeros(k, np.int32),
            ts,
            value,
            ["kWh"],
            np.zeros(k, np.int32),
            Source.MODBUS,
        )

    k = len(meters) * n
    with BatchWriter(db.url, db.settings) as writer:
        assert writer.write(frame(end)).inserted == k
        # Older intervals for every meter (new), and the last meter's newest stored reading again (the
        # same value): sorted by meter, that row is the batch's last, in its last piece.
        again = writer.write(frame(end - n * quarter, extra=(len(meters) - 1, end, float(k - 1))))
    assert (again.inserted, again.duplicates, again.conflicts) == (k, 1, 0)
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM reading_all").fetchone()[0] == 2 * k
