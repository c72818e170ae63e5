"""Meter commands end to end: queued in PostgreSQL, executed by a collector against the simulator.

Real servers throughout: PostgreSQL, pymodbus servers over TCP and a pseudo-terminal, Mosquitto.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from collectors.commands import MqttCommander, confirmed_by
from collectors.config import CollectorConfig
from collectors.service import Collector
from releve import meter_commands as mc
from releve import migrate
from releve.profiles import load_profile
from simulators.clock import SimClock
from simulators.config import parse_fleet
from simulators.engine import Simulation
from simulators.modbus import BackgroundModbus
from simulators.mqtt import MqttPublisher

pytestmark = pytest.mark.db

SPEED = 3600.0  # one simulated hour per second: a customer's index visibly rises between polls


def fleet(**mqtt):
    return Simulation(
        parse_fleet(
            {
                "seed": 5,
                "horizon_days": 30,
                "start": "2026-03-01T00:00:00Z",
                "topology": {
                    "transformers": 1,
                    "customers_per_transformer": 4,
                    "dmas": 0,
                    "electricity_models": {"sdm630": 1.0},
                },
                "modbus": {"tcp_base_port": 0, "rtu_lines": 1, "devices_per_line": 2, "devices_per_gateway": 8},
                "mqtt": {"electricity_share": 0.0, **mqtt},
                "theft": {"rate": 0.0},
                "faults": {"rate": 0.0},
            },
            "command test fleet",
        )
    )


def register(db, meters, protocol="modbus-tcp"):
    with db.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, %s, %s, %s, %s)",
            [(m.serial, m.commodity.value, m.model, m.unit, protocol) for m in meters],
        )


def config(tmp_path, gateways=(), lines=(), mqtt=None, **commands):
    data = {
        "name": "cmd-test",
        "spool_dir": str(tmp_path / "spool"),
        "seal_seconds": 0.2,
        "commands": {"check_every_s": 0.3, "retry_base_s": 0.5, "retry_max_s": 1.0, **commands},
    }
    if gateways or lines:
        data["modbus"] = {
            "periods": {"energy": 0.5, "instant": 0.5, "events": 5.0},
            "jitter": 0.0,
            "retries": 0,
            "backoff_base_s": 0.5,
            "backoff_max_s": 1.0,
            "gateways": list(gateways),
            "lines": list(lines),
        }
    if mqtt is not None:
        data["mqtt"] = mqtt
    return CollectorConfig.model_validate(data)


def first_customer_on_gateway(db, sim, front, tmp_path, profile):
    """Gateway 0's first customer meter, registered, and a collector configuration polling just it."""
    gw = front.gateways[0]
    unit, index = next((u, m) for u, m in sorted(gw.store.units.items()) if sim.meters[m].role == "customer")
    meter = sim.meters[index]
    register(db, [meter])
    gateway = {
        "name": "gw0",
        "host": gw.host,
        "port": gw.port,
        "timeout_s": 1.0,
        "meters": [{"serial": meter.serial, "unit": unit, "profile": profile}],
    }
    return meter, config(tmp_path, gateways=[gateway])


def wait_state(db, command_id, states, timeout=20.0):
    deadline = time.monotonic() + timeout
    with db.connect() as conn:
        while True:
            cmd = mc.command_status(conn, command_id)
            if cmd.state in states or time.monotonic() > deadline:
                return cmd
            time.sleep(0.1)


def index_rows(db, serial, channel="1-0:1.8.0"):
    with db.connect() as conn:
        return conn.execute(
            "SELECT r.ts, r.value FROM reading_all r JOIN meter m ON m.id = r.meter_id JOIN channel c ON c.id = r.channel_id "
            "WHERE m.serial = %s AND c.code = %s ORDER BY r.ts",
            (serial, channel),
        ).fetchall()


def queue(db, serial, kind, **kw):
    editor = migrate.role_names(db.settings)[2]
    with db.connect(role=editor) as conn:
        return mc.queue_command(conn, serial, kind, "credit-control", reason="test", **kw)


