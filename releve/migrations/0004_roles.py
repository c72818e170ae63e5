"""Database roles: least privilege for each kind of work.

- ``<prefix>_writer`` (ingest): INSERT and SELECT on raw data, nothing else. It can neither UPDATE
  nor DELETE a reading: the database refuses (no privilege, and a trigger besides).
- ``<prefix>_reader`` (dashboards, reports): SELECT on everything.
- ``<prefix>_editor`` (validation work): SELECT on everything; later migrations grant it the
  tables where estimates and edits are written as new versions.

The roles are NOLOGIN groups: a login user is granted membership and the application switches
with ``SET ROLE``.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

RAW_TABLES = ("reading", "meter_event", "reading_conflict", "rejected_input", "ingest_batch")


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the three roles and grant them what their work needs."""
    writer, reader, editor = (sql.Identifier(r) for r in ctx.roles)
    for role in ctx.roles:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    db = sql.Identifier(conn.info.dbname)
    for role_id in (writer, reader, editor):
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, role_id))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role_id))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(role_id))
    for table in RAW_TABLES:
        conn.execute(sql.SQL("GRANT INSERT ON {} TO {}").format(sql.Identifier(table), writer))
    # Bookkeeping, not raw data: the writer fills in a batch's counts once the batch has landed.
    conn.execute(
        sql.SQL(
            "GRANT UPDATE (n_inserted, n_duplicates, n_conflicts, n_rejected, n_events, min_ts, max_ts) "
            "ON ingest_batch TO {}"
        ).format(writer)
    )
    conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(writer))
    conn.execute(
        sql.SQL("GRANT EXECUTE ON FUNCTION ensure_reading_partitions(timestamptz, timestamptz) TO {}").format(writer)
    )
    conn.execute(
        sql.SQL("GRANT EXECUTE ON FUNCTION refresh_daily_reading(timestamptz, timestamptz) TO {}, {}").format(
            writer, editor
        )
    )
    # Tables created by later migrations are readable by all three without another grant.
    conn.execute(
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}, {}, {}").format(
            writer, reader, editor
        )
    )
