"""Readings kept as rows and as blocks (migration 0030) read back as one series by every union reader.

Each case stores the same readings split at random between ``reading`` (rows) and ``reading_block``
(runs within one UTC day, rows allowed inside a block's span at instants it does not hold), then
asks ``reading_between``, ``series_between``, ``series_span``, ``series_first``, ``series_before``
and ``reading_all`` what a plain list of the readings answers.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

T0 = datetime(2026, 2, 27, 20, 0, tzinfo=UTC)  # across a month's end and several UTC midnights
STEP = timedelta(minutes=15)

Reading = tuple[int, int, datetime, float]


def _store(conn: psycopg.Connection, readings: list[Reading], rng: random.Random) -> tuple[int, int]:
    """Store ``readings`` as rows and blocks chosen at random; returns (rows, blocks) written."""
    conn.execute("SELECT ensure_reading_partitions(%s, %s)", (T0 - timedelta(days=2), T0 + timedelta(days=10)))
    by_series_day: dict[tuple[int, int, object], list[Reading]] = {}
    for r in readings:
        by_series_day.setdefault((r[0], r[1], r[2].date()), []).append(r)
    rows: list[Reading] = []
    blocks: list[list[Reading]] = []
    for day in by_series_day.values():
        day.sort(key=lambda r: r[2])
        i = 0
        while i < len(day):
            n = rng.choice([1, 1, 2, 3, 5, 12, 40])
            run = day[i : i + n]
            i += n
            if len(run) >= 2 and rng.random() < 0.7:
                # Some of the run's inner instants go to rows: a block's span may hold rows (late data).
                inner = [r for r in run[1:-1] if rng.random() < 0.2]
                rows += inner
                blocks.append([r for r in run if r not in inner])
            else:
                rows += run
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO reading (meter_id, channel_id, ts, value, unit_id, source_id, read_type_id, quality,
                                    received_at, batch_id)
               VALUES (%s, %s, %s, %s, 1, 1, 1, 0, now(), 7)""",
            rows,
        )
        cur.executemany(
            """INSERT INTO reading_block (meter_id, channel_id, ts_first, ts_last, ts, value, quality, unit_id,
                                          source_id, read_type_id, received_at, batch_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, 1, 1, 1, now(), 8)""",
            [(b[0][0], b[0][1], b[0][2], b[-1][2], [r[2] for r in b], [r[3] for r in b], [0] * len(b)) for b in blocks],
        )
        # As the writer does: the readers bound their blocks' side by the first block's instant.
        cur.execute(
            "UPDATE reading_block_reach SET (reach, first_block) = (SELECT max(ts_last), min(ts_first) FROM reading_block)"
        )
    return len(rows), len(blocks)


def _readings(rng: random.Random) -> list[Reading]:
    out = []
    for meter in (1, 2, 3):
        for channel in (1, 5):
            t = T0 + STEP * rng.randrange(8)
            while t < T0 + timedelta(days=6):
                out.append((meter, channel, t, round(rng.uniform(0, 100), 3)))
                t += STEP * rng.choice([1, 1, 1, 2, 7, 30])
    return out


@pytest.fixture(params=[1, 2, 3])
def stored(request, db) -> tuple[psycopg.Connection, list[Reading], random.Random]:
    rng = random.Random(request.param)
    readings = _readings(rng)
    with psycopg.connect(db.url, autocommit=True) as conn:
        n_rows, n_blocks = _store(conn, readings, rng)
        assert n_rows and n_blocks
        yield conn, readings, rng


def _windows(rng: random.Random) -> list[tuple[datetime, datetime]]:
    out = [(T0 - timedelta(days=1), T0 + timedelta(days=30))]
    for _ in range(12):
        lo = T0 + timedelta(minutes=rng.randrange(-60, 6 * 24 * 60))
        out.append((lo, lo + timedelta(minutes=rng.choice([0, 15, 90, 24 * 60, 3 * 24 * 60]))))
    out.append((T0 + 3 * STEP, T0 + 3 * STEP))  # one instant
    return out


def test_reading_between_returns_every_reading_in_the_closed_window_once(stored):
    conn, readings, rng = stored
    for lo, hi in _windows(rng):
        got = sorted(
            conn.execute("SELECT meter_id, channel_id, ts, value FROM reading_between(%s, %s)", (lo, hi)).fetchall()
        )
        assert got == sorted(r for r in readings if lo <= r[2] <= hi), (lo, hi)


