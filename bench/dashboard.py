"""Server time to first render of the control room and the fraud page, with 100,000 meters.

    python bench/dashboard.py [--meters 100000] [--hours 24] [--repeat 5]

Builds the registry in bulk with SQL ``generate_series`` (areas of 100 customers with a feeder meter
each, service points with coordinates, installations, accounts), hourly main-register reads for the
last ``--hours`` hours (2 % of the meters silent, 3 % late), the daily aggregate and ``meter_last_read``
(as ``releve db refresh`` leaves them after the load), meter events, open VEE exceptions and a theft
ranking of 2,000 candidates. Then, through Flask's test client (no network, no browser), it times
everything the server does for a first render of a page: the index HTML, the layout, the
dependencies, and every callback the page fires on load — the router, the page's data callbacks and
its server-side table (first page). "Cold" computes the fleet state inside the render, as on the
very first view after the server starts: aggregated in SQL (per area, line and state, and the map's
points), against the baseline of the same cold view by the previous path (every meter's row fetched
into Python and aggregated there), the two interleaved; "steady state" finds it ready, as every
later view does (it is refreshed by a background thread once older than the refresh period). Prints
median and worst of ``--repeat`` renders, and the 1-minute load average of the machine during the run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_database
from dashboards import queries_base as qb
from dashboards.queries_base import FLEET_SUMMARY_SQL, MAP_POINTS, FleetSnapshot
from releve.db import connect, refresh_daily

FILL = """
INSERT INTO ingest_batch (id, batch_key, origin, min_ts, max_ts, n_rows, n_inserted)
VALUES (1, gen_random_uuid(), 'bench', %(t0)s, %(t1)s, 0, 0);
INSERT INTO area (code, kind, commodity, name, technical_loss_pct, latitude, longitude)
SELECT format('T%%05s', a), 'transformer', 'electricity', '', 5.5,
       48.6 + (a %% 40) * 0.012, 2.1 + (a / 40) * 0.018
FROM generate_series(1, %(areas)s) a;
INSERT INTO meter (serial, commodity, model, unit, protocol, address)
SELECT (30000000 + i)::text, 'electricity', CASE i %% 3 WHEN 0 THEN 'sdm120' WHEN 1 THEN 'sdm630' ELSE 'gen-counter16' END,
       'kWh', CASE i %% 4 WHEN 0 THEN 'mqtt' WHEN 1 THEN 'modbus-rtu' ELSE 'modbus-tcp' END,
       jsonb_build_object('uri', CASE i %% 4 WHEN 0 THEN 'mqtt://ttn/' || i WHEN 1 THEN format('rtu://line%%s/%%s', i %% 50, i %% 30 + 1)
                                        ELSE format('tcp://10.%%s.%%s.1:502/%%s', i / 7500, (i / 30) %% 250, i %% 30 + 1) END)
FROM generate_series(1, %(meters)s + %(areas)s) i;
UPDATE area a SET feeder_meter_id = m.id FROM meter m WHERE m.id = %(meters)s + a.id;
INSERT INTO service_point (code, commodity, area_id, latitude, longitude)
SELECT format('SP%%07s', i), 'electricity', 1 + (i - 1) / 100,
       48.6 + ((1 + (i - 1) / 100) %% 40) * 0.012 + random() * 0.008,
       2.1 + ((1 + (i - 1) / 100) / 40) * 0.018 + random() * 0.012
FROM generate_series(1, %(meters)s) i;
INSERT INTO installation (meter_id, service_point_id, installed_at, install_index, reason)
SELECT i, i, %(t0)s::timestamptz - interval '400 days', 1000, 'initial' FROM generate_series(1, %(meters)s) i;
INSERT INTO customer (name) SELECT 'Customer ' || i FROM generate_series(1, %(meters)s) i;
INSERT INTO account (number, customer_id, service_point_id, billing_cycle, opened_on)
SELECT 'ACC' || i, i, i, chr(65 + i %% 4), '2025-01-01' FROM generate_series(1, %(meters)s) i;
"""

READS = """
INSERT INTO reading (meter_id, channel_id, ts, value, unit_id, source_id, read_type_id, received_at, batch_id)
SELECT m, %(ch)s, %(t1)s::timestamptz - make_interval(hours => h), 1000 + m %% 97 + (%(hours)s - h) * 0.4,
       %(unit)s, %(src)s, %(rt)s, now(), 1
