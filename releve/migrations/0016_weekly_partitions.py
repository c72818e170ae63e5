"""Plain path: each new month of ``reading`` is split into four parts of 7–10 days.

The fresh write path's cost is the primary key's B-tree on (meter, channel, instant): every batch
of live data adds a few keys at the end of every meter's run in the index of the partition it
lands in. With one partition a month that index grows all month long (10,000 meters at 15
minutes: 30 M keys by the month's end), and the insert rate falls as it grows. Split a month
in four and the index that takes the writes holds a week or so (≈ 7–10 M keys for the same
fleet, whatever the table holds); TimescaleDB's chunks do the same (``database.chunk_interval``,
7 days).

How: ``ensure_reading_partitions`` now creates a month it does not find as a partitioned
partition ``reading_yYYYYmMM`` (the name, the bounds and the TRUNCATE guard as before), itself
split by range on ``ts`` into ``reading_yYYYYmMMd01``, ``…d08``, ``…d15`` and ``…d22`` (from day
1, 8, 15 and 22 of the month, the last to the month's end). Months that exist already stay one
partition: nothing is moved, and both kinds sit side by side under ``reading``. The primary key
and the BRIN index cascade to the parts; each part gets the TRUNCATE guard (statement-level
triggers are not inherited), and belongs to the owner (SECURITY DEFINER, as before).

TimescaleDB: nothing to do here (chunks), the function stays the stub of 0003.
"""

from __future__ import annotations

from psycopg import Connection

from releve.migrate import MigrationContext

PLAIN_PARTITIONS = """
CREATE OR REPLACE FUNCTION ensure_reading_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    month date := date_trunc('month', from_ts AT TIME ZONE 'UTC')::date;
    last  date := date_trunc('month', to_ts AT TIME ZONE 'UTC')::date;
    name  text;
    part  text;
    lo    date;
    hi    date;
    made  integer := 0;
BEGIN
    WHILE month <= last LOOP
        name := format('reading_y%sm%s', to_char(month, 'YYYY'), to_char(month, 'MM'));
        IF to_regclass(name) IS NULL THEN
            PERFORM pg_advisory_xact_lock(hashtext(name));
            IF to_regclass(name) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF reading FOR VALUES FROM (%L) TO (%L) PARTITION BY RANGE (ts)',
                    name, (month::timestamp AT TIME ZONE 'UTC'),
                    ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
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
                made := made + 1;
            END IF;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN made;
END $$;
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Replace the plain path's partition maker; months made from now on come in four parts."""
    if not ctx.timescale:
        conn.execute(PLAIN_PARTITIONS.encode())