def test_series_between_span_and_first_answer_for_one_series(stored):
    conn, readings, rng = stored
    for lo, hi in _windows(rng):
        for meter, channel in ((1, 1), (2, 5), (3, 1)):
            want = sorted(r for r in readings if r[0] == meter and r[1] == channel and lo <= r[2] <= hi)
            got = conn.execute(
                "SELECT meter_id, channel_id, ts, value FROM series_between(%s, %s, %s, %s) ORDER BY ts",
                (meter, channel, lo, hi),
            ).fetchall()
            assert got == want
            span = conn.execute("SELECT lo, hi FROM series_span(%s, %s, %s, %s)", (meter, channel, lo, hi)).fetchone()
            assert span == ((want[0][2], want[-1][2]) if want else (None, None))
            first = conn.execute(
                "SELECT meter_id, channel_id, ts, value FROM series_first(%s, %s, %s, %s)", (meter, channel, lo, hi)
            ).fetchall()
            assert first == want[:1]


def test_series_before_gives_the_last_n_before_an_instant_newest_first(stored):
    conn, readings, rng = stored
    for _ in range(20):
        t = T0 + timedelta(minutes=rng.randrange(0, 6 * 24 * 60))
        n = rng.choice([1, 2, 5, 30])
        want = sorted((r for r in readings if r[0] == 2 and r[1] == 1 and r[2] < t), key=lambda r: r[2])[::-1][:n]
        got = conn.execute("SELECT meter_id, channel_id, ts, value FROM series_before(2, 1, %s, %s)", (t, n)).fetchall()
        assert got == want


def test_reading_all_holds_every_reading(stored):
    conn, readings, _ = stored
    got = sorted(conn.execute("SELECT meter_id, channel_id, ts, value FROM reading_all").fetchall())
    assert got == sorted(readings)


def test_a_block_across_a_utc_midnight_or_with_unequal_arrays_is_refused(db):
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("SELECT ensure_reading_partitions(%s, %s)", (T0, T0))
        insert = """INSERT INTO reading_block (meter_id, channel_id, ts_first, ts_last, ts, value, quality, unit_id,
                                               source_id, read_type_id, received_at, batch_id)
                    VALUES (1, 1, %s, %s, %s, %s, %s, 1, 1, 1, now(), 1)"""
        a, b = datetime(2026, 2, 1, 23, 45, tzinfo=UTC), datetime(2026, 2, 2, 0, 0, tzinfo=UTC)
        with pytest.raises(psycopg.errors.CheckViolation, match="reading_block_one_utc_day"):
            conn.execute(insert, (a, b, [a, b], [1.0, 2.0], [0, 0]))
        with pytest.raises(psycopg.errors.CheckViolation, match="reading_block_shape"):
            conn.execute(insert, (b, b + STEP, [b, b + STEP], [1.0], [0, 0]))
        conn.execute(insert, (b, b + STEP, [b, b + STEP], [1.0, 2.0], [0, 0]))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("UPDATE reading_block SET value = value")


def _versions(conn: psycopg.Connection, readings: list[Reading], rng: random.Random) -> None:
    """VEE versions over some stored instants (edits, estimates replacing a value) and at instants none holds."""
    for serial in ("M1", "M2", "M3"):
        conn.execute(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, 'electricity', 't', 'kWh', 'import')",
            (serial,),
        )
    assert conn.execute("SELECT array_agg(id ORDER BY id) FROM meter").fetchone() == ([1, 2, 3],)
    held = {(r[0], r[1], r[2]) for r in readings}
    rows = []
    for r in rng.sample(readings, 40):
        rows.append((r[0], r[1], r[2], 1, r[3] + 1, "F", "edit", r[3]))
    for meter in (1, 2, 3):
        t = T0 + STEP * rng.randrange(4 * 24 * 6)
        if (meter, 1, t) not in held:
            rows.append((meter, 1, t, 1, 42.0, "S", "estimate", None))  # a gap filled
    conn.cursor().executemany(
        """INSERT INTO reading_version (meter_id, channel_id, ts, version, value, quality, kind, replaced_value,
                                        created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'test')""",
        rows,
    )


