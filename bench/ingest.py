"""Ingest write path against raw COPY, in the same run, on the same server, as the table grows.

    python bench/ingest.py [--rows 8M[,50M]] [--fleet 10000] [--meters 2000] [--intervals 1000]
                           [--batch 50000] [--rounds 10]

First, a small run: meters × intervals readings (15-minute register reads, delivered time-major as
live collectors deliver them) written twice, as raw binary COPY into a bare table of the same
shape as ``reading`` (no keys, no indexes: the physical baseline), then through Relevé's write
path (BatchWriter: batch key, validation, sorting, duplicate detection, each run of a meter's
intervals within a UTC day COPYed as one block into ``reading_block`` and single readings into
``reading``, both partitioned and keyed: migration 0030); then the same readings delivered again in new batches (all
duplicates) and the object path (Reading objects, as collectors submit them). ``--meters 0``
skips it.

Then the table grows: for each size of ``--rows`` (8M by default; ``--rows 8M,50M`` for both, the
50 M build takes several minutes), ``reading`` is filled to that many rows in SQL (a fleet of
``--fleet`` meters with that much 15-minute history; setup, not timed) and rounds of batches
follow, each round four timed steps on the same table under the same load:

1. raw binary COPY of the round's fresh batch into a bare table (the baseline at that moment);
2. the same fresh batch (new intervals for one half of the fleet) through the write path;
3. raw binary COPY of as many other new intervals of the same meters, in key order, straight
   into ``reading`` (its primary key, none of the writer's work: what a key per reading alone
   costs, the ceiling of any writer of a row per reading — the write path keeps these runs as
   blocks instead);
   steps 2 and 3 swap places every round, since whichever comes first finds the index pages
   colder, and the first takes the earlier intervals, so both append to every meter's run;
4. a redelivered batch (the other half; the first tenth of every meter's intervals already
   stored, as when a collector re-sends a segment that had partly landed).

Printed per size: fresh rows/s as a ratio of raw COPY (goal >= 0.40, and no lower at 50 M than
at 8 M) beside the keyed COPY's own ratio (the ceiling of a writer of one row per reading), and
the redelivered rate as a ratio of the fresh one. The history is grown as rows of ``reading``
(what a database kept by a row-per-reading writer holds): the write path's runs are checked
against that table's key, as they would be after an upgrade.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_database
from ingest import BatchWriter, ReadingFrame
from ingest.frame import READING_COPY_COLUMNS, encode_reading_copy
from releve.model import Reading, Source
from releve.settings import Settings


def make_frame(n_meters: int, n_intervals: int) -> ReadingFrame:
    start = np.datetime64("2026-01-01T00:00", "us")
    ts = start + np.repeat(np.arange(n_intervals, dtype=np.int64) * 900_000_000, n_meters).astype("timedelta64[us]")
    meter_idx = np.tile(np.arange(n_meters, dtype=np.int32), n_intervals)
    rng = np.random.default_rng(7)
    value = np.cumsum(rng.gamma(2.0, 0.1, size=(n_intervals, n_meters)), axis=0).ravel() + 1000.0
    return ReadingFrame(
        meters=[f"BENCH{i:06d}" for i in range(n_meters)],
        meter_idx=meter_idx,
        channels=["1-0:1.8.0"],
        channel_idx=np.zeros(len(ts), np.int32),
        ts=ts,
        value=value,
        units=["kWh"],
        unit_idx=np.zeros(len(ts), np.int32),
        source=Source.MODBUS,
    )


def block_frame(serials: list[str], first: int, n_intervals: int) -> ReadingFrame:
    """Intervals first..first+n-1 of every meter in ``serials`` (named BIGnnnnnn), time-major.

    The value of meter k at interval i is i * 0.25 + k, as the SQL that builds the big table
    writes it, so a redelivered reading carries exactly the stored value.
    """
    k = np.array([int(s[3:]) for s in serials], np.float64)
    intervals = np.arange(first, first + n_intervals, dtype=np.int64)
    ts = BIG_START + np.repeat(intervals * 900_000_000, len(serials)).astype("timedelta64[us]")
    meter_idx = np.tile(np.arange(len(serials), dtype=np.int32), n_intervals)
    value = np.repeat(intervals * 0.25, len(serials)) + k[meter_idx]
    return ReadingFrame(
        meters=serials,
        meter_idx=meter_idx,
        channels=["1-0:1.8.0"],
        channel_idx=np.zeros(len(ts), np.int32),
        ts=ts,
        value=value,
        units=["kWh"],
        unit_idx=np.zeros(len(ts), np.int32),
        source=Source.MODBUS,
    )


BIG_START = np.datetime64("2025-01-01T00:00", "us")


def create_fleet(url: str, n_meters: int) -> None:
    """Meters BIG000000.. and the partitions a year of their readings needs."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) "
            "SELECT format('BIG%%s', lpad(g::text, 6, '0')), 'electricity', 'bench', 'kWh', 'import' "
            "FROM generate_series(0, %s - 1) g",
            (n_meters,),
        )
        conn.execute(
            "SELECT ensure_reading_partitions(%s, %s)", (str(BIG_START), str(BIG_START + np.timedelta64(400, "D")))
        )
        conn.execute("CREATE TABLE IF NOT EXISTS bare (LIKE reading)")  # same columns, no key, no index


