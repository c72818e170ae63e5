"""The daily series: each meter's and channel's days of a month in one value, kept by the daily refresh.

Theft ranking reads a year of every meter's days. From the daily aggregate that is one row per
meter, channel and day (36.5 M rows, ≈ 4.5 GB with its index at 100,000 meters × 365 days), and a
server scan of it took longer than the ranking's whole time budget. ``daily_series`` holds the same
figures, one row per meter, channel and UTC month with the month's 31 days in a ``bytea`` of 31
big-endian ``float8`` (``float8send``): day ``d`` of the month at bytes ``8(d − 1)`` … ``8d − 1``,
NaN where the day has no reading (and past the month's end). The figure is the one the analytics
read: a register's last value of the day, an interval channel's sum over the day (``instant``
channels are left out). Every row has one size, so a binary ``COPY`` of the table is one numpy
record array (``analytics/theft/store.py``); and ``bytea`` is sent as it is stored, where a
``float8[]`` is sent element by element (at 100,000 meters that made the server's side of the
COPY 2.7 × slower). It is a cache for bulk reads: ``daily_reading`` stays the table to query.

``daily_read_count`` holds the readings per UTC day over the whole fleet (the span of the data and
whether its last day is partial, without a scan of the aggregate).

Both are kept by ``refresh_daily_series(from, to)``, over the same days as
``refresh_daily_reading(from, to)`` (which now calls it on both paths, so ``releve db refresh``
and the loader keep them in step): the days refreshed are rebuilt from the daily aggregate and
laid into the month rows they fall in (the rest of each row is kept), so its cost follows the
refreshed days, not the history. Readings are append-only, so a refreshed day only gains rows.
The upgrade builds both from the aggregate already there.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE daily_series (
    meter_id    integer NOT NULL,
    channel_id  smallint NOT NULL,
    month       date NOT NULL CHECK (extract(day FROM month) = 1),
    value       bytea NOT NULL CHECK (length(value) = 31 * 8),
    PRIMARY KEY (meter_id, channel_id, month)
);
COMMENT ON TABLE daily_series IS
    'Per meter, channel and UTC month: 31 big-endian float8, day d''s last register value or interval sum '
    '(NaN: no reading). A cache of daily_reading for bulk reads, kept by refresh_daily_series.';

CREATE TABLE daily_read_count (
    day  timestamptz PRIMARY KEY,
    n    bigint NOT NULL
);
COMMENT ON TABLE daily_read_count IS 'Readings per UTC day over all meters and channels (kept with daily_series).';

-- source: the daily aggregate, or rows of its shape holding (at least) the days [lo, hi) just
-- aggregated, so that a refresh that has them at hand does not read the aggregate again.
CREATE FUNCTION refresh_daily_series(from_ts timestamptz, to_ts timestamptz, source regclass DEFAULT 'daily_reading')
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    -- The days refresh_daily_reading(from_ts, to_ts) refreshes: [lo, hi).
    lo date := (from_ts AT TIME ZONE 'UTC')::date;
    hi date := (to_ts AT TIME ZONE 'UTC')::date + 1;
    lo_ts timestamptz := lo::timestamp AT TIME ZONE 'UTC';
    hi_ts timestamptz := hi::timestamp AT TIME ZONE 'UTC';
    nan bytea := decode(repeat(encode(float8send('NaN'::float8), 'hex'), 31), 'hex');  -- 31 NaNs
    rows integer;
BEGIN
    DELETE FROM daily_read_count c WHERE c.day >= lo_ts AND c.day < hi_ts;
    -- One pass over the refreshed days of the aggregate for both: the readings per day, and the
    -- days of each month row, which replace its slice [lo, hi) (the row's other days stay).
    EXECUTE format($sql$
    WITH fresh AS MATERIALIZED (
        SELECT d.meter_id, d.channel_id, d.day, d.n, c.kind,
               CASE c.kind WHEN 'interval' THEN d.total ELSE d.last_value END AS value
        FROM %s d JOIN channel c ON c.id = d.channel_id
        WHERE d.day >= $1 AND d.day < $2),
    counted AS (INSERT INTO daily_read_count SELECT f.day, sum(f.n) FROM fresh f GROUP BY f.day),
    -- Each day's value after the NaNs of the days without one since the previous day of its month.
    days AS (
        SELECT f.meter_id, f.channel_id, f.day, t.month, t.dom,
               substring($5 FROM 1 FOR 8 * (t.dom - 1 - coalesce(
                   lag(t.dom) OVER (PARTITION BY f.meter_id, f.channel_id, t.month ORDER BY f.day), 0)))
               || float8send(f.value) AS bytes
        FROM fresh f
        CROSS JOIN LATERAL (SELECT date_trunc('month', f.day AT TIME ZONE 'UTC')::date AS month,
                                   extract(day FROM f.day AT TIME ZONE 'UTC')::integer AS dom) t
        WHERE f.kind IN ('register', 'interval'))
    INSERT INTO daily_series AS s (meter_id, channel_id, month, value)
    SELECT meter_id, channel_id, month,
           string_agg(bytes, ''::bytea ORDER BY day) || substring($5 FROM 1 FOR 8 * (31 - max(dom)))
    FROM days
    GROUP BY meter_id, channel_id, month
    ON CONFLICT (meter_id, channel_id, month) DO UPDATE
    SET value = substring(s.value FROM 1 FOR 8 * greatest($3 - s.month, 0))
                || substring(EXCLUDED.value FROM 8 * greatest($3 - s.month, 0) + 1
                             FOR 8 * (least($4 - s.month, 31) - greatest($3 - s.month, 0)))
                || substring(s.value FROM 8 * least($4 - s.month, 31) + 1)
    $sql$, source) USING lo_ts, hi_ts, lo, hi, nan;
    GET DIAGNOSTICS rows = ROW_COUNT;
    RETURN rows;
END $$;
"""

