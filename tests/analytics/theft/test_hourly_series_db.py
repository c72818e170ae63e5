"""The hourly series a month a row (migration 0029) against the raw intervals and 0027's day rows, in a real PostgreSQL.

``hourly_series`` holds one row per meter, interval channel and UTC month (31 × 24 hours and 31
textures as big-endian float8). These tests hold it, through incremental refreshes, to the
figures 0027's day rows held — made here by 0027's own refresh function into a table of its own
— and to the hours summed straight from ``reading``; the reader to the same arrays; and the
upgrade's conversion of day rows to the same month rows; and the day totals beside them
(migration 0033) to the hours added in order. Hostile cases: a day with a missing
hour, two interval channels on one meter (15-minute and hourly), a meter whose only interval
lands on the first minutes of a month, late intervals into a month already refreshed, a period
starting and ending inside months.
"""

from __future__ import annotations

import importlib
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from releve.model import Reading

pytestmark = pytest.mark.db

T0 = datetime(2025, 1, 27, tzinfo=UTC)  # the data crosses into February and March
DAYS = 40
QUARTER = timedelta(minutes=15)
HOUR = timedelta(hours=1)

#: 0027's refresh, writing its day rows into ``hourly_days`` (the reference the month rows must equal).
_M27 = importlib.import_module("releve.migrations.0027_hourly_series")
REFERENCE = _M27.DDL[_M27.DDL.index("CREATE FUNCTION") :].replace("refresh_hourly_series", "refresh_hourly_days")
REFERENCE = REFERENCE.replace("hourly_series", "hourly_days")
# 0027's function read ``reading`` alone; readings now land as rows and blocks (migration 0030).
assert REFERENCE.count("FROM reading r JOIN") == 1
REFERENCE = REFERENCE.replace("FROM reading r JOIN", "FROM reading_all r JOIN")
REFERENCE_TABLE = """CREATE TABLE hourly_days (meter_id integer, channel_id smallint, day date,
                     value double precision[], texture double precision, PRIMARY KEY (meter_id, channel_id, day))"""


def _readings(days: range, skip_hour: tuple[int, int] | None = None) -> list[Reading]:
    """M1: quarter-hours (end-stamped); M2: quarter-hours on the electricity channel and hours on the
    water one (two interval channels); M3: only on the first hour of each month. ``skip_hour``:
    (day, hour) of M1 with no interval."""
    out: list[Reading] = []
    for k in days:
        day = T0 + timedelta(days=k)
        for q in range(96):
            if skip_hour is None or (k, q // 4) != skip_hour:
                out.append(
                    Reading("M1", "1-0:1.29.0", day + QUARTER * (q + 1), 0.05 + 0.01 * ((q * 7 + k) % 13), "kWh")
                )
            out.append(Reading("M2", "1-0:1.29.0", day + QUARTER * (q + 1), 0.1 + 0.003 * ((q + 3 * k) % 17), "kWh"))
        out += [Reading("M2", "8-0:1.29.0", day + HOUR * (h + 1), 0.02 * (h % 5) + 0.01 * k, "m3") for h in range(24)]
        if day.day == 1:
            out.append(Reading("M3", "1-0:1.29.0", day + QUARTER, 0.25, "kWh"))
    return out


@pytest.fixture
def fleet(db):
    """M1, M2, M3 registered, the water interval channel hourly, 0027's refresh beside 0029's; returns db."""
    db.add_meters(["M1", "M2", "M3"])
    with db.connect() as conn:
        conn.execute("UPDATE channel SET interval_s = 3600 WHERE code = '8-0:1.29.0'")
        conn.execute(REFERENCE_TABLE)
        conn.execute(REFERENCE.encode())
    return db


def _write(db, readings: list[Reading]) -> None:
    """Land a batch, then refresh the month rows (``refresh_hourly``) and the reference day rows over it."""
    from ingest import BatchWriter
    from releve.db import refresh_hourly

    with BatchWriter(db.url, db.settings) as writer:
        writer.write(readings)
    assert refresh_hourly(db.url)[0] == 1
    with db.connect() as conn:
        conn.execute("SELECT refresh_hourly_days(%s, %s)", (min(r.ts for r in readings), max(r.ts for r in readings)))


def _month_rows(conn) -> dict[tuple[int, int, date], tuple[bytes, float]]:
    """(meter, channel, day) → (the day's 24 hours as big-endian bytes, texture) for every day a month row holds.

    A day holds something when one of its hours is not NaN (0027 had a row for such days only).
    """
    out = {}
    for meter, channel, month, value, texture in conn.execute(
        "SELECT meter_id, channel_id, month, value, texture FROM hourly_series"
    ):
        assert month.day == 1 and len(value) == 31 * 24 * 8 and len(texture) == 31 * 8
        hours = np.frombuffer(value, ">f8").reshape(31, 24)
        tex = np.frombuffer(texture, ">f8")
        length = ((month.replace(day=28) + timedelta(days=4)).replace(day=1) - month).days
        assert np.isnan(hours[length:]).all() and np.isnan(tex[length:]).all()  # nothing past the month's end
        for d in range(31):
            if not np.isnan(hours[d]).all():
                out[(meter, channel, month + timedelta(days=d))] = (hours[d].tobytes(), float(tex[d]))
            else:
                assert np.isnan(tex[d])
    return out


def _day_rows(conn) -> dict[tuple[int, int, date], tuple[bytes, float]]:
    """0027's day rows in the same form."""
    return {
        (meter, channel, day): (np.asarray(value, ">f8").tobytes(), texture)
        for meter, channel, day, value, texture in conn.execute(
            "SELECT meter_id, channel_id, day, value, texture FROM hourly_days"
        )
    }


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0] == b[key][0], key  # the hours to the bit
        assert a[key][1] == b[key][1] or (np.isnan(a[key][1]) and np.isnan(b[key][1])), key


