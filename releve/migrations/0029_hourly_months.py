"""The hourly series re-laid a month a row: a meter's and channel's 31 × 24 hours in one fixed-size value.

``hourly_series`` (migration 0027) held one row per meter, interval channel and UTC day with the
day's hours in a ``float8[24]``: 365 rows a meter a year, sent by the server element by element
and grouped into one array per meter (``array_agg … GROUP BY``) at every read, once for the
loader's daily sums and once more area by area while the ranking runs. This migration lays the
same figures out as ``daily_series`` (migration 0026) lays out days: one row per meter, interval
channel and UTC month, with

- ``value``: a ``bytea`` of 31 × 24 big-endian ``float8`` (``float8send``): hour ``h`` of day
  ``d`` of the month at bytes ``8(24(d − 1) + h)`` … ``+ 7``; NaN where no interval covers the
  hour, for days without any interval and past the month's end;
- ``texture``: a ``bytea`` of 31 big-endian ``float8``, the day's half-hour texture as before
  (NaN: the day's intervals are not evenly spaced and whole, or there are none).

The figures are the ones 0027 computed (the same SQL sums each hour and the same median gives the
texture), sent as the bits the server holds: a read gives the same values to the bit. Every row
has one size, so a binary ``COPY`` of the table is a numpy record array (``analytics/theft/store.py``):
no grouping on the server, no Python step per row. Both columns are ``STORAGE PLAIN``: a row of
≈ 6.2 kB still fits a page, and is kept in it uncompressed instead of being cut into TOAST chunks
(three index probes and a reassembly per row) or compressed (float8 bits hardly compress).

``refresh_hourly_series(from, to)`` keeps its signature and its days: those that intervals
stamped in ``[from, to]`` cover (the day before ``from`` through ``to``'s), summed from
``reading``, then laid into the month rows they fall in (the rest of each row is kept, as
``refresh_daily_series`` does), so its cost follows the refreshed days, not the history.
``releve.db.refresh_hourly`` and ``releve db refresh`` call it as before. Readings are
append-only, so a refreshed day only gains intervals. The upgrade builds the month rows from the
day rows already there (no pass over ``reading``) and drops them.
"""

from __future__ import annotations

from psycopg import Connection

from releve.migrate import MigrationContext

#: kWh added to every interval before the log of the texture (as in 0027: ``analytics.theft.data.TEXTURE_FLOOR``).
TEXTURE_FLOOR = 0.01
#: Days a month row holds, and hours a day.
DAYS = 31
HOURS = 24
#: Bytes of one day's hours in ``value``.
DAY_BYTES = 8 * HOURS

#: Hour ``k``'s sum of the day's group (NaN when no interval covers it), as the bytes of a float8, all 24 in order.
_HOUR_BYTES = "\n            || ".join(
    f"float8send(coalesce(sum(i.value) FILTER (WHERE i.hour % 24 = {k}), 'NaN'))" for k in range(HOURS)
)


def lay_days(lo: str, hi: str, nan: str) -> str:
    """The statement that lays the days of ``fresh`` into month rows, after the ``WITH fresh AS (…)`` it follows.

    ``fresh`` has one row per (meter_id, channel_id, day date) with ``hours`` (the day's 24 float8,
    192 bytes) and ``texture`` (float8); its days lie in ``[lo, hi)``. Each month row's days in
    ``[lo, hi)`` are replaced (NaN for a day ``fresh`` does not have), its other days are kept.
    ``lo``, ``hi`` and ``nan`` (31 × 24 NaN float8) are SQL expressions.
    """
    first = f"greatest({lo} - s.month, 0)"  # the first day of the month row replaced (0-based)
    end = f"least({hi} - s.month, {DAYS})"  # and the day after the last

    def spliced(column: str, size: int) -> str:
        return (
            f"substring(s.{column} FROM 1 FOR {size} * {first})"
            f" || substring(EXCLUDED.{column} FROM {size} * {first} + 1 FOR {size} * ({end} - {first}))"
            f" || substring(s.{column} FROM {size} * {end} + 1)"
        )

    return f""",
    days AS (
        -- Each day after the NaNs of the days without one since the previous day of its month.
        SELECT f.meter_id, f.channel_id, f.day, f.hours, f.texture, t.month, t.dom,
               t.dom - 1 - coalesce(lag(t.dom) OVER (PARTITION BY f.meter_id, f.channel_id, t.month
                                                     ORDER BY f.day), 0) AS gap
        FROM fresh f
        CROSS JOIN LATERAL (SELECT f.day - extract(day FROM f.day)::integer + 1 AS month,
                                   extract(day FROM f.day)::integer AS dom) t)
    INSERT INTO hourly_series AS s (meter_id, channel_id, month, value, texture)
    SELECT meter_id, channel_id, month,
           string_agg(substring({nan} FROM 1 FOR {DAY_BYTES} * gap) || hours, ''::bytea ORDER BY day)
               || substring({nan} FROM 1 FOR {DAY_BYTES} * ({DAYS} - max(dom))),
           string_agg(substring({nan} FROM 1 FOR 8 * gap) || float8send(texture), ''::bytea ORDER BY day)
               || substring({nan} FROM 1 FOR 8 * ({DAYS} - max(dom)))
    FROM days
    GROUP BY meter_id, channel_id, month
    ON CONFLICT (meter_id, channel_id, month) DO UPDATE
    SET value = {spliced("value", DAY_BYTES)},
        texture = {spliced("texture", 8)}"""


