"""Sharding by meter over several PostgreSQL servers: postgres_fdw hash partitions, routed writes.

Each shard is a whole Relevé database (same migrations) holding the readings of the meters that hash
to it, and a copy of the registry (meters, service points, installations, accounts: in production a
logical-replication subscription to the coordinator's registry, docs/scaling.md). The coordinator
holds the registry and ``reading_sharded``: a table partitioned by ``HASH (meter_id)`` whose
partitions are ``postgres_fdw`` foreign tables on each shard's ``reading``. PostgreSQL's own
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

SHARDED_TABLE = "reading_sharded"


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


def attach_shards(coordinator_url: str, shard_urls: Sequence[str]) -> None:
    """On the coordinator: one postgres_fdw server per shard and ``reading_sharded`` over them.

    Idempotent for the same list; a different number of shards needs the table dropped first (the
    modulus is fixed: moving to more shards means moving data, see docs/scaling.md).
    """
    if not shard_urls:
        raise ValueError("attach_shards needs at least one shard URL")
    n = len(shard_urls)
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
            conn.execute(
                sql.SQL("CREATE SERVER IF NOT EXISTS {} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({})").format(
                    server, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.SQL(key), sql.Literal(v))
                                               for key, v in options.items()),
                )
            )  # fmt: skip
            mapping = {"user": str(info.get("user") or "postgres")}
            password = _password({key: str(v) for key, v in info.items() if v is not None})
            if password:
                mapping["password"] = password
            conn.execute(
                sql.SQL("CREATE USER MAPPING IF NOT EXISTS FOR CURRENT_USER SERVER {} OPTIONS ({})").format(
                    server, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.SQL(key), sql.Literal(v))
                                               for key, v in mapping.items()),
                )
            )  # fmt: skip
            conn.execute(
                sql.SQL(
                    "CREATE FOREIGN TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES WITH (MODULUS {}, REMAINDER {}) "
                    "SERVER {} OPTIONS (table_name 'reading')"
                ).format(sql.Identifier(f"{SHARDED_TABLE}_{k}"), sql.Identifier(SHARDED_TABLE), sql.Literal(n),
                         sql.Literal(k), server)
            )


def shards_of(conn: psycopg.Connection, serials: Sequence[str], n: int) -> dict[str, int]:
    """The shard (0..n-1) of each registered meter among ``serials``, by the coordinator's partition hash."""
    rows = conn.execute(
        """SELECT m.serial, k FROM meter m CROSS JOIN generate_series(0, %(n)s - 1) AS k
           WHERE m.serial = ANY(%(serials)s)
             AND satisfies_hash_partition(%(table)s::regclass, %(n)s, k, m.id)""",
        {"n": n, "serials": list(serials), "table": SHARDED_TABLE},
    ).fetchall()
    return {str(s): int(k) for s, k in rows}