def grow_big_table(url: str, meters: range, first: int, last: int) -> float:
    """Intervals first..last-1 of BIG meters ``meters`` into ``reading``, meter range by range; seconds taken.

    The value of meter k at interval i is i * 0.25 + k, as :func:`block_frame` writes it.
    """
    t = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        batch = conn.execute(
            "INSERT INTO ingest_batch (batch_key, origin) VALUES (gen_random_uuid(), 'bench setup') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        step = max(1, 5_000_000 // max(1, last - first))
        for lo in range(meters.start, meters.stop, step):
            conn.execute(
                """INSERT INTO reading (meter_id, channel_id, ts, value, unit_id, source_id, read_type_id, quality,
                                         received_at, batch_id)
                   SELECT m.id, c.id, %(start)s::timestamptz + i * interval '15 minutes', i * 0.25 + m.k,
                          u.id, s.id, rt.id, 0, now(), %(batch)s
                   FROM (SELECT id, substr(serial, 4)::int AS k FROM meter
                         WHERE serial >= format('BIG%%s', lpad(%(lo)s::text, 6, '0'))
                           AND serial < format('BIG%%s', lpad(%(hi)s::text, 6, '0')) ORDER BY serial) m
                   CROSS JOIN LATERAL generate_series(%(first)s, %(last)s - 1) i,
                        channel c, unit u, reading_source s, read_type rt
                   WHERE c.code = '1-0:1.8.0' AND u.code = 'kWh' AND s.name = 'modbus' AND rt.name = 'actual'""",
                {
                    "start": str(BIG_START) + "Z",
                    "batch": batch,
                    "lo": lo,
                    "hi": min(lo + step, meters.stop),
                    "first": first,
                    "last": last,
                },
            )
            print(
                f"  ... {(min(lo + step, meters.stop) - meters.start) * (last - first):,} rows",
                file=sys.stderr,
                flush=True,
            )
        conn.execute("VACUUM (ANALYZE) reading")  # now, rather than autovacuum during the timed rounds
        conn.execute("CHECKPOINT")
    return time.perf_counter() - t


def as_copy(frame: ReadingFrame, meter_ids: dict[str, int], key_order: bool = False) -> bytes:
    """A frame as the binary COPY payload of ``reading``'s columns (ids looked up here: baseline only).

    ``key_order`` sorts the rows by (meter, instant), as the writer sorts a batch before its COPY.
    """
    n = len(frame)
    ids = np.array([meter_ids[m] for m in frame.meters], np.int32)[frame.meter_idx]
    order = np.lexsort((frame.ts, ids)) if key_order else np.arange(n)
    ones = np.ones(n, np.int16)
    return encode_reading_copy(
        ids[order],
        ones,
        frame.ts[order],
        frame.value[order],
        ones,
        1,
        ones,
        np.zeros(n, np.int16),
        datetime.now(UTC),
        1,
    )


def timed_copy(conn: psycopg.Connection, table: str, payload: bytes) -> float:
    """Seconds to COPY ``payload`` into ``table`` and commit."""
    t = time.perf_counter()
    with conn.cursor().copy(f"COPY {table} ({READING_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
        cp.write(payload)
    conn.commit()
    return time.perf_counter() - t


def as_the_table_grows(url: str, settings: Settings, args: argparse.Namespace) -> list[tuple[int, float, float, float]]:
    """Raw COPY, fresh batches, keyed COPY and 10 %-redelivered batches, alternated, at each table size.

    Returns (size, fresh/raw, keyed COPY/raw, redo/fresh) per size.
    """
    create_fleet(url, args.fleet)
    with psycopg.connect(url) as conn:
        meter_ids: dict[str, int] = dict(
            conn.execute("SELECT serial, id FROM meter WHERE serial LIKE 'BIG%'").fetchall()
        )
    serials = [f"BIG{i:06d}" for i in range(args.fleet)]
    fresh_half, redo_half = serials[: len(serials) // 2], serials[len(serials) // 2 :]
    per_batch = max(10, args.batch // len(fresh_half) // 10 * 10)  # intervals per batch, a multiple of 10
    stored = per_batch // 10  # intervals of each redelivered batch that the previous one already landed
    fresh_next = redo_next = 0  # the first interval not stored yet, per half
    out = []
    with BatchWriter(url, settings, origin="bench") as writer, psycopg.connect(url) as raw_conn:
        for size in args.rows:
            # Every meter gets history up to interval ``target``: about ``size`` rows in all.
            half = len(fresh_half)
            target = max(fresh_next, size // args.fleet)
            took = grow_big_table(url, range(0, half), fresh_next, target)
            took += grow_big_table(url, range(half, args.fleet), redo_next, target)
            fresh_next = redo_next = target
            total = raw_conn.execute("SELECT count(*) FROM reading_all").fetchone()[0]  # type: ignore[index]
            raw_conn.commit()
            print(
                f"\nreading holds {total:,} rows ({args.fleet:,} meters x {target:,} intervals of history; "
                f"grown in SQL in {took:,.0f} s, setup, not timed)"
            )
            raw_rows = fresh_rows = redo_rows = 0
            raw_time = fresh_time = keyed_time = redo_time = 0.0
            for rnd in range(args.rounds + 1):  # round 0 warms the caches and is not timed
                # The write path and the keyed COPY swap places every round (whichever goes first finds
                # the index colder); whichever goes first takes the earlier intervals, so both append
                # at the end of every meter's run in the index.
                keyed_first = rnd % 2 == 1
                first, second = fresh_next, fresh_next + per_batch
                fresh = block_frame(fresh_half, second if keyed_first else first, per_batch)
                keyed = block_frame(fresh_half, first if keyed_first else second, per_batch)
                redo = block_frame(redo_half, redo_next - stored, per_batch)
                t_raw = timed_copy(raw_conn, "bare", as_copy(fresh, meter_ids))
                keyed_payload = as_copy(keyed, meter_ids, key_order=True)
                t_keyed = timed_copy(raw_conn, "reading", keyed_payload) if keyed_first else 0.0
                t1 = time.perf_counter()
                a = writer.write(fresh)
                t_fresh = time.perf_counter() - t1
                if not keyed_first:
                    t_keyed = timed_copy(raw_conn, "reading", keyed_payload)
                t2 = time.perf_counter()
                b = writer.write(redo)
                t_redo = time.perf_counter() - t2
                assert a.inserted == len(fresh), a
                assert (b.inserted, b.duplicates, b.conflicts) == (
                    len(redo) - stored * len(redo_half),
                    stored * len(redo_half),
                    0,
                ), b
                fresh_next += 2 * per_batch  # the write path's intervals and the keyed COPY's
                redo_next += per_batch - stored
                if rnd:
                    raw_time, fresh_time, keyed_time = raw_time + t_raw, fresh_time + t_fresh, keyed_time + t_keyed
                    raw_rows, fresh_rows = raw_rows + len(fresh), fresh_rows + len(fresh)
                    redo_rows, redo_time = redo_rows + len(redo), redo_time + t_redo
            raw_rate, fresh_rate, redo_rate = raw_rows / raw_time, fresh_rows / fresh_time, redo_rows / redo_time
            keyed_rate = fresh_rows / keyed_time
            print(
                f"raw COPY into a bare table      {raw_rate:>12,.0f} rows/s   ({args.rounds} x {per_batch * len(fresh_half):,} rows)"
            )
            print(f"raw COPY into reading (its key) {keyed_rate:>12,.0f} rows/s   (other new intervals, same meters)")
            print(
                f"ratio keyed COPY / raw COPY     {keyed_rate / raw_rate:>12.2f}   (what the primary key alone leaves)"
            )
            print(f"fresh batches (write path)      {fresh_rate:>12,.0f} rows/s   (same rows as the bare COPY)")
            print(f"ratio fresh / raw COPY          {fresh_rate / raw_rate:>12.2f}   (goal >= 0.40)")
            print(
                f"ratio fresh / keyed COPY        {fresh_rate / keyed_rate:>12.2f}   (above 1: blocks beat a key per row)"
            )
            print(f"redelivered, 10 % stored        {redo_rate:>12,.0f} rows/s   (same rounds, alternated)")
            print(f"ratio redelivered / fresh       {redo_rate / fresh_rate:>12.2f}   (goal >= 0.80)")
            out.append((int(total), fresh_rate / raw_rate, keyed_rate / raw_rate, redo_rate / fresh_rate))
    return out


def slices(n: int, batch: int):
    return [slice(i, min(i + batch, n)) for i in range(0, n, batch)]


def row_count(text: str) -> int:
    """``8M``, ``500k``, ``50000000`` as a number of rows."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=2000, help="the small run's meters (0: skip it)")
    parser.add_argument("--intervals", type=int, default=1000, help="the small run's intervals per meter")
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument(
        "--rows",
        type=lambda t: sorted(row_count(x) for x in t.split(",")),
        default=[8_000_000],
        help="table sizes to measure at, e.g. 8M,50M (none: 0)",
    )
    parser.add_argument("--fleet", type=int, default=10_000, help="meters of the growing table")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds at each size")
    args = parser.parse_args()
    args.rows = [r for r in args.rows if r > 0]
    with bench_database() as (url, settings, where):
        print(f"server: {where}")
        if args.meters:
            small_run(url, settings, args)
        if args.rows:
            sizes = as_the_table_grows(url, settings, args)
            print("\nas the table grows (same run):")
            for total, fresh, keyed, redo in sizes:
                print(
                    f"  {total / 1e6:6.1f} M rows: fresh / raw COPY {fresh:.2f} (goal >= 0.40; keyed COPY / raw "
                    f"{keyed:.2f}), redelivered / fresh {redo:.2f} (goal >= 0.80)"
                )
    return 0


def small_run(url: str, settings: Settings, args: argparse.Namespace) -> None:
    """Raw COPY, the write path, redelivery and the object path on meters x intervals readings."""
    frame = make_frame(args.meters, args.intervals)
    n = len(frame)
    print(f"{n:,} readings: {args.meters} meters x {args.intervals} intervals, batches of {args.batch:,}")
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, 'electricity', 'bench', 'kWh', 'import')",
            [(m,) for m in frame.meters],
        )
        conn.execute("CREATE TABLE IF NOT EXISTS bare (LIKE reading)")  # same columns, no key, no index
        meter_ids = dict(conn.execute("SELECT serial, id FROM meter").fetchall())
        conn.execute("SELECT ensure_reading_partitions('2026-01-01', '2026-02-01')")
        conn.execute("CHECKPOINT")

    # 1. The physical baseline: the same rows, the same binary encoding, one COPY per batch.
    ids = np.array([meter_ids[m] for m in frame.meters], np.int32)[frame.meter_idx]
    zeros = np.zeros(n, np.int16)
    ones = np.ones(n, np.int16)
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        t = time.perf_counter()
        for s in slices(n, args.batch):
            payload = encode_reading_copy(
                ids[s], ones[s], frame.ts[s], frame.value[s], ones[s], 1, ones[s], zeros[s], now, 1
            )
            with conn.cursor().copy(f"COPY bare ({READING_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(payload)
            conn.commit()
        raw = n / (time.perf_counter() - t)
    print(f"raw COPY into a bare table      {raw:>12,.0f} rows/s")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")

    # 2. Relevé's write path into the real schema.
    with BatchWriter(url, settings, origin="bench") as writer:
        t = time.perf_counter()
        inserted = sum(writer.write(frame.take(s)).inserted for s in slices(n, args.batch))
        path = n / (time.perf_counter() - t)
    assert inserted == n, f"write path landed {inserted} of {n}"
    print(f"Relevé write path (reading)     {path:>12,.0f} rows/s")
    print(f"ratio write path / raw COPY     {path / raw:>12.2f}   (goal >= 0.40)")

    # 3. Redelivery of already-stored readings in new batches: every row a duplicate.
    m = min(n, 500_000)
    with BatchWriter(url, settings, origin="bench") as writer:
        t = time.perf_counter()
        dups = sum(writer.write(frame.take(s)).duplicates for s in slices(m, args.batch))
        redo = m / (time.perf_counter() - t)
    assert dups == m
    print(f"redelivered readings (all dup.) {redo:>12,.0f} rows/s   ({m:,} rows, slow path)")

    # 4. The object path, as collectors submit Reading objects.
    k = min(n, 200_000)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    objs = [
        Reading(
            frame.meters[i % args.meters],
            "1-0:1.8.0",
            base + timedelta(minutes=15 * (i // args.meters)),
            float(i),
            "kWh",
            Source.MODBUS,
        )
        for i in range(k)
    ]
    with BatchWriter(url, settings, origin="bench") as writer:
        t = time.perf_counter()
        landed = sum(writer.write(objs[i : i + args.batch]).inserted for i in range(0, k, args.batch))
        obj_rate = k / (time.perf_counter() - t)
    assert landed == k
    print(f"Reading objects -> database     {obj_rate:>12,.0f} rows/s   ({k:,} rows)")


if __name__ == "__main__":
    sys.exit(main())
