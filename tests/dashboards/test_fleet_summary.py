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
            areas.append(
                conn.execute(
                    "INSERT INTO area (code, kind, commodity, latitude, longitude) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (
                        f"A{k}",
                        "transformer" if commodity == "electricity" else "dma",
                        commodity,
                        rng.choice([None, 48.5 + k]),
                        2.0 + k,
                    ),
                ).fetchone()[0]
            )
        meters = []
        for i in range(n):
            commodity = rng.choice(["electricity", "water"])
            protocol = rng.choice(["modbus-tcp", "modbus-rtu", "mqtt", "manual", "import"])
            address = rng.choice(
                [
                    {"uri": f"tcp://10.0.{i % 3}.1:502/{i % 7 + 1}"},
                    {"uri": f"rtu://line{i % 2}/{i % 5 + 1}"},
                    {"uri": "mqtt://ttn/"},
                    {"uri": "noslash"},
                    {"uri": "tcp://gw"},
                    {"topic": f"site/{i % 2}"},
                    {},
                ]
            )
            meter_id = conn.execute(
                "INSERT INTO meter (serial, commodity, model, unit, protocol, address) "
                "VALUES (%s, %s, 'test', %s, %s, %s::jsonb) RETURNING id",
                (f"S{i:04d}", commodity, UNITS[commodity], protocol, json.dumps(address)),
            ).fetchone()[0]
            meters.append((f"S{i:04d}", commodity, meter_id))
            place = rng.random()
            if place < 0.1:  # a feeder meter: its area is the one it feeds
                conn.execute(
                    "UPDATE area SET feeder_meter_id = %s WHERE id = %s AND feeder_meter_id IS NULL",
                    (meter_id, rng.choice(areas)),
                )
            elif place < 0.85:
                sp = conn.execute(
                    "INSERT INTO service_point (code, commodity, area_id, latitude, longitude) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (
                        f"SP{i}",
                        commodity,
                        rng.choice([None, *areas]),
                        rng.choice([None, 48.7, 48.8]),
                        rng.choice([None, 2.3, 2.4]),
                    ),
                ).fetchone()[0]
                removed = rng.random() < 0.15
                conn.execute(
                    "INSERT INTO installation (meter_id, service_point_id, installed_at, removed_at, removal_index) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (
                        meter_id,
                        sp,
                        now - timedelta(days=400),
                        now - timedelta(days=3) if removed else None,
                        100.0 if removed else None,
                    ),
                )
            for collector in rng.choice([[], [], [], ["gw-a"], ["gw-b"], ["gw-a", "gw-b"]]):  # some meters have two
                conn.execute(
                    "INSERT INTO comm_health (collector, serial, link, consecutive_failures, last_good, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        collector,
                        f"S{i:04d}",
                        rng.choice(["tcp://10.9.9.9:502", "rtu://bus1"]),
                        rng.choice([0, 0, 1, 2, 5]),
                        rng.choice(
                            [None, now - timedelta(minutes=5), now - timedelta(hours=3), now - timedelta(days=2)]
                        ),
                        now - timedelta(minutes=rng.randrange(0, 600)),
                    ),
                )

    def reads(ages: list[timedelta]) -> list[Reading]:
        out = []
        for serial, commodity, _ in meters:
            age = rng.choice(ages)
            if age is not None:
                out.append(Reading(serial, MAIN_REGISTER[commodity], now - age, 10.0, UNITS[commodity]))
        return out

    ages = [
        None,
        timedelta(minutes=20),
        timedelta(hours=1),
        timedelta(hours=5),
        timedelta(hours=30),
        timedelta(days=10),
    ]
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


def _same_as_python(queries) -> None:
    """The fleet state aggregated in SQL (from ``meter_topology``) equals every meter's row (from the registry)."""
    from dashboards.queries_base import FleetSnapshot

    as_of, rows = queries.fleet_rows()
    python = FleetSnapshot.from_rows(as_of, rows, 0.0)
    sql = queries.fleet_summary(as_of)
    assert sql.counts() == python.counts() and sql.meters == python.meters == len(rows)
    assert sql.by("area") == python.by("area")
    assert sql.by("link") == python.by("link")
    assert sql.placed == python.placed
    key = ("serial", "area", "link", "state", "latitude", "longitude")
    assert sorted(tuple(p[k] for k in key) for p in sql.points) == sorted(
        tuple(p[k] for k in key) for p in python.points
    )


