"""MQTT front-end: simulated meters publishing readings and events, QoS 1, in three payload styles.

* ``json`` — ``<prefix>/<serial>/reading``::

    {"meter": "26000002", "model": "sdm630", "ts": "2026-01-02T19:00:00Z",
     "readings": [{"channel": "1-0:1.8.0", "value": 7183.079, "unit": "kWh"}, ...]}

  ``ts`` is the meter's own clock (it drifts when a clock-drift fault is injected).
* ``tasmota`` — ``tele/sml-<serial>/SENSOR``, as Tasmota's smart-meter (SML) script publishes it::

    {"Time": "2026-01-02T19:00:00", "SML": {"Meter_id": "26000006", "Total_in": 7183.079,
     "Total_out": 0.0, "Power_curr": 665, "Volt_p1": 230.4, ...}}
* ``ttn`` — The Things Stack v3 uplink, ``v3/<application>@ttn/devices/water-<serial>/up``::

    {"end_device_ids": {"device_id": "water-26000023", "application_ids": {...}, "dev_eui": "..."},
     "received_at": "2026-01-02T19:00:03.120Z",
     "uplink_message": {"f_port": 1, "f_cnt": 12, "decoded_payload": {"volume_m3": 412.337,
       "reverse_m3": 0.0, "flow_m3h": 0.021, "alarms": {"reverse_flow": false, ...}}}}

Events of every MQTT meter go to ``<prefix>/<serial>/event`` as
``{"meter", "ts", "kind", "code"}``. A meter in a communication-loss episode publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from releve.model import CHANNELS, Commodity
from releve.profiles import EXTRA_CHANNELS
from simulators.clock import SimClock
from simulators.engine import MeterSpec, SimEvent, Simulation

log = logging.getLogger("releve.simulators.mqtt")

_READING_CHANNELS = (
    "1-0:1.8.0", "1-0:2.8.0", "1-0:1.7.0", "1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0",
    "1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0", "1-0:14.7.0", "8-0:1.0.0", "8-0:2.0.0", "8-0:2.7.0",
)


def _iso(ts: datetime, millis: bool = False) -> str:
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{ts.microsecond // 1000:03d}"
    return text + "Z"


def _unit(channel: str) -> str:
    if channel in CHANNELS:
        return CHANNELS[channel].unit
    return EXTRA_CHANNELS.get(channel, ("", ""))[0]


def json_payload(sim: Simulation, meter: MeterSpec, ts: datetime) -> tuple[str, dict[str, Any]]:
    """Topic and body of the plain JSON style."""
    values = sim.values_at(meter.index, ts)
    device_ts = ts + timedelta(seconds=sim.clock_offset(meter.index, ts))
    readings = [
        {"channel": ch, "value": round(values[ch], 4), "unit": _unit(ch)}
        for ch in _READING_CHANNELS
        if ch in values and meter.profile.entry(ch) is not None
    ]
    body = {"meter": meter.serial, "model": meter.model, "ts": _iso(device_ts), "status": int(values["status"]),
            "readings": readings}
    return f"{sim.config.mqtt.topic_prefix}/{meter.serial}/reading", body


def tasmota_payload(sim: Simulation, meter: MeterSpec, ts: datetime) -> tuple[str, dict[str, Any]]:
    """Topic and body of the Tasmota SML style."""
    values = sim.values_at(meter.index, ts)
    device_ts = ts + timedelta(seconds=sim.clock_offset(meter.index, ts))
    sml: dict[str, Any] = {
        "Meter_id": meter.serial,
        "Total_in": round(values["1-0:1.8.0"], 3),
        "Total_out": round(values["1-0:2.8.0"], 3),
        "Power_curr": round(values["1-0:1.7.0"]),
    }
    for n, code in enumerate(("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0"), start=1):
        if code in values:
            sml[f"Volt_p{n}"] = round(values[code], 1)
    for n, code in enumerate(("1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0"), start=1):
        if code in values:
            sml[f"Amperage_p{n}"] = round(values[code], 2)
    if "1-0:14.7.0" in values:
        sml["Freq"] = round(values["1-0:14.7.0"], 2)
    return f"tele/sml-{meter.serial}/SENSOR", {"Time": device_ts.strftime("%Y-%m-%dT%H:%M:%S"), "SML": sml}


def ttn_payload(sim: Simulation, meter: MeterSpec, ts: datetime, f_cnt: int = 0) -> tuple[str, dict[str, Any]]:
    """Topic and body of the LoRaWAN (The Things Stack v3) uplink style."""
    values = sim.values_at(meter.index, ts)
    app = sim.config.mqtt.ttn_application
    device_id = f"water-{meter.serial}" if meter.commodity is Commodity.WATER else f"meter-{meter.serial}"
    flags = {name: bool(int(values["status"]) >> bit & 1) for name, bit in meter.profile.status_bits.items()}
    if meter.commodity is Commodity.WATER:
        decoded: dict[str, Any] = {
            "volume_m3": round(values["8-0:1.0.0"], 3),
            "reverse_m3": round(values["8-0:2.0.0"], 3),
            "flow_m3h": round(values["8-0:2.7.0"], 4),
        }
    else:
        decoded = {"energy_in_kwh": round(values["1-0:1.8.0"], 3), "energy_out_kwh": round(values["1-0:2.8.0"], 3),
                   "power_w": round(values["1-0:1.7.0"], 1)}
    decoded["alarms"] = flags
    decoded["meter_time"] = _iso(ts + timedelta(seconds=sim.clock_offset(meter.index, ts)))
    body = {
        "end_device_ids": {
            "device_id": device_id,
            "application_ids": {"application_id": app},
            "dev_eui": f"70B3D5{int(meter.serial):010X}",
        },
        "received_at": _iso(ts + timedelta(milliseconds=120), millis=True),
        "uplink_message": {
            "f_port": 1,
            "f_cnt": f_cnt,
            "decoded_payload": decoded,
            "rx_metadata": [{"gateway_ids": {"gateway_id": f"gw-{meter.area.lower()}"}, "rssi": -97, "snr": 6.5}],
        },
    }
    return f"v3/{app}@ttn/devices/{device_id}/up", body


def event_payload(sim: Simulation, event: SimEvent) -> tuple[str, dict[str, Any]]:
    """Topic and body of an event message."""
    meter = sim.meters[event.meter]
    body = {"meter": meter.serial, "ts": _iso(event.ts), "kind": event.kind.value, "code": event.code}
    return f"{sim.config.mqtt.topic_prefix}/{meter.serial}/event", body


class MqttPublisher:
    """Publishes the fleet's MQTT meters to a broker (paho-mqtt 2, QoS 1)."""

    def __init__(self, sim: Simulation, clock: SimClock, url: str, client_id: str = "releve-simulator") -> None:
        """Prepare a client for the broker at ``url`` (mqtt://host:port)."""
        self.sim = sim
        self.clock = clock
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 1883
        self.meters = [m for m in sim.meters if m.transport == "mqtt"]
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._f_cnt = 0
        self._last_events: datetime | None = None
        self.published = 0

    def connect(self) -> None:
        """Connect and start the network loop thread."""
        self.client.connect(self.host, self.port)
        self.client.loop_start()

    def close(self) -> None:
        """Disconnect and stop the network loop."""
        self.client.disconnect()
        self.client.loop_stop()

    def messages(self, ts: datetime) -> list[tuple[str, dict[str, Any]]]:
        """Every reading message of one round at simulated time ``ts``."""
        out = []
        for meter in self.meters:
            if not self.sim.available(meter.index, ts):
                continue
            if meter.mqtt_style == "tasmota":
                out.append(tasmota_payload(self.sim, meter, ts))
            elif meter.mqtt_style == "ttn":
                self._f_cnt += 1
                out.append(ttn_payload(self.sim, meter, ts, self._f_cnt))
            else:
                out.append(json_payload(self.sim, meter, ts))
        return out

    def event_messages(self, start: datetime, end: datetime) -> list[tuple[str, dict[str, Any]]]:
        """Event messages of MQTT meters for events in [start, end)."""
        mqtt_meters = {m.index for m in self.meters}
        return [event_payload(self.sim, ev) for ev in self.sim.events_between(start, end) if ev.meter in mqtt_meters]

    def publish(self, messages: list[tuple[str, dict[str, Any]]], timeout: float = 10.0) -> int:
        """Publish with QoS 1 and wait until the broker acknowledged each message."""
        infos = [self.client.publish(topic, json.dumps(body), qos=1) for topic, body in messages]
        for info in infos:
            info.wait_for_publish(timeout)
        self.published += len(infos)
        return len(infos)

    def publish_round(self, ts: datetime | None = None) -> int:
        """Publish readings at ``ts`` (default: the clock's now) and events since the last round."""
        now = ts or self.clock.now()
        since = self._last_events or now
        messages = self.messages(now) + self.event_messages(since, now) if since < now else self.messages(now)
        self._last_events = now
        return self.publish(messages)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish a round every ``mqtt.publish_every_s`` wall seconds until ``stop`` is set."""
        every = self.sim.config.mqtt.publish_every_s
        while not stop.is_set():
            count = await asyncio.to_thread(self.publish_round)
            log.info("published %d MQTT messages", count)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
