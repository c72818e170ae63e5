"""Sharding by meter over several PostgreSQL servers: postgres_fdw hash partitions, routed writes.

Each shard is a whole Relevé database (same migrations) holding the readings of the meters that hash
to it, and a copy of the registry (meters, service points, installations, accounts: in production a
logical-replication subscription to the coordinator's registry, docs/scaling.md). The coordinator
holds the registry and ``reading_sharded``: a table partitioned by ``HASH (meter_id)`` whose
partitions are ``postgres_fdw`` foreign tables on each shard's readings (its view ``reading_all``:
rows and blocks, migration 0030; a coordinator attached before it reads the shards' rows only
until its ``reading_sharded`` is dropped and attached again). PostgreSQL's own
partition hash is therefore the one place that says where a meter lives: the write path asks the
coordinator (``satisfies_hash_partition``) and sends each meter's readings straight to its shard,
and a read through ``reading_sharded`` with a meter in its WHERE clause is pruned to that shard.

Why postgres_fdw rather than PL/Proxy: the data stays in ordinary tables with the ordinary schema, so
everything that runs on one server (VEE, theft ranking, billing) runs unchanged on each shard, and
the coordinator answers ad-hoc SQL over all shards; PL/Proxy would route only through functions
written for it. The distribution column (``meter_id``) is in the reading's primary key, so the same
schema moves to Citus (``create_distributed_table('reading', 'meter_id')``) for those who have it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from releve import db, migrate
from releve.settings import Settings

SHARDED_TABLE = "reading_sharded"
#: Schema on the coordinator whose tables are the shards' meter-keyed tables, hash-partitioned like
#: ``reading_sharded``. A session with this schema first in its ``search_path`` (:func:`through_shards`)
#: runs unchanged SQL written for one server against the shards: the bill run does (billing/sharded.py).
SHARD_SCHEMA = "releve_shards"
#: The meter-keyed relations mirrored in :data:`SHARD_SCHEMA`, and whether the coordinator writes them.
SHARD_RELATIONS: dict[str, bool] = {
    "validated_reading": False,
    "validated_reading_with_block": False,  # the bill run's windowed reads (migration 0032)
    "reading_version": False,
    "vee_exception": False,
    "reading_freeze": True,
}

#: Tables keyed by meter: each row lives on its meter's shard, and Citus distributes them by ``meter_id``
#: (colocated with ``reading``). Every primary and unique key of these holds ``meter_id`` (migration 0023;
#: tests/releve/test_citus_keys.py keeps new tables to it).
DISTRIBUTED = (
    "reading",
    "reading_block",
    "reading_conflict",
    "meter_event",
    "daily_reading",
    "daily_series",
    "vee_exception",
    "reading_version",
    "reading_freeze",
    "reading_adjustment",
    "alarm_state",
    "meter_last_read",
    "hourly_series",
    "interval_day_series",
)
#: The registry and lookups a distributed table refers to: Citus reference tables (a copy on every worker).
REFERENCE = (
    "unit",
    "reading_source",
    "read_type",
    "channel",
    "meter",
    "area",
    "service_point",
    "installation",
    "meter_topology",
    "meter_timezone",
    "ingest_batch",
    "vee_run",
)
#: Tables with a ``meter_id`` column that are not distributed, and why: the registry (a reference
#: table in Citus, a replicated copy on each postgres_fdw shard) and what the coordinator alone keeps.
NOT_DISTRIBUTED: dict[str, str] = {
    "installation": "registry: which meter is at which service point (billing and theft read it everywhere)",
    "meter_timezone": "registry: VEE on every shard reads it",
    "meter_topology": "derived from the registry by triggers on it (migration 0017): it lives where the registry does",
    "meter_command": "the command queue: collectors take commands from the coordinator",
    "bill_determinant": "billing: bills and the ledger live on the coordinator (billing/sharded.py)",
    "prepaid_check": "billing: on the coordinator with the account",
    "vending": "billing: on the coordinator with the account",
    "theft_candidate": "theft runs: scored and stored on the coordinator (analytics/theft/sharded.py)",
    "work_order": "field work: on the coordinator",
}


def _password(info: dict[str, str]) -> str | None:
    """The password a URL gives, directly or through its libpq password file."""
    if info.get("password"):
        return info["password"]
    passfile = info.get("passfile") or os.environ.get("PGPASSFILE")
    if not passfile or not Path(passfile).is_file():
        return None
    want = [info.get("host", "localhost"), info.get("port", "5432"), info.get("dbname", ""), info.get("user", "")]
    for line in Path(passfile).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":", 4)
        if len(fields) == 5 and all(f in ("*", w) for f, w in zip(fields[:4], want, strict=True)):
            return fields[4]
    return None


def attach_shards(coordinator_url: str, shard_urls: Sequence[str], settings: Settings | None = None) -> None:
    """On the coordinator: one postgres_fdw server per shard, ``reading_sharded`` and :data:`SHARD_SCHEMA`.

    Idempotent for the same list; a different number of shards needs the tables dropped first (the
    modulus is fixed: moving to more shards means moving data, see docs/scaling.md). With ``settings``
    (roles in use), the reader and editor roles get the same user mapping and may read (the editor
    also write) the shard tables, so that the bill run can work through them as the editor role.
    """
    if not shard_urls:
        raise ValueError("attach_shards needs at least one shard URL")
    n = len(shard_urls)
    roles = [r for r in (db.reader_role(settings), db.editor_role(settings)) if r] if settings else []
    with psycopg.connect(coordinator_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
        exists = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass(%s)", (SHARDED_TABLE,)
        ).fetchone()
        if exists and exists[0] not in (0, n):
            raise ValueError(f"{SHARDED_TABLE} has {exists[0]} shards, not {n}: drop it to reshard")
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE reading) PARTITION BY HASH (meter_id)").format(
                sql.Identifier(SHARDED_TABLE)
            )
        )
        for k, url in enumerate(shard_urls):
            info = psycopg.conninfo.conninfo_to_dict(url)
            server = sql.Identifier(f"releve_shard_{k}")
            options = {key: str(info[key]) for key in ("host", "port", "dbname") if info.get(key)}
            options["async_capable"] = "true"  # an Append over the shards scans them at the same time
            options["fetch_size"] = "10000"  # rows per round trip (default 100): a bill run streams its series
            conn.execute(
                sql.SQL("CREATE SERVER IF NOT EXISTS {} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({})").format(
                    server,
                    sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.SQL(key), sql.Literal(v)) for key, v in options.items()
                    ),
                )
            )
            mapping = {"user": str(info.get("user") or "postgres")}
            password = _password({key: str(v) for key, v in info.items() if v is not None})
            if password:
                mapping["password"] = password
            for who in [sql.SQL("CURRENT_USER"), *(sql.Identifier(r) for r in roles)]:
                conn.execute(
                    sql.SQL("CREATE USER MAPPING IF NOT EXISTS FOR {} SERVER {} OPTIONS ({})").format(
                        who,
                        server,
                        sql.SQL(", ").join(
                            sql.SQL("{} {}").format(sql.SQL(key), sql.Literal(v)) for key, v in mapping.items()
                        ),
                    )
                )
            conn.execute(
                sql.SQL(
                    "CREATE FOREIGN TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES WITH (MODULUS {}, REMAINDER {}) "
                    "SERVER {} OPTIONS (table_name 'reading_all')"  # rows and blocks (migration 0030)
                ).format(
                    sql.Identifier(f"{SHARDED_TABLE}_{k}"),
                    sql.Identifier(SHARDED_TABLE),
                    sql.Literal(n),
                    sql.Literal(k),
                    server,
                )
            )
        _shard_schema(conn, n, settings)


def _shard_schema(conn: psycopg.Connection, n: int, settings: Settings | None) -> None:
    """:data:`SHARD_SCHEMA`: each of :data:`SHARD_RELATIONS` hash-partitioned over the shards' own.

    A written table leaves out its serial columns, so that each shard draws them from its own sequence.
    """
    schema = sql.Identifier(SHARD_SCHEMA)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
    for name, written in SHARD_RELATIONS.items():
        table = sql.Identifier(SHARD_SCHEMA, name)
        if conn.execute("SELECT to_regclass(%s)", (f"{SHARD_SCHEMA}.{name}",)).fetchone() != (None,):
            continue
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE public.{} INCLUDING DEFAULTS) PARTITION BY HASH (meter_id)").format(
                table, sql.Identifier(name)
            )
        )
        if written:
            for (column,) in conn.execute(
                """SELECT a.attname FROM pg_attribute a
                   JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                   WHERE a.attrelid = %s::regclass AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%%'""",
                (f"{SHARD_SCHEMA}.{name}",),
            ).fetchall():
                conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(table, sql.Identifier(column)))
        for k in range(n):
            conn.execute(
                sql.SQL(
                    "CREATE FOREIGN TABLE {} PARTITION OF {} FOR VALUES WITH (MODULUS {}, REMAINDER {}) "
                    "SERVER {} OPTIONS (schema_name 'public', table_name {})"
                ).format(
                    sql.Identifier(SHARD_SCHEMA, f"{name}_{k}"),
                    table,
                    sql.Literal(n),
                    sql.Literal(k),
                    sql.Identifier(f"releve_shard_{k}"),
                    sql.Literal(name),
                )
            )
    # The windowed readers of the validated series under the same names (migrations 0031, 0032), over
    # the mirror with each read's block: a session through the shards calls the names it calls on one
    # server, and each shard reads only the blocks of the window's days.
    columns = ", ".join(
        f"v.{name}"
        for (name,) in conn.execute(
            """SELECT quote_ident(attname) FROM pg_attribute
               WHERE attrelid = 'public.validated_reading'::regclass AND attnum > 0 AND NOT attisdropped
               ORDER BY attnum"""
        ).fetchall()
    )
    functions = migrate.earlier("0032_validated_with_block").SHARD_FUNCTIONS  # the shard schema's windowed readers
    conn.execute(functions.format(schema=SHARD_SCHEMA, columns=columns).encode())
    if settings is None or not settings.database.use_roles:
        return
    reader, editor = sql.Identifier(db.reader_role(settings) or ""), sql.Identifier(db.editor_role(settings) or "")
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}").format(schema, reader, editor))
    conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}, {}").format(schema, reader, editor))
    for name, written in SHARD_RELATIONS.items():
        if written:
            conn.execute(sql.SQL("GRANT INSERT ON {} TO {}").format(sql.Identifier(SHARD_SCHEMA, name), editor))


