"""The writer's blocks (migration 0030): runs as blocks, singles as rows, every instant stored once.

A real PostgreSQL throughout: what lands where (``reading`` or ``reading_block``), the reach, the
slow path over blocks (duplicates, conflicts with a block's value, late readings inside a block's
span), the lock between a batch of blocks and a batch of singles, and random sequences of batches
held to a plain model of "first value wins".
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from ingest import BatchWriter
from releve.db import status
from releve.model import Reading, Source

pytestmark = pytest.mark.db

T0 = datetime(2026, 3, 30, 22, 0, tzinfo=UTC)  # runs cross a UTC midnight and a month's end
IMPORT, EXPORT = "1-0:1.8.0", "1-0:2.8.0"


def r(meter: str, minutes: int, value: float, channel: str = IMPORT) -> Reading:
    return Reading(meter, channel, T0 + timedelta(minutes=minutes), value, "kWh", Source.MODBUS)


def stores(db) -> tuple[int, int, int]:
    """(rows in reading, blocks, readings in blocks)."""
    with db.connect() as conn:
        rows = conn.execute("SELECT count(*) FROM reading").fetchone()[0]
        blocks, held = conn.execute("SELECT count(*), coalesce(sum(cardinality(ts)), 0) FROM reading_block").fetchone()
    return rows, blocks, held


def everything(db) -> list[tuple[str, str, datetime, float]]:
    with db.connect() as conn:
        return conn.execute(
            "SELECT m.serial, c.code, r.ts, r.value FROM reading_all r JOIN meter m ON m.id = r.meter_id "
            "JOIN channel c ON c.id = r.channel_id ORDER BY 1, 2, 3"
        ).fetchall()


def reach(db) -> tuple[datetime, datetime]:
    """(the latest instant any block reaches, the first block's first instant)."""
    with db.connect() as conn:
        return conn.execute("SELECT reach, first_block FROM reading_block_reach").fetchone()


def test_runs_land_as_blocks_cut_at_utc_midnight_and_singles_as_rows(db):
    db.add_meters(["M1", "M2", "M3"])
    batch = (
        [r("M1", 15 * i, float(i)) for i in range(12)]  # 22:00 .. 00:45: two blocks (8 + 4)
        + [r("M1", 30, 5.0, EXPORT)]  # one reading on another channel: a row
        + [r("M2", 0, 1.0)]  # a single: a row
        + [r("M3", 15 * i, 10.0 + i) for i in range(3)]  # one block
    )
    with BatchWriter(db.url, db.settings) as writer:
        result = writer.write(batch)
    assert (result.inserted, result.duplicates, result.conflicts) == (17, 0, 0)
    assert stores(db) == (2, 3, 15)
    assert everything(db) == sorted((x.meter, x.channel, x.ts, x.value) for x in batch)
    assert reach(db) == (T0 + timedelta(minutes=165), T0)
    counts = status(db.url)["rows"]
    assert isinstance(counts, dict) and (counts["reading"], counts["reading_block"]) == (17, 3)
    with db.connect() as conn:
        spans = conn.execute(
            "SELECT m.serial, b.ts_first, b.ts_last FROM reading_block b JOIN meter m ON m.id = b.meter_id ORDER BY 1, 2"
        ).fetchall()
    midnight = datetime(2026, 3, 31, tzinfo=UTC)
    assert spans == [
        ("M1", T0, midnight - timedelta(minutes=15)),
        ("M1", midnight, midnight + timedelta(minutes=45)),
        ("M3", T0, T0 + timedelta(minutes=30)),
    ]


def test_a_redelivered_batch_over_blocks_counts_duplicates_and_keeps_conflicts_with_the_blocks_value(db):
    db.add_meters(["M1"])
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([r("M1", 15 * i, float(i)) for i in range(8)])
        again = writer.write(
            [r("M1", 15 * i, float(i)) for i in range(4)]  # 4 duplicates held by the block
            + [r("M1", 15 * 4, 44.0)]  # differs from the block's 4.0
            + [r("M1", 15 * i, float(i)) for i in range(8, 10)]  # 2 new, after it
        )
    assert (again.inserted, again.duplicates, again.conflicts) == (2, 4, 1)
    assert ("M1", IMPORT, T0 + timedelta(minutes=60), 4.0) in everything(db)  # never overwritten
    assert len(everything(db)) == 10
    assert stores(db) == (0, 2, 10)  # the slow way; its new run meets nothing stored: a block
    with db.connect() as conn:
        assert conn.execute("SELECT stored_value, new_value FROM reading_conflict").fetchall() == [(4.0, 44.0)]


def test_a_late_reading_inside_a_blocks_span_lands_as_a_row_and_reads_back_in_order(db):
    db.add_meters(["M1"])
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([r("M1", 30 * i, float(i)) for i in range(6)])  # every 30 minutes: 22:00-23:30, 00:00-00:30
        late = writer.write([r("M1", 45, 1.5), r("M1", 75, 2.5)])  # the quarter hours it skipped
    assert (late.inserted, late.duplicates) == (2, 0)
    assert stores(db) == (2, 2, 6)
    with db.connect() as conn:
        series = conn.execute(
            "SELECT ts, value FROM series_between((SELECT id FROM meter), (SELECT id FROM channel WHERE code = %s),"
            " %s, %s) ORDER BY ts",
            (IMPORT, T0, T0 + timedelta(hours=3)),
        ).fetchall()
    assert [v for _, v in series] == [0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0]


def test_a_backfill_reaching_back_before_the_reach_still_lands_as_blocks_when_it_meets_nothing(db):
    db.add_meters(["M1", "M2"])
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([r("M1", 24 * 60 + 15 * i, float(i)) for i in range(8)])  # M1, a day later: the reach
        back = writer.write([r("M2", 15 * i, float(i)) for i in range(4)] + [r("M1", 15 * i, 1.0) for i in range(4)])
        assert (back.inserted, back.duplicates) == (8, 0)
        assert stores(db) == (0, 3, 16)  # checked run by run against the blocks: none met, all blocks
        inside = writer.write([r("M1", 24 * 60 + 20, 0.5), r("M2", 90, 6.0)])  # in a block's span; after M2's
        assert (inside.inserted, inside.duplicates) == (2, 0)
    assert stores(db) == (2, 3, 16)  # a single in a block's span went the slow way, as a row
    assert reach(db) == (T0 + timedelta(minutes=24 * 60 + 105), T0)
    assert len(everything(db)) == 18


def test_a_late_run_meets_the_blocks_it_overlaps_whichever_of_the_days_blocks_they_are(db):
    """Late runs around two blocks of one day: between them a block of its own, over either a slow-path row each."""
    db.add_meters(["M1", "M2"])
    day = 24 * 60 + 120  # 00:00 UTC the next day, two blocks that day: 00:00-01:00 and 01:15-01:30
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([r("M1", day + 15 * i, float(i)) for i in range(5)] + [r("M2", day, 0.0), r("M2", day + 15, 1.0)])
        writer.write([r("M1", day + 75 + 15 * i, float(10 + i)) for i in range(2)] + [r("M2", day + 30, 2.0)])
        # between the two blocks: meets neither, lands as a block
        between = writer.write([r("M1", day + 65, 4.5), r("M1", day + 70, 4.7)])
        assert (between.inserted, between.duplicates) == (2, 0)
        assert stores(db) == (1, 4, 11)  # M2's lone reading a row; M1's three blocks, M2's one
        # inside the first block's span, before the second starts: the first block is the last before its end
        inside = writer.write([r("M1", day + 5, 0.5), r("M1", day + 10, 0.7)])
        # over the end of the first block and into the second: the second is the last before its end
        across = writer.write([r("M1", day + 55, 3.5), r("M1", day + 80, 10.5)])
    assert (inside.inserted, inside.duplicates, across.inserted, across.duplicates) == (2, 0, 2, 0)
    assert stores(db) == (5, 4, 11)  # both late runs met a block: rows, each instant once
    assert len(everything(db)) == 16


def test_a_redelivered_segment_lands_its_new_runs_as_blocks_and_gap_fillers_as_rows(db):
    db.add_meters(["M1", "M2"])
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([r("M1", 15 * i, float(i)) for i in range(0, 8, 2)] + [r("M2", 15 * i, 1.0) for i in range(4)])
        again = writer.write(
            [r("M1", 15 * i, float(i)) for i in range(1, 6)]  # 1..5: 2, 4 stored; 1, 3, 5 fill the block's gaps
            + [r("M2", 15 * i, 1.0) for i in range(3, 10)]  # 3 stored, 4..9 a new run after the block
        )
    assert (again.inserted, again.duplicates, again.conflicts) == (9, 3, 0)
    assert stores(db) == (3, 4, 14)  # M1's gap fillers rows; M2's new run two blocks (midnight)
    assert len(everything(db)) == 17


def test_a_run_whose_span_holds_a_stored_row_goes_the_slow_way(db):
    db.add_meters(["M1"])
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([r("M1", 60, 4.0)])  # a single: a row, no block yet
        result = writer.write([r("M1", 15 * i, float(i)) for i in range(8)])  # a run over it, 60 stored
    assert (result.inserted, result.duplicates, result.conflicts) == (7, 1, 0)
    assert stores(db) == (8, 0, 0)
    assert len(everything(db)) == 8


def test_with_blocks_off_every_reading_is_a_row_still_checked_against_stored_blocks(db):
    db.add_meters(["M1"])
    settings = db.settings.model_copy(update={"ingest": db.settings.ingest.model_copy(update={"blocks": False})})
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([r("M1", 15 * i, float(i)) for i in range(4)])  # a block
    with BatchWriter(db.url, settings) as writer:
        result = writer.write([r("M1", 15 * i, float(i)) for i in range(2, 8)])  # over its end, then new
    assert (result.inserted, result.duplicates, result.conflicts) == (4, 2, 0)
    assert stores(db) == (4, 1, 4)
    assert len(everything(db)) == 8


def test_a_batch_of_blocks_waits_for_a_batch_of_singles_still_open(db):
    """The shared/exclusive lock: a block must not land over a single that another writer has not committed."""
    db.add_meters(["M1", "M2"])
    with db.connect() as first_conn:
        singles = BatchWriter(db.url, db.settings, conn=first_conn)
        with first_conn.transaction():
            singles.write([r("M1", 30, 9.0)])  # a single at 22:30, not committed
            done = threading.Event()
            outcome: list[object] = []

            def blocks() -> None:
                with BatchWriter(db.url, db.settings) as writer:
                    outcome.append(writer.write([r("M1", 15 * i, float(i)) for i in range(4)]))
                done.set()

            thread = threading.Thread(target=blocks)
            thread.start()
            time.sleep(0.5)
            assert not done.is_set()  # waiting for the singles' lock
        thread.join(10)
    assert done.is_set()
    result = outcome[0]
    assert (result.inserted, result.duplicates, result.conflicts) == (3, 0, 1)  # saw the committed single
    assert ("M1", IMPORT, T0 + timedelta(minutes=30), 9.0) in everything(db)
    assert len(everything(db)) == 4


@pytest.mark.parametrize("seed", range(4))
def test_random_batches_store_each_instant_once_with_its_first_value(db, seed):
    """Fresh, late, overlapping and redelivered batches in random order against a model: the first value wins."""
    rng = random.Random(seed)
    meters = [f"S{seed}M{k}" for k in range(4)]
    db.add_meters(meters)
    model: dict[tuple[str, str, datetime], float] = {}
    conflicts = 0
    with BatchWriter(db.url, db.settings) as writer:
        for _ in range(12):
            batch: list[Reading] = []
            for meter in rng.sample(meters, rng.randint(1, len(meters))):
                channel = rng.choice([IMPORT, EXPORT])
                first = rng.randrange(0, 96 * 3)
                for i in range(first, first + rng.choice([1, 1, 2, 5, 30, 120]), rng.choice([1, 1, 2, 3])):
                    value = float(rng.randrange(5)) if rng.random() < 0.3 else float(i)
                    batch.append(r(meter, 15 * i, value, channel))
            seen: dict[tuple[str, str, datetime], float] = {}
            want_conflicts = 0
            for x in batch:
                key = (x.meter, x.channel, x.ts)
                if key in seen:
                    want_conflicts += seen[key] != x.value
                    continue
                seen[key] = x.value
                if key in model:
                    want_conflicts += model[key] != x.value
                else:
                    model[key] = x.value
            result = writer.write(batch)
            assert result.conflicts == want_conflicts
            conflicts += want_conflicts
    assert everything(db) == sorted((m, c, t, v) for (m, c, t), v in model.items())
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM reading_conflict").fetchone()[0] == conflicts
        # Blocks of a series never overlap each other (series_span and series_before rely on it).
        assert (
            conn.execute(
                """SELECT count(*) FROM reading_block a JOIN reading_block b
                   ON a.meter_id = b.meter_id AND a.channel_id = b.channel_id AND a.ts_first < b.ts_first
                  AND b.ts_first <= a.ts_last"""
            ).fetchone()[0]
            == 0
        )
