"""Each validated read beside the first instant of the block that keeps it, so a shard prunes its blocks.

Migration 0031 gave the coordinator's shard schema (``releve.shards``) ``validated_between`` and
``validated_series`` over its mirror of ``validated_reading``: each shard's foreign scan is bounded
by the window, but postgres_fdw sends the shard a query on its view, not a call of its functions,
and a time bound on the view does not reach ``reading_block``'s partitions (a block's instants are
array elements): every shard unnested every block of its history for a bill run's window.

A block never crosses a UTC midnight, so a block holding an instant *t* starts in
``(t − 1 day, t]`` (migration 0030). Given the first instant of the block keeping each reading, the
window ``lo <= ts <= hi`` implies ``lo − 1 day < block_first <= hi``, a bound PostgreSQL pushes down
to ``reading_block.ts_first``, its partition key and primary key:

- ``reading_all_with_block``: ``reading_all`` and ``block_first`` (a row's own instant for a row);
- ``validated_reading_with_block``: ``validated_reading``'s columns (the view's own SQL, from
  migration 0014's text as 0030 re-pointed it) and ``block_first`` (a version without a reading:
  its own instant).

The coordinator mirrors ``validated_reading_with_block`` (``releve.shards.SHARD_RELATIONS``) and
its ``validated_between`` / ``validated_series`` (:data:`SHARD_FUNCTIONS`, which replace 0031's)
add the bound: each shard reads only the blocks of the window's days. On one server nothing
changes: the functions of 0031 read both tables through their windowed readers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from psycopg import Connection

from releve.migrate import MigrationContext


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
            raise RuntimeError(f"0032: expected one {old!r} in an earlier migration's SQL")
        text = text.replace(old, new)
    return text


READING_ALL_WITH_BLOCK = """
CREATE VIEW reading_all_with_block AS
SELECT r.meter_id, r.channel_id, r.ts, r.value, r.unit_id, r.source_id, r.read_type_id, r.quality,
       r.received_at, r.batch_id, r.ts AS block_first
FROM reading r
UNION ALL
SELECT b.meter_id, b.channel_id, u.ts, u.value, b.unit_id, b.source_id, b.read_type_id, u.quality,
       b.received_at, b.batch_id, b.ts_first
FROM reading_block b CROSS JOIN LATERAL unnest(b.ts, b.value, b.quality) AS u (ts, value, quality)
WHERE b.ts_first >= (SELECT x.first_block FROM public.reading_block_reach x);
COMMENT ON VIEW reading_all_with_block IS
    'reading_all and block_first: the first instant of the block keeping the reading (its own for a row).';
"""


def view_sql() -> str:
    """``validated_reading_with_block``'s DDL, from ``validated_reading``'s own SQL (one text of its rules)."""
    view = _migration("0031_validated_between")._view_sql()
    body = _replaced(
        view,
        ("           AS estimated_by\nFROM (", "           AS estimated_by,\n       x.block_first\nFROM ("),
        (
            "AS use_version\n    FROM reading r\n",
            "AS use_version,\n           r.block_first\n    FROM reading_all_with_block r\n",
        ),
        (
            "           true\n    FROM reading_current_version v\n",
            "           true, v.ts\n    FROM reading_current_version v\n",
        ),
        (
            "WHERE NOT EXISTS (SELECT 1 FROM reading r\n"
            "                      WHERE r.meter_id = v.meter_id AND r.channel_id = v.channel_id AND r.ts = v.ts)",
            "WHERE NOT EXISTS (SELECT 1 FROM series_between(v.meter_id, v.channel_id, v.ts, v.ts))",
        ),
    )
    return f"""
CREATE VIEW validated_reading_with_block AS
{body};
COMMENT ON VIEW validated_reading_with_block IS
    'validated_reading and block_first: the first instant of the block keeping the read (its own instant '
    'for a row or a version). lo <= ts <= hi implies lo - 1 day < block_first <= hi: a bound that reaches '
    'reading_block''s partitions (the coordinator''s shard schema adds it).';
"""


#: ``validated_between`` and ``validated_series`` in the coordinator's shard schema (``{schema}``,
#: filled in by ``releve.shards``; ``{columns}``: ``validated_reading``'s, in order), over its mirror
#: of ``validated_reading_with_block``: the window and the blocks' bound go to every shard.
#: postgres_fdw sends a shard only immutable expressions: ``lo - interval '1 day'`` on a timestamptz
#: is stable (a day in the session's zone), so lo less 24 hours is taken in UTC time, immutable.
SHARD_FUNCTIONS = """
CREATE OR REPLACE FUNCTION {schema}.validated_between(lo timestamptz, hi timestamptz)
RETURNS SETOF {schema}.validated_reading
LANGUAGE sql STABLE AS $$
    SELECT {columns} FROM {schema}.validated_reading_with_block v
    WHERE v.ts >= lo AND v.ts <= hi
      AND v.block_first > (lo AT TIME ZONE 'UTC' - interval '1 day') AT TIME ZONE 'UTC' AND v.block_first <= hi
$$;
CREATE OR REPLACE FUNCTION {schema}.validated_series(m integer, c integer, lo timestamptz, hi timestamptz)
RETURNS SETOF {schema}.validated_reading
LANGUAGE sql STABLE AS $$
    SELECT {columns} FROM {schema}.validated_reading_with_block v
    WHERE v.meter_id = m AND v.channel_id = c AND v.ts >= lo AND v.ts <= hi
      AND v.block_first > (lo AT TIME ZONE 'UTC' - interval '1 day') AT TIME ZONE 'UTC' AND v.block_first <= hi
$$;
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create reading_all_with_block and validated_reading_with_block."""
    conn.execute(READING_ALL_WITH_BLOCK.encode())
    conn.execute(view_sql().encode())
