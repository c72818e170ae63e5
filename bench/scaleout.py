"""Ingest and VEE on 1, 2 and 3 shards of this machine: throughput and per-shard efficiency.

    python bench/scaleout.py [--meters 3000] [--days 14] [--batch 50000] [--shards 1,2,3]

Starts one PostgreSQL server per shard (durable settings) plus a coordinator database on the first,
registers the same meters everywhere and attaches the shards to the coordinator
(``releve.shards``: postgres_fdw hash partitions). For each shard count N it lands meters × days
of 15-minute register reads: the batches are split by the coordinator's hash (``ShardedWriter``
routing, timed with the rest) and each shard's part is written by its own process, as collectors
sharded by meter would; then VEE runs on every shard at once (one process each), its rate given
in readings landed per second of VEE (what a day's data costs to validate). The 1-shard run
is the baseline measured in the same run: per-shard efficiency = rate(N) / (N × rate(1)). Unit
costs for the capacity model (docs/scaling.md) are printed at the end: µs of one core per reading
ingested and per reading validated, and bytes on disk per stored reading (rows and blocks, with their keys).

With ``--bill`` every meter also gets an account, and after VEE a 7-day cycle is billed: once on the
first shard's database as one server (the baseline: the series read locally), then on the
coordinator through the shards (``billing.sharded``: the series read from every shard at once over
postgres_fdw); the ratio is the cost of billing a sharded fleet against billing it on one server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.vee.run import run_vee
from bench.common import exit_on_sigterm
from billing.run import run_bills
from billing.sharded import run_bills_sharded
from billing.tariffs import TariffBook, load_tariffs
from ingest import BatchWriter, ReadingFrame
from ingest.sharded import ShardedWriter
from releve import migrate, shards
from releve.model import Source
from releve.pgserver import PostgresServer
from releve.settings import Settings


def make_frame(n_meters: int, days: int) -> ReadingFrame:
    """15-minute register reads, time-major as collectors deliver them."""
    n_intervals = days * 96
    start = np.datetime64("2026-01-01T00:00", "us")
    ts = start + np.repeat(np.arange(n_intervals, dtype=np.int64) * 900_000_000, n_meters).astype("timedelta64[us]")
    rng = np.random.default_rng(7)
    value = np.cumsum(rng.gamma(2.0, 0.05, size=(n_intervals, n_meters)), axis=0).ravel() + 1000.0
    return ReadingFrame(
        meters=[f"SCALE{i:06d}" for i in range(n_meters)],
        meter_idx=np.tile(np.arange(n_meters, dtype=np.int32), n_intervals),
        channels=["1-0:1.8.0"],
        channel_idx=np.zeros(len(ts), np.int32),
        ts=ts,
        value=value,
        units=["kWh"],
        unit_idx=np.zeros(len(ts), np.int32),
        source=Source.MODBUS,
    )


def _land(url: str, settings: Settings, parts: list[ReadingFrame]) -> tuple[int, float]:
    """One shard's writer (a process of its own): land its parts, return (rows, CPU seconds of this process)."""
    cpu = time.process_time()
    with BatchWriter(url, settings, origin="bench") as writer:
        rows = sum(writer.write(p).inserted for p in parts)
    return rows, time.process_time() - cpu


def _vee(url: str, settings: Settings) -> tuple[int, float]:
    cpu = time.process_time()
    summary = run_vee(url, settings)
    return summary.reads, time.process_time() - cpu


def fresh_database(server: PostgresServer, name: str, settings: Settings) -> str:
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server.url(name)
    migrate.upgrade(url, settings)
    return url


def register(url: str, meters: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) "
            "VALUES (%s, 'electricity', 'bench', 'kWh', 'import')",
            [(m,) for m in meters],
        )
        conn.execute("SELECT ensure_reading_partitions('2026-01-01', '2026-12-31')")


