"""Readings kept as blocks beside rows, and the functions every reader reads both through.

Issue 18's writer route (docs/storage.md, *Sixth pass*): a row per reading costs a B-tree entry per
reading, which holds any writer into ``reading`` under 0.40 of a raw COPY; a *block* — a row per
meter, channel and run of instants within one UTC day, its instants, values and qualities as arrays —
costs one entry per run. The writer (``ingest.writer``) keeps runs of intervals as blocks and single
readings as rows; every reader reads both:

- ``reading_block``: the blocks, partitioned by their first instant like ``reading`` by its instant
  (a month in four parts, made by the same ``ensure_reading_partitions``), primary key (meter,
  channel, first instant), append-only and guarded against TRUNCATE like ``reading``. A block never
  crosses a UTC midnight, so a block holding instant *t* starts in [day(*t*), *t*]: a time window
  bounds the partitions a read opens.
- ``reading_between(lo, hi)``: every reading of the fleet with ``lo <= ts <= hi``, rows and
  blocks alike, with ``reading``'s columns. ``series_between(meter, channel, lo, hi)``: the same for
  one series; ``series_span``, ``series_first`` and ``series_before`` its first and last instants,
  its first reading and its last *n* before an instant, a probe or two per table. All are
  single-SELECT SQL functions the planner inlines into the calling query, so the window and the
  series reach the partitions and the primary keys of both tables; callers put their own exact
  bounds (``<``, ``>``) on top of the closed window.
- ``reading_all``: the same union without a window, for reads bounded by something else (a
  meter). A time bound on it does not reach the blocks' partitions: time-windowed reads use the
  functions.

Every instant is stored once, in one of the two tables. The writer's check spans both through
``reading_block_reach``, one row: the latest instant any block reaches. A batch whose instants all
come after it meets no block (live data, a head-end file newer than the last one); the rows'
primary key checks its singles, one probe of ``reading`` per run its runs. A batch reaching back
before it goes to the slow path, which reads what is stored in the batch's windows from both
tables and writes its new readings as rows. Writers take a transaction-level advisory lock:
exclusively when the batch holds blocks, shared otherwise, so no single lands inside a block being
written nor a block over a single, while batches of singles (live polling) land side by side.

On TimescaleDB ``reading_block`` is a plain table the writer leaves empty: its compressed chunks
are already blocks. ``validated_reading`` reads the union from now on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from psycopg import Connection, sql

from releve.migrate import MigrationContext

BLOCK_COLUMNS = """
    meter_id      integer NOT NULL,
    channel_id    smallint NOT NULL,
    ts_first      timestamptz NOT NULL,
    ts_last       timestamptz NOT NULL,
    ts            timestamptz[] NOT NULL,
    value         double precision[] NOT NULL,
    quality       smallint[] NOT NULL,
    unit_id       smallint NOT NULL,
    source_id     smallint NOT NULL,
    read_type_id  smallint NOT NULL,
    received_at   timestamptz NOT NULL,
    batch_id      bigint NOT NULL,
    PRIMARY KEY (meter_id, channel_id, ts_first),
    CONSTRAINT reading_block_shape CHECK (
        cardinality(ts) >= 1 AND cardinality(value) = cardinality(ts) AND cardinality(quality) = cardinality(ts)
        AND ts[1] = ts_first AND ts[cardinality(ts)] = ts_last),
    CONSTRAINT reading_block_one_utc_day CHECK (
        ts_last >= ts_first AND (ts_first AT TIME ZONE 'UTC')::date = (ts_last AT TIME ZONE 'UTC')::date)
"""

TABLE_PLAIN = "CREATE TABLE reading_block ({columns}) PARTITION BY RANGE (ts_first)"
TABLE_TIMESCALE = "CREATE TABLE reading_block ({columns})"

#: The writer's check across both tables (see ``ingest.writer``): the latest instant any block
#: reaches, and the first instant of the first block written. Blocks are only ever written after
#: ``reach`` (a batch reaching back before it is written as rows), so every block starts in
#: [``first_block``, ``reach``]: the readers bound their blocks' side by ``first_block``, which prunes
#: every part before the first block (all of them on a database that holds rows only).
REACH = """
CREATE TABLE reading_block_reach (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    reach        timestamptz NOT NULL,
    first_block  timestamptz NOT NULL
);
INSERT INTO reading_block_reach (reach, first_block) VALUES ('-infinity', 'infinity');
COMMENT ON TABLE reading_block_reach IS
    'One row: the latest instant any reading_block reaches and the first instant of the first block '
    '(the writer''s duplicate check across rows and blocks; the readers'' bound on blocks).';
