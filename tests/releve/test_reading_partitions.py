"""Plain path: a new month of ``reading`` comes in four parts, so the index taking the writes stays small."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from releve import migrate

PARTS = """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), pg_get_userbyid(c.relowner)
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = %s::regclass ORDER BY 1"""


@pytest.mark.db
def test_a_new_month_is_made_of_four_parts_of_seven_to_ten_days_owned_by_the_owner(db):
    writer = migrate.role_names(db.settings)[0]
    with db.connect(role=writer) as conn:
        assert conn.execute("SELECT ensure_reading_partitions('2019-02-10', '2019-03-01')").fetchone()[0] == 2
        assert conn.execute("SELECT ensure_reading_partitions('2019-02-10', '2019-03-01')").fetchone()[0] == 0
    with db.connect() as conn:
        parts = conn.execute(PARTS, ("reading_y2019m02",)).fetchall()
        assert [p[0] for p in parts] == [f"reading_y2019m02d{d}" for d in ("01", "08", "15", "22")]
        assert "('2019-02-22 00:00:00+00') TO ('2019-03-01 00:00:00+00')" in parts[-1][1]
        assert {p[2] for p in parts} == {migrate.owner_role(db.settings)}
        march = conn.execute(PARTS, ("reading_y2019m03",)).fetchall()
        assert "('2019-03-22 00:00:00+00') TO ('2019-04-01 00:00:00+00')" in march[-1][1]


@pytest.mark.db
def test_readings_land_in_the_part_of_their_week_and_the_key_holds_across_the_month(db):
    db.add_meters(["M1"])
    with db.connect() as conn:
        conn.execute("SELECT ensure_reading_partitions('2019-05-01', '2019-05-31')")
        conn.execute("INSERT INTO ingest_batch (batch_key) VALUES (gen_random_uuid())")
        insert = (
            "INSERT INTO reading SELECT m.id, c.id, %s::timestamptz, 1.0, u.id, 1, 1, 0, now(), b.id "
            "FROM meter m, channel c, unit u, ingest_batch b WHERE c.code = '1-0:1.8.0' AND u.code = 'kWh'"
        )
        for ts in ("2019-05-01 00:00Z", "2019-05-14 23:59Z", "2019-05-31 23:45Z"):
            conn.execute(insert, (ts,))
        where = dict(conn.execute("SELECT ts::text, tableoid::regclass::text FROM reading").fetchall())
        assert where == {
            "2019-05-01 00:00:00+00": "reading_y2019m05d01",
            "2019-05-14 23:59:00+00": "reading_y2019m05d08",
            "2019-05-31 23:45:00+00": "reading_y2019m05d22",
        }
        with pytest.raises(errors.UniqueViolation):
            conn.execute(insert, ("2019-05-14 23:59Z",))


@pytest.mark.db
def test_each_part_refuses_truncate(db):
    with db.connect() as conn:
        conn.execute("SELECT ensure_reading_partitions('2019-07-01', '2019-07-01')")
        for table in ("reading_y2019m07", "reading_y2019m07d15"):
            with pytest.raises(psycopg.Error, match="TRUNCATE refused"), conn.transaction():
                conn.execute(f"TRUNCATE {table}")