FROM generate_series(1, %(meters)s + %(areas)s) m, generate_series(0, %(hours)s - 1) h
WHERE NOT (m %% 50 = 7)                 -- 2 %% silent
  AND NOT (m %% 33 = 5 AND h < 6)       -- 3 %% late (nothing in the last 6 hours)
ORDER BY m, h DESC
"""

EXTRA = """
INSERT INTO meter_event (meter_id, ts, kind, code, source_id, batch_id)
SELECT 1 + (i * 37) %% %(meters)s, %(t1)s::timestamptz - make_interval(mins => i),
       (ARRAY['power_fail', 'terminal_cover_open', 'magnetic_field', 'clock_adjusted'])[1 + i %% 4], NULL, %(src)s, 1
FROM generate_series(1, 5000) i ON CONFLICT DO NOTHING;
INSERT INTO vee_exception (meter_id, channel_id, ts, rule, severity, value, message)
SELECT 1 + (i * 13) %% %(meters)s, %(ch)s, %(t1)s::timestamptz - make_interval(hours => i %% %(hours)s),
       (ARRAY['HILO_HIGH', 'ZERO', 'FROZEN', 'GAP'])[1 + i %% 4], 'warning', 1000, 'bench exception'
FROM generate_series(1, 50000) i ON CONFLICT DO NOTHING;
INSERT INTO theft_run (source, n_meters, n_candidates) VALUES ('bench', %(meters)s, 2000);
INSERT INTO theft_candidate (run_id, rank, serial, meter_id, area, commodity, customer_class, latitude, longitude,
                             risk, expected_value, unbilled_energy, signal, reasons, evidence, inputs)
SELECT 1, r, (30000000 + m)::text, m, format('T%%05s', 1 + (m - 1) / 100), 'electricity', 'residential', 48.7, 2.3,
       1 - r / 4000.0, 5000.0 / r, 100.0 / r, 'drop',
       '["consumption fell 60 %% and stayed down", "terminal cover opened"]'::jsonb, '{}'::jsonb, '{}'::jsonb
