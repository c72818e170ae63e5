"""The daily aggregate is refreshed by a procedure, incrementally from the ingest batches.

TimescaleDB refuses to refresh a continuous aggregate from inside a function (it must run outside
a transaction block), so ``refresh_daily_reading`` becomes a procedure on both paths, called with
``CALL`` in autocommit. ``daily_refresh_watermark`` records the last ingest batch whose time range
has been aggregated; ``releve.db.refresh_daily`` refreshes the union of newer batches' ranges.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

PLAIN = """
CREATE PROCEDURE refresh_daily_reading(from_ts timestamptz, to_ts timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    lo timestamptz := date_trunc('day', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('day', to_ts AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC';
BEGIN
    DELETE FROM daily_reading WHERE day >= lo AND day < hi;
    INSERT INTO daily_reading
    SELECT meter_id, channel_id,
           date_trunc('day', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day,
           count(*), sum(value), min(value), max(value),
           (array_agg(value ORDER BY ts))[1], (array_agg(value ORDER BY ts DESC))[1]
    FROM reading WHERE ts >= lo AND ts < hi
    GROUP BY 1, 2, 3;
END $$;
"""

TIMESCALE = """
CREATE PROCEDURE refresh_daily_reading(from_ts timestamptz, to_ts timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    CALL refresh_continuous_aggregate('daily_reading', from_ts, to_ts + interval '1 day');
END $$;
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Replace the refresh function with a procedure and add the refresh watermark."""
    conn.execute("DROP FUNCTION refresh_daily_reading(timestamptz, timestamptz)")
    conn.execute((TIMESCALE if ctx.timescale else PLAIN).encode())
    conn.execute(
        """CREATE TABLE daily_refresh_watermark (
               id          boolean PRIMARY KEY DEFAULT true CHECK (id),
               batch_id    bigint NOT NULL,
               refreshed_at timestamptz NOT NULL DEFAULT now())"""
    )
    writer, _, editor = (sql.Identifier(r) for r in ctx.roles)
    for role in (writer, editor):
        conn.execute(
            sql.SQL("GRANT EXECUTE ON PROCEDURE refresh_daily_reading(timestamptz, timestamptz) TO {}").format(role)
        )
        conn.execute(sql.SQL("GRANT INSERT, UPDATE ON daily_refresh_watermark TO {}").format(role))