def trail(db, command_id):
    with db.connect() as conn:
        return [(e.state, e.actor, e.detail) for e in mc.command_events(conn, command_id)]


def test_disconnect_over_modbus_tcp_stops_the_index_in_the_database_and_reconnect_resumes_it(db, tmp_path):
    sim = fleet()
    clock = SimClock(sim.start + timedelta(days=2, hours=17), speed=SPEED)
    with BackgroundModbus(sim, clock) as front:
        meter, cfg = first_customer_on_gateway(db, sim, front, tmp_path, "sdm630")
        cfg.metrics_port = 0
        collector = Collector(cfg, db.settings, db.url)
        collector.start()
        try:
            time.sleep(1.5)
            off = queue(db, meter.serial, "disconnect", work_order_id=42)
            done = wait_state(db, off, ("confirmed", "failed", "expired"))
            assert done.state == "confirmed", done
            assert done.answer["read_back"] == {"function": 4, "address": 505, "value": 0.0}
            assert done.answer["wrote"] == {"function": 6, "address": 600, "values": [0]}
            time.sleep(2.5)  # polls land while the relay is open
            on = queue(db, meter.serial, "reconnect")
            back = wait_state(db, on, ("confirmed", "failed", "expired"))
            assert back.state == "confirmed", back
            time.sleep(2.0)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{collector.metrics.port}/metrics", timeout=5).read()
            assert b'releve_meter_commands_total{collector="cmd-test",outcome="confirmed"} 2' in metrics
        finally:
            collector.stop()
    rows = index_rows(db, meter.serial)
    before = [v for ts, v in rows if ts < done.sent_at]
    while_open = [v for ts, v in rows if done.confirmed_at <= ts < back.sent_at]
    after = [v for ts, v in rows if ts >= back.confirmed_at]
    assert len(before) >= 2 and len(while_open) >= 3 and len(after) >= 2
    assert before[-1] > before[0]  # consuming
    assert len(set(while_open)) == 1  # the index stopped
    assert after[-1] > after[0] > while_open[0] - 1e-3  # resumed from where it stopped
    power = [v for ts, v in index_rows(db, meter.serial, "1-0:1.7.0") if done.confirmed_at <= ts < back.sent_at]
    assert power and set(power) == {0.0}
    states = [s for s, _, _ in trail(db, off)]
    assert states == ["queued", "sent", "confirmed"]
    assert trail(db, off)[0][1] == "credit-control" and trail(db, off)[1][1] == "cmd-test"


def test_disconnect_over_rtu_goes_through_the_line_lock_and_is_confirmed(db, tmp_path):
    sim = fleet()
    clock = SimClock(sim.start + timedelta(days=2, hours=17), speed=SPEED)
    with BackgroundModbus(sim, clock) as front:
        line = front.lines[0]
        meters = [(u, sim.meters[m]) for u, m in sorted(line.store.units.items())]
        register(db, [m for _, m in meters])
        cfg = config(
            tmp_path,
            lines=[
                {
                    "name": "line0",
                    "port": line.path,
                    "baudrate": line.baudrate,
                    "timeout_s": 0.5,
                    "meters": [{"serial": m.serial, "unit": u, "profile": m.model} for u, m in meters],
                }
            ],
        )
        collector = Collector(cfg, db.settings, db.url)
        collector.start()
        try:
            target = meters[0][1]
            off = queue(db, target.serial, "disconnect")
            reset = queue(db, meters[1][1].serial, "demand_reset")
            done = wait_state(db, off, ("confirmed", "failed", "expired"))
            reset_done = wait_state(db, reset, ("confirmed", "failed", "expired"))
            # The polls of both meters go on around the commands, on the one line. On a loaded
            # machine the commands can be confirmed before a meter's first poll has completed,
            # so wait for that poll rather than racing it.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and any(m.health.good < 1 for m in collector.poller.meters):
                time.sleep(0.1)
        finally:
            collector.stop()
        assert done.state == "confirmed", done
        assert not sim.relay_closed(target.index, clock.now())
        assert reset_done.state == "confirmed", reset_done
        assert reset_done.answer["before"] == 0 and reset_done.answer["read_back"]["value"] == 1
        health = {m.serial: (m.health.good, dict(m.health.errors)) for m in collector.poller.meters}
        assert all(good >= 1 and errors.get("mismatch", 0) == 0 for good, errors in health.values()), health


