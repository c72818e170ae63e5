"""The MQTT publisher against a real Mosquitto broker, read back by a paho subscriber."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.clock import SimClock
from simulators.engine import Simulation
from simulators.mqtt import MqttPublisher

from .conftest import small_fleet

pytestmark = pytest.mark.mqtt


class Subscriber:
    """Collects every message of the broker (QoS 1)."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.ready.set()
        self.client.on_message = lambda c, u, msg: self.messages.append((msg.topic, json.loads(msg.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_readings_and_events_reach_a_subscriber_in_all_three_styles(mqtt_broker):
    sim = Simulation(
        small_fleet(mqtt={"electricity_share": 0.5}, theft={"rate": 1.0, "kinds": {"water_reverse_flow": 1.0}})
    )
    label = next(lb for lb in sim.labels() if lb.kind == "water_reverse_flow")
    clock = SimClock(sim.start)
    before = clock.freeze(label.start - timedelta(minutes=1))
    publisher = MqttPublisher(sim, clock, mqtt_broker.url)
    styles = {m.mqtt_style for m in publisher.meters}
    assert styles == {"json", "tasmota", "ttn"}
    sub = Subscriber(mqtt_broker.port)
    publisher.connect()
    try:
        assert publisher.publish_round() == len(publisher.meters)
        first = sub.wait_for(len(publisher.meters))
        after = clock.freeze(label.start + timedelta(minutes=1))
        sent = publisher.publish_round()
        everything = sub.wait_for(len(publisher.meters) + sent)
    finally:
        publisher.close()
        sub.close()
    assert len(first) == len(publisher.meters)
    by_topic = {topic: body for topic, body in first}
    for meter in publisher.meters:
        values = sim.values_at(meter.index, before)
        if meter.mqtt_style == "json":
            body = by_topic[f"releve/{meter.serial}/reading"]
            assert body["meter"] == meter.serial
            assert body["ts"] == before.strftime("%Y-%m-%dT%H:%M:%SZ")
            readings = {r["channel"]: (r["value"], r["unit"]) for r in body["readings"]}
            assert readings["1-0:1.8.0"] == (round(values["1-0:1.8.0"], 4), "kWh")
            assert readings["1-0:32.7.0"][0] == pytest.approx(values["1-0:32.7.0"], abs=1e-4)
        elif meter.mqtt_style == "tasmota":
            body = by_topic[f"tele/sml-{meter.serial}/SENSOR"]
            assert body["Time"] == before.strftime("%Y-%m-%dT%H:%M:%S")
            assert body["SML"]["Total_in"] == round(values["1-0:1.8.0"], 3)
            assert body["SML"]["Power_curr"] == round(values["1-0:1.7.0"])
        else:
            body = by_topic[f"v3/releve-water@ttn/devices/water-{meter.serial}/up"]
            assert body["end_device_ids"]["device_id"] == f"water-{meter.serial}"
            assert body["received_at"].startswith(before.strftime("%Y-%m-%dT%H:%M:%S"))
            decoded = body["uplink_message"]["decoded_payload"]
            assert decoded["volume_m3"] == round(values["8-0:1.0.0"], 3)
            assert decoded["alarms"]["reverse_flow"] is False
    later = everything[len(first) :]
    events = [body for topic, body in later if topic.endswith("/event")]
    assert {
        "meter": label.meter,
        "ts": label.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kind": "reverse_flow",
        "code": 210,
    } in events
    thief = next(body for topic, body in later if topic.endswith(f"water-{label.meter}/up"))
    assert thief["uplink_message"]["decoded_payload"]["alarms"]["reverse_flow"] is True
    assert after > before


def test_publishing_resumes_after_the_broker_restarts(mqtt_broker):
    import asyncio

    sim = Simulation(small_fleet(mqtt={"electricity_share": 0.5, "publish_every_s": 0.2}))
    clock = SimClock(sim.start, speed=60)
    publisher = MqttPublisher(sim, clock, mqtt_broker.url, reconnect_max_s=1)
    publisher.connect()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    runner = threading.Thread(target=loop.run_until_complete, args=(publisher.run(stop),), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while publisher.published < 2 * len(publisher.meters) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert publisher.published >= 2 * len(publisher.meters)
        mqtt_broker.stop()
        deadline = time.monotonic() + 10
        while publisher.dropped == 0 and time.monotonic() < deadline:  # rounds during the outage
            time.sleep(0.05)
        assert publisher.dropped > 0 and runner.is_alive()
        mqtt_broker.start()
        sub = Subscriber(mqtt_broker.port)  # a subscriber of the restarted broker sees new rounds
        try:
            received = sub.wait_for(2 * len(publisher.meters), timeout=15)
        finally:
            sub.close()
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(15)
        publisher.close()
        loop.close()
    assert len(received) >= 2 * len(publisher.meters)
    assert publisher.connections >= 2


def test_lorawan_uplinks_count_per_device_vary_in_radio_and_carry_the_raw_payload():
    import base64

    from simulators.mqtt import decode_frm_payload

    sim = Simulation(
        small_fleet(topology={"dmas": 2, "customers_per_dma": 12}, mqtt={"electricity_share": 0.3, "styles": ["ttn"]})
    )
    clock = SimClock(sim.start)
    publisher = MqttPublisher(sim, clock, "mqtt://127.0.0.1:1")  # payloads only: never connects
    ttn = [m for m in publisher.meters if m.mqtt_style == "ttn"]
    assert len(ttn) >= 10 and {m.commodity.value for m in ttn} == {"water", "electricity"}
    rounds = []
    for k in range(6):
        ts = sim.start + timedelta(days=2, minutes=15 * k)
        rounds.append(
            (ts, {body["end_device_ids"]["device_id"]: body["uplink_message"] for _, body in publisher.messages(ts)})
        )
    by_device = {m: [r[m] for _, r in rounds] for m in rounds[0][1]}
    for device, uplinks in by_device.items():
        assert [u["f_cnt"] for u in uplinks] == list(range(6)), device  # its own counter, from 0
        assert len({u["rx_metadata"][0]["rssi"] for u in uplinks}) > 1, device  # fading
    means = [sum(u["rx_metadata"][0]["rssi"] for u in ups) / len(ups) for ups in by_device.values()]
    assert max(means) - min(means) > 10  # devices near and far from their gateway
    every = [u["rx_metadata"][0] for ups in by_device.values() for u in ups]
    assert all(-125 <= g["rssi"] <= -30 and -20 <= g["snr"] <= 12 for g in every)
    assert len({g["snr"] for g in every}) > len(by_device)
    for ts, uplinks in rounds:
        for meter in ttn:
            device = ("water-" if meter.commodity.value == "water" else "meter-") + meter.serial
            if device not in uplinks:
                continue  # in a communication loss
            up = uplinks[device]
            raw = base64.b64decode(up["frm_payload"], validate=True)
            decoded = dict(up["decoded_payload"])
            del decoded["meter_time"]
            assert decode_frm_payload(meter, raw) == decoded
            values = sim.values_at(meter.index, ts)
            if meter.commodity.value == "water":
                assert decoded["volume_m3"] == pytest.approx(values["8-0:1.0.0"], abs=5e-4)
            else:
                assert decoded["energy_in_kwh"] == pytest.approx(values["1-0:1.8.0"], abs=5e-4)
