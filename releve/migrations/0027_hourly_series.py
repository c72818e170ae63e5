"""The hourly series: each meter's interval channels summed per UTC hour, a day a row, kept by a refresh.

Theft ranking reads a year of every interval meter's hours (the profile signals, the interval
balance). Summing the raw intervals into hours at ranking time was a server-side ``GROUP BY`` over
every reading of the year, done again for each pass over the fleet (the loader's daily sums of
meters without a register, the ranking area by area, the candidates' explanations): 71 s of
2,000 meters' 18 M hourly readings on the quiet machine. ``hourly_series`` holds those sums once:
one row per meter, interval channel and UTC day with the day's hours in a ``float8[24]``
(``value[h + 1]`` for hour ``h``, NaN where no interval covers it). Each interval counts in the
hour it covers (its end stamp less the channel's ``interval_s``, 900 s when unset), as the
loader counted it (intervals up to a day long). Beside them, the day's half-hour ``texture``
(theft signal 19, ``analytics.theft.data.interval_texture``): the median ``|ln|`` step between
consecutive intervals of the day (each ``+ TEXTURE_FLOOR``), NaN unless the day's intervals are
evenly spaced and fill it — a window over the raw intervals that the ranking used to run too.

``refresh_hourly_series(from, to)`` rebuilds the days that readings stamped in ``[from, to]``
cover (the day before ``from`` through ``to``'s), from ``reading``: its cost follows the days
refreshed, not the history. ``releve.db.refresh_hourly`` calls it over the batches landed since its
own watermark (``hourly_refresh_watermark``), as ``refresh_daily`` does for the daily aggregate;
``releve theft rank`` and ``releve db refresh`` run it. The same table and function on the
TimescaleDB path: a continuous aggregate cannot lay a day's hours into an array, and the refresh
reads the hypertable like a table. The upgrade builds the series from the readings already there.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

#: kWh added to every interval before the log of the texture (``analytics.theft.data.TEXTURE_FLOOR``; a
#: test keeps the two equal: the database layer does not import the analytics).
TEXTURE_FLOOR = 0.01

#: Hour ``k``'s sum of the day's group, NaN when no interval covers it.
_HOURS = ",\n           ".join(f"coalesce(sum(i.value) FILTER (WHERE i.hour % 24 = {k}), 'NaN')" for k in range(24))

DDL = f"""
CREATE TABLE hourly_series (
    meter_id    integer NOT NULL,
    channel_id  smallint NOT NULL,
    day         date NOT NULL,
    value       double precision[] NOT NULL CHECK (cardinality(value) = 24),
    texture     double precision NOT NULL,
    PRIMARY KEY (meter_id, channel_id, day)
);
COMMENT ON TABLE hourly_series IS
    'Per meter, interval channel and UTC day: value[h + 1] = the intervals covering hour h summed (NaN: none); '
    'texture = median |ln step| between consecutive intervals (NaN: day not whole and evenly spaced).';

CREATE TABLE hourly_refresh_watermark (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    batch_id      bigint NOT NULL,
    refreshed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION refresh_hourly_series(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    -- The days covered by intervals stamped in [from_ts, to_ts]: [lo, hi).
    lo date := (from_ts AT TIME ZONE 'UTC')::date - 1;
    hi date := (to_ts AT TIME ZONE 'UTC')::date + 1;
    lo_ts timestamptz := lo::timestamp AT TIME ZONE 'UTC';
    hi_ts timestamptz := hi::timestamp AT TIME ZONE 'UTC';
    rows integer;
BEGIN
    DELETE FROM hourly_series WHERE day >= lo AND day < hi;
    INSERT INTO hourly_series (meter_id, channel_id, day, value, texture)
    SELECT i.meter_id, i.channel_id, lo + i.hour / 24,
           ARRAY[{_HOURS}],
           CASE WHEN min(i.gap) = max(i.gap) AND count(*) * min(i.gap) = 86400
                THEN percentile_cont(0.5) WITHIN GROUP (ORDER BY i.step) ELSE 'NaN' END
    FROM (SELECT h.meter_id, h.channel_id, h.value, h.hour,
                 abs(ln((greatest(h.value, 0) + {TEXTURE_FLOOR})
                        / (lag(greatest(h.value, 0)) OVER w + {TEXTURE_FLOOR}))) AS step,
                 date_part('epoch', h.ts - lag(h.ts) OVER w) AS gap
          FROM (SELECT r.meter_id, r.channel_id, r.ts, r.value,
                       floor((date_part('epoch', r.ts) - date_part('epoch', lo_ts) - coalesce(c.interval_s, 900))
                             / 3600.0)::integer AS hour
                FROM reading r JOIN channel c ON c.id = r.channel_id AND c.kind = 'interval'
                WHERE r.ts > lo_ts AND r.ts <= hi_ts + interval '1 day') h
          WINDOW w AS (PARTITION BY h.meter_id, h.channel_id, h.hour / 24 ORDER BY h.ts)) i
    WHERE i.hour >= 0 AND i.hour < (hi - lo) * 24
    GROUP BY i.meter_id, i.channel_id, i.hour / 24;
    GET DIAGNOSTICS rows = ROW_COUNT;
    RETURN rows;
END $$;
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the series and its watermark; the roles that refresh may run it; build it from the readings."""
    conn.execute(DDL.encode())
    writer, _, editor = (sql.Identifier(r) for r in ctx.roles)
    for role in (writer, editor):
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION refresh_hourly_series(timestamptz, timestamptz) TO {}").format(role)
        )
        conn.execute(sql.SQL("GRANT INSERT, UPDATE ON hourly_refresh_watermark TO {}").format(role))
    conn.execute(
        """SELECT refresh_hourly_series(min(r.ts), max(r.ts))
           FROM reading r JOIN channel c ON c.id = r.channel_id AND c.kind = 'interval' HAVING count(*) > 0"""
    )