def ready(conn: psycopg.Connection, n: int) -> bool:
    """Whether the coordinator has :data:`SHARD_SCHEMA` over ``n`` shards (:func:`attach_shards` ran).

    Its windowed readers too (migration 0031): without them a session through the shards would
    resolve ``validated_between`` to the coordinator's own (``public``) function and read its own
    tables, so a coordinator attached before 0031 is not ready until :func:`attach_shards` runs again;
    and their mirror of each read's block (migration 0032): attached before it, the readers would
    unnest every block of every shard.
    """
    row = conn.execute(
        """SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass(%(table)s)),
                  (SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass(%(with_block)s)) = %(n)s
                  AND to_regprocedure(%(between)s) IS NOT NULL AND to_regprocedure(%(series)s) IS NOT NULL""",
        {
            "n": n,
            "table": f"{SHARD_SCHEMA}.validated_reading",
            "with_block": f"{SHARD_SCHEMA}.validated_reading_with_block",
            "between": f"{SHARD_SCHEMA}.validated_between(timestamptz, timestamptz)",
            "series": f"{SHARD_SCHEMA}.validated_series(integer, integer, timestamptz, timestamptz)",
        },
    ).fetchone()
    return row is not None and row[0] == n and bool(row[1])


def through_shards(coordinator_url: str) -> str:
    """The coordinator's URL with :data:`SHARD_SCHEMA` first in the search path.

    A session on it reads (and writes) the meter-keyed tables of :data:`SHARD_RELATIONS` on the
    shards, each row on its meter's shard, and everything else (registry, bills, ledger) on the
    coordinator.
    """
    info = psycopg.conninfo.conninfo_to_dict(coordinator_url)
    options = str(info.get("options") or "")
    info["options"] = f"{options} -c search_path={SHARD_SCHEMA},public".strip()
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def shards_of(conn: psycopg.Connection, serials: Sequence[str], n: int) -> dict[str, int]:
    """The shard (0..n-1) of each registered meter among ``serials``, by the coordinator's partition hash."""
    rows = conn.execute(
        """SELECT m.serial, k FROM meter m CROSS JOIN generate_series(0, %(n)s - 1) AS k
           WHERE m.serial = ANY(%(serials)s)
             AND satisfies_hash_partition(%(table)s::regclass, %(n)s, k, m.id)""",
        {"n": n, "serials": list(serials), "table": SHARDED_TABLE},
    ).fetchall()
    return {str(s): int(k) for s, k in rows}


def citus_sql() -> str:
    """The statements that distribute the schema on Citus (plain path, no TimescaleDB): docs/scaling.md.

    Reference tables first (distributed tables' foreign keys point at them), then ``reading`` and the
    other meter-keyed tables colocated with it, each after the tables its foreign keys name. Every
    other table (bills, ledger, theft runs, work orders) stays on the coordinator.
    """
    lines = [f"SELECT create_reference_table('{t}');" for t in REFERENCE]
    lines.append(f"SELECT create_distributed_table('{DISTRIBUTED[0]}', 'meter_id');")
    lines += [
        f"SELECT create_distributed_table('{t}', 'meter_id', colocate_with => '{DISTRIBUTED[0]}');"
        for t in DISTRIBUTED[1:]
    ]
    return "\n".join(lines)
