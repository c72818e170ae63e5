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
    sim = Simulation(small_fleet(mqtt={"electricity_share": 0.5},
                                 theft={"rate": 1.0, "kinds": {"water_reverse_flow": 1.0}}))
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
    later = everything[len(first):]
    events = [body for topic, body in later if topic.endswith("/event")]
    assert {"meter": label.meter, "ts": label.start.strftime("%Y-%m-%dT%H:%M:%SZ"), "kind": "reverse_flow",
            "code": 210} in events
    thief = next(body for topic, body in later if topic.endswith(f"water-{label.meter}/up"))
    assert thief["uplink_message"]["decoded_payload"]["alarms"]["reverse_flow"] is True
    assert after > before
