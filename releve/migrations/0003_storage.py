"""The reading table and the daily aggregate: TimescaleDB when the extension exists, else partitions.

Both paths give the same columns, the same primary key (meter, channel, instant) and the same
``daily_reading`` relation, so nothing above the database knows which one runs.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

READING_COLUMNS = """
    meter_id      integer NOT NULL,
    channel_id    smallint NOT NULL,
    ts            timestamptz NOT NULL,
    value         double precision NOT NULL,
    unit_id       smallint NOT NULL,
    source_id     smallint NOT NULL,
    read_type_id  smallint NOT NULL,
    quality       smallint NOT NULL DEFAULT 0,
    received_at   timestamptz NOT NULL,
    batch_id      bigint NOT NULL,
    PRIMARY KEY (meter_id, channel_id, ts)
"""

APPEND_ONLY = """
CREATE FUNCTION reading_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'reading is append-only: % refused (corrections are new versions, see VEE)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER reading_append_only BEFORE UPDATE OR DELETE ON reading
    FOR EACH ROW EXECUTE FUNCTION reading_append_only();
"""

PLAIN_PARTITIONS = """
CREATE TABLE reading ({columns}) PARTITION BY RANGE (ts);
CREATE INDEX reading_ts_brin ON reading USING brin (ts) WITH (pages_per_range = 32);

-- Monthly partitions named reading_yYYYYmMM, created ahead of the data. SECURITY DEFINER so the
-- ingest role, which may only INSERT, can still make room for late or future data.
CREATE FUNCTION ensure_reading_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    month date := date_trunc('month', from_ts AT TIME ZONE 'UTC')::date;
    last  date := date_trunc('month', to_ts AT TIME ZONE 'UTC')::date;
    name  text;
    made  integer := 0;
BEGIN
    WHILE month <= last LOOP
        name := format('reading_y%sm%s', to_char(month, 'YYYY'), to_char(month, 'MM'));
        IF to_regclass(name) IS NULL THEN
            PERFORM pg_advisory_xact_lock(hashtext(name));
            IF to_regclass(name) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF reading FOR VALUES FROM (%L) TO (%L)',
                    name, (month::timestamp AT TIME ZONE 'UTC'),
                    ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
                made := made + 1;
            END IF;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN made;
END $$;

-- The daily aggregate, kept by refresh_daily_reading(from, to) over the days a batch touched.
CREATE TABLE daily_reading (
    meter_id     integer NOT NULL,
    channel_id   smallint NOT NULL,
    day          timestamptz NOT NULL,
    n            integer NOT NULL,
    total        double precision NOT NULL,
    min_value    double precision NOT NULL,
    max_value    double precision NOT NULL,
    first_value  double precision NOT NULL,
    last_value   double precision NOT NULL,
    PRIMARY KEY (meter_id, channel_id, day)
);

CREATE FUNCTION refresh_daily_reading(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    lo timestamptz := date_trunc('day', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('day', to_ts AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC';
    n  integer;
BEGIN
    DELETE FROM daily_reading WHERE day >= lo AND day < hi;
    INSERT INTO daily_reading
    SELECT meter_id, channel_id,
           date_trunc('day', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day,
           count(*), sum(value), min(value), max(value),
           (array_agg(value ORDER BY ts))[1], (array_agg(value ORDER BY ts DESC))[1]
    FROM reading WHERE ts >= lo AND ts < hi
    GROUP BY 1, 2, 3;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
"""

TIMESCALE = """
CREATE TABLE reading ({columns});
SELECT create_hypertable('reading', by_range('ts', {chunk}::interval));
ALTER TABLE reading SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'meter_id, channel_id',
    timescaledb.compress_orderby = 'ts'
);
SELECT add_compression_policy('reading', {compress_after}::interval);

-- Kept for symmetry with the plain path: hypertables create chunks on demand.
CREATE FUNCTION ensure_reading_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;

CREATE MATERIALIZED VIEW daily_reading WITH (timescaledb.continuous) AS
SELECT meter_id, channel_id, time_bucket('1 day', ts) AS day,
       count(*)::integer AS n, sum(value) AS total, min(value) AS min_value, max(value) AS max_value,
       first(value, ts) AS first_value, last(value, ts) AS last_value
FROM reading GROUP BY meter_id, channel_id, time_bucket('1 day', ts)
WITH NO DATA;
SELECT add_continuous_aggregate_policy('daily_reading',
    start_offset => INTERVAL '90 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes');

CREATE FUNCTION refresh_daily_reading(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    CALL refresh_continuous_aggregate('daily_reading', from_ts, to_ts + interval '1 day');
    RETURN 0;
END $$;
"""

DAILY_CONSUMPTION = """
-- Consumption per meter, channel and day: the sum of intervals, or the register's advance since
-- the previous day's last read (rollovers and exchanges are VEE's job, not this view's).
CREATE VIEW daily_consumption AS
SELECT d.meter_id, d.channel_id, c.code AS channel, d.day,
       CASE c.kind
           WHEN 'interval' THEN d.total
           WHEN 'register' THEN d.last_value - coalesce(
               lag(d.last_value) OVER (PARTITION BY d.meter_id, d.channel_id ORDER BY d.day),
               d.first_value)
       END AS consumption,
       d.n
FROM daily_reading d JOIN channel c ON c.id = d.channel_id
WHERE c.kind IN ('interval', 'register');
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the reading table on the storage this server offers."""
    if ctx.timescale:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        ddl = TIMESCALE.format(
            columns=READING_COLUMNS,
            chunk=sql.Literal(ctx.settings.database.chunk_interval).as_string(conn),
            compress_after=sql.Literal(ctx.settings.database.compress_after).as_string(conn),
        )
        conn.execute(ddl.encode())
        if ctx.settings.database.retention:
            conn.execute("SELECT add_retention_policy('reading', %s::interval)", (ctx.settings.database.retention,))
    else:
        conn.execute(PLAIN_PARTITIONS.format(columns=READING_COLUMNS).encode())
    conn.execute(APPEND_ONLY.encode())
    conn.execute(DAILY_CONSUMPTION.encode())