def test_a_modbus_exception_on_the_write_fails_the_command_with_the_reason(db, tmp_path):
    sim = fleet()
    clock = SimClock(sim.start + timedelta(days=2), speed=1.0)
    text = (Path(__file__).resolve().parents[2] / "releve" / "profiles" / "sdm630.toml").read_text()
    bad = tmp_path / "sdm630-relay601.toml"
    bad.write_text(
        text.replace('model = "sdm630"', 'model = "sdm630-relay601"').replace(
            "write = { function = 6, address = 600, value = 0 }", "write = { function = 6, address = 601, value = 0 }"
        )
    )
    with BackgroundModbus(sim, clock) as front:
        meter, cfg = first_customer_on_gateway(db, sim, front, tmp_path, str(bad))
        collector = Collector(cfg, db.settings, db.url)
        collector.start()
        try:
            off = queue(db, meter.serial, "disconnect")
            unsupported = queue(db, meter.serial, "clock_sync")
            done = wait_state(db, off, ("confirmed", "failed", "expired"))
            refused = wait_state(db, unsupported, ("confirmed", "failed", "expired"))
        finally:
            collector.stop()
    assert done.state == "failed" and done.attempts == 1
    assert done.error == (
        "the meter refused the write: function 6 address 601 values [0]: Modbus exception 2 (illegal data address)"
    )
    assert sim.relay_closed(meter.index, clock.now())
    assert [s for s, _, _ in trail(db, off)] == ["queued", "sent", "failed"]
    assert trail(db, off)[-1][2]["error"] == done.error
    assert refused.state == "failed"
    assert refused.error.startswith("model sdm630-relay601 has no clock_sync command in its profile")


def test_a_meter_that_never_confirms_ends_expired_with_every_attempt_in_the_audit(db, tmp_path):
    sim = fleet()
    clock = SimClock(sim.start + timedelta(days=2), speed=1.0)
    with BackgroundModbus(sim, clock) as front:
        gw = front.gateways[0]
        absent = max(gw.store.units) + 5  # the gateway answers 0x0B: the device did not respond
        with db.connect() as conn:
            conn.execute(
                "INSERT INTO meter (serial, commodity, model, unit, protocol) "
                "VALUES ('GONE-1', 'electricity', 'sdm630', 'kWh', 'modbus-tcp')"
            )
        cfg = config(
            tmp_path,
            max_attempts=50,
            gateways=[
                {
                    "name": "gw0",
                    "host": gw.host,
                    "port": gw.port,
                    "timeout_s": 0.5,
                    "meters": [{"serial": "GONE-1", "unit": absent, "profile": "sdm630"}],
                }
            ],
        )
        collector = Collector(cfg, db.settings, db.url)
        collector.start()
        try:
            off = queue(db, "GONE-1", "disconnect", expires_in=timedelta(seconds=4))
            done = wait_state(db, off, ("confirmed", "failed", "expired"), timeout=30)
        finally:
            collector.stop()
    assert done.state == "expired", done
    assert done.attempts >= 2
    assert done.error == f"expired after {done.attempts} attempt(s) without confirmation"
    events = trail(db, off)
    states = [s for s, _, _ in events]
    assert states[0] == "queued" and states[-1] == "expired"
    assert states[1:-1] == ["sent", "queued"] * done.attempts or states[1:-1] == ["sent", "queued"] * (
        done.attempts - 1
    ) + ["sent"]
    retries = [d for s, _, d in events[1:-1] if s == "queued"]
    assert all("Modbus exception 11 (gateway target device failed to respond)" in d["error"] for d in retries)