TABLE = f"""
ALTER TABLE hourly_series RENAME TO hourly_series_0027;
ALTER INDEX hourly_series_pkey RENAME TO hourly_series_0027_pkey;
CREATE TABLE hourly_series (
    meter_id    integer NOT NULL,
    channel_id  smallint NOT NULL,
    month       date NOT NULL CHECK (extract(day FROM month) = 1),
    value       bytea NOT NULL CHECK (length(value) = {DAYS * DAY_BYTES}),
    texture     bytea NOT NULL CHECK (length(texture) = {DAYS} * 8),
    PRIMARY KEY (meter_id, channel_id, month)
);
ALTER TABLE hourly_series ALTER COLUMN value SET STORAGE PLAIN, ALTER COLUMN texture SET STORAGE PLAIN;
COMMENT ON TABLE hourly_series IS
    'Per meter, interval channel and UTC month: value = 31 x 24 big-endian float8, hour h of day d at '
    '8 * (24 * (d - 1) + h) (the intervals covering it summed; NaN: none); texture = 31 float8, the day''s '
    'median |ln step| between consecutive intervals (NaN: day not whole and evenly spaced). '
    'Kept by refresh_hourly_series.';
"""

#: The month rows from 0027's day rows (the same values, as their bytes).
UPGRADE = (
    "WITH fresh AS (SELECT meter_id, channel_id, day, "
    + " || ".join(f"float8send(value[{k + 1}])" for k in range(HOURS))
    + " AS hours, texture FROM hourly_series_0027)"
    + lay_days(
        "(SELECT min(day) FROM hourly_series_0027)",
        "(SELECT max(day) + 1 FROM hourly_series_0027)",
        f"decode(repeat(encode(float8send('NaN'::float8), 'hex'), {DAYS * HOURS}), 'hex')",
    )
)

REFRESH = f"""
CREATE OR REPLACE FUNCTION refresh_hourly_series(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    -- The days covered by intervals stamped in [from_ts, to_ts]: [lo, hi).
    lo date := (from_ts AT TIME ZONE 'UTC')::date - 1;
    hi date := (to_ts AT TIME ZONE 'UTC')::date + 1;
    lo_ts timestamptz := lo::timestamp AT TIME ZONE 'UTC';
    hi_ts timestamptz := hi::timestamp AT TIME ZONE 'UTC';
    nan bytea := decode(repeat(encode(float8send('NaN'::float8), 'hex'), {DAYS * HOURS}), 'hex');
    rows integer;
BEGIN
    -- The days' hours and texture as 0027 made them (each interval in the hour it covers: its end
    -- stamp less the channel's interval_s, 900 s when unset), then laid into their month rows.
    WITH fresh AS (
        SELECT i.meter_id, i.channel_id, lo + i.hour / 24 AS day,
               {_HOUR_BYTES} AS hours,
               CASE WHEN min(i.gap) = max(i.gap) AND count(*) * min(i.gap) = 86400
                    THEN percentile_cont(0.5) WITHIN GROUP (ORDER BY i.step) ELSE 'NaN' END AS texture
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
        GROUP BY i.meter_id, i.channel_id, i.hour / 24){lay_days("lo", "hi", "nan")};
    GET DIAGNOSTICS rows = ROW_COUNT;
    RETURN rows;
END $$;
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Lay the day rows into month rows, drop the day rows, and have the refresh keep the month rows."""
    del ctx  # the same on the TimescaleDB path (0027: a table and a function, no continuous aggregate)
    conn.execute(TABLE.encode())
    conn.execute(UPGRADE.encode())
    conn.execute("DROP TABLE hourly_series_0027")
    conn.execute(REFRESH.encode())  # (CREATE OR REPLACE: the roles keep their EXECUTE grant from 0027)
