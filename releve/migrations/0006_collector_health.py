"""Communication health written by the collectors, read by ``releve collect status`` and the dashboards."""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE comm_health (
    collector            text NOT NULL,
    serial               text NOT NULL,
    link                 text NOT NULL,           -- gateway, serial line or 'mqtt'
    polls                bigint NOT NULL DEFAULT 0,
    good                 bigint NOT NULL DEFAULT 0,
    failures             bigint NOT NULL DEFAULT 0,
    retries              bigint NOT NULL DEFAULT 0,
    errors               jsonb NOT NULL DEFAULT '{}'::jsonb,   -- counts by kind: timeout, crc, exception…
    consecutive_failures integer NOT NULL DEFAULT 0,
    backoff_until        timestamptz,
    last_good            timestamptz,
    last_error           text,
    latency_ms           real,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collector, serial)
);
CREATE INDEX comm_health_serial_idx ON comm_health (serial);

CREATE TABLE link_health (
    collector    text NOT NULL,
    link         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('tcp', 'rtu', 'mqtt')),
    requests     bigint NOT NULL DEFAULT 0,
    failures     bigint NOT NULL DEFAULT 0,
    meters       integer NOT NULL DEFAULT 0,
    connected    boolean,
    spool_bytes  bigint,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collector, link)
);
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the health tables; the writer role may insert and update them (they are state, not raw data)."""
    conn.execute(DDL.encode())
    writer = sql.Identifier(ctx.roles[0])
    for table in ("comm_health", "link_health"):
        conn.execute(sql.SQL("GRANT INSERT, UPDATE ON {} TO {}").format(sql.Identifier(table), writer))