@pytest.mark.mqtt
def test_disconnect_through_an_mqtt_command_topic_with_mosquitto(db, mqtt_broker, tmp_path):
    sim = fleet(electricity_share=1.0, styles=["json"], publish_every_s=0.3, url=mqtt_broker.url)
    clock = SimClock(sim.start + timedelta(days=2, hours=17), speed=SPEED)
    meter = next(m for m in sim.meters if m.transport == "mqtt" and m.role == "customer")
    register(db, [meter], protocol="mqtt")
    publisher = MqttPublisher(sim, clock, mqtt_broker.url, client_id="sim-cmd-test")
    publisher.connect()
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            publisher.publish(publisher.messages(clock.now()))
            stop.wait(0.3)

    pub_thread = threading.Thread(target=publish, daemon=True)
    pub_thread.start()
    settings = db.settings.model_copy(update={"mqtt": db.settings.mqtt.model_copy(update={"url": mqtt_broker.url})})
    cfg = config(
        tmp_path,
        mqtt={"client_id": "cmd-c1", "subscriptions": [{"topic": "releve/{serial}/reading", "decoder": "json"}]},
        mqtt_ack_timeout_s=5.0,
    )
    collector = Collector(cfg, settings, db.url)
    collector.start()
    try:
        assert collector.commands.mqtt.connected.wait(10)
        time.sleep(1.5)
        off = queue(db, meter.serial, "disconnect")
        done = wait_state(db, off, ("confirmed", "failed", "expired"))
        assert done.state == "confirmed", done
        assert done.answer["relay"] == "open" and done.answer["result"] == "ok"
        time.sleep(2.0)
        on = queue(db, meter.serial, "reconnect")
        back = wait_state(db, on, ("confirmed", "failed", "expired"))
        assert back.state == "confirmed" and back.answer["relay"] == "closed", back
        time.sleep(1.5)
    finally:
        collector.stop()
        stop.set()
        pub_thread.join(5)
        publisher.close()
    ((opened, closed),) = sim.controls.relay_periods(meter.index)
    rows = index_rows(db, meter.serial)  # stamped with the meter's (simulated) clock
    before = [v for ts, v in rows if ts < opened]
    while_open = [v for ts, v in rows if opened <= ts < closed]
    after = [v for ts, v in rows if ts >= closed]
    assert len(before) >= 2 and len(while_open) >= 3 and len(after) >= 2
    assert before[-1] > before[0]
    assert max(while_open) - min(while_open) < 1e-3  # rounded to 4 decimals in the payload
    assert after[-1] > after[0]
    assert [s for s, _, _ in trail(db, off)] == ["queued", "sent", "confirmed"]


@pytest.mark.mqtt
def test_an_mqtt_meter_that_never_answers_expires(db, mqtt_broker, tmp_path):
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) "
            "VALUES ('SILENT-1', 'electricity', 'sdm120', 'kWh', 'mqtt')"
        )
    settings = db.settings.model_copy(update={"mqtt": db.settings.mqtt.model_copy(update={"url": mqtt_broker.url})})
    cfg = config(
        tmp_path,
        mqtt={"client_id": "cmd-c2", "subscriptions": [{"topic": "releve/{serial}/reading", "decoder": "json"}]},
        mqtt_ack_timeout_s=0.5,
        max_attempts=50,
    )
    collector = Collector(cfg, settings, db.url)
    collector.start()
    try:
        off = queue(db, "SILENT-1", "disconnect", expires_in=timedelta(seconds=3))
        done = wait_state(db, off, ("confirmed", "failed", "expired"), timeout=20)
    finally:
        collector.stop()
    assert done.state == "expired" and done.attempts >= 1
    errors = [d.get("error", "") for s, _, d in trail(db, off) if s == "queued"][1:]
    assert errors and all(e == "no acknowledgement on releve/SILENT-1/command/ack within 0.5 s" for e in errors)


