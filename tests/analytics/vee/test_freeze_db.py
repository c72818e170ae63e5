"""The billed-period freeze and the two-year prescription, enforced by PostgreSQL (migration 0014)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from analytics.vee import review
from analytics.vee.run import run_vee
from ingest import BatchWriter
from releve import db as releve_db
from releve.model import Reading, ReadType, Source

pytestmark = pytest.mark.db

CH = "1-0:1.8.0"
INSERT = """INSERT INTO reading_version (meter_id, channel_id, ts, version, value, quality, method, kind,
                                         replaced_value, comment, created_by)
            SELECT m.id, c.id, %s, 1, %s, 'F', 55, %s, %s, %s, %s FROM meter m, channel c
            WHERE m.serial = %s AND c.code = %s"""


def land(db, serial, t0, values):
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) "
            "VALUES (%s, 'electricity', 'test', 'kWh', 'import')",
            (serial,),
        )
    with BatchWriter(db.url, db.settings) as writer:
        writer.write(
            [
                Reading(serial, CH, t0 + timedelta(days=i), v, "kWh", Source.IMPORT, ReadType.ACTUAL)
                for i, v in enumerate(values)
            ]
        )


def freeze(db, serial, to, reference):
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO reading_freeze (meter_id, frozen_to, reference) SELECT id, %s, %s FROM meter "
            "WHERE serial = %s",
            (to, reference, serial),
        )


def editor(db):
    return releve_db.connect(db.url, role=releve_db.editor_role(db.settings), autocommit=True)


def test_a_direct_insert_of_a_version_for_a_billed_read_is_refused_unless_it_is_an_audited_adjustment(db):
    t0 = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=30)
    land(db, "F1", t0, [100.0 + 5 * i for i in range(10)])
    at = t0 + timedelta(days=3)
    freeze(db, "F1", t0 + timedelta(days=5), "bill 2026-11 F1")
    with editor(db) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match=r"is billed .* must be an adjustment"):
            conn.execute(INSERT, (at, 999.0, "edit", 115.0, "sneaky", "mallory", "F1", CH))
        with pytest.raises(psycopg.errors.CheckViolation, match="must say who makes it"):
            conn.execute(INSERT, (at, 999.0, "adjustment", 115.0, "no name", " ", "F1", CH))
        conn.execute(INSERT, (at, 116.0, "adjustment", 115.0, "register photo: 116", "erin", "F1", CH))
        # Not billed yet: an ordinary edit passes.
        conn.execute(INSERT, (t0 + timedelta(days=8), 141.0, "edit", 140.0, "typo", "erin", "F1", CH))
        # The editor cannot forge or close a rebill by hand except its workflow columns.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO reading_adjustment (version_id, meter_id, channel_id, ts, created_by, comment) "
                "SELECT id, meter_id, channel_id, ts, 'x', 'x' FROM reading_version LIMIT 1"
            )
    with db.connect() as conn:
        rebills = conn.execute(
            "SELECT value, replaced_value, reference, created_by, comment, status FROM reading_adjustment"
        ).fetchall()
        billed = conn.execute("SELECT value, quality FROM validated_reading WHERE ts = %s", (at,)).fetchone()
    assert rebills == [(116.0, 115.0, "bill 2026-11 F1", "erin", "register photo: 116", "open")]
    assert billed == (115.0, "actual")  # the billed value stays in force; the rebill carries the change


def test_corrections_of_billed_reads_older_than_two_years_are_prescribed(db):
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    t0 = now - timedelta(days=2 * 365 + 40)
    values = [500.0 + 7 * i for i in range(20)]
    values[10] = 57000.0  # 570 ×100 — found by VEE, but billed long ago
    land(db, "OLD", t0, values)
    freeze(db, "OLD", t0 + timedelta(days=25), "bill 2024 OLD")
    run_vee(db.url, db.settings)
    at = t0 + timedelta(days=10)
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM reading_version").fetchone() == (0,)  # no substitute past it
    with editor(db) as conn:
        exc = next(q for q in review.list_queue(conn) if q.rule == "SCALE_JUMP")
        with pytest.raises(review.ReviewError, match=r"prescribed: .* more than 2 years before the correction date"):
            review.accept(conn, exc.id, "alice")
        with pytest.raises(psycopg.errors.CheckViolation, match=r"prescribed: .* cannot be corrected"):
            conn.execute(INSERT, (at, 570.0, "adjustment", 57000.0, "customer claim", "alice", "OLD", CH))
        assert [q.id for q in review.list_queue(conn) if q.id == exc.id]  # still open, nothing changed
    # A read of the same meter within two years is still corrected as an adjustment.
    recent = now - timedelta(days=100)
    with editor(db) as conn:
        conn.execute("SELECT ensure_reading_partitions(%s, %s)", (recent, recent + timedelta(days=1)))
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([Reading("OLD", CH, recent, 9000.0, "kWh", Source.IMPORT, ReadType.ACTUAL)])
    freeze(db, "OLD", recent + timedelta(days=1), "bill 2026 OLD")
    with editor(db) as conn:
        conn.execute(INSERT, (recent, 9001.0, "adjustment", 9000.0, "field check", "alice", "OLD", CH))
