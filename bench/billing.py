"""A bill run for 100,000 accounts, against the cost of reading the validated series it bills from.

    python bench/billing.py [--accounts 100000] [--days 34] [--interval-meters 2000 --interval-days 365]

Builds the registry in bulk with SQL ``generate_series`` (customers, service points, meters,
installations, accounts: 70 % electricity, 30 % water, 3 % indigent, 1 % prepaid, all in cycle A),
lands ``days`` daily register reads per meter at 00:00 UTC through the ingest writer's columnar path
(``ReadingFrame.from_columns``), adds a few VEE estimates and open exceptions (so some bills are
held), optionally moves ``--interval-meters`` accounts to the time-of-use tariff with
``--interval-days`` of 15-minute interval data (kept as blocks by the writer), then times ``releve
bill run --cycle A --period-end 2026-03-31`` (determinants, holds, pricing, bills, lines and freezes
written), prints the bills' count and sums (two codes given the same data must print the same), and
times the idempotent re-run. Baseline from the same run: one ``SELECT`` of the validated series over
the same window (what any bill run must at least read).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_database
from billing.run import run_bills
from billing.tariffs import EXAMPLE, load_tariffs
from ingest import BatchWriter, ReadingFrame
from releve.model import Source

PERIOD_END = date(2026, 3, 31)


def build_registry(url: str, n: int) -> None:
    """Customers, service points, meters, installations and accounts for ``n`` accounts, in SQL."""
    statements = [
        "INSERT INTO customer (id, name, indigent) SELECT g, 'Customer ' || g, g % 33 = 0 FROM generate_series(1, {n}) g",
        """INSERT INTO meter (id, serial, commodity, model, unit, protocol)
           SELECT g, 'B' || lpad(g::text, 7, '0'), CASE WHEN g % 10 < 7 THEN 'electricity' ELSE 'water' END,
                  'bench', CASE WHEN g % 10 < 7 THEN 'kWh' ELSE 'm3' END, 'import'
           FROM generate_series(1, {n}) g""",
        """INSERT INTO service_point (id, code, commodity)
           SELECT g, 'SP' || g, CASE WHEN g % 10 < 7 THEN 'electricity' ELSE 'water' END
           FROM generate_series(1, {n}) g""",
        """INSERT INTO installation (meter_id, service_point_id, installed_at, install_index)
           SELECT g, g, '2025-01-01', 0 FROM generate_series(1, {n}) g""",
        """INSERT INTO account (number, customer_id, service_point_id, billing_cycle, tariff_code, prepaid, opened_on)
           SELECT 'ACC' || g, g, g, 'A', CASE WHEN g % 10 < 7 THEN 'E-RES' ELSE 'W-RES' END, g % 100 = 1, '2025-01-01'
           FROM generate_series(1, {n}) g""",
        "SELECT setval('customer_id_seq', {n}), setval('meter_id_seq', {n}), setval('service_point_id_seq', {n})",
    ]
    with psycopg.connect(url) as conn:
        for statement in statements:
            conn.execute(statement.replace("{n}", str(int(n))).encode())


def land_reads(url: str, settings, n: int, days: int) -> int:
    """``days`` daily register reads per meter ending after the cycle, through the columnar writer."""
    rng = np.random.default_rng(3)
    serials = np.array([f"B{g:07d}" for g in range(1, n + 1)])
    water = (np.arange(1, n + 1) % 10) >= 7
    per_day = np.where(water, rng.uniform(0.1, 0.6, n), rng.uniform(3, 20, n))
    start = np.round(rng.uniform(100, 50_000, n), 3)
    first = np.datetime64("2026-04-03", "D") - np.timedelta64(days, "D")
    total = 0
    with BatchWriter(url, settings, origin="bench") as writer:
        for d in range(days):
            values = np.round(start + per_day * d * rng.lognormal(0, 0.05, n), 3)
            ts = np.full(n, (first + np.timedelta64(d, "D")).astype("datetime64[us]"))
            channel = np.where(water, "8-0:1.0.0", "1-0:1.8.0")
            unit = np.where(water, "m3", "kWh")
            writer.write(
                ReadingFrame.from_columns(serials, channel, ts, np.maximum.accumulate(values), unit, Source.IMPORT)
            )
            total += n
    return total


def land_intervals(url: str, settings, n: int, meters: int, days: int) -> int:
    """15-minute interval data for ``meters`` electricity meters over ``days`` days ending after the cycle,
    through the writer (a block per meter and UTC day); their accounts move to the time-of-use tariff."""
    rng = np.random.default_rng(4)
    ids = np.flatnonzero((np.arange(1, n + 1) % 10) < 7)[:meters] + 1
    serials = np.array([f"B{g:07d}" for g in ids])
    first = np.datetime64("2026-04-03", "D") - np.timedelta64(days, "D")
    step = np.timedelta64(15, "m").astype("timedelta64[us]")
    slots = np.arange(1, 97) * step  # stamped at the interval's end: 00:15 … 24:00
    total = 0
    with BatchWriter(url, settings, origin="bench") as writer:
        for d in range(days):
            day = (first + np.timedelta64(d, "D")).astype("datetime64[us]")
            ts = np.tile(day + slots[:-1], ids.size)  # 00:15 … 23:45 (24:00 is the next day's first instant)
            ts = np.concatenate([np.full(ids.size, day), ts])
            who = np.concatenate([serials, np.repeat(serials, 95)])
            values = np.round(rng.gamma(2.0, 0.1, who.size), 3)
            k = who.size
            writer.write(
                ReadingFrame.from_columns(who, np.full(k, "1-0:1.29.0"), ts, values, np.full(k, "kWh"), Source.IMPORT)
            )
            total += k
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE account SET tariff_code = 'E-TOU' WHERE id = ANY(%s)", (ids.tolist(),))
    return total


def add_data_problems(url: str, n: int) -> None:
    """0.5 % of meters get an open VEE exception, 0.5 % ten estimated days (those bills are held); half the
    prepaid accounts bought credit (the other half is flagged: consumption without vending)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            """INSERT INTO vee_exception (meter_id, channel_id, ts, rule, severity, message)
               SELECT g, (SELECT id FROM channel WHERE code = CASE WHEN g %% 10 < 7 THEN '1-0:1.8.0' ELSE '8-0:1.0.0' END),
                      '2026-03-15', 'HILO_HIGH', 'warning', 'bench'
               FROM generate_series(2, %s, 200) g""",
            (n,),
        )
        conn.execute(
            """INSERT INTO vending (account_id, vended_at, units, token)
               SELECT a.id, '2026-03-05', 1000, 'T' || a.id FROM account a WHERE a.prepaid AND a.id % 200 = 1"""
        )
        for day in range(23, 33):  # ten estimated days out of 31: above the 25 % gate
            conn.execute(
                """INSERT INTO reading_version (meter_id, channel_id, ts, version, value, quality, kind, replaced_value,
                                                created_by)
                   SELECT r.meter_id, r.channel_id, r.ts, 1, r.value, 'E', 'estimate', r.value, 'bench'
                   FROM reading_all r WHERE r.ts = %s AND r.meter_id %% 200 = 3""",
                (date(2026, 3, 1) + timedelta(days=day - 1),),
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=34, help="daily reads per meter, ending 2 Apr 2026")
    ap.add_argument("--steps", action="store_true", help="print the time of each step of the bill run")
    ap.add_argument(
        "--interval-meters",
        type=int,
        default=0,
        help="this many electricity accounts on the time-of-use tariff, with 15-minute interval data (default none)",
    )
    ap.add_argument(
        "--interval-days", type=int, default=365, help="days of interval data those meters hold, ending 2 Apr 2026"
    )
    args = ap.parse_args()
    if args.steps:
        logging.basicConfig(level=logging.WARNING, format="  %(message)s")
        logging.getLogger("billing").setLevel(logging.DEBUG)
    book = load_tariffs(EXAMPLE)
    with bench_database() as (url, settings, where):
        print(f"database: {where}")
        t = time.perf_counter()
        build_registry(url, args.accounts)
        n_reads = land_reads(url, settings, args.accounts, args.days)
        n_intervals = land_intervals(url, settings, args.accounts, args.interval_meters, args.interval_days)
        add_data_problems(url, args.accounts)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        print(
            f"setup: {args.accounts:,} accounts, {n_reads:,} register reads, {n_intervals:,} interval reads "
            f"({args.interval_meters:,} time-of-use meters) in {time.perf_counter() - t:.1f} s"
        )

        t = time.perf_counter()
        with psycopg.connect(url) as conn:
            row = conn.execute(
                """SELECT count(*), sum(value) FROM validated_between('2026-01-15', '2026-05-17')
                   WHERE ts < '2026-05-17'"""
            ).fetchone()
        baseline = time.perf_counter() - t
        print(f"baseline: read the validated series of the window ({row[0]:,} reads): {baseline:.2f} s")

        t = time.perf_counter()
        s = run_bills(url, settings, book, "A", PERIOD_END, date(2026, 4, 2))
        elapsed = time.perf_counter() - t
        print(s.text())
        print(
            f"bill run: {s.accounts:,} accounts in {elapsed:.1f} s = {s.accounts / elapsed:,.0f} accounts/s "
            f"({elapsed / baseline:.1f}× the baseline read; goal < 30 s)"
        )
        with psycopg.connect(url) as conn:
            check = conn.execute(
                "SELECT count(*), sum(total), sum(subtotal) FROM bill WHERE status IN ('issued', 'held')"
            ).fetchone()
        print(f"bills: {check[0]:,}, totals {check[1]}, subtotals {check[2]} (the same data gives the same sums)")
        t = time.perf_counter()
        s2 = run_bills(url, settings, book, "A", PERIOD_END, date(2026, 4, 2))
        print(
            f"idempotent re-run: {s2.unchanged:,} unchanged, {s2.issued + s2.held} new, {time.perf_counter() - t:.1f} s"
        )


if __name__ == "__main__":
    main()