FROM (SELECT r, 1 + (r * 7919) %% %(meters)s AS m FROM generate_series(1, 2000) r) x;
"""


def fill(url: str, meters: int, hours: int) -> None:
    """The bench fleet, in bulk."""
    from datetime import UTC, datetime, timedelta

    t1 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    t0 = t1 - timedelta(hours=hours)
    areas = meters // 100
    with connect(url, autocommit=True) as conn:
        ids = {
            name: conn.execute(q, (v,)).fetchone()[0]
            for name, q, v in (  # type: ignore[index]
                ("ch", "SELECT id FROM channel WHERE code = %s", "1-0:1.8.0"),
                ("unit", "SELECT id FROM unit WHERE code = %s", "kWh"),
                ("src", "SELECT id FROM reading_source WHERE name = %s", "import"),
                ("rt", "SELECT id FROM read_type WHERE name = %s", "actual"),
            )
        }
        p = {"meters": meters, "areas": areas, "hours": hours, "t0": t0, "t1": t1, **ids}
        for statement in FILL.split(";\n"):
            if statement.strip():
                conn.execute(statement, p)
        conn.execute("SELECT ensure_reading_partitions(%s, %s)", (t0 - timedelta(days=1), t1))
        started = time.perf_counter()
        conn.execute(READS, p)
        print(
            f"  {conn.execute('SELECT count(*) FROM reading_all').fetchone()[0]:,} readings in "  # type: ignore[index]
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        conn.execute("UPDATE ingest_batch SET n_rows = (SELECT count(*) FROM reading_all), n_inserted = n_rows")
        refresh_daily(url)  # what `releve db refresh` does after ingest: the daily aggregate and meter_last_read
        for statement in EXTRA.split(";\n"):
            if statement.strip():
                conn.execute(statement, p)
        conn.execute("ANALYZE")


#: Where each meter is, as the fleet state read it from ``meter_topology`` (migration 0017) …
_TOPOLOGY = """m.area_id,
                   coalesce(ch.collector, m.protocol) AS collector, coalesce(ch.link, m.line) AS link,
                   m.latitude, m.longitude,"""
_FROM_TOPOLOGY = "FROM (SELECT t.meter_id AS id, t.* FROM meter_topology t) m"
#: … and as it was derived from the registry on every view before (the previous query, timed beside it).
_REGISTRY = f"""coalesce(sp.area_id, fa.id) AS area_id,
                   coalesce(ch.collector, m.protocol) AS collector, {qb._LINK} AS link,
                   coalesce(sp.latitude, fa.latitude) AS latitude, coalesce(sp.longitude, fa.longitude) AS longitude,"""
_FROM_REGISTRY = "FROM meter m"
_JOINS = f"""{qb._HEALTH}
            LEFT JOIN installation i ON i.meter_id = m.id AND i.removed_at IS NULL
            LEFT JOIN service_point sp ON sp.id = i.service_point_id
            LEFT JOIN area fa ON fa.feeder_meter_id = m.id
"""
assert _TOPOLOGY in FLEET_SUMMARY_SQL and _FROM_TOPOLOGY in FLEET_SUMMARY_SQL and qb._HEALTH in FLEET_SUMMARY_SQL
PREVIOUS_SUMMARY_SQL = (
    FLEET_SUMMARY_SQL.replace(_TOPOLOGY, _REGISTRY)
    .replace(_FROM_TOPOLOGY, _FROM_REGISTRY)
    .replace(qb._HEALTH, _JOINS)
    .replace("AS every FROM meter_topology", "AS every FROM meter")
)


class Renderer:
    """Replays what a browser asks of the server for one page's first render."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.client = app.server.test_client()

    def callback(self, output: str, values: dict[str, Any]) -> Any:
        """Call one callback (keyed by its output string) with input/state values by ``id.prop``."""
        spec = self.app.callback_map[output]

        def items(kind: str) -> list[dict[str, Any]]:
            return [
                {"id": x["id"], "property": x["property"], "value": values.get(f"{x['id']}.{x['property']}")}
                for x in spec[kind]
            ]

        outs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in output.strip(".").split("...")]
        body = {
            "output": output,
            "outputs": outs if output.startswith("..") else outs[0],
            "inputs": items("inputs"),
            "state": items("state"),
            "changedPropIds": [],
        }
        reply = self.client.post("/_dash-update-component", json=body)
        assert reply.status_code in (200, 204), (output, reply.status_code, reply.get_data(as_text=True)[:500])
        return reply

    def find(self, *ids: str) -> str:
        """The callback key whose outputs are exactly ``ids`` (id.prop)."""
        want = set(ids)
        for key in self.app.callback_map:
            if set(key.strip(".").split("...")) == want:
                return str(key)
        raise KeyError(ids)

    def shell(self, path: str) -> None:
        for url in (path, "/_dash-layout", "/_dash-dependencies"):
            reply = self.client.get(url)
            assert reply.status_code == 200, (url, reply.status_code)
        self.callback(self.find("topbar.children", "page.children"), {"url.pathname": path})

    def control_room(self) -> None:
        self.shell("/")
        self.callback(
            self.find(
                "cr-clock.children",
                "cr-kpis.children",
                "cr-by-area.figure",
                "cr-map.figure",
                "cr-by-link.children",
                "cr-links.children",
                "cr-ingest.figure",
                "cr-events.children",
            ),
            {"cr-tick.n_intervals": 0},
        )
        self.callback(
            self.find("cr-meters.data", "cr-meters.page_count"),
            {
                "cr-meters.page_current": 0,
                "cr-meters.page_size": 15,
                "cr-meters.sort_by": [],
                "cr-meters.filter_query": "",
                "cr-tick.n_intervals": 0,
            },
        )

    def login(self, user: str, password: str) -> None:
        page = self.client.get("/login").get_data(as_text=True)
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match
        reply = self.client.post(
            "/login", data={"csrf": match.group(1), "next": "/", "username": user, "password": password}
        )
        assert reply.status_code == 302

    def fraud(self) -> None:
        self.shell("/fraud")
        self.callback(
            self.find("fr-list.data", "fr-list.page_count", "fr-list.selected_rows", "fr-kpis.children"),
            {
                "fr-list.page_current": 0,
                "fr-list.page_size": 10,
                "fr-list.sort_by": [],
                "fr-list.filter_query": "",
                "fr-run.value": 1,
                "fr-area.value": None,
                "fr-commodity.value": None,
                "fr-signal.value": None,
                "fr-min-value.value": None,
                "fr-hide.value": [],
                "fr-changed.data": 0,
            },
        )
        self.callback(self.find("fr-balance.figure"), {"fr-balance-area.value": "T00001"})


