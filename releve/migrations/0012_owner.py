"""Storage hardening: a NOLOGIN owner role owns the schema, and raw tables refuse TRUNCATE.

Before this migration the login that ran the migrations owned every table, so the application,
which connects with that login, could TRUNCATE a partition or disable the append-only trigger.

- ``<prefix>_owner`` (NOLOGIN) now owns every table, partition, view, sequence and routine of the
  schema. Only migrations act as it (``releve.migrate`` switches with ``SET LOCAL ROLE``), and the
  SECURITY DEFINER routines (partition creation, the daily refresh) run with its rights.
- The login that runs the migrations, when it is not a superuser, is made a member of the owner
  that does *not* inherit its rights (PostgreSQL 16+; it must ``SET ROLE`` deliberately), and of
  writer, reader and editor so that it may switch to them. It keeps the data rights the
  application uses directly — SELECT, INSERT, UPDATE, DELETE on registry and work tables — but not
  TRUNCATE, ALTER or trigger control, and no UPDATE or DELETE on raw data.
- A statement-level BEFORE TRUNCATE trigger on every raw table (``reading`` and each of its
  partitions, ``meter_event``, ``reading_conflict``, ``rejected_input``, ``ingest_batch``) refuses
  truncation — for everyone, the owner and superusers included, until the owner drops it on
  purpose. ``ensure_reading_partitions`` puts the trigger on every partition it creates.
"""

from __future__ import annotations

import logging

from psycopg import Connection, errors, sql

from releve.migrate import MigrationContext

log = logging.getLogger(__name__)

RAW_TABLES = ("reading", "meter_event", "reading_conflict", "rejected_input", "ingest_batch")
#: Raw tables where nothing may be updated in place (ingest_batch and reading_conflict keep their
#: bookkeeping and review columns updatable).
APPEND_ONLY = ("reading", "meter_event", "rejected_input")

REFUSE_TRUNCATE = """
CREATE FUNCTION refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is raw data: TRUNCATE refused (the owner role may drop this guard on purpose)',
        TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
"""

GUARD = "CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION refuse_truncate()"

# The plain path's partition maker, now also guarding each new partition against TRUNCATE
# (statement-level triggers are not inherited by partitions).
PLAIN_PARTITIONS = """
CREATE OR REPLACE FUNCTION ensure_reading_partitions(from_ts timestamptz, to_ts timestamptz)
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
                EXECUTE format(
                    'CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON %I '
                    'FOR EACH STATEMENT EXECUTE FUNCTION refuse_truncate()', name);
                made := made + 1;
            END IF;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN made;
END $$;
"""

# Objects of the schema to hand over: not the owner's yet, not an extension's. Partitions are
# listed (ALTER TABLE does not recurse to them); indexes and sequences owned by a column follow
# their table.
RELATIONS = """
SELECT c.oid::regclass::text, c.relkind FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND c.relowner <> %(owner)s::regrole
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND (d.deptype = 'e' OR (c.relkind = 'S' AND d.deptype IN ('a', 'i'))))
ORDER BY c.relkind <> 'p', c.oid
"""
ROUTINES = """
SELECT p.oid::regprocedure::text FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND p.proowner <> %(owner)s::regrole
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e')
"""
PARTITIONS = "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'reading'::regclass"
ALTER = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}

#: What the migrating login (when not a superuser) keeps for the work it does without SET ROLE.
LOGIN_GRANTS = (
    "GRANT SELECT, INSERT, UPDATE, DELETE, REFERENCES ON ALL TABLES IN SCHEMA public TO {}",
    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}",
    "GRANT EXECUTE ON ALL ROUTINES IN SCHEMA public TO {}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE, REFERENCES ON TABLES TO {}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {}",
)


def hand_over(conn: Connection, owner: str, timescale: bool) -> int:
    """Give every object of the schema not owned by ``owner`` to it; return how many moved."""
    moved = 0
    for name, kind in conn.execute(RELATIONS, {"owner": owner}).fetchall():
        if timescale and name == "daily_reading":
            kind = "m"  # a continuous aggregate changes owner as a materialized view
        conn.execute(
            sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(ALTER[kind]), sql.SQL(name), sql.Identifier(owner))
        )
        moved += 1
    for (signature,) in conn.execute(ROUTINES, {"owner": owner}).fetchall():
        conn.execute(sql.SQL("ALTER ROUTINE {} OWNER TO {}").format(sql.SQL(signature), sql.Identifier(owner)))
        moved += 1
    return moved


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the owner role, hand it the schema, take the login's owner rights away, guard TRUNCATE."""
    owner = ctx.owner
    writer, reader, editor = ctx.roles
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone():
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
    login_row = conn.execute("SELECT rolname::text, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    assert login_row is not None
    login, superuser = str(login_row[0]), bool(login_row[1])
    db = sql.Identifier(conn.info.dbname)
    conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, sql.Identifier(owner)))
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(owner)))
    if not superuser:
        # Without inheritance the login holds none of the owner's rights until it SETs ROLE to it.
        options = sql.SQL(" WITH INHERIT FALSE, SET TRUE") if conn.info.server_version >= 160000 else sql.SQL("")
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), sql.Identifier(login)) + options)
        for role in (writer, reader, editor):
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login)) + options)
    moved = hand_over(conn, owner, ctx.timescale)
    log.info("schema handed over to %s (%d objects)", owner, moved)

    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
    conn.execute(REFUSE_TRUNCATE.encode())
    if not ctx.timescale:
        conn.execute(PLAIN_PARTITIONS.encode())
        partitions = [r[0] for r in conn.execute(PARTITIONS).fetchall()]
        for table in (*RAW_TABLES, *partitions):
            conn.execute(sql.SQL(GUARD).format(sql.SQL(table)))  # names from the catalogue, already quoted
    else:
        for table in RAW_TABLES:
            if table == "reading":
                # Untested here (no TimescaleDB in CI): keep the upgrade going if the hypertable
                # refuses a TRUNCATE trigger; privileges still keep the application's roles out.
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL(GUARD).format(sql.Identifier(table)))
                except errors.FeatureNotSupported as exc:
                    log.warning("TimescaleDB refused a TRUNCATE trigger on reading: %s", exc)
                continue
            conn.execute(sql.SQL(GUARD).format(sql.Identifier(table)))

    # Later tables stay readable by the three roles (the default privileges 0004 set were the login's).
    conn.execute(
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}, {}, {}").format(
            *(sql.Identifier(r) for r in (writer, reader, editor))
        )
    )
    if not superuser:
        who = sql.Identifier(login)
        for statement in LOGIN_GRANTS:
            conn.execute(sql.SQL(statement).format(who))
        for table in RAW_TABLES:
            conn.execute(sql.SQL("REVOKE DELETE ON {} FROM {}").format(sql.Identifier(table), who))
        for table in APPEND_ONLY:
            conn.execute(sql.SQL("REVOKE UPDATE ON {} FROM {}").format(sql.Identifier(table), who))
