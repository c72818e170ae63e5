"""The newest read of each meter and channel, kept by the daily refresh, for the control room.

The control room judges every meter by its newest main-register read. Finding it is one index
probe into ``reading`` per meter: at 100,000 meters that alone took most of a second and kept
the first view after a start above it. ``meter_last_read`` holds the newest instant of each
meter and channel; ``releve.db.refresh_daily`` (``releve db refresh``, incremental over the
batches landed since its last run) moves it forward from the same time ranges it aggregates.
It may lag by the time since that refresh: the control room takes a meter's state from it only
when it already says "read recently", and probes ``reading`` for the others (see
``dashboards.queries``). It starts empty: meters the refresh has not covered yet are probed.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE meter_last_read (
    meter_id    integer NOT NULL REFERENCES meter (id),
    channel_id  smallint NOT NULL,
    ts          timestamptz NOT NULL,
    PRIMARY KEY (meter_id, channel_id)
);
COMMENT ON TABLE meter_last_read IS
    'Newest reading instant per meter and channel, moved forward by refresh_daily (may lag behind reading).';
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create meter_last_read; the roles that run the daily refresh move it forward."""
    conn.execute(DDL.encode())
    writer, _, editor = (sql.Identifier(r) for r in ctx.roles)
    for role in (writer, editor):
        conn.execute(sql.SQL("GRANT INSERT, UPDATE ON meter_last_read TO {}").format(role))