def database_processes(url: str) -> list[Any]:
    """The database server's processes (the postmaster and its children), for their CPU time."""
    import psutil

    with connect(url, autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        postmaster = psutil.Process(backend).parent()
    return [postmaster]


def cpu_seconds(servers: list[Any]) -> float:
    """CPU time of this process and of every process of the database server (those that exited excluded)."""
    total = time.process_time()
    for server in servers:
        for proc in [server, *server.children()]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except Exception:  # a backend that exited meanwhile
                continue
    return total


@dataclass
class Times:
    """Wall and CPU seconds of each timed call. CPU is this process's and the database server's: the machine is
    shared, so wall time measures the load as much as the code; CPU time much less."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def __iadd__(self, other: Times) -> Times:
        self.wall += other.wall
        self.cpu += other.cpu
        return self


def timed(fn: Any, repeat: int, before: Any = None, servers: list[Any] | None = None) -> Times:
    out = Times()
    for _ in range(repeat):
        if before:
            before()
        c = cpu_seconds(servers or [])
        t = time.perf_counter()
        fn()
        out.wall.append(time.perf_counter() - t)
        out.cpu.append(cpu_seconds(servers or []) - c)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("RELEVE_DASHBOARD_SECRET", "bench")
    with bench_database() as (url, settings, where):
        print(f"server: {where}", file=sys.stderr)
        started = time.perf_counter()
        fill(url, args.meters, args.hours)
        print(f"  fleet of {args.meters:,} meters built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        from dashboards.app import create_app
        from dashboards.auth import ROLES, add_user

        with connect(url, autocommit=True) as conn:
            add_user(conn, "bench", "bench-password", list(ROLES), replace=True)
        app = create_app(url, settings)
        r = Renderer(app)
        r.login("bench", "bench-password")
        r.control_room()  # warm-up: imports, pools, plans
        counts = app.queries.snapshot().counts()
        print(f"  states: {counts}", file=sys.stderr)

        def drop_snapshot() -> None:
            with app.queries._refreshing:  # no background refresh in flight: the render computes it itself
                app.queries._snapshot = None

        def in_python() -> FleetSnapshot:  # the previous path: every meter's row fetched and aggregated in Python
            as_of, rows = app.queries.fleet_rows()
            return FleetSnapshot.from_rows(as_of, rows, time.monotonic())

        in_sql = app.queries._compute_snapshot

        def aggregated_in_sql() -> None:
            app.queries._compute_snapshot = in_sql
            drop_snapshot()

        def aggregated_in_python() -> None:
            app.queries._compute_snapshot = in_python
            drop_snapshot()

        # Cold views with the state aggregated in SQL and in Python, interleaved so that a load that changes during
        # the run (the machine is shared) weighs on both alike.
        load = [os.getloadavg()[0]]
        servers = database_processes(url)
        cold, baseline = Times(), Times()
        for _ in range(args.repeat):
            cold += timed(r.control_room, 1, aggregated_in_sql, servers)
            baseline += timed(r.control_room, 1, aggregated_in_python, servers)
        aggregated_in_sql()
        load.append(os.getloadavg()[0])
        warm = timed(r.control_room, args.repeat, servers=servers)
        fraud = timed(r.fraud, args.repeat, servers=servers)

        def previous_summary() -> FleetSnapshot:  # the fleet state in SQL, each meter's place joined from the registry
            with app.queries.read.connection() as conn:
                as_of = app.queries.as_of(conn)
                with conn.transaction():
                    conn.execute("SET LOCAL work_mem = '64MB'")
                    rows = qb._rows(
                        conn, PREVIOUS_SUMMARY_SQL, {**app.queries.fleet_params(as_of), "points": MAP_POINTS}
                    )
            return FleetSnapshot.from_summary(as_of, rows, time.monotonic())

        before, now = previous_summary(), app.queries.fleet_summary()
        assert (before.by("area"), before.by("link"), before.placed) == (now.by("area"), now.by("link"), now.placed)
        summary, previous, python = Times(), Times(), Times()
        for _ in range(args.repeat):
            summary += timed(app.queries.fleet_summary, 1, servers=servers)
            previous += timed(previous_summary, 1, servers=servers)
            python += timed(in_python, 1, servers=servers)
        page = timed(
            lambda: app.queries.meter_page(
                3, 15, [{"column_id": "state", "direction": "desc"}], "{area} contains T001"
            ),
            args.repeat,
            servers=servers,
        )
        load.append(os.getloadavg()[0])
        app.queries.close()
    print(
        f"dashboards, {args.meters:,} meters ({args.hours} h of hourly reads), server time to first render "
        f"(1-minute load average {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} cores):"
    )
    for name, xs in (
        ("control room, cold (fleet state aggregated in SQL in the request)", cold),
        ("  baseline: the same, every meter's row aggregated in Python", baseline),
        ("control room, steady state (state refreshed in background)", warm),
        ("fraud page (2,000 candidates, balance of one area)", fraud),
        ("  of which: fleet state aggregated in SQL (places from meter_topology)", summary),
        ("  of which, previous: the same, places joined from the registry", previous),
        ("  of which, baseline: every meter's row to Python, aggregated", python),
        ("  meter table page, filtered + sorted on state", page),
    ):
        print(
            f"  {name:<66} median {statistics.median(xs.wall) * 1000:7.0f} ms   worst {max(xs.wall) * 1000:7.0f} ms"
            f"   CPU {statistics.median(xs.cpu) * 1000:6.0f} ms"
        )

    def ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(a) / statistics.median(b)

    print(
        f"  cold view = {ratio(cold.wall, baseline.wall):.2f} x the baseline ({ratio(cold.cpu, baseline.cpu):.2f} x in "
        f"CPU), {ratio(cold.wall, warm.wall):.2f} x the steady state; fleet state in SQL = "
        f"{ratio(summary.wall, python.wall):.2f} x in Python ({ratio(summary.cpu, python.cpu):.2f} x in CPU), "
        f"{ratio(summary.wall, previous.wall):.2f} x the previous query ({ratio(summary.cpu, previous.cpu):.2f} x "
        f"in CPU)"
    )
    print(
        "  CPU: this process and the database server's processes, the machine's other work excluded; on an idle "
        "machine the wall time of a view is close to it (one request uses one core at a time)"
    )


if __name__ == "__main__":
    main()
