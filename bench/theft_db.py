"""``releve theft rank`` from a real database, as users run it: seconds and peak memory, against baselines.

    .venv/bin/python bench/theft_db.py                       # 100,000 meters daily + 10,000 hourly (≈ 25 min)
    .venv/bin/python bench/theft_db.py --meters 10000 --hourly-meters 2000   # quick check (≈ 5 min)
    .venv/bin/python bench/theft_db.py --no-hourly           # daily register data only
    .venv/bin/python bench/theft_db.py --keep /var/tmp/theft-bench   # land once, measure again later
    .venv/bin/python bench/theft_db.py --no-daily --hourly-meters 100000 --hourly-series   # the goal's size

Two throwaway databases (``bench/common.py``), each loaded through the ingest write path and its
daily aggregate refreshed (setup, not timed):

1. **daily**: ``--meters`` customer meters × ``--days`` days of one import-register read a day,
   in transformer areas of 20 with a feeder meter each (its register: the customers' true
   consumption + 4 %), seasonal households, 5 % thieves (a drop of 30–90 % for 30–150 days);
2. **hourly**: ``--hourly-meters`` customers (same areas) with hourly interval data only (channel
   1-0:1.29.0, end-stamped), the feeders too: the profile signals and the hourly feeder balance run.
   With ``--hourly-series`` the hours go straight into the daily aggregate and the hourly series
   the ranking reads (what the refresh would make of them, to the bit: ``tests/test_benches.py``),
   not into ``reading``: 100,000 meters × 365 days of hours as readings need ≈ 90 GB of disk.

Each figure is one process, timed from start to exit, its peak resident memory read with
``os.wait4`` (``ru_maxrss``, started through a small launcher) or, where the process forks
workers, the process tree's summed ``Pss`` sampled every 50 ms, whichever is larger:

- ``releve theft rank --quiet`` itself (the run stored as users do), with the phase timings it prints;
- baseline **row fetch**: the load this bench replaced (``bench/theft_db_legacy.py``: rows fetched
  into Python, a meters × days × 24 array with interval data) with the same ranking, not stored;
  run on the hourly data only up to ``--legacy-hourly-max`` meters (the old path needs about
  40 bytes × meters × days × 24 × 5 for the interval balance's regressors);
- baseline **plain SQL**: what a competent engineer writes first: one aggregate query (per meter,
  the last 30 days against the first 45, from the same data) and a numpy sort — no signals, no
  explanations: the floor of reading the data once.

Setup, printed but not part of the figures above: the daily refresh of one new day for the whole
fleet (``refresh_daily_reading``: the aggregate, then the daily series the ranking reads, migration
0026) beside the same refresh before 0026 (:func:`refresh_costs`). The daily data set is written
straight into the aggregate, its series built from it whole.

Acceptance (issue 18): 100,000 meters × 365 days < 30 s daily-only, < 60 s with hourly data, peak
memory < 4 GB. The machine is shared: say when figures were measured under load.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analytics.theft.data import TEXTURE_FLOOR  # noqa: E402
from analytics.theft.features import HAND_OVER_DIR, HAND_OVER_PREFIX  # noqa: E402
from analytics.theft.store import _DAY_TOTAL_ROW, _HOUR_TEXTURE_ROW  # noqa: E402
from bench.common import bench_database, exit_on_sigterm  # noqa: E402
from ingest.frame import READING_COPY_DTYPE  # noqa: E402
from releve import migrate  # noqa: E402
from releve.arrays import sum_in_order  # noqa: E402
from releve.pgbinary import row_dtype  # noqa: E402
from releve.pgserver import PostgresServer  # noqa: E402
from releve.settings import Settings  # noqa: E402

AREA = 20
REGISTER = "1-0:1.8.0"
INTERVAL = "1-0:1.29.0"


def _registry(url: str, meters: int, first: datetime) -> None:
    """Areas with a feeder meter each, customer meters, service points and installations (SQL only)."""
    areas = -(-meters // AREA)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO meter (serial, commodity, model, unit, protocol, register_digits)
               SELECT 'F' || lpad(g::text, 6, '0'), 'electricity', 'bench', 'kWh', 'import', 9
               FROM generate_series(0, %s - 1) g""",
            (areas,),
        )
        conn.execute(
            """INSERT INTO meter (serial, commodity, model, unit, protocol, register_digits)
               SELECT 'C' || lpad(g::text, 7, '0'), 'electricity', 'bench', 'kWh', 'import', 7
               FROM generate_series(0, %s - 1) g""",
            (meters,),
        )
        conn.execute(
            """INSERT INTO area (code, kind, commodity, feeder_meter_id, technical_loss_pct)
               SELECT 'T' || lpad(g::text, 5, '0'), 'transformer', 'electricity', m.id, 3.0
               FROM generate_series(0, %s - 1) g JOIN meter m ON m.serial = 'F' || lpad(g::text, 6, '0')""",
            (areas,),
        )
        conn.execute(
            """INSERT INTO service_point (code, commodity, customer_class, area_id, latitude, longitude)
               SELECT 'SP' || lpad(g::text, 7, '0'), 'electricity',
                      CASE WHEN g %% 7 = 0 THEN 'commercial' ELSE 'residential' END, a.id,
                      48.8 + random() * 0.2, 2.3 + random() * 0.2
               FROM generate_series(0, %s - 1) g JOIN area a ON a.code = 'T' || lpad((g / %s)::text, 5, '0')""",
            (meters, AREA),
        )
        conn.execute(
            """INSERT INTO installation (meter_id, service_point_id, installed_at)
               SELECT m.id, sp.id, %s
               FROM generate_series(0, %s - 1) g JOIN meter m ON m.serial = 'C' || lpad(g::text, 7, '0')
               JOIN service_point sp ON sp.code = 'SP' || lpad(g::text, 7, '0')""",
            (first - timedelta(days=30), meters),
        )


