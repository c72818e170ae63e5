"""Storage hardening on a real server: a NOLOGIN owner owns the schema, the application's roles
cannot TRUNCATE, ALTER or disable triggers, and raw tables refuse TRUNCATE even for the owner."""

import secrets
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import errors, sql

from ingest import BatchWriter
from releve import migrate
from releve.model import Reading
from releve.settings import Settings

pytestmark = pytest.mark.db

RAW = ("reading", "meter_event", "reading_conflict", "rejected_input", "ingest_batch")


def _partition(conn) -> str:
    return conn.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'reading'::regclass ORDER BY 1 LIMIT 1"
    ).fetchone()[0]


def _refused(conn, statement: str, match: str | None = None) -> None:
    with pytest.raises(errors.InsufficientPrivilege, match=match):
        conn.execute(statement)


def _land_one_reading(db) -> None:
    db.add_meters(["M1"])
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([Reading("M1", "1-0:1.8.0", datetime.now(UTC) - timedelta(hours=1), 1.0, "kWh")])


def test_the_schema_belongs_to_an_owner_role_that_cannot_log_in(db_from_scratch):
    db = db_from_scratch  # what migration 0012 does: run here from an empty database
    owner = migrate.owner_role(db.settings)
    with db.connect() as conn:
        assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (owner,)).fetchone() == (False,)
        others = conn.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S') "
            "AND pg_get_userbyid(c.relowner) <> %s "
            "UNION ALL SELECT p.proname, pg_get_userbyid(p.proowner) FROM pg_proc p "
            "WHERE p.pronamespace = 'public'::regnamespace AND pg_get_userbyid(p.proowner) <> %s "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')",
            (owner, owner),
        ).fetchall()
    assert others == []


@pytest.mark.parametrize("which", ["writer", "reader", "editor"])
def test_application_roles_cannot_truncate_alter_disable_triggers_delete_or_update(db, which):
    _land_one_reading(db)
    role = dict(zip(("writer", "reader", "editor"), migrate.role_names(db.settings), strict=True))[which]
    with db.connect(role=role) as conn:
        part = _partition(conn)
        for table in (*RAW, part):
            _refused(conn, f"TRUNCATE {table}")
        _refused(conn, "ALTER TABLE reading DISABLE TRIGGER reading_append_only")
        _refused(conn, f"ALTER TABLE {part} DISABLE TRIGGER ALL")
        _refused(conn, "ALTER TABLE meter_event DISABLE TRIGGER refuse_truncate")
        _refused(conn, "ALTER TABLE reading ADD COLUMN note text")
        _refused(conn, "ALTER TABLE meter OWNER TO CURRENT_USER")
        _refused(conn, "DROP TRIGGER refuse_truncate ON ingest_batch")
        _refused(conn, "DELETE FROM reading")
        _refused(conn, "UPDATE reading SET value = 2")
        _refused(conn, "DELETE FROM meter_event")
        _refused(conn, "UPDATE rejected_input SET reason = ''")


def test_raw_tables_refuse_truncate_even_for_the_owner_and_a_superuser(db):
    _land_one_reading(db)
    owner = migrate.owner_role(db.settings)
    with db.connect() as conn:  # the test server's superuser
        part = _partition(conn)
        conn.execute("SELECT ensure_reading_partitions('2019-03-05', '2019-03-05')")  # made after the upgrade
        for table in (*RAW, part, "reading_y2019m03"):  # CASCADE: past the foreign keys, to the guard
            _refused(conn, f"TRUNCATE {table} CASCADE", match="TRUNCATE refused")
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
        for table in (*RAW, part):
            _refused(conn, f"TRUNCATE {table} CASCADE", match="TRUNCATE refused")
        assert conn.execute("SELECT count(*) FROM reading_all").fetchone()[0] == 1


def test_partitions_made_for_late_data_belong_to_the_owner(db):
    writer = migrate.role_names(db.settings)[0]
    with db.connect(role=writer) as conn:
        assert conn.execute("SELECT ensure_reading_partitions('2018-01-01', '2018-01-31')").fetchone()[0] == 1
        assert conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'reading_y2018m01'::regclass"
        ).fetchone()[0] == migrate.owner_role(db.settings)


