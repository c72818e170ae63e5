"""The control room's fleet state: read from the last-read summary where it says enough, probed elsewhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from releve.model import Reading


@pytest.mark.db
def test_fleet_state_is_the_same_whether_the_last_read_summary_is_fresh_stale_or_empty(db):
    from dashboards.queries import Queries
    from ingest import BatchWriter
    from releve.db import refresh_daily

    db.add_meters(["FRESH", "STALE", "LATE", "NEVER"])
    now = datetime.now(UTC).replace(microsecond=0)

    def read(serial: str, ago: timedelta, value: float) -> Reading:
        return Reading(serial, "1-0:1.8.0", now - ago, value, "kWh")

    queries = Queries(db.url, db.settings)
    try:
        with BatchWriter(db.url, db.settings) as writer:
            writer.write(
                [
                    read("FRESH", timedelta(hours=1), 10.0),
                    read("STALE", timedelta(hours=6), 20.0),
                    read("LATE", timedelta(hours=5), 30.0),
                ]
            )
        empty = {r["serial"]: r["state"] for r in queries.fleet_rows()[1]}  # nothing summarised yet
        empty_counts = queries.snapshot(fresh=True).counts()
        refresh_daily(db.url)
        with BatchWriter(db.url, db.settings) as writer:  # landed after the refresh: the summary lags for STALE
            writer.write([read("STALE", timedelta(minutes=30), 21.0)])
        counts = queries.snapshot(fresh=True).counts()
        _, rows = queries.fleet_rows()
        states = {r["serial"]: r["state"] for r in rows}
        seen = {r["serial"]: r["last_seen"] for r in rows}
        exact, _ = queries.meter_page(0, 10, [{"column_id": "state", "direction": "asc"}], "")
    finally:
        queries.close()
    assert states == {"FRESH": "communicating", "STALE": "communicating", "LATE": "late", "NEVER": "silent"}
    assert states == {r["serial"]: r["state"] for r in exact}
    assert seen["STALE"] == now - timedelta(minutes=30)  # probed: the summary still says six hours ago
    assert empty == {"FRESH": "communicating", "STALE": "late", "LATE": "late", "NEVER": "silent"}
    assert counts == {"communicating": 2, "late": 1, "silent": 1}
    assert empty_counts == {"communicating": 1, "late": 2, "silent": 1}


@pytest.mark.db
def test_the_daily_refresh_moves_each_meters_last_read_forward_never_back(db):
    from ingest import BatchWriter
    from releve.db import refresh_daily

    db.add_meters(["M1"])
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    with BatchWriter(db.url, db.settings) as writer:
        writer.write([Reading("M1", "1-0:1.8.0", t0 + timedelta(hours=k), 100.0 + k, "kWh") for k in range(5)])
    refresh_daily(db.url)
    with BatchWriter(db.url, db.settings) as writer:  # a backfill of older data
        writer.write([Reading("M1", "1-0:1.8.0", t0 - timedelta(days=3), 90.0, "kWh")])
    refresh_daily(db.url)
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT m.serial, c.code, l.ts FROM meter_last_read l JOIN meter m ON m.id = l.meter_id "
            "JOIN channel c ON c.id = l.channel_id"
        ).fetchall()
    assert rows == [("M1", "1-0:1.8.0", t0 + timedelta(hours=4))]