def _consumption(rng: np.random.Generator, n: int, days: int) -> tuple[np.ndarray, np.ndarray]:
    """(true, recorded) daily kWh for ``n`` customers: seasonal, noisy, 5 % thieves with a drop."""
    level = 9.0 * rng.lognormal(0, 0.35, n)
    season = 1 + 0.25 * np.cos(2 * np.pi * np.arange(days) / 365)
    true = level[:, None] * season[None, :] * rng.lognormal(0, 0.08, (n, days))
    recorded = true.copy()
    for i in np.flatnonzero(rng.random(n) < 0.05):
        s0 = int(rng.integers(0, days - 30))
        recorded[i, s0 : s0 + int(rng.integers(30, 150))] *= rng.uniform(0.1, 0.7)
    return true, recorded


PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
DAILY_ROW = row_dtype(
    ("meter_id", ">i4"),
    ("channel_id", ">i2"),
    ("day", ">i8"),
    ("reads", ">i4"),
    ("total", ">f8"),
    ("min_value", ">f8"),
    ("max_value", ">f8"),
    ("first_value", ">f8"),
    ("last_value", ">f8"),
)
READING_ROW = READING_COPY_DTYPE  # the reading table's binary COPY row, as the write path lays it out
#: One ``hourly_series`` month row in a binary COPY: the layout the ranking's reader reads, written as it reads it.
HOURLY_SERIES_ROW = _HOUR_TEXTURE_ROW
#: One ``interval_day_series`` month row (migration 0033): the month's day totals.
DAY_TOTALS_ROW = _DAY_TOTAL_ROW


def _records(dtype: np.dtype, n: int, **columns: np.ndarray | int | float) -> np.ndarray:
    """A binary COPY record array of ``n`` rows: field count, lengths and the given columns."""
    rec = np.zeros(n, dtype)
    rec["n"] = (len(dtype.names) - 1) // 2
    for k, name in enumerate(dtype.names[2::2], start=1):
        rec[f"l{k}"] = dtype[name].itemsize
        rec[name] = columns[name]
    return rec