"""

GUARDS = """
CREATE TRIGGER reading_append_only BEFORE UPDATE OR DELETE ON reading_block
    FOR EACH ROW EXECUTE FUNCTION reading_append_only();
CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON reading_block
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_truncate();
"""

#: ``ensure_reading_partitions`` of 0016, now making each month of ``reading_block`` beside the
#: month of ``reading`` (the same four parts), each checked on its own: months of ``reading`` made
#: before this migration get their blocks' month the first time the writer asks for them. After
#: waiting for another writer making the same month, the check reads ``pg_class`` itself: the
#: catalogue cache behind ``to_regclass`` was not refreshed by the wait, and the second writer
#: failed on "already exists".
PLAIN_PARTITIONS = """
CREATE OR REPLACE FUNCTION ensure_reading_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    month  date := date_trunc('month', from_ts AT TIME ZONE 'UTC')::date;
    last   date := date_trunc('month', to_ts AT TIME ZONE 'UTC')::date;
    parent text;
    name   text;
    part   text;
    lo     date;
    hi     date;
    made   integer := 0;
BEGIN
    WHILE month <= last LOOP
        FOREACH parent IN ARRAY ARRAY['reading', 'reading_block'] LOOP
            name := format('%s_y%sm%s', parent, to_char(month, 'YYYY'), to_char(month, 'MM'));
            IF to_regclass(name) IS NULL THEN
                PERFORM pg_advisory_xact_lock(hashtext(name));
                -- Asked of pg_class, not of to_regclass: a writer that waited here for another
                -- making the same month must see it (the cache to_regclass reads may not yet).
                IF NOT EXISTS (SELECT 1 FROM pg_class
                               WHERE relname = name AND relnamespace = 'public'::regnamespace) THEN
                    EXECUTE format(
                        'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L) PARTITION BY RANGE (%I)',
                        name, parent, (month::timestamp AT TIME ZONE 'UTC'),
                        ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'),
                        CASE parent WHEN 'reading' THEN 'ts' ELSE 'ts_first' END);
                    EXECUTE format(
                        'CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON %I '
                        'FOR EACH STATEMENT EXECUTE FUNCTION refuse_truncate()', name);
                    FOREACH lo IN ARRAY ARRAY[month, month + 7, month + 14, month + 21] LOOP
                        hi := CASE WHEN lo = month + 21 THEN (month + interval '1 month')::date ELSE lo + 7 END;
                        part := format('%sd%s', name, to_char(lo, 'DD'));
                        EXECUTE format(
                            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                            part, name, (lo::timestamp AT TIME ZONE 'UTC'), (hi::timestamp AT TIME ZONE 'UTC'));
                        EXECUTE format(
                            'CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON %I '
                            'FOR EACH STATEMENT EXECUTE FUNCTION refuse_truncate()', part);
                    END LOOP;
                    -- Counted once per month, as before: a month of reading and its blocks are one.
                    IF parent = 'reading' THEN
                        made := made + 1;
                    END IF;
                END IF;
            END IF;
        END LOOP;
        month := month + interval '1 month';
    END LOOP;
    RETURN made;
