"""The schema stays Citus-ready: the distribution column (meter_id) in every key of the tables keyed by meter.

Citus refuses to distribute a table whose primary or unique key lacks the distribution column, and
the postgres_fdw shards rely on the same property (a key checked on one shard is checked for the
meter everywhere). The test reads the catalog of a migrated database, so a new table with a
``meter_id`` column must be declared in ``releve.shards`` as distributed (and then carry meter_id in
every key) or as not distributed, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from releve import shards

pytestmark = pytest.mark.db


def keys(conn: psycopg.Connection, table: str) -> list[tuple[str, list[str]]]:
    """The primary and unique keys (constraints and unique indexes) of ``table``: name and columns."""
    rows = conn.execute(
        """SELECT i.indexrelid::regclass::text, array_agg(a.attname ORDER BY a.attnum)
           FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = %s::regclass AND (i.indisunique OR i.indisprimary)
           GROUP BY 1 ORDER BY 1""",
        (table,),
    ).fetchall()
    return [(name, list(cols)) for name, cols in rows]


def test_every_unique_key_of_the_meter_keyed_tables_holds_meter_id(db):
    with psycopg.connect(db.url) as conn:
        with_meter = {
            t
            for (t,) in conn.execute(
                """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'meter_id' AND NOT a.attisdropped
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"""
            )
        }
        declared = set(shards.DISTRIBUTED) | set(shards.NOT_DISTRIBUTED)
        assert with_meter - declared == set(), "declare these tables in releve.shards (DISTRIBUTED or NOT_DISTRIBUTED)"
        assert not set(shards.DISTRIBUTED) & set(shards.NOT_DISTRIBUTED)
        lacking = {
            t: [name for name, cols in keys(conn, t) if "meter_id" not in cols]
            for t in shards.DISTRIBUTED
            if t in with_meter
        }
        assert {t: k for t, k in lacking.items() if k} == {}
        # the ones migration 0023 re-keyed: a composite primary key, and their foreign keys composite too
        for table in ("reading_conflict", "vee_exception", "reading_version", "reading_freeze", "reading_adjustment"):
            assert (f"{table}_pkey", {"meter_id", "id"}) in [(n, set(c)) for n, c in keys(conn, table)]
        fks = conn.execute(
            """SELECT conrelid::regclass::text, confrelid::regclass::text,
                      (SELECT array_agg(attname ORDER BY attname) FROM pg_attribute
                       WHERE attrelid = conrelid AND attnum = ANY(conkey))
               FROM pg_constraint WHERE contype = 'f'
                 AND confrelid = ANY(ARRAY['vee_exception', 'reading_version', 'reading_freeze']::regclass[])"""
        ).fetchall()
    assert fks and all("meter_id" in cols for _, _, cols in fks), fks


def test_the_rekeyed_tables_keep_their_conflict_targets_and_lookups_by_id(db):
    """VEE's ``ON CONFLICT (meter_id, channel_id, ts, rule)`` still has its unique key, and an exception,
    a version and a freeze are still found by id alone through an index."""
    with psycopg.connect(db.url) as conn:
        assert {"meter_id", "channel_id", "ts", "rule"} in [set(c) for _, c in keys(conn, "vee_exception")]
        for table in ("reading_conflict", "vee_exception", "reading_version", "reading_freeze", "reading_adjustment"):
            indexed = conn.execute(
                """SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
                   AND a.attnum = i.indkey[0] WHERE i.indrelid = %s::regclass AND a.attname = 'id'""",
                (table,),
            ).fetchone()
            assert indexed is not None and indexed[0] >= 1, table


def test_the_citus_foreign_keys_point_only_where_citus_allows(db):
    """A distributed table may refer to a reference table or, on meter_id, to a colocated distributed one; a
    reference table only to reference tables. So ``shards.citus_sql()`` distributes the schema as it is."""
    with psycopg.connect(db.url) as conn:
        tables = {t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        fks = conn.execute(
            """SELECT conrelid::regclass::text, confrelid::regclass::text,
                      (SELECT array_agg(attname) FROM pg_attribute WHERE attrelid = conrelid AND attnum = ANY(conkey))
               FROM pg_constraint WHERE contype = 'f'"""
        ).fetchall()
    assert set(shards.REFERENCE) <= tables and set(shards.DISTRIBUTED) <= tables
    wrong = [
        (src, dst)
        for src, dst, cols in fks
        if (
            src in shards.DISTRIBUTED
            and not (dst in shards.REFERENCE or (dst in shards.DISTRIBUTED and "meter_id" in cols))
        )
        or (src in shards.REFERENCE and dst not in shards.REFERENCE)
    ]
    assert wrong == []
    script = shards.citus_sql().splitlines()
    assert script.index("SELECT create_reference_table('meter');") < script.index(
        "SELECT create_distributed_table('reading', 'meter_id');"
    )


def test_the_scaling_page_shows_the_citus_statements_the_code_gives():
    page = (Path(__file__).parents[2] / "docs" / "scaling.md").read_text()
    assert f"```sql\n{shards.citus_sql()}\n```" in page