def test_a_login_that_is_not_a_superuser_migrates_ingests_and_still_cannot_truncate_or_alter(
    pg_server_url, database_url
):
    """The external-server case: the URL's user may create databases and roles, and nothing more."""
    base = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    login, dbname, password = f"{base}_login", f"{base}_l", secrets.token_hex(12)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(sql.Identifier(login), sql.Literal(password))
        )
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(login)))
    info = psycopg.conninfo.conninfo_to_dict(pg_server_url)
    info.update(dbname=dbname, user=login, password=password)
    url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    settings = Settings(database={"url": url, "role_prefix": dbname})  # type: ignore[arg-type]
    try:
        migrate.upgrade(url, settings)
        assert migrate.upgrade(url, settings) == []  # again, as the owner, changes nothing
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO meter (serial, commodity, model, unit, protocol) "
                "VALUES ('M1', 'electricity', 'test', 'kWh', 'import')"
            )  # registry work still works
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        late = datetime(2017, 6, 1, tzinfo=UTC)  # needs a new partition, made through the owner's function
        with BatchWriter(url, settings) as writer:
            first = writer.write(
                [Reading("M1", "1-0:1.8.0", t0, 1.0, "kWh"), Reading("M1", "1-0:1.8.0", late, 0.5, "kWh")]
            )
            again = writer.write([Reading("M1", "1-0:1.8.0", t0, 1.0, "kWh")])
        assert (first.inserted, again.duplicates) == (2, 1)
        with psycopg.connect(url, autocommit=True) as conn:
            part = _partition(conn)
            for table in (*RAW, part, "reading_y2017m06"):
                _refused(conn, f"TRUNCATE {table}")
            _refused(conn, "ALTER TABLE reading DISABLE TRIGGER reading_append_only")
            _refused(conn, f"ALTER TABLE {part} DISABLE TRIGGER refuse_truncate")
            _refused(conn, "ALTER TABLE meter ADD COLUMN note text")
            _refused(conn, "DELETE FROM reading")
            _refused(conn, "UPDATE meter_event SET kind = 'x'")
            # Only a deliberate switch to the owner gives its rights back, and TRUNCATE stays guarded.
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(migrate.owner_role(settings))))
            _refused(conn, "TRUNCATE reading", match="TRUNCATE refused")
            assert conn.execute("SELECT count(*) FROM reading_all").fetchone()[0] == 2
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def test_an_existing_database_is_handed_over_and_its_partitions_guarded(database_url, monkeypatch):
    """A database at 0011 with data and partitions, then upgraded: nothing is lost, everything is guarded."""
    from tests.conftest import MigratedDatabase

    everything = migrate.discover()
    monkeypatch.setattr(migrate, "discover", lambda: [m for m in everything if m.version < migrate.OWNER_MIGRATION])
    db = MigratedDatabase(database_url)
    _land_one_reading(db)
    with db.connect() as conn:
        before = {
            r[0]
            for r in conn.execute(
                "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'reading'::regclass"
            )
        }
        assert conn.execute("SELECT to_regproc('refuse_truncate')").fetchone() == (None,)
    monkeypatch.setattr(migrate, "discover", lambda: everything)
    assert min(m.version for m in migrate.upgrade(db.url, db.settings)) == migrate.OWNER_MIGRATION  # then the rest
    owner = migrate.owner_role(db.settings)
    with db.connect() as conn:
        guarded = {
            r[0]
            for r in conn.execute("SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = 'refuse_truncate'")
        }
        assert before <= guarded and {"reading", *RAW} <= guarded
        owners = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE oid = ANY(%s::regclass[])",
                (sorted(before),),
            )
        }
        assert owners == {owner}
        assert conn.execute("SELECT count(*) FROM reading_all").fetchone()[0] == 1
    writer = migrate.role_names(db.settings)[0]
    with db.connect(role=writer) as conn:
        for table in sorted(before):
            _refused(conn, f"TRUNCATE {table}")
            _refused(conn, f"ALTER TABLE {table} DISABLE TRIGGER ALL")