@pytest.mark.db
def test_the_topology_follows_the_registry_in_the_same_transaction(db):
    """An installation moved to another area, one removed, a meter added (and installed), a service point moved
    to another area with new coordinates, an area given another feeder meter, a meter's address changed:
    each is in the fleet state at once, with no refresh in between."""
    from dashboards.queries import Queries

    _random_fleet(db, 3, 120)
    now = datetime.now(UTC).replace(microsecond=0)
    queries = Queries(db.url, db.settings)

    def topology(conn, serial: str):
        return conn.execute(
            "SELECT t.area_id, t.latitude, t.longitude, t.line FROM meter_topology t JOIN meter m ON m.id = t.meter_id "
            "WHERE m.serial = %s",
            (serial,),
        ).fetchone()

    try:
        _same_as_python(queries)
        with db.connect() as conn:
            areas = [a for (a,) in conn.execute("SELECT id FROM area ORDER BY id")]
            installed = conn.execute(
                """SELECT i.id, i.meter_id, m.serial, sp.area_id, m.commodity FROM installation i
                   JOIN meter m ON m.id = i.meter_id JOIN service_point sp ON sp.id = i.service_point_id
                   WHERE i.removed_at IS NULL ORDER BY i.id"""
            ).fetchall()
            # moved: the open installation closed, the meter installed at a new service point in another area
            inst, meter_id, serial, area, commodity = installed[0]
            other = next(a for a in areas if a != area)
            conn.execute(
                "UPDATE installation SET removed_at = %s, removal_index = 5 WHERE id = %s",
                (now - timedelta(hours=1), inst),
            )
            sp = conn.execute(
                "INSERT INTO service_point (code, commodity, area_id, latitude, longitude) "
                "VALUES ('SP-moved', %s, %s, 45.5, 4.5) RETURNING id",
                (commodity, other),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO installation (meter_id, service_point_id, installed_at) VALUES (%s, %s, %s)",
                (meter_id, sp, now - timedelta(hours=1)),
            )
            conn.commit()
            assert topology(conn, serial)[:3] == (other, 45.5, 4.5)
        _same_as_python(queries)

        with db.connect() as conn:
            _, _, removed_serial, _, _ = installed[1]
            conn.execute(
                "UPDATE installation SET removed_at = %s, removal_index = 9 WHERE id = %s",
                (now - timedelta(minutes=5), installed[1][0]),
            )
            conn.execute("DELETE FROM installation WHERE id = %s", (installed[2][0],))  # entered by mistake
            # a service point moved to another area, with new coordinates
            sp_id, sp_area = conn.execute(
                "SELECT service_point_id, sp.area_id FROM installation i JOIN service_point sp "
                "ON sp.id = i.service_point_id WHERE i.id = %s",
                (installed[3][0],),
            ).fetchone()
            conn.execute(
                "UPDATE service_point SET area_id = %s, latitude = 46.0, longitude = 5.0 WHERE id = %s",
                (next(a for a in areas if a != sp_area), sp_id),
            )
            # a new meter, installed at once; another one's address changed to a new line
            new_id = conn.execute(
                "INSERT INTO meter (serial, commodity, model, unit, protocol, address) VALUES "
                "('S-new', 'electricity', 'test', 'kWh', 'modbus-tcp', '{\"uri\": \"tcp://10.7.7.7:502/3\"}') "
                "RETURNING id"
            ).fetchone()[0]
            sp_new = conn.execute(
                "INSERT INTO service_point (code, commodity, area_id, latitude, longitude) "
                "VALUES ('SP-new', 'electricity', %s, 47.0, 3.0) RETURNING id",
                (areas[0],),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO installation (meter_id, service_point_id, installed_at) VALUES (%s, %s, %s)",
                (new_id, sp_new, now - timedelta(days=1)),
            )
            conn.execute(
                """UPDATE meter SET address = '{"uri": "rtu://line9/4"}' WHERE serial = %s""", (installed[4][2],)
            )
            # an area fed by another meter: the previous feeder loses its place, the new one (not installed) gets it
            spare = conn.execute(
                "SELECT m.id FROM meter m WHERE NOT EXISTS (SELECT 1 FROM installation i WHERE i.meter_id = m.id "
                "AND i.removed_at IS NULL) AND NOT EXISTS (SELECT 1 FROM area a WHERE a.feeder_meter_id = m.id) "
                "ORDER BY m.id LIMIT 1"
            ).fetchone()[0]
            conn.execute("UPDATE area SET feeder_meter_id = %s WHERE id = %s", (spare, areas[1]))
            conn.commit()
            assert topology(conn, removed_serial)[:3] == (None, None, None)  # installed meters feed no area here
            assert topology(conn, installed[2][2])[:3] == (None, None, None)
            assert topology(conn, "S-new") == (areas[0], 47.0, 3.0, "tcp://10.7.7.7:502")
            assert topology(conn, installed[4][2])[3] == "rtu://line9"
            assert conn.execute("SELECT count(*) FROM meter_topology").fetchone()[0] == 121
        _same_as_python(queries)
    finally:
        queries.close()
