"""Modbus TCP and RTU (over pseudo-terminals) against the simulated fleet, into the real database."""

import re
import time
import urllib.request
from datetime import UTC, datetime

import psycopg
import pytest

from collectors.config import CollectorConfig
from collectors.service import Collector
from releve.model import CHANNELS
from releve.profiles import decode, encode, load_profile
from simulators.clock import SimClock
from simulators.config import parse_fleet
from simulators.engine import Simulation
from simulators.modbus import BackgroundModbus

pytestmark = pytest.mark.db

FROZEN = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def fleet():
    return Simulation(
        parse_fleet(
            {
                "seed": 11,
                "horizon_days": 30,
                "start": "2026-03-01T00:00:00Z",
                "topology": {"transformers": 1, "customers_per_transformer": 8, "dmas": 1, "customers_per_dma": 3},
                "modbus": {"tcp_base_port": 0, "rtu_lines": 1, "devices_per_line": 3, "devices_per_gateway": 8},
                "mqtt": {"electricity_share": 0.0},
                "theft": {"rate": 0.0},
                "faults": {"rate": 0.0},
            },
            "collector test fleet",
        )
    )


def register(db, sim, meters):
    with db.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, %s, %s, %s, 'modbus-tcp')",
            [(m.serial, m.commodity.value, m.model, m.unit) for m in meters],
        )


def collector_config(front, sim, tmp_path, dead_unit=None):
    gateways = [
        {
            "name": f"gw{i}",
            "host": gw.host,
            "port": gw.port,
            "timeout_s": 1.0,
            "meters": [
                {"serial": sim.meters[m].serial, "unit": u, "profile": sim.meters[m].model}
                for u, m in sorted(gw.store.units.items())
            ],
        }
        for i, gw in enumerate(front.gateways)
    ]
    lines = []
    for i, line in enumerate(front.lines):
        meters = [
            {"serial": sim.meters[m].serial, "unit": u, "profile": sim.meters[m].model}
            for u, m in sorted(line.store.units.items())
        ]
        if dead_unit is not None:
            meters.append({"serial": "DEAD-ON-LINE", "unit": dead_unit, "profile": "sdm120"})
        lines.append(
            {"name": f"line{i}", "port": line.path, "baudrate": line.baudrate, "timeout_s": 0.3, "meters": meters}
        )
    return CollectorConfig.model_validate(
        {
            "name": "modbus-test",
            "spool_dir": str(tmp_path / "spool"),
            "seal_seconds": 0.2,
            "modbus": {
                "periods": {"energy": 1.0, "instant": 1.0, "events": 1.0},
                "jitter": 0.0,
                "retries": 0,
                "backoff_base_s": 5.0,
                "gateways": gateways,
                "lines": lines,
            },
        }
    )


def health_failures(collector, serial):
    return next(m.health.failures for m in collector.poller.meters if m.serial == serial)


def expected_value(meter, channel, value):
    """What the register shows: the simulated value through the profile's encoding."""
    entry = meter.profile.entry(channel)
    return decode(entry, encode(entry, value))


def test_every_polled_reading_lands_once_with_the_value_the_simulator_shows(db, tmp_path):
    sim = fleet()
    clock = SimClock(FROZEN)
    clock.freeze(FROZEN)
    polled = [m for m in sim.meters if m.transport in ("tcp", "rtu")]
    assert {m.transport for m in polled} == {"tcp", "rtu"}
    register(db, sim, polled)
    with BackgroundModbus(sim, clock) as front:
        collector = Collector(collector_config(front, sim, tmp_path), db.settings, db.url)
        collector.start()
        time.sleep(3.5)
        collector.stop()
    health = {m.serial: m.health for m in collector.poller.meters}
    with psycopg.connect(db.url) as conn:
        rows = conn.execute(
            "SELECT m.serial, c.code, r.ts, r.value, u.code FROM reading_all r JOIN meter m ON m.id = r.meter_id "
            "JOIN channel c ON c.id = r.channel_id JOIN unit u ON u.id = r.unit_id"
        ).fetchall()
        rejected = conn.execute("SELECT count(*) FROM rejected_input").fetchone()[0]
    assert rejected == 0
    by_meter: dict[str, list] = {}
    for row in rows:
        by_meter.setdefault(row[0], []).append(row)
    for meter in polled:
        h = health[meter.serial]
        assert h.good >= 2 and h.failures == 0, (meter.serial, h)
        mine = by_meter[meter.serial]
        shown = sim.values_at(meter.index, FROZEN)
        # Exactly once: each good poll of a class gives each of its channels one row, at the poll's time.
        for entry in meter.profile.registers:
            if entry.kind == "status":
                continue
            rows_of_channel = sum(1 for r in mine if r[1] == entry.channel)
            assert rows_of_channel == h.good_by_class[entry.poll_class] >= 2, (meter.serial, entry.channel)
        assert len({(r[1], r[2]) for r in mine}) == len(mine)
        for _, channel, _, value, unit in mine:
            if channel == "0-0:1.0.0":
                continue
            assert value == pytest.approx(expected_value(meter, channel, shown[channel]), rel=1e-9, abs=1e-9), channel
            assert unit == (meter.profile.entry(channel).unit or CHANNELS[channel].unit)


