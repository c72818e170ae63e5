"""Ingest write path against raw COPY, in the same run, on the same server.

    python bench/ingest.py [--meters 2000] [--intervals 1000] [--batch 50000]

Writes meters × intervals readings (15-minute register reads, delivered time-major as live
collectors deliver them) twice: first as raw binary COPY into a bare table of the same shape as
``reading`` (no keys, no indexes: the physical baseline), then through Relevé's write path
(BatchWriter: batch key, validation, sorting, duplicate detection, COPY into the partitioned table
with its primary key). Prints rows/s for both and the ratio. Then two more figures: the same
readings delivered again in new batches (all duplicates: the slow path), and the object path
(Reading objects, as collectors submit them).
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


def make_frame(n_meters: int, n_intervals: int) -> ReadingFrame:
    start = np.datetime64("2026-01-01T00:00", "us")
    ts = start + np.repeat(np.arange(n_intervals, dtype=np.int64) * 900_000_000, n_meters).astype("timedelta64[us]")
    meter_idx = np.tile(np.arange(n_meters, dtype=np.int32), n_intervals)
    rng = np.random.default_rng(7)
    value = np.cumsum(rng.gamma(2.0, 0.1, size=(n_intervals, n_meters)), axis=0).ravel() + 1000.0
    return ReadingFrame(
        meters=[f"BENCH{i:06d}" for i in range(n_meters)], meter_idx=meter_idx,
        channels=["1-0:1.8.0"], channel_idx=np.zeros(len(ts), np.int32), ts=ts, value=value,
        units=["kWh"], unit_idx=np.zeros(len(ts), np.int32), source=Source.MODBUS,
    )  # fmt: skip


def slices(n: int, batch: int):
    return [slice(i, min(i + batch, n)) for i in range(0, n, batch)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--intervals", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50_000)
    args = parser.parse_args()
    frame = make_frame(args.meters, args.intervals)
    n = len(frame)
    print(f"{n:,} readings: {args.meters} meters x {args.intervals} intervals, batches of {args.batch:,}")
    with bench_database() as (url, settings, where):
        print(f"server: {where}")
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, 'electricity', 'bench', 'kWh', 'import')",
                [(m,) for m in frame.meters],
            )
            conn.execute("CREATE TABLE bare (LIKE reading)")  # same columns, no key, no index
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
                payload = encode_reading_copy(ids[s], ones[s], frame.ts[s], frame.value[s], ones[s], 1,
                                              ones[s], zeros[s], now, 1)  # fmt: skip
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
        print(f"ratio write path / raw COPY     {path / raw:>12.2f}   (goal >= 0.50)")

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
        objs = [Reading(frame.meters[i % args.meters], "1-0:1.8.0", base + timedelta(minutes=15 * (i // args.meters)),
                        float(i), "kWh", Source.MODBUS) for i in range(k)]  # fmt: skip
        with BatchWriter(url, settings, origin="bench") as writer:
            t = time.perf_counter()
            landed = sum(writer.write(objs[i:i + args.batch]).inserted for i in range(0, k, args.batch))
            obj_rate = k / (time.perf_counter() - t)
        assert landed == k
        print(f"Reading objects -> database     {obj_rate:>12,.0f} rows/s   ({k:,} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
