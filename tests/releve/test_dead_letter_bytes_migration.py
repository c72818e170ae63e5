"""Migration 0013 on a database that already holds dead letters and health rows."""

import psycopg
import pytest
from psycopg import errors

from releve import migrate
from releve.db import connect, writer_role
from releve.settings import Settings

pytestmark = pytest.mark.db


def test_dead_letters_from_before_0013_read_as_bytes_and_the_writer_role_can_raise_a_spool_alarm(
    database_url, monkeypatch
):
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    settings = Settings(database={"url": database_url, "role_prefix": dbname})  # type: ignore[arg-type]
    every = migrate.discover()
    monkeypatch.setattr(migrate, "discover", lambda: [m for m in every if m.version < 13])
    migrate.upgrade(database_url, settings)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rejected_input (source, origin, reason, payload) "
            "VALUES ('mqtt', 'mqtt x', 'payload is not JSON', '{é')"
        )
        conn.execute("INSERT INTO link_health (collector, link, kind) VALUES ('c', 'mqtt', 'mqtt')")
    monkeypatch.setattr(migrate, "discover", lambda: [m for m in every if m.version <= 13])  # later ones are not 0013's
    assert [m.version for m in migrate.upgrade(database_url, settings)] == [13]
    monkeypatch.undo()
    with psycopg.connect(database_url, autocommit=True) as conn:
        raw = conn.execute("SELECT coalesce(payload_bytes, convert_to(payload, 'UTF8')) FROM rejected_input").fetchone()
        assert raw == ("{é".encode(),)
        assert conn.execute("SELECT kind, alarm FROM link_health").fetchall() == [("mqtt", None)]
    with connect(database_url, role=writer_role(settings), autocommit=True) as conn:
        conn.execute("INSERT INTO link_health (collector, link, kind, alarm) VALUES ('c', 'spool', 'spool', 'x')")
        conn.execute("UPDATE link_health SET alarm = NULL WHERE link = 'spool'")
        conn.execute(
            "INSERT INTO rejected_input (source, origin, reason, payload, payload_bytes) "
            "VALUES ('mqtt', 'o', 'r', '\\x00', '\\x00'::bytea)"
        )
        with pytest.raises(errors.CheckViolation):
            conn.execute("INSERT INTO link_health (collector, link, kind) VALUES ('c', 'other', 'bogus')")
