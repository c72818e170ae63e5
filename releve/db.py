"""Database connections: the URL from settings, or the embedded server when none is given.

``database_url(settings)`` is the one place that decides where the database is. With
``database.url`` empty, Relevé starts (or reuses) its embedded PostgreSQL in ``database.data_dir``
and uses a database named ``releve`` inside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import Connection, sql

from releve.migrate import role_names
from releve.pgserver import PostgresServer
from releve.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DBNAME = "releve"


def embedded_server(settings: Settings) -> PostgresServer:
    """The embedded server for these settings (not started)."""
    return PostgresServer(Path(settings.database.data_dir))


def database_url(settings: Settings, start: bool = True) -> str:
    """The URL to connect to: the configured one, or the embedded server's (started if asked)."""
    if settings.database.url:
        return settings.database.url
    server = embedded_server(settings)
    if start:
        server.start()
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DBNAME,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DBNAME)))
    return server.url(EMBEDDED_DBNAME)


def read_url(settings: Settings, primary_url: str) -> str:
    """Where dashboards and reports read: ``database.replica_url`` when set, else ``primary_url``.

    A replica serves SELECTs only (hot standby); everything that writes — ingest, VEE, theft
    ranking, billing, the dashboards' two forms — keeps the primary's URL.
    """
    return settings.database.replica_url or primary_url


@dataclass(frozen=True)
class ReplicaStatus:
    """Whether a server is a standby, and how far behind its primary it is."""

    standby: bool
    lag_seconds: float | None  # time since the last replayed commit, 0 when nothing is left to replay
    lag_bytes: int | None  # WAL received and not yet replayed
    receiving: bool  # a WAL receiver is streaming from a primary right now

    def describe(self) -> str:
        """One line for a page or a log: "primary", or the standby's lag."""
        if not self.standby:
            return "primary (not a replica)"
        lag = "unknown lag" if self.lag_seconds is None else f"{self.lag_seconds:.1f} s behind"
        return f"replica, {lag}" + ("" if self.receiving else ", not streaming from a primary")


def replica_status(conn: Connection) -> ReplicaStatus:
    """Read the replication state of the server ``conn`` is on (any role may ask).

    The lag in time is ``now() - pg_last_xact_replay_timestamp()`` while WAL waits to be replayed;
    when the replica has replayed all it received it is 0, however long the primary has been idle.
    """
    row = conn.execute(
        """SELECT pg_is_in_recovery(),
                  CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
                       ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END,
                  pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()),
                  EXISTS (SELECT 1 FROM pg_stat_wal_receiver)"""
    ).fetchone()
    assert row is not None
    standby, lag_s, lag_b, receiving = row
    if not standby:
        return ReplicaStatus(False, None, None, False)
    return ReplicaStatus(
        True,
        None if lag_s is None else max(0.0, float(lag_s)),
        None if lag_b is None else max(0, int(lag_b)),
        bool(receiving),
    )


def int_array(values: Iterable[int]) -> str:
    """Integers as a PostgreSQL array literal (``{1,2,3}``), for a parameter cast in the query (``%s::integer[]``).

    psycopg adapts a list element by element (a regular expression per element): ≈ 2 s for the
    lists of 100,000 account ids a bill run passes; one string joined here costs milliseconds.
    """
    return "{" + ",".join(map(str, values)) + "}"


def connect(url: str, role: str | None = None, autocommit: bool = False) -> Connection:
    """Open a connection in UTC; with ``role``, switch to it (SET ROLE) for least privilege."""
    conn = psycopg.connect(url, autocommit=autocommit)
    conn.execute("SET TIME ZONE 'UTC'")
    if role:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    if not autocommit:
        conn.commit()
    return conn


def writer_role(settings: Settings) -> str | None:
    """The role ingest switches to, or None when roles are disabled."""
    return role_names(settings)[0] if settings.database.use_roles else None


def reader_role(settings: Settings) -> str | None:
    """The role dashboards and reports switch to, or None when roles are disabled."""
    return role_names(settings)[1] if settings.database.use_roles else None


def editor_role(settings: Settings) -> str | None:
    """The role validation work switches to, or None when roles are disabled."""
    return role_names(settings)[2] if settings.database.use_roles else None


#: Moves ``meter_last_read`` forward over a time range (the newest instant of each meter and channel).
LAST_READ_SQL = """
INSERT INTO meter_last_read AS l (meter_id, channel_id, ts)
SELECT meter_id, channel_id, max(ts) FROM reading_between(%s, %s) GROUP BY 1, 2
ON CONFLICT (meter_id, channel_id) DO UPDATE SET ts = EXCLUDED.ts WHERE l.ts < EXCLUDED.ts
"""


