"""VEE register validation over the database, vectorised vs a naive per-row Python loop, same run.

    python bench/vee.py [--meters 20000] [--days 500] [--naive-meters 200] [--q15-meters 1000] [--q15-days 60]

Lands meters × days daily register reads (with a few injected faults: scale jumps, digit errors,
frozen registers, rollovers) through the ingest writer's columnar path, then times ``run_vee``: the
incremental run over the database (scope query, binary COPY out, every register rule, exceptions
and estimates written, watermark moved), and reports register reads validated per second. Then the
same rules written as a plain per-row Python loop (rows fetched with an ordinary cursor) run on a
subset of meters, and the ratio of the two rates. Rules-only figures (no database) for both are
printed too.

A day later, one new read per meter lands and an incremental run validates it over the whole
history: its time follows the new day (the scope reads the parts of its batches' time span).

Then 15-minute register data (``--q15-meters`` × ``--q15-days`` × 96 reads, landed the same way) and
a second, incremental run over it: the rules judge the first read of each day, which the database
picks out itself, so the run is reported both as validated (daily) reads per second and as landed
15-minute register reads covered per second.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.vee.params import params_for
from analytics.vee.registers import RegisterSeries, validate_registers
from analytics.vee.run import run_vee
from analytics.vee.suggest import suggest_corrections
from bench.common import bench_database
from ingest import BatchWriter, ReadingFrame
from releve.model import Source

CH = "1-0:1.8.0"
DAY_US = 86_400_000_000


def make_fleet(meters: int, days: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(values[meters, days], start datetime64) with about 0.2 % of meters per fault kind."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(3, 30, meters)[:, None]
    usage = rate * rng.lognormal(0, 0.25, (meters, days))
    start = rng.uniform(1_000, 60_000, meters)[:, None]
    values = np.round(start + np.cumsum(usage, axis=1), 2)
    k = max(meters // 500, 1)
    picks = rng.choice(meters, 4 * k, replace=False).reshape(4, k)
    at = rng.integers(30, days - 10, 4 * k).reshape(4, k)
    values[picks[0], at[0]] *= 100  # scale jumps
    values[picks[1], at[1]] = np.floor(values[picks[1], at[1]]) * 10 + 7  # a digit typed extra
    for m, a in zip(picks[2], at[2], strict=True):
        values[m, a : a + 4] = values[m, a - 1]  # frozen for 4 reads
    values[picks[3]] = np.mod(values[picks[3]] + (1e6 - values[picks[3], days // 2 : days // 2 + 1]), 1e6)  # rollover
    end = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "D") - np.timedelta64(1, "D")
    first = (end - np.timedelta64(days, "D")).astype("datetime64[us]") + np.timedelta64(12 * 3600, "s")
    return values, first


def serials_of(meters: int) -> list[str]:
    """The fleet's meter serials, in row order."""
    return [f"V{i:06d}" for i in range(meters)]


def land(url: str, settings, values: np.ndarray, first: np.datetime64, per_batch: int) -> float:
    meters, days = values.shape
    serials = serials_of(meters)
    copy_meters = "COPY meter (serial, commodity, model, unit, protocol, register_digits) FROM STDIN"
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur, cur.copy(copy_meters) as copy:
        for s in serials:
            copy.write_row((s, "electricity", "bench", "kWh", "import", 6))
    ts_day = first + np.arange(days, dtype=np.int64) * np.timedelta64(DAY_US, "us")
    started = time.perf_counter()
    with BatchWriter(url, settings, origin="bench") as writer:
        for a in range(0, meters, per_batch):
            b = min(a + per_batch, meters)
            n = (b - a) * days
            frame = ReadingFrame(
                meters=serials[a:b],
                meter_idx=np.repeat(np.arange(b - a, dtype=np.int32), days),
                channels=[CH],
                channel_idx=np.zeros(n, np.int32),
                ts=np.tile(ts_day, b - a),
                value=values[a:b].ravel(),
                units=["kWh"],
                unit_idx=np.zeros(n, np.int32),
                source=Source.IMPORT,
            )
            writer.write(frame)
    return time.perf_counter() - started