def test_a_dead_meter_on_a_shared_rtu_line_does_not_stall_the_others(db, tmp_path):
    sim = fleet()
    clock = SimClock(FROZEN)
    clock.freeze(FROZEN)
    on_line = [m for m in sim.meters if m.transport == "rtu"]
    register(db, sim, on_line)
    with BackgroundModbus(sim, clock) as front:
        config = collector_config(front, sim, tmp_path, dead_unit=200)
        config.modbus.gateways.clear()
        config.metrics_port = 0
        collector = Collector(config, db.settings, db.url)
        collector.start()
        time.sleep(4.5)
        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{collector.metrics.port}/metrics", timeout=5).read().decode()
        )
        collector.stop()
    failed = re.search(
        r'releve_meter_polls_total\{collector="modbus-test",link="line0",meter="DEAD-ON-LINE",'
        r'outcome="failed"\} (\d+)',
        metrics,
    )
    assert failed and int(failed.group(1)) == health_failures(collector, "DEAD-ON-LINE") >= 1
    health = {m.serial: m.health for m in collector.poller.meters}
    with psycopg.connect(db.url) as conn:
        stored = dict(conn.execute("SELECT serial, consecutive_failures FROM comm_health").fetchall())
        line = conn.execute("SELECT kind, meters, failures FROM link_health WHERE link = 'line0'").fetchone()
    assert stored["DEAD-ON-LINE"] >= 1
    assert all(stored[m.serial] == 0 for m in on_line)
    assert line == ("rtu", len(on_line) + 1, health["DEAD-ON-LINE"].failures)
    dead = health["DEAD-ON-LINE"]
    assert dead.good == 0 and dead.failures >= 1
    assert dead.backed_off and dead.errors.get("timeout", 0) >= 1
    # Backed off after its first timeouts, the dead meter cost its line one timeout per poll class
    # in the whole window, not one per poll: that is what keeps the others on their cadence.
    classes_of_dead = len({e.poll_class for e in load_profile("sdm120").registers})
    assert dead.failures <= classes_of_dead
    # Four and a half seconds at one poll per second and class: the live meters kept their cadence.
    for meter in on_line:
        classes = {e.poll_class for e in meter.profile.registers}
        assert health[meter.serial].good >= 2 * len(classes)
        assert health[meter.serial].failures == 0


def test_collect_status_shows_links_and_the_failing_meter(db, tmp_path):
    import os
    import subprocess
    import sys

    sim = fleet()
    clock = SimClock(FROZEN)
    clock.freeze(FROZEN)
    register(db, sim, [m for m in sim.meters if m.transport == "rtu"])
    with BackgroundModbus(sim, clock) as front:
        config = collector_config(front, sim, tmp_path, dead_unit=200)
        config.modbus.gateways.clear()
        collector = Collector(config, db.settings, db.url)
        collector.start()
        time.sleep(2.0)
        collector.stop()
    path = tmp_path / "c.toml"
    path.write_text(f'name = "modbus-test"\nspool_dir = "{tmp_path / "spool"}"\n')
    env = {
        **os.environ,
        "RELEVE_DATABASE__URL": db.url,
        "RELEVE_DATABASE__ROLE_PREFIX": db.settings.database.role_prefix,
    }
    out = subprocess.run(
        [sys.executable, "-m", "releve.cli", "collect", "status", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "line0" in out and "rtu" in out
    worst = out.split("meters with the most failures")[1].splitlines()[1]
    assert "DEAD-ON-LINE" in worst and "never" in worst


def test_a_device_answering_after_its_timeout_never_lands_as_another_readings_value(db, tmp_path):
    sim = fleet()
    clock = SimClock(FROZEN)
    clock.freeze(FROZEN)
    on_line = [m for m in sim.meters if m.transport == "rtu"]
    slow = on_line[0]
    # The simulated device answers 0.5 s late on a line polled with a 0.3 s timeout and one retry:
    # each of its replies arrives while the collector is already waiting for another one.
    sim.response_delay = lambda meter, ts: 0.5 if meter == slow.index else 0.0  # type: ignore[method-assign]
    register(db, sim, on_line)
    with BackgroundModbus(sim, clock) as front:
        config = collector_config(front, sim, tmp_path)
        config.modbus.gateways.clear()
        config.modbus.retries = 1
        collector = Collector(config, db.settings, db.url)
        collector.start()
        time.sleep(4.0)
        collector.stop()
    health = {m.serial: m.health for m in collector.poller.meters}
    assert health[slow.serial].good == 0 and health[slow.serial].failures >= 1
    assert set(health[slow.serial].errors) <= {"timeout", "mismatch"}
    with psycopg.connect(db.url) as conn:
        rows = conn.execute(
            "SELECT m.serial, c.code, r.value FROM reading_all r JOIN meter m ON m.id = r.meter_id "
            "JOIN channel c ON c.id = r.channel_id"
        ).fetchall()
    assert not [r for r in rows if r[0] == slow.serial]
    by_serial = {m.serial: m for m in on_line}
    for serial, channel, value in rows:
        if channel == "0-0:1.0.0":
            continue
        meter = by_serial[serial]
        shown = sim.values_at(meter.index, FROZEN)
        assert value == pytest.approx(expected_value(meter, channel, shown[channel]), rel=1e-9, abs=1e-9), (
            serial,
            channel,
        )
    for meter in on_line[1:]:
        assert health[meter.serial].failures == 0 and health[meter.serial].good >= 2