def test_the_month_rows_follow_incremental_refreshes_as_the_day_rows_did(fleet):
    db = fleet
    _write(db, _readings(range(0, 6), skip_hour=(3, 17)))  # January's end into February, M1 short of an hour
    _write(db, _readings(range(6, 20)))
    # Late: M1's missing hour arrives, into a month row already refreshed; M2's water channel a day later.
    late = [r for r in _readings(range(3, 4)) if r.meter == "M1" and (r.ts - QUARTER - T0) // HOUR % 24 == 17] + [
        r for r in _readings(range(20, 21)) if r.channel == "8-0:1.29.0"
    ]
    assert len(late) == 4 + 24
    _write(db, late)
    _write(db, _readings(range(21, DAYS)))  # into March
    with db.connect() as conn:
        months = _month_rows(conn)
        _same(months, _day_rows(conn))
        ids = dict(conn.execute("SELECT serial, id FROM meter").fetchall())
        water = conn.execute("SELECT id FROM channel WHERE code = '8-0:1.29.0'").fetchone()[0]
        # M3's lone quarter-hour lands in the first hour of February and of March: two days, one hour each
        assert sorted(d for m, _, d in months if m == ids["M3"]) == [date(2025, 2, 1), date(2025, 3, 1)]
        assert (ids["M2"], water, date(2025, 2, 16)) in months  # the late water day
        # Built whole in one refresh (as the bench does) it is the same series.
        conn.execute("DELETE FROM hourly_series")
        conn.execute("SELECT refresh_hourly_series(min(ts), max(ts)) FROM reading_all")
        _same(_month_rows(conn), months)


