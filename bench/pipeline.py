"""The headline: 15-minute register and interval reads landed and validated, end to end, in one run.

    python bench/pipeline.py [--meters 2000] [--days 7] [--batch 50000] [--writers 1]

meters × days × 96 quarter hours × 2 channels (the energy register ``1-0:1.8.0`` and the energy per
interval ``1-0:1.29.0``, consistent with each other so the sum check holds), delivered time-major in
batches as collectors and backfills deliver them:

1. landed through the write path as users run it: ``ingest.Ingestor`` (the background writer the
   collectors and the simulators use: batch keys, validation, sorting, duplicate detection, binary
   COPY into the partitioned ``reading`` with its primary key), on ``--writers`` connections
   (``ingest.writers``; with more than one, ``ingest.max_pending_rows`` is raised to 500,000 a writer
   so that each has a batch to write);
2. validated by VEE as ``releve vee run`` does (``run_vee``: scope, register rules on the first read
   of each day, every interval rule and the sum check, exceptions and estimates written, watermark).

Printed: reads/s end to end (both stages, from the first batch submitted to the watermark moved)
against the mark of 1 billion reads an hour (278,000 reads/s, a leading commercial MDM on a full
rack of database machines), and against raw binary COPY of the same rows into a bare table of the
same shape (no key, no index) on the same server in the same run. The rows are generated before
anything is timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.vee.run import run_vee
from bench.common import bench_database
from ingest import Ingestor, ReadingFrame
from ingest.frame import READING_COPY_COLUMNS, encode_reading_copy
from releve.model import Source

MARK = 1_000_000_000 / 3600  # reads/s: a billion reads an hour
REGISTER, INTERVAL = "1-0:1.8.0", "1-0:1.29.0"
QUARTER_US = 900_000_000


def make_frames(meters: int, days: int, batch: int, seed: int = 11) -> list[ReadingFrame]:
    """Time-major batches of register and interval reads (about ``batch`` rows each)."""
    rng = np.random.default_rng(seed)
    slots = days * 96
    usage = np.round(rng.gamma(2.0, 0.05, (slots, meters)) * rng.uniform(0.3, 3.0, meters), 3)  # kWh a quarter
    register = np.round(rng.uniform(1_000, 50_000, meters) + np.cumsum(usage, axis=0), 3)
    end = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "D")
    first = (end - np.timedelta64(days + 1, "D")).astype("datetime64[us]")
    serials = [f"P{i:06d}" for i in range(meters)]
    per_slot = 2 * meters
    slots_per_batch = max(1, batch // per_slot)
    frames = []
    for a in range(0, slots, slots_per_batch):
        b = min(a + slots_per_batch, slots)
        k = b - a
        ts = first + np.repeat(np.arange(a, b, dtype=np.int64) * QUARTER_US, per_slot).astype("timedelta64[us]")
        meter_idx = np.tile(np.tile(np.arange(meters, dtype=np.int32), 2), k)
        channel_idx = np.tile(np.repeat(np.arange(2, dtype=np.int32), meters), k)
        # A quarter's interval value ends at its timestamp: the energy between the previous register read and this one.
        value = np.stack([register[a:b], usage[a:b]], axis=1).ravel()
        frames.append(
            ReadingFrame(
                serials,
                meter_idx,
                [REGISTER, INTERVAL],
                channel_idx,
                ts,
                value,
                ["kWh"],
                np.zeros(len(ts), np.int32),
                Source.MODBUS,
            )
        )
    return frames


def raw_copy(url: str, frames: list[ReadingFrame]) -> float:
    """Seconds to COPY the same rows (binary, one COPY per batch) into a bare table shaped like ``reading``."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bare (LIKE reading)")  # same columns, no key, no index
        ids = dict(conn.execute("SELECT serial, id FROM meter").fetchall())
        channels = dict(conn.execute("SELECT code, id FROM channel").fetchall())
        conn.execute("CHECKPOINT")
    meter_ids = np.array([ids[m] for m in frames[0].meters], np.int32)
    channel_ids = np.array([channels[c] for c in frames[0].channels], np.int16)
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for f in frames:
            n = len(f)
            ones = np.ones(n, np.int16)
            payload = encode_reading_copy(
                meter_ids[f.meter_idx],
                channel_ids[f.channel_idx],
                f.ts,
                f.value,
                ones,
                1,
                ones,
                np.zeros(n, np.int16),
                now,
                1,
            )
            with conn.cursor().copy(f"COPY bare ({READING_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(payload)
            conn.commit()
        seconds = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE bare")
        conn.execute("CHECKPOINT")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--batch", type=int, default=50_000, help="rows per batch submitted")
    parser.add_argument("--writers", type=int, default=1, help="ingest.writers: connections the Ingestor lands on")
    args = parser.parse_args()
    frames = make_frames(args.meters, args.days, args.batch)
    n = sum(len(f) for f in frames)
    print(
        f"{n:,} reads: {args.meters:,} meters x {args.days} days x 96 quarter hours x (register + interval), "
        f"{len(frames)} batches"
    )
    with bench_database() as (url, settings, where):
        print(f"server: {where}")
        copy_meters = "COPY meter (serial, commodity, model, unit, protocol, register_digits) FROM STDIN"
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur, cur.copy(copy_meters) as cp:
            for serial in frames[0].meters:
                cp.write_row((serial, "electricity", "bench", "kWh", "import", 7))

        raw = raw_copy(url, frames)
        print(f"baseline: raw binary COPY into a bare table   {raw:7.1f} s  {n / raw:>10,.0f} reads/s")

        if args.writers > 1:
            ingest = settings.ingest.model_copy(
                update={"writers": args.writers, "max_pending_rows": 500_000 * args.writers}
            )
            settings = settings.model_copy(update={"ingest": ingest})
        started = time.perf_counter()
        with Ingestor(url, settings, origin="pipeline") as ingestor:
            for f in frames:
                ingestor.submit(f)
        landed_at = time.perf_counter()
        inserted = sum(r.inserted for r in ingestor.results)
        assert inserted == n, f"the write path landed {inserted:,} of {n:,}"
        summary = run_vee(url, settings, who="pipeline")
        done = time.perf_counter()
        land_s, vee_s, total = landed_at - started, done - landed_at, done - started
        writers = f"{args.writers} writer{'s' if args.writers > 1 else ''}"
        print(
            f"1. landed through the write path (Ingestor)  {land_s:7.1f} s  {n / land_s:>10,.0f} reads/s"
            f"  = {raw / land_s:.2f} x raw COPY ({writers})"
        )
        print(
            f"2. validated by VEE (vee run)                {vee_s:7.1f} s  {n / vee_s:>10,.0f} reads/s"
            f"  = {raw / vee_s:.2f} x raw COPY"
        )
        for line in summary.lines():
            print("     " + line)
        rate = n / total
        print(f"\nend to end: {n:,} reads landed and validated in {total:.1f} s = {rate:,.0f} reads/s")
        print(f"  = {rate / MARK:.2f} x the mark of 1 billion reads an hour ({MARK:,.0f} reads/s)")
        print(f"  = {rate / (n / raw):.2f} x raw COPY of the same rows into a bare table (same server, same run)")
        goal = "reached" if rate >= 200_000 else "NOT reached"
        print(f"goal >= 200,000 reads/s end to end on this machine: {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