#: ``refresh_daily_reading`` as in 0011 (the days aggregated into a temporary table first), then the
#: series over the same days from that table.
PLAIN = """
CREATE OR REPLACE PROCEDURE refresh_daily_reading(from_ts timestamptz, to_ts timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    lo timestamptz := date_trunc('day', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('day', to_ts AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC';
BEGIN
    -- The days aggregated once, into the aggregate and from there into the series (no second pass
    -- over the aggregate, which has no index on the day).
    CREATE TEMP TABLE daily_fresh ON COMMIT DROP AS
    SELECT meter_id, channel_id,
           date_trunc('day', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day,
           count(*)::integer AS n, sum(value) AS total, min(value) AS min_value, max(value) AS max_value,
           (array_agg(value ORDER BY ts))[1] AS first_value, (array_agg(value ORDER BY ts DESC))[1] AS last_value
    FROM reading WHERE ts >= lo AND ts < hi
    GROUP BY 1, 2, 3;
    DELETE FROM daily_reading WHERE day >= lo AND day < hi;
    INSERT INTO daily_reading SELECT * FROM daily_fresh;
    PERFORM refresh_daily_series(from_ts, to_ts, 'pg_temp.daily_fresh');
    DROP TABLE daily_fresh;  -- (a second call in the same transaction makes it again)
END $$;
"""

TIMESCALE = """
CREATE OR REPLACE PROCEDURE refresh_daily_reading(from_ts timestamptz, to_ts timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    CALL refresh_continuous_aggregate('daily_reading', from_ts, to_ts + interval '1 day');
    PERFORM refresh_daily_series(from_ts, to_ts);
END $$;
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the series and the per-day counts, have the refresh keep them, build them from the aggregate."""
    conn.execute(DDL.encode())
    conn.execute((TIMESCALE if ctx.timescale else PLAIN).encode())
    writer, _, editor = (sql.Identifier(r) for r in ctx.roles)
    for role in (writer, editor):
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION refresh_daily_series(timestamptz, timestamptz, regclass) TO {}").format(
                role
            )
        )
    conn.execute("SELECT refresh_daily_series(min(day), max(day)) FROM daily_reading HAVING count(*) > 0")