def test_confirmation_rules():
    relay = load_profile("sdm630").commands["disconnect"].confirm
    assert confirmed_by(relay, 0.0, None, 0) and not confirmed_by(relay, 1.0, None, 0)
    clock = load_profile("gen-int32cdab").commands["clock_sync"].confirm
    assert confirmed_by(clock, 1000.0, None, 1009.0) and not confirmed_by(clock, 1000.0, None, 1011.0)
    counter = load_profile("sdm630").commands["demand_reset"].confirm
    assert confirmed_by(counter, 0.0, 65535.0, 0)  # the counter wrapped
    assert not confirmed_by(counter, 3.0, 3.0, 0) and not confirmed_by(counter, 3.0, None, 0)
    judge = MqttCommander.judge
    assert judge("disconnect", {"result": "ok", "relay": "open"}, 0).state == "confirmed"
    assert judge("disconnect", {"result": "ok", "relay": "closed"}, 0).state == "retry"
    refused = judge("reconnect", {"result": "error", "error": "tamper lock"}, 0)
    assert (refused.state, refused.error) == ("failed", "the meter refused: tamper lock")


@pytest.mark.mqtt
def test_tasmota_power_and_a_lorawan_downlink_confirmed_by_the_next_uplinks(db, mqtt_broker, tmp_path):
    sim = Simulation(
        parse_fleet(
            {
                "seed": 5,
                "horizon_days": 30,
                "start": "2026-03-01T00:00:00Z",
                "topology": {
                    "transformers": 1,
                    "customers_per_transformer": 2,
                    "dmas": 1,
                    "customers_per_dma": 1,
                    "electricity_models": {"sdm120": 1.0},
                },
                "modbus": {"tcp_base_port": 0, "rtu_lines": 0},
                "mqtt": {
                    "electricity_share": 1.0,
                    "styles": ["tasmota", "ttn"],
                    "publish_every_s": 0.3,
                    "url": mqtt_broker.url,
                },
                "theft": {"rate": 0.0},
                "faults": {"rate": 0.0},
            },
            "dialect fleet",
        )
    )
    clock = SimClock(sim.start + timedelta(days=2, hours=7), speed=SPEED)
    tasmota = next(m for m in sim.meters if m.mqtt_style == "tasmota")
    water = next(m for m in sim.meters if m.mqtt_style == "ttn")
    with db.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol, address) VALUES (%s, %s, %s, %s, 'mqtt', %s)",
            [
                (m.serial, m.commodity.value, m.model, m.unit, f'{{"uri": "mqtt://{m.mqtt_style}/{m.serial}"}}')
                for m in (tasmota, water)
            ],
        )
    publisher = MqttPublisher(sim, clock, mqtt_broker.url, client_id="sim-dialects")
    publisher.connect()
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            publisher.publish(publisher.messages(clock.now()))
            stop.wait(0.3)

    pub_thread = threading.Thread(target=publish, daemon=True)
    pub_thread.start()
    settings = db.settings.model_copy(update={"mqtt": db.settings.mqtt.model_copy(update={"url": mqtt_broker.url})})
    cfg = config(
        tmp_path,
        mqtt={
            "client_id": "cmd-c3",
            "subscriptions": [
                {"topic": "tele/sml-{serial}/SENSOR", "decoder": "tasmota", "options": {"timezone": "UTC"}},
                {"topic": "v3/{app}/devices/water-{serial}/up", "decoder": "ttn"},
            ],
        },
        mqtt_ack_timeout_s=5.0,
        ttn_confirm_timeout_s=10.0,
    )
    collector = Collector(cfg, settings, db.url)
    collector.start()
    try:
        assert collector.commands.mqtt.connected.wait(10)
        off = queue(db, tasmota.serial, "disconnect")
        shut = queue(db, water.serial, "disconnect")
        reset = queue(db, tasmota.serial, "demand_reset")
        done = wait_state(db, off, ("confirmed", "failed", "expired"))
        closed = wait_state(db, shut, ("confirmed", "failed", "expired"))
        refused = wait_state(db, reset, ("confirmed", "failed", "expired"))
        assert done.state == "confirmed", done
        assert done.answer["power"] == "OFF" and done.answer["published"]["payload"] == "OFF"
        assert closed.state == "confirmed", closed
        assert closed.answer["uplink"]["valve"] == "closed" and closed.answer["published"]["frm_payload"] == "00"
        assert (
            refused.state == "failed" and refused.error == "tasmota meters take relay commands only, not demand_reset"
        )
        time.sleep(2.0)  # uplinks land while the valve is shut
        on = queue(db, water.serial, "reconnect")
        opened = wait_state(db, on, ("confirmed", "failed", "expired"))
        assert opened.state == "confirmed" and opened.answer["uplink"]["valve"] == "open", opened
    finally:
        collector.stop()
        stop.set()
        pub_thread.join(5)
        publisher.close()
    assert not sim.relay_closed(tasmota.index, clock.now()) and sim.relay_closed(water.index, clock.now())
    ((shut_at, reopened),) = sim.controls.relay_periods(water.index)
    volumes = [v for ts, v in index_rows(db, water.serial, "8-0:1.0.0") if shut_at <= ts < reopened]
    assert len(volumes) >= 3 and max(volumes) - min(volumes) < 1e-6


