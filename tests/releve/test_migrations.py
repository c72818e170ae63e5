from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import errors

from releve import migrate
from releve.db import status


@pytest.mark.db
def test_migrations_apply_twice_without_error(db_from_scratch):
    db = db_from_scratch  # the migrations themselves: run here from an empty database
    again = migrate.upgrade(db.url, db.settings)
    assert again == []
    with db.connect() as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migration ORDER BY 1")]
    assert versions == [m.version for m in migrate.discover()]


@pytest.mark.db
def test_plain_postgresql_path_partitions_exist_ahead_of_the_data(db_from_scratch):
    db = db_from_scratch  # the migrations themselves: run here from an empty database
    now = datetime.now(UTC)
    with db.connect() as conn:
        names = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'reading'::regclass"
            )
        }
    months_ahead = db.settings.database.partition_months_ahead
    year, month = now.year, now.month
    for _ in range(months_ahead + 1):
        assert f"reading_y{year}m{month:02d}" in names
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    assert status(db.url)["storage"] == "postgresql partitions"


@pytest.mark.db
def test_roles_exist_with_least_privilege(db_from_scratch):
    db = db_from_scratch  # the migrations themselves: run here from an empty database
    writer, reader, editor = migrate.role_names(db.settings)
    with db.connect() as conn:

        def can(role, table, priv):
            return conn.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, priv)).fetchone()[0]

        assert can(writer, "reading", "INSERT")
        assert not can(writer, "reading", "UPDATE")
        assert not can(writer, "reading", "DELETE")
        assert not can(writer, "meter", "INSERT")
        assert can(reader, "reading", "SELECT")
        assert not can(reader, "reading", "INSERT")
        assert can(editor, "reading", "SELECT")


@pytest.mark.db
def test_update_and_delete_on_raw_readings_are_refused_for_the_ingest_role(db):
    db.add_meters(["M1"])
    writer = migrate.role_names(db.settings)[0]
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO ingest_batch (batch_key) VALUES (gen_random_uuid());"
            "INSERT INTO reading SELECT m.id, c.id, now(), 1.0, u.id, 1, 1, 0, now(), b.id "
            "FROM meter m, channel c, unit u, ingest_batch b WHERE c.code = '1-0:1.8.0' AND u.code = 'kWh'"
        )
    with db.connect(role=writer) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE reading SET value = 2")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM reading")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("TRUNCATE reading")
    # Even the owner cannot change a raw reading in place: corrections are new versions.
    with db.connect() as conn, pytest.raises(errors.InsufficientPrivilege, match="append-only"):
        conn.execute("UPDATE reading SET value = 2")


@pytest.mark.db
def test_partitions_are_made_for_late_data_by_the_ingest_role(db):
    writer = migrate.role_names(db.settings)[0]
    with db.connect(role=writer) as conn:
        made = conn.execute("SELECT ensure_reading_partitions('2019-03-05', '2019-04-01')").fetchone()[0]
        assert made == 2
        assert conn.execute("SELECT to_regclass('reading_y2019m03') IS NOT NULL").fetchone()[0]


@pytest.mark.db
def test_installation_periods_of_one_meter_cannot_overlap(db):
    db.add_meters(["M1"])
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO service_point (code, commodity) VALUES ('SP1', 'electricity'), ('SP2', 'electricity')"
        )
        conn.execute(
            "INSERT INTO installation (meter_id, service_point_id, installed_at) "
            "SELECT m.id, s.id, '2024-01-01' FROM meter m, service_point s WHERE s.code = 'SP1'"
        )
        with pytest.raises(psycopg.errors.ExclusionViolation):
            conn.execute(
                "INSERT INTO installation (meter_id, service_point_id, installed_at) "
                "SELECT m.id, s.id, '2024-06-01' FROM meter m, service_point s WHERE s.code = 'SP2'"
            )


@pytest.mark.db
def test_daily_aggregate_refreshes_over_a_range(db):
    db.add_meters(["M1"])
    with db.connect() as conn:
        conn.execute("INSERT INTO ingest_batch (batch_key) VALUES (gen_random_uuid())")
        conn.execute("SELECT ensure_reading_partitions('2025-01-01', '2025-01-03')")
        conn.execute(
            "INSERT INTO reading SELECT m.id, c.id, t, v, u.id, 1, 1, 0, now(), b.id "
            "FROM meter m, channel c, unit u, ingest_batch b, "
            "     (VALUES ('2025-01-01 06:00Z'::timestamptz, 100.0), ('2025-01-01 18:00Z', 104.0),"
            "             ('2025-01-02 06:00Z', 107.0), ('2025-01-02 18:00Z', 110.5)) AS r(t, v) "
            "WHERE c.code = '1-0:1.8.0' AND u.code = 'kWh'"
        )
        conn.execute("CALL refresh_daily_reading('2025-01-01', '2025-01-02')")
        rows = conn.execute("SELECT day::date::text, consumption FROM daily_consumption ORDER BY day").fetchall()
    assert rows == [("2025-01-01", 4.0), ("2025-01-02", 6.5)]


def test_timescale_ddl_is_generated_when_the_extension_exists():
    from importlib import util

    spec = util.spec_from_file_location("m3", migrate.MIGRATIONS_DIR / "0003_storage.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ddl = module.TIMESCALE.format(columns=module.READING_COLUMNS, chunk="'7 days'", compress_after="'30 days'")
    assert "create_hypertable('reading', by_range('ts', '7 days'::interval))" in ddl
    assert "timescaledb.compress_segmentby = 'meter_id, channel_id'" in ddl
    assert "WITH (timescaledb.continuous)" in ddl


@pytest.mark.db
def test_daily_aggregate_follows_the_batches_landed_since_the_last_refresh(db):
    from datetime import timedelta

    from ingest import BatchWriter
    from releve.db import refresh_daily
    from releve.model import Reading

    db.add_meters(["M1"])
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([Reading("M1", "1-0:1.8.0", t0 + timedelta(hours=6 * k), 100.0 + k, "kWh") for k in range(8)])
    assert refresh_daily(db.url) == (1, 2)
    assert refresh_daily(db.url) == (0, 0)  # nothing new
    with db.connect() as conn:
        rows = conn.execute("SELECT day::date::text, consumption FROM daily_consumption ORDER BY day").fetchall()
    assert rows == [("2025-03-01", 3.0), ("2025-03-02", 4.0)]
