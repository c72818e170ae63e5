"""The validated series over a time window, reaching the blocks' partitions: ``validated_between``.

``validated_reading`` (migrations 0005, 0014; the union since 0030) is a view: a time bound on it
reaches ``reading``'s partitions but not ``reading_block``'s, whose instants are array elements (a
``ts`` filter is applied after every block of the fleet has been unnested). Billing reads the
validated series a period at a time — the bill run's series, the time-of-use intervals — so once
interval data is kept as blocks, a monthly bill run read every block of all history.

- ``validated_between(lo, hi)``: the rows of ``validated_reading`` with ``lo <= ts <= hi``, the
  view's own SQL with its reading side read through ``reading_between(lo, hi)`` and its versions
  bounded by the same window: the planner inlines it, so the window reaches both tables'
  partitions. Callers put their exact bounds (``<``, ``>``) on top of the closed window.
- ``validated_series(meter, channel, lo, hi)``: the same for one series, through
  ``series_between`` (the bill run's time-of-use intervals, a call per determinant; the meter
  page's chart).

Both return ``SETOF validated_reading``: the view's own row type, so they stay its columns.

Coordinator and shards (``releve.shards``): the coordinator's ``releve_shards`` schema mirrors the
view (a foreign table per shard) and gets both functions over that mirror, so a bill run through
the shards (``through_shards``) calls the same names and reads each meter's rows on its shard
(there the window bounds the foreign scan; the shard's own view does not prune its blocks).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from psycopg import Connection

from releve.migrate import MigrationContext


def _view_sql() -> str:
    """``validated_reading``'s SELECT as migration 0014 wrote it (0030 re-pointed the same text)."""
    spec = importlib.util.spec_from_file_location("m0014", Path(__file__).with_name("0014_vee_freeze.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ddl: str = module.DDL
    head = "CREATE OR REPLACE VIEW validated_reading AS\n"
    body = ddl[ddl.index(head) + len(head) :]
    return body[: body.index(";\nCOMMENT ON VIEW validated_reading")]


def _replaced(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        if text.count(old) != 1:
            raise RuntimeError(f"0031: expected one {old!r} in validated_reading's SQL")
        text = text.replace(old, new)
    return text


_VERSIONS_WITHOUT_ROW = (
    "    FROM reading_current_version v\n"
    "    WHERE NOT EXISTS (SELECT 1 FROM reading r\n"
    "                      WHERE r.meter_id = v.meter_id AND r.channel_id = v.channel_id AND r.ts = v.ts)"
)


def functions_sql() -> str:
    """The two functions' DDL, from the view's own SQL (one text of the validated series' rules)."""
    view = _view_sql()
    between = _replaced(
        view,
        ("    FROM reading r\n", "    FROM reading_between(lo, hi) r\n"),
        (
            _VERSIONS_WITHOUT_ROW,
            "    FROM reading_current_version v\n"
            "    WHERE v.ts >= lo AND v.ts <= hi\n"
            "      AND NOT EXISTS (SELECT 1 FROM series_between(v.meter_id, v.channel_id, v.ts, v.ts))",
        ),
    )
    series = _replaced(
        view,
        ("    FROM reading r\n", "    FROM series_between(m, c, lo, hi) r\n"),
        (
            _VERSIONS_WITHOUT_ROW,
            "    FROM reading_current_version v\n"
            "    WHERE v.meter_id = m AND v.channel_id = c AND v.ts >= lo AND v.ts <= hi\n"
            "      AND NOT EXISTS (SELECT 1 FROM series_between(v.meter_id, v.channel_id, v.ts, v.ts))",
        ),
    )
    return f"""
CREATE FUNCTION validated_between(lo timestamptz, hi timestamptz) RETURNS SETOF validated_reading
LANGUAGE sql STABLE PARALLEL SAFE AS $$
{between}
$$;
COMMENT ON FUNCTION validated_between(timestamptz, timestamptz) IS
    'validated_reading''s rows with lo <= ts <= hi; the window reaches the partitions of rows and blocks alike.';

CREATE FUNCTION validated_series(m integer, c integer, lo timestamptz, hi timestamptz)
RETURNS SETOF validated_reading
LANGUAGE sql STABLE PARALLEL SAFE AS $$
{series}
$$;
COMMENT ON FUNCTION validated_series(integer, integer, timestamptz, timestamptz) IS
    'validated_reading''s rows of one meter and channel with lo <= ts <= hi, from rows and blocks alike.';
"""


#: The same two names in the coordinator's shard schema (``releve.shards.SHARD_SCHEMA``), over its
#: mirror of the view: ``{schema}`` is filled in by ``releve.shards``.
SHARD_FUNCTIONS = """
CREATE OR REPLACE FUNCTION {schema}.validated_between(lo timestamptz, hi timestamptz)
RETURNS SETOF {schema}.validated_reading
LANGUAGE sql STABLE AS $$
    SELECT * FROM {schema}.validated_reading v WHERE v.ts >= lo AND v.ts <= hi
$$;
CREATE OR REPLACE FUNCTION {schema}.validated_series(m integer, c integer, lo timestamptz, hi timestamptz)
RETURNS SETOF {schema}.validated_reading
LANGUAGE sql STABLE AS $$
    SELECT * FROM {schema}.validated_reading v
    WHERE v.meter_id = m AND v.channel_id = c AND v.ts >= lo AND v.ts <= hi
$$;
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create validated_between and validated_series."""
    conn.execute(functions_sql().encode())