def test_a_day_missing_an_hour_is_nan_whole_and_two_channels_add_up_in_the_reader(fleet):
    from analytics.theft.store import INTERVAL_CHANNELS, _channel_ids, _HourlyReader

    db = fleet
    _write(db, _readings(range(0, 12), skip_hour=(5, 3)))
    with db.connect() as conn:
        ids = dict(conn.execute("SELECT serial, id FROM meter").fetchall())
        channels = _channel_ids(conn, INTERVAL_CHANNELS)
        days = _day_rows(conn)
        # Periods starting and ending inside months, and one past the data.
        for start, n_days in ((T0.date(), 12), (date(2025, 1, 30), 5), (date(2025, 2, 2), 20), (date(2025, 3, 1), 3)):
            lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
            reader = _HourlyReader(conn, channels, lo, lo + timedelta(days=n_days), n_days)
            meters = [ids["M2"], ids["M1"], ids["M3"]]
            got, texture = reader.read(meters), reader.texture(meters)
            # What 0027's reader made of its day rows: channels added in the order of their ids, a day
            # missing any hour NaN whole; the texture of the later channel where it has one.
            hours = np.zeros((3, n_days, 24))
            seen = np.zeros((3, n_days, 24), dtype=bool)
            expected_texture = np.full((3, n_days), np.nan)
            for (meter, _channel, day), (value, tex) in sorted(days.items(), key=lambda kv: (kv[0][2], kv[0][1])):
                j = (day - start).days
                if 0 <= j < n_days:
                    v = np.frombuffer(value, ">f8")
                    i = meters.index(meter)
                    hours[i, j] += np.where(np.isfinite(v), v, 0.0)
                    seen[i, j] |= np.isfinite(v)
                    if not np.isnan(tex):
                        expected_texture[i, j] = tex
            hours[~seen.all(axis=2)] = np.nan
            np.testing.assert_array_equal(got, hours)
            np.testing.assert_array_equal(texture, expected_texture)
            assert reader.any_data([ids["M1"]]) == bool(seen[1].any())
            assert reader.any_data([ids["M3"]]) == bool(seen[2].any())
        # The first period: M1's day 5 has 23 hours (NaN whole), M2's hours are its two channels summed.
        lo = datetime(T0.year, T0.month, T0.day, tzinfo=UTC)
        reader = _HourlyReader(conn, channels, lo, lo + timedelta(days=12), 12)
        m1, m2 = reader.read([ids["M1"], ids["M2"]])
        assert np.isnan(m1[5]).all() and np.isfinite(m1[6]).all()
        m2_electric = sum(
            r.value
            for r in _readings(range(2, 3))
            if r.meter == "M2"
            and r.channel == "1-0:1.29.0"
            and T0 + timedelta(days=2) < r.ts <= T0 + timedelta(days=2, hours=1)
        )
        assert m2[2, 0] == pytest.approx(m2_electric + 0.02 * 0 + 0.01 * 2)
        assert reader.any_data([ids["M3"]])  # its quarter-hour of February 1
        # From February 2: M3's February row is there, but none of its days in the period holds an hour.
        lo = datetime(2025, 2, 2, tzinfo=UTC)
        assert not _HourlyReader(conn, channels, lo, lo + timedelta(days=20), 20).any_data([ids["M3"]])


def test_the_upgrade_lays_the_day_rows_into_the_same_month_rows(fleet):
    migration = importlib.import_module("releve.migrations.0029_hourly_months")
    db = fleet
    _write(db, _readings(range(0, 10), skip_hour=(2, 0)))
    _write(db, _readings(range(12, 30)))  # a gap of two days
    with db.connect() as conn:
        refreshed = _month_rows(conn)
        conn.execute("DELETE FROM hourly_series")
        conn.execute("ALTER TABLE hourly_days RENAME TO hourly_series_0027")
        conn.execute(migration.UPGRADE.encode())
        raw = conn.execute("SELECT meter_id, channel_id, month, value, texture FROM hourly_series ORDER BY 1, 2, 3")
        rows = raw.fetchall()
        assert rows
        _same(_month_rows(conn), refreshed)
        conn.execute("DELETE FROM hourly_series")
        conn.execute("SELECT refresh_hourly_series(min(ts), max(ts)) FROM reading_all")
        assert (
            conn.execute(
                "SELECT meter_id, channel_id, month, value, texture FROM hourly_series ORDER BY 1, 2, 3"
            ).fetchall()
            == rows
        )


def test_the_texture_floor_is_0027s():
    migration = importlib.import_module("releve.migrations.0029_hourly_months")
    assert migration.TEXTURE_FLOOR == _M27.TEXTURE_FLOOR


def test_interval_only_meters_read_lazily_take_their_days_from_the_day_totals_to_the_bit(fleet):
    """Read lazily, a meter without a register takes its days from ``interval_day_series`` (one interval
    channel) or adds up its hours (M2: two channels), the whole read's days to the bit; its hours and
    texture come with the ranking's pass, as the whole read's."""
    from analytics.theft.data import LazyHourly
    from analytics.theft.store import load_from_database
    from releve.db import refresh_daily

    db = fleet
    _write(db, _readings(range(0, 20), skip_hour=(4, 9)))
    refresh_daily(db.url)
    with db.connect() as conn:
        whole = load_from_database(conn)
        lazy = load_from_database(conn, hourly_in_memory=0)
        m1 = lazy.serials.index("M1")
        assert not np.isfinite(lazy.texture[m1]).any()  # its days from the totals: no hour read yet
        assert np.isnan(lazy.daily[m1, 4]) and np.isfinite(lazy.daily[m1, 5])  # the day short of an hour
        np.testing.assert_array_equal(lazy.daily, whole.daily)
        chunks = [rows for rows, _ in lazy.hourly_chunks()]  # the ranking's hourly pass
        lazy_hours = lazy.hourly.load(np.arange(lazy.n_meters))  # (read while the connection is open)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(lazy.n_meters))
    assert isinstance(lazy.hourly, LazyHourly) and isinstance(whole.hourly, np.ndarray)
    assert np.isfinite(whole.texture).any() and np.isfinite(whole.daily).any()
    np.testing.assert_array_equal(lazy.texture, whole.texture)
    np.testing.assert_array_equal(lazy_hours, whole.hourly)