def land_q15(url: str, settings, meters: int, days: int, per_batch: int = 100, seed: int = 9) -> tuple[int, float]:
    """Land meters × days × 96 cumulative 15-minute register reads; return (rows, seconds)."""
    rng = np.random.default_rng(seed)
    serials = [f"Q{i:06d}" for i in range(meters)]
    copy_meters = "COPY meter (serial, commodity, model, unit, protocol, register_digits) FROM STDIN"
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur, cur.copy(copy_meters) as copy:
        for s in serials:
            copy.write_row((s, "electricity", "bench", "kWh", "mqtt", 7))
    n_slots = days * 96
    end = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "D") - np.timedelta64(1, "D")
    first = (end - np.timedelta64(days, "D")).astype("datetime64[us]")
    ts_slots = first + np.arange(n_slots, dtype=np.int64) * np.timedelta64(900_000_000, "us")
    started = time.perf_counter()
    rows = 0
    with BatchWriter(url, settings, origin="bench-q15") as writer:
        for a in range(0, meters, per_batch):
            b = min(a + per_batch, meters)
            usage = rng.uniform(0.02, 0.4, (b - a, 1)) * rng.lognormal(0, 0.3, (b - a, n_slots))
            values = np.round(rng.uniform(1_000, 60_000, (b - a, 1)) + np.cumsum(usage, axis=1), 3)
            n = values.size
            frame = ReadingFrame(
                meters=serials[a:b],
                meter_idx=np.repeat(np.arange(b - a, dtype=np.int32), n_slots),
                channels=[CH],
                channel_idx=np.zeros(n, np.int32),
                ts=np.tile(ts_slots, b - a),
                value=values.ravel(),
                units=["kWh"],
                unit_idx=np.zeros(n, np.int32),
                source=Source.MQTT,
            )
            rows += writer.write(frame).inserted
    return rows, time.perf_counter() - started


def naive_validate(rows: list[tuple[int, datetime, float]]) -> int:
    """The same register rules, one read at a time in plain Python; returns the number of findings."""
    findings = 0
    start = 0
    for end in range(1, len(rows) + 1):
        if end == len(rows) or rows[end][0] != rows[start][0]:
            findings += _naive_series(rows[start:end])
            start = end
    return findings


