"""The control room's fleet state aggregated in SQL equals every meter's row aggregated in Python.

A random fleet on real PostgreSQL: both commodities, every protocol and address shape, meters with and
without an installation, coordinates, an area, feeder meters, removed installations; reads fresh, late,
silent and never, some landed after the last ``releve db refresh``; collectors' rows with failed polls,
a link of their own and several rows per meter.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from releve.model import MAIN_REGISTER, Reading

UNITS = {"electricity": "kWh", "water": "m3"}


def _random_fleet(db, seed: int, n: int) -> None:
    from ingest import BatchWriter
    from releve.db import refresh_daily

    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    with db.connect() as conn:
        areas = []
        for k in range(4):
            commodity = "electricity" if k % 2 == 0 else "water"
            areas.append(conn.execute(
                "INSERT INTO area (code, kind, commodity, latitude, longitude) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (f"A{k}", "transformer" if commodity == "electricity" else "dma", commodity,
                 rng.choice([None, 48.5 + k]), 2.0 + k),
            ).fetchone()[0])  # fmt: skip
        meters = []
        for i in range(n):
            commodity = rng.choice(["electricity", "water"])
            protocol = rng.choice(["modbus-tcp", "modbus-rtu", "mqtt", "manual", "import"])
            address = rng.choice([
                {"uri": f"tcp://10.0.{i % 3}.1:502/{i % 7 + 1}"}, {"uri": f"rtu://line{i % 2}/{i % 5 + 1}"},
                {"uri": "mqtt://ttn/"}, {"uri": "noslash"}, {"uri": "tcp://gw"}, {"topic": f"site/{i % 2}"}, {},
            ])  # fmt: skip
            meter_id = conn.execute(
                "INSERT INTO meter (serial, commodity, model, unit, protocol, address) "
                "VALUES (%s, %s, 'test', %s, %s, %s::jsonb) RETURNING id",
                (f"S{i:04d}", commodity, UNITS[commodity], protocol, json.dumps(address)),
            ).fetchone()[0]
            meters.append((f"S{i:04d}", commodity, meter_id))
            place = rng.random()
            if place < 0.1:  # a feeder meter: its area is the one it feeds
                conn.execute("UPDATE area SET feeder_meter_id = %s WHERE id = %s AND feeder_meter_id IS NULL",
                             (meter_id, rng.choice(areas)))  # fmt: skip
            elif place < 0.85:
                sp = conn.execute(
                    "INSERT INTO service_point (code, commodity, area_id, latitude, longitude) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (f"SP{i}", commodity, rng.choice([None, *areas]), rng.choice([None, 48.7, 48.8]),
                     rng.choice([None, 2.3, 2.4])),
                ).fetchone()[0]  # fmt: skip
                removed = rng.random() < 0.15
                conn.execute(
                    "INSERT INTO installation (meter_id, service_point_id, installed_at, removed_at, removal_index) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (meter_id, sp, now - timedelta(days=400), now - timedelta(days=3) if removed else None,
                     100.0 if removed else None),
                )  # fmt: skip
            for collector in rng.choice([[], [], [], ["gw-a"], ["gw-b"], ["gw-a", "gw-b"]]):  # some meters have two
                conn.execute(
                    "INSERT INTO comm_health (collector, serial, link, consecutive_failures, last_good, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (collector, f"S{i:04d}", rng.choice(["tcp://10.9.9.9:502", "rtu://bus1"]),
                     rng.choice([0, 0, 1, 2, 5]),
                     rng.choice([None, now - timedelta(minutes=5), now - timedelta(hours=3), now - timedelta(days=2)]),
                     now - timedelta(minutes=rng.randrange(0, 600))),
                )  # fmt: skip

    def reads(ages: list[timedelta]) -> list[Reading]:
        out = []
        for serial, commodity, _ in meters:
            age = rng.choice(ages)
            if age is not None:
                out.append(Reading(serial, MAIN_REGISTER[commodity], now - age, 10.0, UNITS[commodity]))
        return out

    ages = [None, timedelta(minutes=20), timedelta(hours=1), timedelta(hours=5), timedelta(hours=30),
            timedelta(days=10)]  # fmt: skip
    with BatchWriter(db.url, db.settings) as writer:
        writer.write(reads(ages))
    refresh_daily(db.url)
    with BatchWriter(db.url, db.settings) as writer:  # landed after the refresh: the summary lags for these
        writer.write(reads([None, None, None, timedelta(minutes=10), timedelta(hours=4)]))


@pytest.mark.db
@pytest.mark.parametrize("seed", [1, 2])
def test_the_fleet_state_aggregated_in_sql_equals_every_meters_row_aggregated_in_python(db, seed, monkeypatch):
    import dashboards.queries_base as base
    from dashboards.queries import Queries
    from dashboards.queries_base import FleetSnapshot

    _random_fleet(db, seed, 160)
    queries = Queries(db.url, db.settings)
    try:
        as_of, rows = queries.fleet_rows()
        python = FleetSnapshot.from_rows(as_of, rows, 0.0)
        sql = queries.fleet_summary(as_of)
        monkeypatch.setattr(base, "MAP_POINTS", 25)  # fewer points than meters with coordinates: a sample
        sampled = queries.fleet_summary(as_of)
        first, total = queries.meter_page(1, 10, [], "")  # the first view's page: cut on the serial's index
        by_area, _ = queries.meter_page(0, 200, [{"column_id": "area", "direction": "asc"}], "")  # the registry's
    finally:
        queries.close()
    assert sql.counts() == python.counts() and sql.meters == python.meters == len(rows) == 160
    assert set(python.counts().values()) != {0} and min(python.counts().values()) > 0  # every state is there
    assert sql.by("area") == python.by("area")
    assert sql.by("link") == python.by("link")
    assert sql.placed == python.placed < 160
    key = ("serial", "area", "link", "state", "latitude", "longitude")
    every = sorted(tuple(r[k] for k in key) for r in rows if r["latitude"] is not None and r["longitude"] is not None)
    assert sorted(tuple(p[k] for k in key) for p in sql.points) == every  # no more than MAP_POINTS: all of them
    assert sorted(tuple(p[k] for k in key) for p in python.points) == every

    state = {r["serial"]: r["state"] for r in rows}
    placed = {r["serial"] for r in rows if r["latitude"] is not None and r["longitude"] is not None}
    shown = [p["serial"] for p in sampled.points]
    assert len(shown) == len(set(shown)) <= 25 and set(shown) <= placed
    trouble = sorted(s for s in placed if state[s] != "communicating")
    assert sorted(s for s in shown if state[s] != "communicating") == trouble[:25] or len(trouble) > 25
    assert all(p["state"] == state[p["serial"]] for p in sampled.points)
    assert sampled.counts() == python.counts() and sampled.placed == python.placed

    exact = {r["serial"]: r for r in by_area}
    assert total == 160 and [r["serial"] for r in first] == sorted(state)[10:20]
    assert all(r == exact[r["serial"]] for r in first)  # the same row as the page cut on the registry
