"""Interval data placed in its UTC day and local weekday and hour, held to PostgreSQL's own time-zone arithmetic.

``billing.intervals`` reads each determinant's intervals with one binary COPY and places them in
numpy; these tests group the same intervals in SQL (``AT TIME ZONE``, ``extract``) as the bill run
once did, in zones with daylight saving changes inside the window and with half-hour offsets, with
rows and blocks both holding intervals.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import numpy as np
import psycopg
import pytest

from billing.intervals import load_intervals
from releve.model import INTERVAL_CHANNEL, Reading, ReadType, Source

from .fleet import Fleet, write

START = datetime(2026, 3, 5, tzinfo=UTC)  # the window holds Europe's and North America's spring changes
END = datetime(2026, 4, 2, tzinfo=UTC)
STEP = timedelta(minutes=15)

SQL = """SELECT s.key, ((v.ts - make_interval(secs => coalesce(c.interval_s, 900))) AT TIME ZONE 'UTC')::date,
                extract(isodow FROM (v.ts - make_interval(secs => coalesce(c.interval_s, 900))) AT TIME ZONE %(tz)s)::int,
                extract(hour FROM (v.ts - make_interval(secs => coalesce(c.interval_s, 900))) AT TIME ZONE %(tz)s)::int,
                sum(v.value), max(v.value), count(*)
         FROM unnest(%(keys)s::integer[], %(meters)s::integer[], %(los)s::timestamptz[], %(his)s::timestamptz[])
              AS s(key, meter_id, lo, hi)
         JOIN validated_reading v ON v.meter_id = s.meter_id AND v.ts > s.lo AND v.ts <= s.hi
         JOIN channel c ON c.id = v.channel_id AND c.code = ANY(%(ch)s)
         WHERE v.value IS NOT NULL
         GROUP BY 1, 2, 3, 4"""


@pytest.fixture
def intervals(db):
    """Two meters' 15-minute data over four weeks (gaps, a few rows inside blocks' days), and two windows each."""
    rng = random.Random(5)
    f = Fleet(db)
    ids = [f.meter(f"M-iv{i}", commodity="electricity") for i in range(2)]
    readings = []
    for i in range(2):
        t = START + STEP
        while t <= END:
            if rng.random() > 0.03:  # a few missing intervals: days as rows and blocks alike
                readings.append(
                    Reading(
                        f"M-iv{i}", "1-0:1.29.0", t, round(rng.uniform(0, 2), 3), "kWh", Source.MODBUS, ReadType.ACTUAL
                    )
                )
            t += STEP
    write(db, readings)
    windows = [
        (1, ids[0], START, END),
        (2, ids[1], START + timedelta(days=3, hours=5), END - timedelta(days=2, minutes=45)),
        (3, ids[0], START + timedelta(days=20), START + timedelta(days=25)),
    ]
    return windows


@pytest.mark.parametrize("tz", ["Europe/Paris", "America/St_Johns", "Asia/Kolkata", "Asia/Kathmandu", "UTC"])
def test_intervals_fall_in_the_utc_day_and_local_weekday_and_hour_sql_gives(db, intervals, tz):
    with psycopg.connect(db.url) as conn:
        assert conn.execute("SELECT count(*) FROM reading_block").fetchone()[0] > 0
        want = {
            (k, d, dow, hour): (total, peak, n)
            for k, d, dow, hour, total, peak, n in conn.execute(
                SQL,
                {
                    "tz": tz,
                    "ch": list(INTERVAL_CHANNEL.values()),
                    "keys": [w[0] for w in intervals],
                    "meters": [w[1] for w in intervals],
                    "los": [w[2] for w in intervals],
                    "his": [w[3] for w in intervals],
                },
            )
        }
        iv = load_intervals(conn, intervals, tz)
    got: dict[tuple[int, date, int, int], list[float]] = defaultdict(lambda: [0.0, -np.inf, 0])
    for key, day, cell, value in zip(iv.key, iv.day, iv.cell, iv.value, strict=True):
        g = got[(int(key), date(2000, 1, 1) + timedelta(days=int(day)), int(cell) // 24 + 1, int(cell) % 24)]
        g[0] += float(value)
        g[1] = max(g[1], float(value))
        g[2] += 1
    assert got.keys() == want.keys()
    for cell, (total, peak, n) in want.items():
        assert got[cell][0] == pytest.approx(total, abs=1e-9)
        assert (got[cell][1], got[cell][2]) == (peak, n)
    assert {int(k) for k in iv.key} == {1, 2, 3}
    assert iv.of(2).stop - iv.of(2).start == sum(n for (k, *_), (_, _, n) in want.items() if k == 2)