def test_validated_between_and_series_are_the_view_over_a_window(stored):
    conn, readings, rng = stored
    kinds = dict(conn.execute("SELECT id, kind FROM channel WHERE id IN (1, 5)").fetchall())
    assert {"register", "interval"} & set(kinds.values())  # the view reads these kinds only
    _versions(conn, readings, rng)
    columns = "meter_id, channel_id, ts, value, quality, quality_flag, version, raw_value, under_review"
    versions = 0
    for lo, hi in _windows(rng):
        want = conn.execute(
            f"SELECT {columns} FROM validated_reading WHERE ts >= %s AND ts <= %s ORDER BY 1, 2, 3", (lo, hi)
        ).fetchall()
        got = conn.execute(f"SELECT {columns} FROM validated_between(%s, %s) ORDER BY 1, 2, 3", (lo, hi)).fetchall()
        assert got == want, (lo, hi)
        for meter, channel in ((1, 1), (2, 5), (3, 1)):
            one = conn.execute(
                f"SELECT {columns} FROM validated_series(%s, %s, %s, %s) ORDER BY ts", (meter, channel, lo, hi)
            ).fetchall()
            assert one == [r for r in want if r[0] == meter and r[1] == channel]
        versions += sum(1 for r in want if r[6])
    assert versions  # versions took part


def test_validated_between_reads_only_the_windows_block_partitions(stored):
    conn, _, _ = stored
    lo = T0 + timedelta(days=3)
    plan = "\n".join(
        str(r[0])
        for r in conn.execute("EXPLAIN SELECT * FROM validated_between(%s, %s)", (lo, lo + timedelta(hours=6)))
    )
    whole = "\n".join(str(r[0]) for r in conn.execute("EXPLAIN SELECT * FROM validated_reading WHERE ts >= %s", (lo,)))
    block_parts = [line for line in plan.splitlines() if "reading_block_" in line]
    assert block_parts and len(block_parts) < len([line for line in whole.splitlines() if "reading_block_" in line])


def test_validated_reading_with_block_is_the_view_beside_the_first_instant_of_each_reads_block(stored):
    conn, readings, rng = stored
    _versions(conn, readings, rng)
    columns = "meter_id, channel_id, ts, value, quality, quality_flag, version, raw_value, under_review"
    want = conn.execute(f"SELECT {columns} FROM validated_reading ORDER BY 1, 2, 3").fetchall()
    got = conn.execute(f"SELECT {columns}, block_first FROM validated_reading_with_block ORDER BY 1, 2, 3").fetchall()
    assert [r[:-1] for r in got] == want
    in_block = {
        (m, c, t): first
        for m, c, first, instants in conn.execute("SELECT meter_id, channel_id, ts_first, ts FROM reading_block")
        for t in instants
    }
    assert any(key in in_block for key in ((r[0], r[1], r[2]) for r in got))  # blocks took part
    for r in got:
        assert r[-1] == in_block.get((r[0], r[1], r[2]), r[2])  # a row's (or a version's) own instant
    for lo, hi in _windows(rng):  # the bound the shard schema adds keeps every read of the window
        bounded = conn.execute(
            f"""SELECT {columns} FROM validated_reading_with_block
                WHERE ts >= %(lo)s AND ts <= %(hi)s AND block_first > %(lo)s - interval '1 day' AND block_first <= %(hi)s
                ORDER BY 1, 2, 3""",
            {"lo": lo, "hi": hi},
        ).fetchall()
        assert bounded == [r for r in want if lo <= r[2] <= hi], (lo, hi)


def test_a_block_bound_on_validated_reading_with_block_reads_only_the_windows_block_partitions(stored):
    conn, _, _ = stored
    lo = T0 + timedelta(days=3)
    hi = lo + timedelta(hours=6)
    window = "ts >= %(lo)s AND ts <= %(hi)s"
    bound = window + " AND block_first > %(lo)s - interval '1 day' AND block_first <= %(hi)s"

    def block_parts(where: str) -> int:
        plan = conn.execute(f"EXPLAIN SELECT * FROM validated_reading_with_block WHERE {where}", {"lo": lo, "hi": hi})
        return sum("reading_block_" in str(r[0]) for r in plan)

    assert 0 < block_parts(bound) < block_parts(window)