def add_accounts(url: str) -> None:
    """A service point, an installation and an account (cycle B, tariff E-RES) per meter."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO service_point (code, commodity) SELECT 'SP-' || serial, commodity FROM meter")
        conn.execute(
            """INSERT INTO installation (meter_id, service_point_id, installed_at, install_index, reason)
               SELECT m.id, sp.id, '2025-01-01', 0, 'new' FROM meter m JOIN service_point sp ON sp.code = 'SP-' || m.serial"""
        )
        conn.execute("INSERT INTO customer (name) SELECT 'C-' || serial FROM meter")
        conn.execute(
            """INSERT INTO account (number, customer_id, service_point_id, billing_cycle, tariff_code, opened_on)
               SELECT 'A-' || m.serial, c.id, sp.id, 'B', 'E-RES', '2025-01-01' FROM meter m
               JOIN service_point sp ON sp.code = 'SP-' || m.serial JOIN customer c ON c.name = 'C-' || m.serial"""
        )


def weekly_book(root: Path) -> TariffBook:
    """The example tariffs on a 7-day cycle (the bench's data covers days, not months)."""
    text = (Path(__file__).resolve().parent.parent / "billing" / "tariffs.example.toml").read_text()
    path = root / "tariffs.toml"
    path.write_text(text.replace("cycle_days = 30", "cycle_days = 7", 1))
    return load_tariffs(path)


def main() -> int:
    exit_on_sigterm()  # a SIGTERM stops and removes the throwaway servers
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=3000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--bill", action="store_true", help="also bill a 7-day cycle: one server vs the shards")
    parser.add_argument(
        "--shards", default="1,2,3", help="shard counts to measure (comma-separated, first is the baseline)"
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.shards.split(",")]
    if not counts or counts[0] != 1 or any(c < 1 for c in counts):
        parser.error("--shards must start with 1 (the baseline) and hold positive counts")
    frame = make_frame(args.meters, args.days)
    n = len(frame)
    print(
        f"{n:,} readings: {args.meters:,} meters x {args.days} days of 15-minute register reads, "
        f"batches of {args.batch:,}; {multiprocessing.cpu_count()} CPU(s) on this machine"
    )
    root = Path(tempfile.mkdtemp(prefix="releve-scaleout-"))
    root.chmod(0o755)
    servers = [PostgresServer(root / f"shard{k}", durable=True) for k in range(max(counts))]
    settings = Settings(database={"url": "", "role_prefix": "releve"})  # type: ignore[arg-type]
    ctx = multiprocessing.get_context("spawn")
    results: dict[int, dict[str, float]] = {}
    try:
        for server in servers:
            server.start()
        print(f"servers: {len(servers)} x {servers[0].version()} on 127.0.0.1 (durable settings: fsync on)")
        for count in counts:
            coordinator = fresh_database(servers[0], f"coord{count}", settings)
            urls = [fresh_database(servers[k], f"shard{count}_{k}", settings) for k in range(count)]
            for url in (coordinator, *urls):
                register(url, frame.meters)
                if args.bill:
                    add_accounts(url)
            shards.attach_shards(coordinator, urls, settings)
            batches = [frame.take(slice(i, min(i + args.batch, n))) for i in range(0, n, args.batch)]
            with ProcessPoolExecutor(max_workers=count, mp_context=ctx) as pool:
                pool.submit(time.sleep, 0).result()  # the workers are up before the clock starts
                list(pool.map(time.sleep, [0.2] * count))
                t = time.perf_counter()
                with ShardedWriter(coordinator, urls, settings) as router:
                    home = router.shard_of(frame.meters)
                    per_shard: list[list[ReadingFrame]] = [[] for _ in range(count)]
                    for b in batches:
                        where = home[b.meter_idx]
                        for k in range(count):
                            per_shard[k].append(b.take(where == k))
                landed = list(pool.map(_land, urls, [settings] * count, per_shard))
                ingest_s = time.perf_counter() - t
                assert sum(r for r, _ in landed) == n, f"{sum(r for r, _ in landed)} of {n} landed"
                t = time.perf_counter()
                validated = list(pool.map(_vee, urls, [settings] * count))
                vee_s = time.perf_counter() - t
            with psycopg.connect(urls[0]) as conn:
                # Rows and blocks alike (migration 0030): every leaf part of both tables, their keys included.
                row = conn.execute(
                    "SELECT sum(pg_total_relation_size(relid)), (SELECT count(*) FROM reading_all) "
                    "FROM (SELECT relid FROM pg_partition_tree('reading') WHERE isleaf "
                    "      UNION ALL SELECT relid FROM pg_partition_tree('reading_block') WHERE isleaf) p"
                ).fetchone()
            results[count] = {
                "ingest": n / ingest_s,
                "vee": n / vee_s,
                "vee_reads": sum(r for r, _ in validated),
                "ingest_cpu_us": 1e6 * sum(c for _, c in landed) / n,
                "vee_cpu_us": 1e6 * sum(c for _, c in validated) / n,
                "bytes": float(row[0]) / float(row[1]) if row and row[1] else float("nan"),
            }
            if args.bill:
                book = weekly_book(root)
                period_end = (np.datetime64("2026-01-01") + np.timedelta64(args.days - 2, "D")).item()
                if count == 1:
                    t = time.perf_counter()
                    alone = run_bills(urls[0], settings, book, "B", period_end)
                    results[0] = {"bill": time.perf_counter() - t}
                t = time.perf_counter()
                summary = run_bills_sharded(
                    coordinator,
                    settings.model_copy(update={"database": settings.database.model_copy(update={"shard_urls": urls})}),
                    book,
                    "B",
                    period_end,
                )
                results[count]["bill"] = time.perf_counter() - t
                assert summary.issued == alone.issued and summary.held == alone.held, (summary.text(), alone.text())
                print(
                    f"{count} shard(s): bill run {summary.accounts:,} accounts ({summary.issued:,} issued) "
                    f"{results[count]['bill']:.1f} s, {results[count]['bill'] / results[0]['bill']:.2f} x one server "
                    f"({results[0]['bill']:.1f} s, the baseline in this run)"
                )
            base = results[counts[0]]
            r = results[count]
            print(
                f"{count} shard(s): ingest {r['ingest']:>10,.0f} rows/s  efficiency "
                f"{r['ingest'] / (count * base['ingest']):.2f} | VEE {r['vee']:>10,.0f} readings/s  efficiency "
                f"{r['vee'] / (count * base['vee']):.2f}   ({r['vee_reads']:,.0f} register reads checked with "
                "history; baseline: 1 shard in this run)"
            )
        one = results[1]
        print(
            f"unit costs (1 shard): ingest {one['ingest_cpu_us']:.2f} us client CPU per reading "
            f"(+ server side: {1e6 / one['ingest']:.2f} us wall per reading), VEE {one['vee_cpu_us']:.2f} us "
            f"client CPU per reading ({1e6 / one['vee']:.2f} us wall), {one['bytes']:.0f} bytes on disk per reading "
            "(rows and blocks, with their keys)"
        )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