def _totals_are_the_hours_added_in_order(conn) -> int:
    """Every ``hourly_series`` row has its ``interval_day_series`` row, the days' hours added in hour order
    (as ``sum_in_order``: bit for bit), and no other row is there; returns the number of rows."""
    from releve.arrays import sum_in_order

    hours = {
        (m, c, month): np.frombuffer(v, ">f8").reshape(31, 24)
        for m, c, month, v in conn.execute("SELECT meter_id, channel_id, month, value FROM hourly_series")
    }
    totals = {
        (m, c, month): np.frombuffer(v, ">f8")
        for m, c, month, v in conn.execute("SELECT meter_id, channel_id, month, value FROM interval_day_series")
    }
    assert hours and totals.keys() == hours.keys()
    for key, h in hours.items():
        assert sum_in_order(h.astype(np.float64)).astype(">f8").tobytes() == totals[key].tobytes(), key
        assert (np.isnan(totals[key]) == np.isnan(h).any(axis=1)).all(), key  # NaN: a day missing any hour
    return len(hours)


def test_the_day_totals_follow_the_hours_through_incremental_refreshes_and_the_upgrade(fleet):
    migration = importlib.import_module("releve.migrations.0033_interval_day_series")
    db = fleet
    _write(db, _readings(range(0, 6), skip_hour=(3, 17)))  # M1's day 3 short of an hour: no total
    with db.connect() as conn:
        ids = dict(conn.execute("SELECT serial, id FROM meter").fetchall())
        _totals_are_the_hours_added_in_order(conn)
        day3 = conn.execute(
            "SELECT value FROM interval_day_series WHERE meter_id = %s AND month = '2025-01-01'", (ids["M1"],)
        ).fetchone()[0]
        assert np.isnan(np.frombuffer(day3, ">f8")[29])  # January 30
    _write(db, _readings(range(6, 20)))
    # The missing hour arrives late, into a month row already refreshed: the day gets its total.
    late = [r for r in _readings(range(3, 4)) if r.meter == "M1" and (r.ts - QUARTER - T0) // HOUR % 24 == 17]
    _write(db, late)
    _write(db, _readings(range(21, DAYS)))  # into March, a day skipped
    with db.connect() as conn:
        n = _totals_are_the_hours_added_in_order(conn)
        day3 = conn.execute(
            "SELECT value FROM interval_day_series WHERE meter_id = %s AND month = '2025-01-01'", (ids["M1"],)
        ).fetchone()[0]
        assert np.isfinite(np.frombuffer(day3, ">f8")[29])
        rows = conn.execute("SELECT * FROM interval_day_series ORDER BY 1, 2, 3").fetchall()
        # The upgrade's totals, made here from the same hours, are the refresh's.
        conn.execute("DELETE FROM interval_day_series")
        migration.fill(conn)
        assert _totals_are_the_hours_added_in_order(conn) == n
        assert conn.execute("SELECT * FROM interval_day_series ORDER BY 1, 2, 3").fetchall() == rows


def test_meters_with_a_register_read_lazily_get_their_texture_with_their_hours(fleet):
    """Read lazily, a meter with a register gets its texture from the ranking's pass over its hours (one read)."""
    from analytics.theft.store import load_from_database
    from releve.db import refresh_daily

    db = fleet
    registers = [Reading("M1", "1-0:1.8.0", T0 + timedelta(days=k), 1000.0 + 30 * k, "kWh") for k in range(21)]
    _write(db, _readings(range(0, 20)) + registers)
    refresh_daily(db.url)
    with db.connect() as conn:
        whole = load_from_database(conn)
        lazy = load_from_database(conn, hourly_in_memory=0)
        m1 = lazy.serials.index("M1")
        assert np.isfinite(lazy.daily[m1]).any() and np.isfinite(whole.texture[m1]).any()
        assert not np.isfinite(lazy.texture[m1]).any()  # not read with the load: it comes with the hours
        chunks = [rows for rows, _ in lazy.hourly_chunks()]  # the ranking's hourly pass
    assert sorted(np.concatenate(chunks).tolist()) == list(range(lazy.n_meters))
    np.testing.assert_array_equal(lazy.texture, whole.texture)