def test_clock_sync_and_demand_reset_with_function_16_and_the_clock_offset_landed_goes_to_zero(db, tmp_path):
    sim = Simulation(
        parse_fleet(
            {
                "seed": 5,
                "horizon_days": 30,
                "start": "2026-03-01T00:00:00Z",
                "topology": {
                    "transformers": 1,
                    "customers_per_transformer": 2,
                    "dmas": 0,
                    "electricity_models": {"gen-int32cdab": 1.0},
                },
                "modbus": {"tcp_base_port": 0, "rtu_lines": 0},
                "mqtt": {"electricity_share": 0.0},
                "theft": {"rate": 0.0},
                "faults": {"rate": 0.0},
            },
            "clock fleet",
        )
    )
    clock = SimClock(sim.start + timedelta(days=2), speed=1.0)  # the meters' clocks are months behind
    with BackgroundModbus(sim, clock) as front:
        meter, cfg = first_customer_on_gateway(db, sim, front, tmp_path, "gen-int32cdab")
        cfg.modbus.periods["events"] = 0.5  # the clock register is in the events class
        collector = Collector(cfg, db.settings, db.url)
        collector.start()
        try:
            time.sleep(1.5)
            sync = queue(db, meter.serial, "clock_sync")
            reset = queue(db, meter.serial, "demand_reset")
            synced = wait_state(db, sync, ("confirmed", "failed", "expired"))
            was_reset = wait_state(db, reset, ("confirmed", "failed", "expired"))
            time.sleep(1.5)
        finally:
            collector.stop()
    assert synced.state == "confirmed", synced
    assert synced.answer["wrote"]["function"] == 16 and len(synced.answer["wrote"]["values"]) == 2
    assert abs(synced.answer["read_back"]["value"] - synced.sent_at.timestamp()) < 10
    assert was_reset.state == "confirmed" and was_reset.answer["read_back"]["value"] == was_reset.answer["before"] + 1
    offsets = index_rows(db, meter.serial, "0-0:1.0.0")
    before = [v for ts, v in offsets if ts < synced.sent_at]
    after = [v for ts, v in offsets if ts > synced.confirmed_at]
    assert before and all(v < -86400 * 200 for v in before)  # the simulated clock was in March
    assert after and all(abs(v) < 5 for v in after)


def test_collect_status_counts_the_open_commands_of_the_collectors_meters(db, tmp_path, monkeypatch, capsys):
    from releve.cli import main

    db.add_meters(["S-1", "S-2", "ELSEWHERE"])
    queue(db, "S-1", "disconnect")
    queue(db, "S-2", "reconnect")
    queue(db, "ELSEWHERE", "disconnect")  # not this collector's meter
    path = tmp_path / "c.toml"
    path.write_text(
        f'name = "cmd-status"\nspool_dir = "{tmp_path / "spool"}"\n[modbus]\n[[modbus.gateways]]\n'
        'name = "gw"\nhost = "127.0.0.1"\nmeters = [{ serial = "S-1", unit = 1, profile = "sdm630" },'
        ' { serial = "S-2", unit = 2, profile = "sdm630" }]\n'
    )
    monkeypatch.setenv("RELEVE_DATABASE_URL", db.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", db.settings.database.role_prefix)
    main(["collect", "status", "-c", str(path)])
    out = capsys.readouterr().out
    assert "meter commands: 2 queued, 0 sent (oldest queued " in out