def _naive_series(series: list[tuple[int, datetime, float]], modulus: float = 1e6) -> int:
    p = params_for("electricity")
    t: list[float] = []
    v: list[float] = []
    findings = 0
    for _, ts, value in series:  # duplicates: same instant as the previous read
        stamp = ts.timestamp()
        if t and stamp == t[-1]:
            findings += 1
            continue
        t.append(stamp)
        v.append(value)
    n = len(v)
    if n < 2:
        return findings
    integral = all(x == int(x) for x in v)
    dts = [(t[i] - t[i - 1]) / 86400 for i in range(1, n)]
    cadence = statistics.median(dts)
    c = [math.nan] * n
    same = [0] * n
    for i in range(1, n):
        d = v[i] - v[i - 1]
        c[i] = d + modulus if d < 0 and v[i - 1] > modulus / 2 and v[i] < modulus / 2 else d
        same[i] = same[i - 1] + 1 if d == 0 and v[i] != 0 else 0
    in_run = [False] * n
    for i in range(n - 1, 0, -1):  # frozen runs and the read after them are not history
        run_end = same[i] > 0 and (i == n - 1 or same[i + 1] == 0)
        if run_end and same[i] >= p.frozen_reads - 1:
            for k in range(i - same[i] + 1, min(i + 2, n)):
                in_run[k] = True
    rates: list[float] = [math.nan] * n
    lo = [math.nan] * n
    hi = [math.nan] * n
    med = [math.nan] * n
    ok = [True] * n
    for i in range(1, n):
        dt = dts[i - 1]
        if c[i] >= 0 and dt > 0 and not in_run[i]:
            rates[i] = c[i] / dt
        hist = [r for r in rates[max(1, i - p.history_reads) : i] if not math.isnan(r)]
        if len(hist) >= p.min_history:
            med[i] = statistics.median(hist)
            e = med[i] * dt
            lo[i], hi[i] = p.low_factor * e, max(p.high_factor * e, p.min_daily_usage * dt)
            if integral:
                lo[i], hi[i] = math.floor(lo[i]), math.ceil(hi[i])
            ok[i] = lo[i] <= c[i] <= hi[i]
        else:
            ok[i] = not c[i] < 0
    outlier = [False] * n
    for i in range(1, n - 1):
        c2 = v[i + 1] - v[i - 1]
        dt2 = dts[i - 1] + dts[i]
        if math.isnan(med[i]):
            skip_ok = c2 >= 0
            outlier[i] = skip_ok and c[i + 1] < 0
        else:
            skip_ok = p.low_factor * med[i] * dt2 <= c2 <= max(p.high_factor * med[i] * dt2, p.min_daily_usage * dt2)
            outlier[i] = skip_ok and not ok[i] and not ok[i + 1]
    for i in range(1, n):
        suppressed = outlier[i - 1]
        if outlier[i]:
            findings += 2
            suggest_corrections(v[i], v[i - 1] + lo[i], min(v[i - 1] + hi[i], v[i + 1]), v[i - 1], integral)
        elif c[i] < 0 and not suppressed:
            findings += 1  # reset or negative
        elif not math.isnan(lo[i]) and c[i] == 0 and lo[i] > 0 and not suppressed:
            findings += 1
        elif not ok[i] and not suppressed:
            findings += 1
            if c[i] > 10 * hi[i] or i == n - 1:
                suggest_corrections(v[i], v[i - 1] + lo[i], v[i - 1] + hi[i], v[i - 1], integral)
        if same[i] == p.frozen_reads - 1 and med[i] > 0:
            findings += 1
        if dts[i - 1] > p.gap_factor * cadence:
            findings += 1
    return findings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=500)
    parser.add_argument("--naive-meters", type=int, default=200)
    parser.add_argument("--batch-meters", type=int, default=1_000, help="meters per ingest batch")
    parser.add_argument("--q15-meters", type=int, default=1_000, help="meters with 15-minute register data (0: skip)")
    parser.add_argument("--q15-days", type=int, default=60)
    args = parser.parse_args()
    values, first = make_fleet(args.meters, args.days)
    n = values.size
    print(f"{n:,} register reads: {args.meters:,} meters x {args.days} daily reads")
    with bench_database() as (url, settings, where):
        print(f"server: {where}")
        secs = land(url, settings, values, first, args.batch_meters)
        print(f"landed through the ingest writer (columnar): {secs:.1f} s ({n / secs:,.0f} rows/s)")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE reading")

        summary = run_vee(url, settings, who="bench")
        assert summary.new_reads == n, (summary.new_reads, n)
        rate = summary.new_reads / summary.seconds
        print(
            f"\nvectorised VEE run over the database: {summary.new_reads:,} reads in {summary.seconds:.1f} s "
            f"= {rate:,.0f} reads/s"
        )
        for line in summary.lines()[1:]:
            print("  " + line)

        # A day later: one new read per meter, validated over the whole history, as a daily run
        # meets it (its cost should follow the new day, not the table).
        day_after = first + np.int64(args.days) * np.timedelta64(DAY_US, "us")
        zeros = np.zeros(args.meters, np.int32)
        with BatchWriter(url, settings, origin="bench") as writer:
            writer.write(
                ReadingFrame(
                    meters=serials_of(args.meters),
                    meter_idx=np.arange(args.meters, dtype=np.int32),
                    channels=[CH],
                    channel_idx=zeros,
                    ts=np.full(args.meters, day_after),
                    value=values[:, -1] + 10.0,
                    units=["kWh"],
                    unit_idx=zeros,
                    source=Source.IMPORT,
                )
            )
        day = run_vee(url, settings, who="bench")
        print(
            f"a day later, incremental: {day.new_reads:,} new reads (one a meter) over {n:,} of history "
            f"in {day.seconds:.2f} s ({day.reads:,} read with their context)"
        )

        # The meter page's path: one meter's validated series out of the whole table, over its whole
        # span, through validated_series (what the page calls) and through the view by meter.
        # Each the best of three, alternated (the first query of a connection also pays its catalog reads).
        with psycopg.connect(url) as conn:
            one_meter = by_view = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                got = conn.execute(
                    """SELECT count(*) FROM channel c
                       CROSS JOIN LATERAL validated_series(17, c.id, '-infinity', 'infinity') v
                       WHERE c.code = '1-0:1.8.0'"""
                ).fetchone()
                one_meter = min(one_meter, time.perf_counter() - started)
                started = time.perf_counter()
                conn.execute("SELECT count(*) FROM validated_reading WHERE meter_id = 17").fetchone()
                by_view = min(by_view, time.perf_counter() - started)
        print(
            f"one meter's validated series ({got[0] if got else 0} rows) from validated_series: "
            f"{one_meter * 1000:.0f} ms (from the view validated_reading by meter: {by_view * 1000:.0f} ms)"
        )

        # The naive loop on a subset, rows fetched one by one from the same database.
        subset = args.naive_meters
        started = time.perf_counter()
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT meter_id, ts, value FROM reading_all WHERE meter_id <= %s ORDER BY meter_id, ts", (subset,)
            ).fetchall()
            naive_findings = naive_validate(rows)
        naive_secs = time.perf_counter() - started
        naive_rate = len(rows) / naive_secs
        print(
            f"naive per-row Python loop over the database: {len(rows):,} reads ({subset} meters) in "
            f"{naive_secs:.1f} s = {naive_rate:,.0f} reads/s ({naive_findings} findings)"
        )
        print(f"ratio vectorised / naive (over the database): {rate / naive_rate:.1f}x")

        q15_rate = q15_landed = None
        if args.q15_meters:
            rows, secs = land_q15(url, settings, args.q15_meters, args.q15_days)
            print(
                f"\n15-minute register data: {rows:,} reads ({args.q15_meters:,} meters x {args.q15_days} days x 96) "
                f"landed through the ingest writer in {secs:.1f} s"
            )
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE reading")
            q = run_vee(url, settings, who="bench")
            assert q.landed_reads == rows, (q.landed_reads, rows)
            q15_rate, q15_landed = q.new_reads / q.seconds, q.landed_reads / q.seconds
            print(
                f"incremental VEE run over it: {q.new_reads:,} daily reads validated in {q.seconds:.1f} s "
                f"= {q15_rate:,.0f} validated reads/s, covering {q.landed_reads:,} landed 15-minute reads "
                f"= {q15_landed:,.0f} landed reads/s"
            )
            for line in q.lines()[1:]:
                print("  " + line)

    # Rules only, same data in memory, no database.
    meters, days = values.shape
    batch = RegisterSeries(
        np.repeat(np.arange(meters, dtype=np.int64), days),
        np.tile(np.arange(days) * 86400.0, meters),
        values.ravel(),
        np.full(meters, 1e6),
        np.zeros(meters, np.int64),
        [params_for("electricity")],
    )
    started = time.perf_counter()
    result = validate_registers(batch)
    rules_secs = time.perf_counter() - started
    sub = values[:subset]
    rows_mem = [
        (m, datetime.fromtimestamp(d * 86400.0, UTC), float(sub[m, d])) for m in range(subset) for d in range(days)
    ]
    started = time.perf_counter()
    naive_validate(rows_mem)
    naive_rules = len(rows_mem) / (time.perf_counter() - started)
    print(
        f"\nrules only (in memory): vectorised {n / rules_secs:,.0f} reads/s ({len(result.findings):,} findings), "
        f"naive {naive_rules:,.0f} reads/s, ratio {n / rules_secs / naive_rules:.1f}x"
    )
    goal = "reached" if rate >= 400_000 else "NOT reached"
    print(f"\ngoal >= 400,000 daily register reads/s over the database: {goal} ({rate:,.0f})")
    if q15_landed is not None:
        goal = "reached" if q15_landed >= 200_000 else "NOT reached"
        print(
            f"goal >= 200,000 reads/s with 15-minute register data: {goal} ({q15_landed:,.0f} landed reads/s "
            f"covered; {q15_rate:,.0f} validated daily reads/s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