def _since_watermark(
    url: str, role: str | None, watermark: str, refresh: Callable[[Connection, datetime, datetime], None]
) -> tuple[int, datetime, datetime] | None:
    """Run ``refresh(conn, lo, hi)`` over the time span of the batches landed since ``watermark``, then move it.

    ``watermark`` is a one-row table holding the last batch id covered. Returns (batches covered, lo,
    hi), or None when nothing landed since. Autocommit: TimescaleDB refreshes continuous aggregates
    only outside a transaction block; a refresh that fails leaves the watermark, so the next one
    covers the same batches again (every refresh rebuilds its days whole, so a repeat is harmless).
    """
    with connect(url, role=role, autocommit=True) as conn:
        row = conn.execute(sql.SQL("SELECT batch_id FROM {}").format(sql.Identifier(watermark))).fetchone()
        span = conn.execute(
            "SELECT count(*), min(min_ts), max(max_ts), max(id) FROM ingest_batch WHERE id > %s AND min_ts IS NOT NULL",
            (int(row[0]) if row else 0,),
        ).fetchone()
        if not span or not span[0]:
            return None
        batches, lo, hi, top = span
        refresh(conn, lo, hi)
        conn.execute(
            sql.SQL(
                """INSERT INTO {} (batch_id) VALUES (%s)
                   ON CONFLICT (id) DO UPDATE SET batch_id = EXCLUDED.batch_id, refreshed_at = now()"""
            ).format(sql.Identifier(watermark)),
            (top,),
        )
        return int(batches), lo, hi


def refresh_daily(url: str, role: str | None = None) -> tuple[int, int]:
    """Refresh the daily aggregate over the time ranges of batches landed since the last refresh.

    The same ranges move ``meter_last_read`` (each meter's newest read, for the control room) forward.

    Returns (batches covered, days refreshed).
    """

    def refresh(conn: Connection, lo: datetime, hi: datetime) -> None:
        conn.execute("CALL refresh_daily_reading(%s, %s)", (lo, hi))
        conn.execute(LAST_READ_SQL, (lo, hi))

    done = _since_watermark(url, role, "daily_refresh_watermark", refresh)
    return (done[0], (done[2].date() - done[1].date()).days + 1) if done else (0, 0)


def refresh_hourly(url: str, role: str | None = None) -> tuple[int, int]:
    """Refresh ``hourly_series`` (migration 0027) over the batches landed since its own watermark.

    Kept apart from :func:`refresh_daily` (its own watermark, ``hourly_refresh_watermark``): only
    the analytics that read hours call it (``releve theft rank``, ``releve db refresh``). Returns
    (batches covered, days refreshed).
    """

    def refresh(conn: Connection, lo: datetime, hi: datetime) -> None:
        conn.execute("SELECT refresh_hourly_series(%s, %s)", (lo, hi))

    done = _since_watermark(url, role, "hourly_refresh_watermark", refresh)
    return (done[0], (done[2].date() - done[1].date()).days + 2) if done else (0, 0)


def status(url: str) -> dict[str, object]:
    """A summary of the database: server, storage, schema version, partitions and row counts."""
    with psycopg.connect(url) as conn:

        def one(query: str) -> object:
            row = conn.execute(query.encode()).fetchone()
            return row[0] if row else None

        info: dict[str, object] = {
            "server": one("SHOW server_version"),
            "storage": "postgresql partitions",
            "schema_version": None,
            "reading_partitions": 0,
            "rows": {},
        }
        timescale = one("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        if timescale:
            info["storage"] = f"timescaledb {timescale}"
        if not one("SELECT to_regclass('schema_migration') IS NOT NULL"):
            return info
        info["schema_version"] = one("SELECT max(version) FROM schema_migration")
        info["reading_partitions"] = one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'reading'::regclass")
        rows = {
            table: one(f"SELECT count(*) FROM {table}")
            for table in ("meter", "reading", "meter_event", "reading_conflict", "rejected_input")
        }
        if one("SELECT to_regclass('reading_all') IS NOT NULL"):
            # Readings kept as rows and in blocks (migration 0030) alike (each block's length, not its rows
            # unnested), and how many blocks hold them.
            rows["reading"] = one(
                "SELECT ((SELECT count(*) FROM reading)"
                " + (SELECT coalesce(sum(cardinality(ts)), 0) FROM reading_block))::int8"
            )
            rows["reading_block"] = one("SELECT count(*) FROM reading_block")
        info["rows"] = rows
    return info