END $$;
"""

#: The readers' functions. Not STRICT, not SECURITY DEFINER and one SELECT each, so that the
#: planner inlines them (a SET clause or STRICT would make each call an opaque function scan).
READERS = """
CREATE FUNCTION reading_between(lo timestamptz, hi timestamptz)
RETURNS TABLE (meter_id integer, channel_id smallint, ts timestamptz, value double precision,
               unit_id smallint, source_id smallint, read_type_id smallint, quality smallint,
               received_at timestamptz, batch_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT r.meter_id, r.channel_id, r.ts, r.value, r.unit_id, r.source_id, r.read_type_id, r.quality,
           r.received_at, r.batch_id
    FROM public.reading r
    WHERE r.ts >= lo AND r.ts <= hi
    UNION ALL
    SELECT b.meter_id, b.channel_id, u.ts, u.value, b.unit_id, b.source_id, b.read_type_id, u.quality,
           b.received_at, b.batch_id
    FROM public.reading_block b CROSS JOIN LATERAL unnest(b.ts, b.value, b.quality) AS u (ts, value, quality)
    WHERE b.ts_first > lo - interval '1 day' AND b.ts_first <= hi AND b.ts_last >= lo
      AND b.ts_first >= (SELECT x.first_block FROM public.reading_block_reach x)
      AND u.ts >= lo AND u.ts <= hi
$$;
COMMENT ON FUNCTION reading_between(timestamptz, timestamptz) IS
    'Every reading with lo <= ts <= hi, from rows (reading) and blocks (reading_block) alike.';

CREATE FUNCTION series_between(m integer, c integer, lo timestamptz, hi timestamptz)
RETURNS TABLE (meter_id integer, channel_id smallint, ts timestamptz, value double precision,
               unit_id smallint, source_id smallint, read_type_id smallint, quality smallint,
               received_at timestamptz, batch_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT r.meter_id, r.channel_id, r.ts, r.value, r.unit_id, r.source_id, r.read_type_id, r.quality,
           r.received_at, r.batch_id
    FROM public.reading r
    WHERE r.meter_id = m AND r.channel_id = c AND r.ts >= lo AND r.ts <= hi
    UNION ALL
    SELECT b.meter_id, b.channel_id, u.ts, u.value, b.unit_id, b.source_id, b.read_type_id, u.quality,
           b.received_at, b.batch_id
    FROM public.reading_block b CROSS JOIN LATERAL unnest(b.ts, b.value, b.quality) AS u (ts, value, quality)
    WHERE b.meter_id = m AND b.channel_id = c
      AND b.ts_first > lo - interval '1 day' AND b.ts_first <= hi AND b.ts_last >= lo
      AND b.ts_first >= (SELECT x.first_block FROM public.reading_block_reach x)
      AND u.ts >= lo AND u.ts <= hi
$$;
COMMENT ON FUNCTION series_between(integer, integer, timestamptz, timestamptz) IS
    'The readings of one meter and channel with lo <= ts <= hi, from rows and blocks alike.';

-- The first and the last instant of one series within [lo, hi] (NULL when it has none there), as
-- two index probes per table like min(ts) / max(ts) over reading alone. A series' blocks never
-- overlap each other, so the first block reaching into the window holds the blocks' first instant in
-- it, and the last block starting in it their last one.
CREATE FUNCTION series_span(m integer, c integer, lo timestamptz, hi timestamptz)
RETURNS TABLE (lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT least(
               (SELECT r.ts FROM public.reading r
                WHERE r.meter_id = m AND r.channel_id = c AND r.ts >= lo AND r.ts <= hi ORDER BY r.ts LIMIT 1),
               (SELECT min(u.ts)
                FROM (SELECT b.ts FROM public.reading_block b
                      WHERE b.meter_id = m AND b.channel_id = c
                        AND b.ts_first > lo - interval '1 day' AND b.ts_first <= hi AND b.ts_last >= lo
                        AND b.ts_first >= (SELECT x.first_block FROM public.reading_block_reach x)
                      ORDER BY b.ts_first LIMIT 1) b
                CROSS JOIN LATERAL unnest(b.ts) AS u (ts) WHERE u.ts >= lo AND u.ts <= hi)),
           greatest(
               (SELECT r.ts FROM public.reading r
                WHERE r.meter_id = m AND r.channel_id = c AND r.ts >= lo AND r.ts <= hi ORDER BY r.ts DESC LIMIT 1),
               (SELECT max(u.ts)
                FROM (SELECT b.ts FROM public.reading_block b
                      WHERE b.meter_id = m AND b.channel_id = c
                        AND b.ts_first > lo - interval '1 day' AND b.ts_first <= hi AND b.ts_last >= lo
                        AND b.ts_first >= (SELECT x.first_block FROM public.reading_block_reach x)
                      ORDER BY b.ts_first DESC LIMIT 1) b
                CROSS JOIN LATERAL unnest(b.ts) AS u (ts) WHERE u.ts >= lo AND u.ts <= hi))
    OFFSET 0  -- kept a subquery of its own: a lo or hi passed on to another reader is then a column, not
              -- the sub-selects above, and that reader is inlined too (PostgreSQL inlines no function
              -- whose arguments hold a sub-select)
$$;
COMMENT ON FUNCTION series_span(integer, integer, timestamptz, timestamptz) IS
    'First and last instant of one meter and channel within [lo, hi], rows and blocks alike.';

-- The first reading of one series within [lo, hi] (no row when it has none there): one probe of
-- each table, as series_span.
CREATE FUNCTION series_first(m integer, c integer, lo timestamptz, hi timestamptz)
RETURNS TABLE (meter_id integer, channel_id smallint, ts timestamptz, value double precision,
               unit_id smallint, source_id smallint, read_type_id smallint, quality smallint,
               received_at timestamptz, batch_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT x.* FROM (
        (SELECT r.meter_id, r.channel_id, r.ts, r.value, r.unit_id, r.source_id, r.read_type_id, r.quality,
                r.received_at, r.batch_id
         FROM public.reading r
         WHERE r.meter_id = m AND r.channel_id = c AND r.ts >= lo AND r.ts <= hi ORDER BY r.ts LIMIT 1)
        UNION ALL
        (SELECT b.meter_id, b.channel_id, u.ts, u.value, b.unit_id, b.source_id, b.read_type_id, u.quality,
                b.received_at, b.batch_id
         FROM (SELECT * FROM public.reading_block b
               WHERE b.meter_id = m AND b.channel_id = c
                 AND b.ts_first > lo - interval '1 day' AND b.ts_first <= hi AND b.ts_last >= lo
                 AND b.ts_first >= (SELECT x.first_block FROM public.reading_block_reach x)
               ORDER BY b.ts_first LIMIT 1) b
         CROSS JOIN LATERAL unnest(b.ts, b.value, b.quality) AS u (ts, value, quality)
         WHERE u.ts >= lo AND u.ts <= hi ORDER BY u.ts LIMIT 1)) x
    ORDER BY x.ts LIMIT 1
$$;
COMMENT ON FUNCTION series_first(integer, integer, timestamptz, timestamptz) IS
    'The first reading of one meter and channel within [lo, hi], rows and blocks alike.';

-- The last n readings of one series strictly before t, newest first: the last n rows and the
-- readings of the last n blocks (each holds one at least) hold them.
CREATE FUNCTION series_before(m integer, c integer, t timestamptz, n bigint)
RETURNS TABLE (meter_id integer, channel_id smallint, ts timestamptz, value double precision,
               unit_id smallint, source_id smallint, read_type_id smallint, quality smallint,
               received_at timestamptz, batch_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT x.* FROM (
        (SELECT r.meter_id, r.channel_id, r.ts, r.value, r.unit_id, r.source_id, r.read_type_id, r.quality,
                r.received_at, r.batch_id
         FROM public.reading r WHERE r.meter_id = m AND r.channel_id = c AND r.ts < t ORDER BY r.ts DESC LIMIT n)
        UNION ALL
        SELECT b.meter_id, b.channel_id, u.ts, u.value, b.unit_id, b.source_id, b.read_type_id, u.quality,
               b.received_at, b.batch_id
        FROM (SELECT * FROM public.reading_block b
              WHERE b.meter_id = m AND b.channel_id = c AND b.ts_first < t
                AND b.ts_first >= (SELECT x.first_block FROM public.reading_block_reach x)
              ORDER BY b.ts_first DESC LIMIT n) b
        CROSS JOIN LATERAL unnest(b.ts, b.value, b.quality) AS u (ts, value, quality)
        WHERE u.ts < t) x
    ORDER BY x.ts DESC LIMIT n
$$;
COMMENT ON FUNCTION series_before(integer, integer, timestamptz, bigint) IS
    'The last n readings of one meter and channel before t, newest first, rows and blocks alike.';

CREATE VIEW reading_all AS
SELECT r.meter_id, r.channel_id, r.ts, r.value, r.unit_id, r.source_id, r.read_type_id, r.quality,
       r.received_at, r.batch_id
FROM reading r
UNION ALL
SELECT b.meter_id, b.channel_id, u.ts, u.value, b.unit_id, b.source_id, b.read_type_id, u.quality,
       b.received_at, b.batch_id
FROM reading_block b CROSS JOIN LATERAL unnest(b.ts, b.value, b.quality) AS u (ts, value, quality)
WHERE b.ts_first >= (SELECT x.first_block FROM public.reading_block_reach x);
COMMENT ON VIEW reading_all IS
    'Every reading, rows and blocks alike. Time-windowed reads: reading_between / series_between.';
"""


def _migration(name: str) -> ModuleType:
    """An earlier migration's module, for the SQL it defined (read, not run again)."""
    spec = importlib.util.spec_from_file_location(f"releve_migration_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replaced(text: str, *pairs: tuple[str, str]) -> str:
    """``text`` with each (old, new) replaced once; an old text not found once is a broken migration."""
    for old, new in pairs:
        if text.count(old) != 1:
            raise RuntimeError(f"0030: expected one {old!r} in an earlier migration's SQL")
        text = text.replace(old, new)
    return text


def readers_of_earlier_migrations(timescale: bool) -> list[str]:
    """The refresh functions and ``validated_reading`` as their latest migrations made them, reading the union.

    The same statements with their ``reading`` read through ``reading_between`` (or ``reading_all``),
    so that what they compute stays theirs; TimescaleDB's daily refresh is its continuous
    aggregate's, over ``reading`` alone (the writer keeps rows there).
    """
    out = []
    if not timescale:
        out.append(
            _replaced(
                _migration("0026_daily_series").PLAIN,
                ("FROM reading WHERE ts >= lo AND ts < hi", "FROM reading_between(lo, hi) WHERE ts < hi"),
            )
        )
    out.append(
        _replaced(
            _migration("0029_hourly_months").REFRESH,
            (
                "FROM reading r JOIN channel c ON c.id = r.channel_id AND c.kind = 'interval'\n"
                "                    WHERE r.ts > lo_ts AND r.ts <= hi_ts + interval '1 day'",
                "FROM reading_between(lo_ts, hi_ts + interval '1 day') r\n"
                "                    JOIN channel c ON c.id = r.channel_id AND c.kind = 'interval'\n"
                "                    WHERE r.ts > lo_ts",
            ),
        )
    )
    ddl = _migration("0014_vee_freeze").DDL
    view = ddl[ddl.index("CREATE OR REPLACE VIEW validated_reading AS") :]
    view = view[: view.index("COMMENT ON VIEW validated_reading")]
    out.append(
        _replaced(
            view,
            ("    FROM reading r\n", "    FROM reading_all r\n"),
            (
                "WHERE NOT EXISTS (SELECT 1 FROM reading r\n"
                "                      WHERE r.meter_id = v.meter_id AND r.channel_id = v.channel_id AND r.ts = v.ts)",
                "WHERE NOT EXISTS (SELECT 1 FROM series_between(v.meter_id, v.channel_id, v.ts, v.ts))",
            ),
        )
    )
    return out


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create reading_block, its partitions beside reading's, and the union readers."""
    table = TABLE_TIMESCALE if ctx.timescale else TABLE_PLAIN
    conn.execute(table.format(columns=BLOCK_COLUMNS).encode())
    conn.execute(REACH.encode())
    conn.execute(GUARDS.encode())
    if not ctx.timescale:
        conn.execute(PLAIN_PARTITIONS.encode())
        # Blocks' months for the months reading already has (the writer asks only for new ones).
        conn.execute(
            """SELECT ensure_reading_partitions(min(lower_bound), max(lower_bound))
               FROM (SELECT (regexp_match(c.relname, '^reading_y(\\d{4})m(\\d{2})$')) AS ym
                     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                     WHERE i.inhparent = 'reading'::regclass) p
               CROSS JOIN LATERAL (SELECT make_timestamptz(p.ym[1]::int, p.ym[2]::int, 1, 0, 0, 0, 'UTC')
                                   AS lower_bound) b
               WHERE p.ym IS NOT NULL"""
        )
    conn.execute(READERS.encode())
    for statement in readers_of_earlier_migrations(ctx.timescale):
        conn.execute(statement.encode())
    writer, _, _ = (sql.Identifier(r) for r in ctx.roles)
    conn.execute(sql.SQL("GRANT INSERT ON reading_block TO {}").format(writer))
    conn.execute(sql.SQL("GRANT UPDATE ON reading_block_reach TO {}").format(writer))