def _copy_in(conn: psycopg.Connection, table: str, dtype: np.dtype, rec: np.ndarray) -> None:
    cols = ", ".join("n" if c == "reads" else c for c in dtype.names[2::2])
    with conn.cursor().copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT binary)") as copy:
        copy.write(COPY_HEADER)
        for a in range(0, len(rec), 1 << 20):
            copy.write(rec[a : a + (1 << 20)].tobytes())
        copy.write(b"\xff\xff")


def series_direct(
    conn: psycopg.Connection, meter_id: np.ndarray, values: np.ndarray, first: datetime, channel_id: int
) -> None:
    """Write what the refresh would make of end-stamped hourly ``values``: the daily aggregate, the hourly series.

    ``values`` is meters × (days × 24): hour ``k`` of the period, stamped ``first + (k + 1) h``. The
    daily aggregate (``refresh_daily_reading``) holds per UTC day the intervals *stamped* in it —
    hour 23 of the day before and hours 0–22 — summed in time order as the server adds them; the
    hourly series (``refresh_hourly_series``, migrations 0027 and 0029) the hours each interval
    covers, laid a month a row, with each whole day's texture (the median ``|ln|`` step between its
    consecutive hours), and beside it each day's total (migration 0033). ``tests/test_benches.py``
    holds them to what the refresh makes of the same readings landed in ``reading``.
    """
    n, k = values.shape
    days = k // 24
    ext = np.full((n, 24 * (days + 1)), np.nan)  # day D of the aggregate: hours 24 D - 1 … 24 D + 22
    ext[:, 1 : k + 1] = values
    ext = ext.reshape(n, days + 1, 24)
    seen = np.isfinite(ext)
    total = np.zeros((n, days + 1))
    for i in range(24):  # one interval after the other, as the server's sum
        total += np.where(seen[:, :, i], ext[:, :, i], 0.0)
    first_at = seen.argmax(axis=2)[:, :, None]
    last_at = 23 - seen[:, :, ::-1].argmax(axis=2)[:, :, None]
    day0_us = int((first - PG_EPOCH).total_seconds()) * 1_000_000
    rec = _records(
        DAILY_ROW,
        n * (days + 1),
        meter_id=np.repeat(meter_id, days + 1),
        channel_id=channel_id,
        day=np.tile(day0_us + 86_400_000_000 * np.arange(days + 1, dtype=np.int64), n),
        reads=seen.sum(axis=2).ravel(),
        total=total.ravel(),
        min_value=np.nanmin(ext, axis=2).ravel(),
        max_value=np.nanmax(ext, axis=2).ravel(),
        first_value=np.take_along_axis(ext, first_at, axis=2).ravel(),
        last_value=np.take_along_axis(ext, last_at, axis=2).ravel(),
    )
    _copy_in(conn, "daily_reading", DAILY_ROW, rec)
    hours = values.reshape(n, days, 24)
    lifted = np.maximum(hours, 0.0) + TEXTURE_FLOOR
    texture = np.median(np.abs(np.log(lifted[:, :, 1:] / lifted[:, :, :-1])), axis=2)
    d = 0
    while d < days:
        date = first.date() + timedelta(days=d)
        month = date.replace(day=1)
        span = min(days - d, ((month + timedelta(days=32)).replace(day=1) - date).days)
        rec = _records(
            HOURLY_SERIES_ROW,
            n,
            meter_id=meter_id,
            channel_id=channel_id,
            month=(month - PG_EPOCH.date()).days,
            value=np.nan,
            texture=np.nan,
        )
        rec["value"][:, date.day - 1 : date.day - 1 + span] = hours[:, d : d + span]
        rec["texture"][:, date.day - 1 : date.day - 1 + span] = texture[:, d : d + span]
        _copy_in(conn, "hourly_series", HOURLY_SERIES_ROW, rec)
        totals = _records(DAY_TOTALS_ROW, n, meter_id=meter_id, channel_id=channel_id, month=rec["month"], value=np.nan)
        totals["value"] = sum_in_order(rec["value"].astype(np.float64))  # what the refresh adds up (0033)
        _copy_in(conn, "interval_day_series", DAY_TOTALS_ROW, totals)
        d += span


