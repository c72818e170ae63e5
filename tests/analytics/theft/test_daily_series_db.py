"""The daily series (migration 0026) against the daily aggregate it is kept from, in a real PostgreSQL.

The theft load reads ``daily_series`` (one row per meter, channel and month) instead of the
daily aggregate (one row per meter, channel and day): these tests hold the two to the same
figures through incremental refreshes — gaps, several reads a day, late readings into days and
months already refreshed, edits, an export register, an interval channel, a feeder, water.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from releve.model import Reading

pytestmark = pytest.mark.db

T0 = datetime(2025, 1, 20, tzinfo=UTC)  # the data runs over three months (and February's end)
DAYS = 50


def _readings(days: range, skip: set[int]) -> list[Reading]:
    """Customer C1 (import, two reads a day), C2 (import and export), C3 (hourly intervals only),
    feeder F1 (import) and water meter W1, over ``days`` (days after T0) but those in ``skip``."""
    out: list[Reading] = []
    for k in days:
        day = T0 + timedelta(days=k)
        if k not in skip:
            out += [
                Reading("C1", "1-0:1.8.0", day + timedelta(hours=6), 1000.0 + 10 * k, "kWh"),
                Reading("C1", "1-0:1.8.0", day + timedelta(hours=22), 1000.0 + 10 * k + 7.25, "kWh"),
            ]
        out += [
            Reading("C2", "1-0:1.8.0", day + timedelta(hours=23), 500.0 + 8.5 * k, "kWh"),
            Reading("F1", "1-0:1.8.0", day + timedelta(hours=23, minutes=30), 1e5 + 30 * k, "kWh"),
            Reading("W1", "8-0:1.0.0", day + timedelta(hours=12), 40.0 + 0.3 * k, "m3"),
        ]
        if k % 3 == 0:
            out.append(Reading("C2", "1-0:2.8.0", day + timedelta(hours=23), 20.0 + k, "kWh"))
        if 10 <= k < 14:
            out += [Reading("C3", "1-0:1.29.0", day + timedelta(hours=h + 1), 0.5 + h / 10, "kWh") for h in range(24)]
    return out


@pytest.fixture
def fleet(db):
    """The fleet registered, a feeder for its area; returns db."""
    db.add_meters(["C1", "C2", "C3", "F1"])
    db.add_meters(["W1"], commodity="water", unit="m3")
    with db.connect() as conn:
        conn.execute(
            """INSERT INTO area (code, kind, commodity, feeder_meter_id, technical_loss_pct)
               SELECT 'T1', 'transformer', 'electricity', id, 3.0 FROM meter WHERE serial = 'F1'"""
        )
    return db


def _write(db, readings: list[Reading]) -> None:
    from ingest import BatchWriter
    from releve.db import refresh_daily

    with BatchWriter(db.url, db.settings) as writer:
        writer.write(readings)
    refresh_daily(db.url)


def _assert_series_is_the_aggregate(conn) -> None:
    """Every (meter, channel, day) of the aggregate is its series value, and the series holds no other day."""
    rows = conn.execute(
        """SELECT d.meter_id, d.channel_id, (d.day AT TIME ZONE 'UTC')::date,
                  CASE c.kind WHEN 'interval' THEN d.total ELSE d.last_value END
           FROM daily_reading d JOIN channel c ON c.id = d.channel_id WHERE c.kind <> 'instant'"""
    ).fetchall()
    expected = {(m, ch, d): v for m, ch, d, v in rows}
    stored: dict[tuple[int, int, date], float] = {}
    for m, ch, month, value in conn.execute("SELECT meter_id, channel_id, month, value FROM daily_series"):
        assert len(value) == 31 * 8 and month.day == 1
        for k, v in enumerate(np.frombuffer(value, ">f8").tolist()):
            if not np.isnan(v):
                stored[(m, ch, month + timedelta(days=k))] = v
    assert stored == expected
    counts = conn.execute("SELECT day, n FROM daily_read_count ORDER BY day").fetchall()
    assert counts == conn.execute("SELECT day, sum(n) FROM daily_reading GROUP BY day ORDER BY day").fetchall()


def _grids_from_the_aggregate(conn, start: date, n_days: int, row_of, m: int, feeder_row, n_feeders: int):
    """The import, export and feeder grids as the theft load read them before: from the daily aggregate."""
    from analytics.theft.store import EXPORT_CHANNELS, IMPORT_CHANNELS

    daily, export, feeder = (
        np.full((m, n_days), np.nan),
        np.full((m, n_days), np.nan),
        np.full((n_feeders, n_days), np.nan),
    )
    for mid, code, day, value in conn.execute(
        """SELECT d.meter_id, c.code, (d.day AT TIME ZONE 'UTC')::date, d.last_value
           FROM daily_reading d JOIN channel c ON c.id = d.channel_id WHERE c.code = ANY(%s)""",
        (list(IMPORT_CHANNELS + EXPORT_CHANNELS),),
    ):
        j = (day - start).days
        if not 0 <= j < n_days:
            continue
        if mid < len(row_of) and row_of[mid] >= 0:
            (daily if code in IMPORT_CHANNELS else export)[row_of[mid], j] = value
        if code in IMPORT_CHANNELS and mid < len(feeder_row) and feeder_row[mid] >= 0:
            feeder[feeder_row[mid], j] = value
    return daily, export, feeder


def test_the_series_follows_the_aggregate_through_refreshes_and_loads_the_same_grids(fleet):
    from analytics.theft import store

    db = fleet
    _write(db, _readings(range(0, 30), skip={5, 6, 7, 25}))
    _write(db, _readings(range(30, DAYS), skip={31}))
    # Late: C1's missing days arrive, into months already refreshed (a January gap, a February day)
    # and a read later in a day already there (its last value moves).
    late = [r for r in _readings(range(0, DAYS), skip=set()) if r.meter == "C1" and (r.ts - T0).days in (5, 6, 25)]
    late.append(Reading("C2", "1-0:1.8.0", T0 + timedelta(days=40, hours=23, minutes=50), 900.0, "kWh"))
    _write(db, late)
    with db.connect() as conn:
        # An edit after the refresh: a version of one of C1's reads (laid over by the load, not the series).
        conn.execute(
            """INSERT INTO reading_version (meter_id, channel_id, ts, version, value, quality, kind, created_by)
               SELECT m.id, c.id, %s, 1, 1234.5, 'E', 'edit', 'test' FROM meter m, channel c
               WHERE m.serial = 'C1' AND c.code = '1-0:1.8.0'""",
            (T0 + timedelta(days=20, hours=22),),
        )
        _assert_series_is_the_aggregate(conn)
        # Built whole from the aggregate (as the upgrade and the bench do) it is the same series.
        series = "SELECT meter_id, channel_id, month, value FROM daily_series ORDER BY 1, 2, 3"
        kept = conn.execute(series).fetchall()
        conn.execute("DELETE FROM daily_series")
        conn.execute("DELETE FROM daily_read_count")
        conn.execute("SELECT refresh_daily_series(min(day), max(day)) FROM daily_reading")
        assert conn.execute(series).fetchall() == kept

        ids = {s: i for s, i in conn.execute("SELECT serial, id FROM meter")}
        customers = [ids["C1"], ids["C2"], ids["C3"], ids["W1"]]
        row_of, feeder_row = store._row_of(customers), store._row_of([ids["F1"]])
        interval = store._channel_ids(conn, store.INTERVAL_CHANNELS)
        periods = (
            (T0.date(), DAYS),
            (T0.date() + timedelta(days=9), 5),
            (date(2025, 2, 1), 28),
            (date(2025, 2, 10), 20),
        )
        for start, n_days in periods:
            daily, export, feeder, any_import, with_interval = store._register_grids(
                conn, start, n_days, row_of, len(customers), feeder_row, 1, interval
            )
            old = _grids_from_the_aggregate(conn, start, n_days, row_of, len(customers), feeder_row, 1)
            np.testing.assert_array_equal(daily, old[0])
            assert export is not None
            np.testing.assert_array_equal(export, old[1])
            np.testing.assert_array_equal(feeder, old[2])
            assert any_import
            assert with_interval == ({ids["C3"]} if start < date(2025, 2, 4) else set())  # C3: Jan 30 … Feb 3

        data = store.load_from_database(conn, T0.date(), T0.date() + timedelta(days=DAYS))
    k = data.serials.index("C1")
    assert np.isnan(data.daily[k, 7]) and np.isnan(data.daily[k, 31])  # days never read
    assert data.daily[k, 20] == pytest.approx(1234.5 - (1000 + 10 * 19 + 7.25))  # the edit
    assert data.daily[k, 6] == pytest.approx(10.0)  # a late day
    assert data.export is not None and "T1" in data.feeders


def test_the_period_comes_from_the_read_counts(fleet):
    from analytics.theft.store import load_from_database

    db = fleet
    _write(db, _readings(range(0, 12), skip=set()))
    # The last day partial: only the feeder read.
    _write(db, [Reading("F1", "1-0:1.8.0", T0 + timedelta(days=12, hours=1), 2e5, "kWh")])
    with db.connect() as conn:
        data = load_from_database(conn)
    assert (data.first_day, data.n_days) == (T0.date(), 12)