def land(url: str, meters: int, days: int, hourly: bool, seed: int = 18, series: bool = False) -> tuple[int, float]:
    """Create the fleet and COPY its data in; return (rows, seconds).

    Daily register data goes straight into the daily aggregate (the one table the ranking reads for
    registers, one row per meter and day); hourly interval data into ``reading``, then the daily
    aggregate and the hourly series (migration 0027: what the ranking reads of the intervals) are
    refreshed over it — or, with ``series``, the aggregate and the series are written straight
    (:func:`series_direct`: the same rows, no ``reading``; 100,000 meters × 365 days of hours
    would need ≈ 90 GB of disk as readings). The ingest write path is not what this bench measures
    and would take most of an hour on a shared machine at this size.
    """
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    first = end - timedelta(days=days)
    _registry(url, meters, first)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    rows = 0
    per = 25 * AREA if hourly else 250 * AREA  # whole areas per block
    day0_us = int((first - PG_EPOCH).total_seconds()) * 1_000_000
    hour_us = 3_600_000_000
    profile = np.array(
        [
            0.5,
            0.4,
            0.35,
            0.35,
            0.4,
            0.6,
            1.0,
            1.4,
            1.2,
            0.9,
            0.8,
            0.8,
            0.9,
            0.8,
            0.7,
            0.8,
            1.0,
            1.4,
            1.9,
            2.0,
            1.7,
            1.3,
            0.9,
            0.7,
        ]
    )
    profile = profile / profile.sum()
    with psycopg.connect(url, autocommit=True) as conn:
        ids = dict(conn.execute("SELECT serial, id FROM meter").fetchall())
        channel = conn.execute("SELECT id FROM channel WHERE code = %s", (INTERVAL if hourly else REGISTER,)).fetchone()
        unit = conn.execute("SELECT id FROM unit WHERE code = 'kWh'").fetchone()
        source = conn.execute("SELECT min(id) FROM reading_source").fetchone()
        read_type = conn.execute("SELECT min(id) FROM read_type").fetchone()
        batch = conn.execute(
            "INSERT INTO ingest_batch (batch_key, origin) VALUES (gen_random_uuid(), 'bench-theft') RETURNING id"
        ).fetchone()
        assert channel and unit and source and read_type and batch
        if hourly and not series:
            conn.execute("SELECT ensure_reading_partitions(%s, %s)", (first, end + timedelta(days=1)))
        for a in range(0, meters, per):
            b = min(a + per, meters)
            n = b - a
            true, recorded = _consumption(rng, n, days)
            n_areas = -(-n // AREA)
            area_true = np.zeros((n_areas, days))
            np.add.at(area_true, np.arange(n) // AREA, true)
            feeder = area_true * 1.04
            serials = [f"C{i:07d}" for i in range(a, b)] + [f"F{k:06d}" for k in range(a // AREA, a // AREA + n_areas)]
            meter_id = np.array([ids[x] for x in serials], dtype=np.int64)
            if hourly:
                shares = profile[None, :] * rng.lognormal(0, 0.15, (n, 24))
                shares /= shares.sum(axis=1, keepdims=True)
                cust = recorded[:, :, None] * shares[:, None, :] * rng.lognormal(0, 0.1, (n, days, 24))
                feed = feeder[:, :, None] * profile[None, None, :]
                values = np.round(np.concatenate([cust.reshape(n, -1), feed.reshape(n_areas, -1)]), 4)
                rows += values.size
                if series:
                    series_direct(conn, meter_id, values, first, channel[0])
                    continue
                k = values.shape[1]
                # End-stamped hourly intervals: the value of hour h is stamped h + 1 h.
                ts = day0_us + hour_us * (np.arange(k, dtype=np.int64) + 1)
                rec = _records(
                    READING_ROW,
                    values.size,
                    meter_id=np.repeat(meter_id, k),
                    channel_id=channel[0],
                    ts=np.tile(ts, len(serials)),
                    value=values.ravel(),
                    unit_id=unit[0],
                    source_id=source[0],
                    read_type_id=read_type[0],
                    quality=0,
                    received_at=ts[-1],
                    batch_id=batch[0],
                )
                _copy_in(conn, "reading", READING_ROW, rec)
            else:
                start = rng.uniform(1_000, 50_000, (n, 1))
                values = np.round(
                    np.concatenate([start + np.cumsum(recorded, axis=1), 1e5 + np.cumsum(feeder, axis=1)]), 3
                )
                day = day0_us + 24 * hour_us * np.arange(days, dtype=np.int64)
                v = values.ravel()
                rec = _records(
                    DAILY_ROW,
                    values.size,
                    meter_id=np.repeat(meter_id, days),
                    channel_id=channel[0],
                    day=np.tile(day, len(serials)),
                    reads=1,
                    total=v,
                    min_value=v,
                    max_value=v,
                    first_value=v,
                    last_value=v,
                )
                _copy_in(conn, "daily_reading", DAILY_ROW, rec)
                rows += values.size
        if hourly and series:  # the aggregate was written directly: the daily series from it, whole
            conn.execute("SELECT refresh_daily_series(%s, %s)", (first, end + timedelta(days=1)))
        elif hourly:  # the aggregate and the daily series kept from it
            conn.execute("CALL refresh_daily_reading(%s, %s)", (first, end + timedelta(days=1)))
            conn.execute("SELECT refresh_hourly_series(%s, %s)", (first, end + timedelta(days=1)))
        else:  # the aggregate was written directly: the daily series from it, whole
            t0 = time.perf_counter()
            conn.execute("SELECT refresh_daily_series(%s, %s)", (first, end))
            print(f"  (daily series built whole from the aggregate in {time.perf_counter() - t0:.0f} s: setup, once)")
        conn.execute("VACUUM ANALYZE")
    return rows, time.perf_counter() - started


def _migration(name: str) -> ModuleType:
    """A migration module of ``releve/migrations`` (for the refresh procedure it defines)."""
    spec = importlib.util.spec_from_file_location(name, migrate.MIGRATIONS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refresh_costs(url: str) -> None:
    """Print what the daily refresh of one new day for the whole fleet costs now and before the daily series.

    Setup, not part of ``releve theft rank``: the refresh runs when data lands (``releve db
    refresh``, the loader, the demo). In one transaction, rolled back: the last day's reads are
    written into ``reading`` again, then ``refresh_daily_reading`` over that day as it was (migration
    0011: the aggregate alone; not counted: it brings the aggregate into the cache, which made the
    first refresh measured 3 × slower at 100,000 meters), as it is now (the aggregate and the daily
    series, migration 0026), and as it was again. The plain PostgreSQL procedures.
    """
    now = _migration("0026_daily_series").PLAIN
    before = _migration("0011_daily_refresh").PLAIN.replace("CREATE PROCEDURE", "CREATE OR REPLACE PROCEDURE")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(day) FROM daily_read_count").fetchone()
        assert row is not None and row[0] is not None
        day = row[0]
        conn.execute("SELECT ensure_reading_partitions(%s, %s)", (day, day + timedelta(days=1)))
        conn.execute(
            """INSERT INTO reading (meter_id, channel_id, ts, value, unit_id, source_id, read_type_id, received_at,
                                    batch_id)
               SELECT d.meter_id, d.channel_id, d.day + interval '23 hours', d.last_value,
                      (SELECT min(id) FROM unit), (SELECT min(id) FROM reading_source), (SELECT min(id) FROM read_type),
                      now(), (SELECT min(id) FROM ingest_batch)
               FROM daily_reading d WHERE d.day = %s AND d.n = 1
               ON CONFLICT DO NOTHING""",
            (day,),
        )
        seconds = []
        for procedure in (before, now, before):
            conn.execute(procedure.encode())
            t0 = time.perf_counter()
            conn.execute("CALL refresh_daily_reading(%s, %s)", (day, day))
            seconds.append(time.perf_counter() - t0)
        conn.rollback()
    _, with_series, without = seconds
    print(
        f"  refresh of one new day (setup): {with_series:6.1f} s with the daily series, {without:.1f} s "
        f"without (before 0026): {with_series - without:+.1f} s"
    )


#: Starts the measured process and reports its peak memory. Through this small process, not from the
#: bench: Linux carries the parent's resident size at fork into the child's ``ru_maxrss``. That figure
#: is one process's (``wait4`` gives the largest of the process and its reaped workers, never their
#: sum), so the process tree's proportional set size (``Pss``: pages shared between a process and
#: the workers it forked counted once) is summed every 50 ms as well, with the group files the
#: ranking leaves in memory for its workers (``analytics.theft.features.HAND_OVER_DIR``: a file not
#: mapped yet is in no process's ``Pss``, a mapped one is counted twice, which errs high); the larger
#: of the two is the peak.
LAUNCH = """
import glob, os, subprocess, sys, threading, time
p = subprocess.Popen(sys.argv[1:])
peak, done = [0], threading.Event()

def tree_pss_kb(root):
    pids, total = [root], 0
    while pids:
        pid = pids.pop()
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):  # children are listed under the thread that forked them
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    pids.extend(int(c) for c in fh.read().split())
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total += next(int(ln.split()[1]) for ln in fh if ln.startswith("Pss:"))
        except (OSError, StopIteration, ValueError):
            pass
    for path in glob.glob(HAND_OVER_FILES):
        try:
            total += os.stat(path).st_blocks // 2  # 512-byte blocks, in kB
        except OSError:
            pass
    return total

def sample():  # never p.poll(): it could reap the process before wait4 reads its usage
    while not done.wait(0.05):
        peak[0] = max(peak[0], tree_pss_kb(p.pid))

threading.Thread(target=sample, daemon=True).start()
_, status, usage = os.wait4(p.pid, 0)
done.set()
sys.stderr.write(f"\\nmaxrss_kb={max(usage.ru_maxrss, peak[0])}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def child(argv: list[str], env: dict[str, str]) -> tuple[float, float, str, str]:
    """Run a command to its end: (seconds, its peak resident memory in GB, stdout, stderr)."""
    t0 = time.perf_counter()
    # The sampler is a script of its own (no Relevé import): the group files' pattern goes in as a constant.
    files = os.path.join(HAND_OVER_DIR, HAND_OVER_PREFIX + "*", "*") if HAND_OVER_DIR else ""
    launch = f"HAND_OVER_FILES = {files!r}\n" + LAUNCH
    p = subprocess.run([sys.executable, "-c", launch, *argv], env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}… exited {p.returncode}:\n{p.stderr[-3000:]}")
    kb = next(int(ln.split("=")[1]) for ln in reversed(p.stderr.splitlines()) if ln.startswith("maxrss_kb="))
    return elapsed, kb / 1024**2, p.stdout, p.stderr


LEGACY = """
import sys, time
from analytics.theft.ranking import score
from analytics.theft.store import inspected, training_labels
from bench.theft_db_legacy import load_from_database
from releve.db import connect
with connect(sys.argv[1]) as conn:
    data = load_from_database(conn)
    labels = training_labels(conn)
    exclude = inspected(conn)
r = score(data, training=(labels.x, labels.y) if len(labels.y) else None, exclude=exclude)
cands = r.candidates(500)
print(",".join(c.meter for c in cands))
"""

PLAIN_SQL = """
import sys
import numpy as np
import psycopg
# Per meter: mean daily consumption over the last 30 days against the first 45, one query; sort.
q = '''
WITH span AS (SELECT min(day) AS lo, max(day) AS hi FROM daily_reading),
per AS (
  SELECT d.meter_id, d.day, CASE c.kind WHEN 'interval' THEN d.total
         ELSE d.last_value - lag(d.last_value) OVER (PARTITION BY d.meter_id, d.channel_id ORDER BY d.day) END AS use
  FROM daily_reading d JOIN channel c ON c.id = d.channel_id
  WHERE c.code IN ('1-0:1.8.0', '1-0:1.29.0'))
SELECT p.meter_id,
       avg(use) FILTER (WHERE p.day > s.hi - interval '30 days'),
       avg(use) FILTER (WHERE p.day < s.lo + interval '45 days')
FROM per p, span s GROUP BY 1'''
with psycopg.connect(sys.argv[1]) as conn:
    rows = conn.execute(q).fetchall()
ids = np.array([r[0] for r in rows])
ratio = np.array([(r[1] or 0.0) / r[2] if r[2] else 1.0 for r in rows])
top = ids[np.argsort(ratio)[:500]]
print(len(rows), int(top[0]))
"""


def measure(url: str, settings, label: str, meters: int, days: int, legacy: bool) -> None:
    env = dict(
        os.environ,
        RELEVE_DATABASE__URL=url,
        RELEVE_DATABASE__ROLE_PREFIX=settings.database.role_prefix,
        PYTHONPATH=str(ROOT),
    )
    releve = str(Path(sys.executable).with_name("releve"))
    secs, gb, out, err = child([releve, "theft", "rank", "--quiet", "--days", str(days)], env)
    timings = next((ln for ln in err.splitlines() if ln.startswith("timings:")), "")
    stored = next((ln for ln in out.splitlines() if ln.startswith("run ")), "")
    print(f"  releve theft rank:            {secs:6.1f} s   peak {gb:5.2f} GB   ({timings.removeprefix('timings: ')})")
    print(f"    {stored}")
    base_secs, base_gb, _, _ = child([sys.executable, "-c", PLAIN_SQL, url], env)
    print(
        f"  baseline plain SQL + sort:    {base_secs:6.1f} s   peak {base_gb:5.2f} GB   "
        f"(releve / plain SQL: {secs / base_secs:.1f}×)"
    )
    if legacy:
        old_secs, old_gb, old_out, _ = child([sys.executable, "-c", LEGACY, url], env)
        with psycopg.connect(url) as conn:
            ours = [
                r[0]
                for r in conn.execute(
                    "SELECT serial FROM theft_candidate WHERE run_id = (SELECT max(id) FROM theft_run) ORDER BY rank"
                )
            ]
        same = (
            "the same 500 candidates in the same order"
            if old_out.split()[-1].split(",") == ours
            else "A DIFFERENT LIST"
        )
        print(
            f"  baseline row fetch (before):  {old_secs:6.1f} s   peak {old_gb:5.2f} GB   "
            f"(before / releve: {old_secs / secs:.2f}× the time, {old_gb / gb:.2f}× the memory; {same})"
        )
    else:
        print("  baseline row fetch (before):  not run (--no-legacy, or hourly data above --legacy-hourly-max)")
    goal = 30 if label == "daily" else 60
    print(f"  goal at 100,000 × 365: < {goal} s, < 4 GB; this run: {meters:,} meters × {days} days")


@contextlib.contextmanager
def kept_database(keep: Path, label: str, meters: int, days: int) -> Iterator[tuple[str, Settings, str, bool]]:
    """(url, settings, where, landed already) of a database kept in the server at ``keep`` between runs.

    One database per data set (``theft_daily_100000x365``…); a database whose landing did not finish
    (no ``bench_landed`` table) is dropped and made again. The server runs for this run only.
    """
    server = PostgresServer(keep / "data", durable=True)
    server.start()
    name = f"theft_{label}_{meters}x{days}"
    info = psycopg.conninfo.conninfo_to_dict(server.url())
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    settings = Settings(database={"url": url, "role_prefix": name})  # type: ignore[arg-type]
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
        landed = False
        if exists:
            with psycopg.connect(url) as conn:
                landed = conn.execute("SELECT to_regclass('bench_landed') IS NOT NULL").fetchone() == (True,)
        if not landed:
            with psycopg.connect(server.url(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        started = time.perf_counter()
        migrate.upgrade(url, settings)  # a database kept from an older schema is brought up to date
        if landed and time.perf_counter() - started > 1:
            print(f"\n(schema migrations applied to the kept {name} in {time.perf_counter() - started:.0f} s)")
        yield url, settings, f"kept in {keep}, {server.version()}", landed
    finally:
        server.stop()


def run(
    label: str, meters: int, days: int, hourly: bool, legacy: bool, keep: Path | None, series: bool = False
) -> None:
    kind = "hourly interval data" if hourly else "one register read a day"
    if series:
        kind += " (landed as the daily aggregate and hourly series, no readings)"
    with contextlib.ExitStack() as stack:
        if keep is None:
            url, settings, where = stack.enter_context(bench_database())
            landed = False
        else:
            name = f"{label}_series" if series else label
            url, settings, where, landed = stack.enter_context(kept_database(keep, name, meters, days))
        if landed:
            print(f"\n{label}: {meters:,} customer meters × {days} days, {kind}; landed by an earlier run ({where})")
        else:
            rows, secs = land(url, meters, days, hourly, series=series)
            if keep is not None:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("CREATE TABLE bench_landed (rows bigint, seconds float8)")
                    conn.execute("INSERT INTO bench_landed VALUES (%s, %s)", (rows, secs))
            print(
                f"\n{label}: {meters:,} customer meters × {days} days, {kind}; {rows:,} readings landed in "
                f"{secs:.0f} s ({where})"
            )
        measure(url, settings, label, meters, days, legacy)
        if not series:  # (no readings to refresh from)
            refresh_costs(url)


def main() -> None:
    exit_on_sigterm()  # a SIGTERM stops the kept or throwaway server
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100_000, help="customer meters, daily run (default 100,000)")
    parser.add_argument(
        "--hourly-meters",
        type=int,
        default=10_000,
        help="customer meters, hourly run (default 10,000: 100,000 × 365 × 24 readings would need about 90 GB of disk)",
    )
    parser.add_argument(
        "--hourly-series",
        action="store_true",
        help="land the hourly run straight into the daily aggregate and the hourly series the ranking reads, "
        "not into reading (the same rows, held to the refresh by tests/test_benches.py): 100,000 hourly "
        "meters then take a 20 GB data directory instead of ≈ 90 GB of readings",
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--no-hourly", action="store_true", help="daily run only")
    parser.add_argument("--no-daily", action="store_true", help="hourly run only")
    parser.add_argument("--no-legacy", action="store_true", help="skip the row-fetch baseline")
    parser.add_argument(
        "--legacy-hourly-max",
        type=int,
        default=2_000,
        help="run the row-fetch baseline on hourly data up to this many meters (default 2,000)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the landed databases in a PostgreSQL server under DIR and reuse them on the next run with "
        "the same sizes (landing 100,000 × 365 takes minutes); one run at a time per DIR (the server stops "
        "when a run ends)",
    )
    args = parser.parse_args()
    print(
        f"theft ranking from the database; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(the machine may be shared)"
    )
    if not args.no_daily:
        run("daily", args.meters, args.days, False, not args.no_legacy, args.keep)
    if not args.no_hourly:
        run(
            "hourly",
            args.hourly_meters,
            args.days,
            True,
            not args.no_legacy and args.hourly_meters <= args.legacy_hourly_max and not args.hourly_series,
            args.keep,
            args.hourly_series,
        )


if __name__ == "__main__":
    main()
