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
     "uplink_message": {"f_port": 1, "f_cnt": 12, "frm_payload": "AAZKsQAAAAAAAADSAAA=",
       "decoded_payload": {"volume_m3": 412.337, "reverse_m3": 0.0, "flow_m3h": 0.021,
       "alarms": {"reverse_flow": false, ...}, "valve": "open"}, "rx_metadata": [{"rssi": -97, ...}]}}

  Each device counts its own uplinks (``f_cnt``); RSSI and SNR follow the device's distance to its
  gateway with a few dB of fading per uplink; ``frm_payload`` is the raw application payload in
  base64 (layout in :func:`frm_payload`) and ``decoded_payload`` is exactly what it decodes to.

Events of every MQTT meter go to ``<prefix>/<serial>/event`` as
``{"meter", "ts", "kind", "code"}``. A meter in a communication-loss episode publishes nothing.

Commands (JSON, any style) — every MQTT meter listens on ``<prefix>/<serial>/command`` for
``{"id", "command": "disconnect"|"reconnect"|"clock_sync"|"demand_reset", "time"}`` (``time``: UNIX
seconds, for a clock sync), obeys at the simulated clock's now and answers on
``<prefix>/<serial>/command/ack`` with ``{"id", "meter", "command", "result": "ok"|"error",
"error", "relay": "closed"|"open", "clock", "demand_resets", "ts"}`` (its state after the command).
A meter in a communication loss neither obeys nor answers. The JSON uplink carries ``"relay"`` too.
Tasmota meters also take Tasmota's own ``cmnd/sml-<serial>/POWER`` (``ON``/``OFF``/``TOGGLE``/empty)
and answer ``stat/sml-<serial>/POWER``. LoRaWAN meters take a downlink pushed to
``v3/<app>@ttn/devices/<device>/down/push`` (f_port 2, one byte: 0 cuts the supply, 1 restores it)
as a class A device does: it is heard after the device's next uplink (``…/down/queued`` at once,
``…/down/ack`` on delivery) and the uplinks after it show the new state (alarm bit 15, and
``decoded_payload.valve`` ``open``/``closed`` for water, ``relay`` ``closed``/``open`` for electricity).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import struct
import threading
import time
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
    "1-0:1.8.0",
    "1-0:2.8.0",
    "1-0:1.7.0",
    "1-0:32.7.0",
    "1-0:52.7.0",
    "1-0:72.7.0",
    "1-0:31.7.0",
    "1-0:51.7.0",
    "1-0:71.7.0",
    "1-0:14.7.0",
    "8-0:1.0.0",
    "8-0:2.0.0",
    "8-0:2.7.0",
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
    body = {
        "meter": meter.serial,
        "model": meter.model,
        "ts": _iso(device_ts),
        "status": int(values["status"]),
        "relay": "closed" if sim.relay_closed(meter.index, ts) else "open",
        "readings": readings,
    }
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


#: The raw LoRaWAN application payloads (f_port 1), big-endian. Water: volume and reverse volume in
#: litres (uint32), flow in 0.1 l/h (uint32), alarm bits (uint16). Electricity: import and export in
#: Wh (uint32), active power in 0.1 W (int32), alarm bits (uint16).
WATER_FRAME = struct.Struct(">IIIH")
ELECTRICITY_FRAME = struct.Struct(">IIiH")


#: Bit of the alarm word that says the supply is cut (relay open, valve closed).
SUPPLY_OFF_BIT = 15


def frm_payload(meter: MeterSpec, values: dict[str, float]) -> bytes:
    """The raw uplink payload of ``meter`` showing ``values`` (layouts: WATER_FRAME, ELECTRICITY_FRAME).

    Bit 15 of the alarm word is set while the supply is cut (after a disconnect command).
    """
    status = int(values["status"]) & 0x7FFF | (0 if values.get("supply", 1.0) else 1 << SUPPLY_OFF_BIT)
    if meter.commodity is Commodity.WATER:
        return WATER_FRAME.pack(
            _u32(values["8-0:1.0.0"] * 1000),
            _u32(values["8-0:2.0.0"] * 1000),
            _u32(values["8-0:2.7.0"] * 10_000),
            status,
        )
    power = max(-(2**31), min(2**31 - 1, round(values["1-0:1.7.0"] * 10)))
    return ELECTRICITY_FRAME.pack(_u32(values["1-0:1.8.0"] * 1000), _u32(values["1-0:2.8.0"] * 1000), power, status)


def _u32(value: float) -> int:
    """A counter on 32 bits: rounded, wrapping as the device's register does."""
    return round(value) % 2**32


def decode_frm_payload(meter: MeterSpec, raw: bytes) -> dict[str, Any]:
    """What a payload formatter makes of ``raw``: the ``decoded_payload`` the network server sends."""
    if meter.commodity is Commodity.WATER:
        volume, reverse, flow, status = WATER_FRAME.unpack(raw)
        decoded: dict[str, Any] = {"volume_m3": volume / 1000, "reverse_m3": reverse / 1000, "flow_m3h": flow / 10_000}
    else:
        imp, exp, power, status = ELECTRICITY_FRAME.unpack(raw)
        decoded = {"energy_in_kwh": imp / 1000, "energy_out_kwh": exp / 1000, "power_w": power / 10}
    decoded["alarms"] = {name: bool(status >> bit & 1) for name, bit in meter.profile.status_bits.items()}
    off = bool(status >> SUPPLY_OFF_BIT & 1)
    if meter.commodity is Commodity.WATER:
        decoded["valve"] = "closed" if off else "open"
    else:
        decoded["relay"] = "open" if off else "closed"
    return decoded


def radio(seed: int, meter: MeterSpec, f_cnt: int) -> dict[str, Any]:
    """Reception metadata of one uplink: RSSI and SNR for the device's distance, with fading.

    Each device has a mean RSSI between -118 and -72 dBm (its distance to the gateway, drawn from
    the fleet seed and the serial); each uplink adds log-normal shadowing (σ 4 dB). SNR follows the
    RSSI over a -117 dBm noise floor (125 kHz) with its own ±1.5 dB noise, clipped to what LoRa
    receivers report (-20 … +12 dB); the spreading factor is the one ADR settles on for the mean;
    the frequency hops over the three EU868 default channels.
    """
    device = random.Random(f"{seed}/{meter.serial}")
    mean = device.uniform(-118.0, -72.0)
    uplink = random.Random(f"{seed}/{meter.serial}/{f_cnt}")
    rssi = round(max(-125.0, min(-30.0, mean + uplink.gauss(0.0, 4.0))))
    snr = round(max(-20.0, min(12.0, rssi + 117.0 + uplink.gauss(0.0, 1.5))), 1)
    # ADR: the fastest spreading factor whose demodulation floor (-7.5 dB at SF7, 2.5 dB lower per
    # step) stays 10 dB under the device's mean SNR.
    mean_snr = mean + 117.0
    sf = next((f for f in range(7, 12) if mean_snr >= -7.5 - 2.5 * (f - 7) + 10.0), 12)
    gateway = {
        "gateway_ids": {"gateway_id": f"gw-{meter.area.lower()}"},
        "rssi": rssi,
        "channel_rssi": rssi,
        "snr": snr,
    }
    settings = {
        "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": sf, "coding_rate": "4/5"}},
        "frequency": str(868_100_000 + 200_000 * (f_cnt % 3)),
    }
    return {"rx_metadata": [gateway], "settings": settings}


def ttn_payload(sim: Simulation, meter: MeterSpec, ts: datetime, f_cnt: int = 0) -> tuple[str, dict[str, Any]]:
    """Topic and body of the LoRaWAN (The Things Stack v3) uplink style; ``f_cnt``: the device's uplink count."""
    values = sim.values_at(meter.index, ts)
    app = sim.config.mqtt.ttn_application
    device_id = f"water-{meter.serial}" if meter.commodity is Commodity.WATER else f"meter-{meter.serial}"
    raw = frm_payload(meter, values)
    decoded = decode_frm_payload(meter, raw)
    decoded["meter_time"] = _iso(ts + timedelta(seconds=sim.clock_offset(meter.index, ts)))
    air = radio(sim.config.seed, meter, f_cnt)
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
            "frm_payload": base64.b64encode(raw).decode("ascii"),
            "decoded_payload": decoded,
            "rx_metadata": air["rx_metadata"],
            "settings": air["settings"],
        },
    }
    return f"v3/{app}@ttn/devices/{device_id}/up", body


COMMANDS = ("disconnect", "reconnect", "clock_sync", "demand_reset")


def obey(sim: Simulation, meter: MeterSpec, ts: datetime, command: dict[str, Any]) -> dict[str, Any]:
    """Apply a command message to ``meter`` at simulated ``ts``; return the acknowledgement body."""
    kind = command.get("command")
    ack: dict[str, Any] = {"id": command.get("id"), "meter": meter.serial, "command": kind}
    if kind not in COMMANDS:
        ack.update(result="error", error=f"unknown command {kind!r}")
    elif kind == "clock_sync" and not isinstance(command.get("time"), (int, float)):
        ack.update(result="error", error="clock_sync needs 'time' (UNIX seconds)")
    else:
        if kind in ("disconnect", "reconnect"):
            sim.set_relay(meter.index, ts, closed=kind == "reconnect")
        elif kind == "clock_sync":
            sim.set_clock(meter.index, ts, float(command["time"]))
        else:
            sim.controls.reset_demand(meter.index)
        ack["result"] = "ok"
    ack.update(
        relay="closed" if sim.relay_closed(meter.index, ts) else "open",
        clock=int(ts.timestamp() + sim.clock_offset(meter.index, ts)),
        demand_resets=sim.controls.demand_resets(meter.index),
        ts=_iso(ts),
    )
    return ack


def event_payload(sim: Simulation, event: SimEvent) -> tuple[str, dict[str, Any]]:
    """Topic and body of an event message."""
    meter = sim.meters[event.meter]
    body = {"meter": meter.serial, "ts": _iso(event.ts), "kind": event.kind.value, "code": event.code}
    return f"{sim.config.mqtt.topic_prefix}/{meter.serial}/event", body


class MqttPublisher:
    """Publishes the fleet's MQTT meters to a broker (paho-mqtt 2, QoS 1), surviving broker outages.

    paho's network thread reconnects on its own (1 … ``reconnect_max_s`` s between attempts). While
    the broker is away a round is not queued: the meters' messages of that round are counted in
    ``dropped`` (a meter without a connection has nowhere to send), and publishing resumes with the
    first round after the reconnection.
    """

    def __init__(
        self, sim: Simulation, clock: SimClock, url: str, client_id: str = "releve-simulator", reconnect_max_s: int = 10
    ) -> None:
        """Prepare a client for the broker at ``url`` (mqtt://host:port)."""
        self.sim = sim
        self.clock = clock
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 1883
        self.meters = [m for m in sim.meters if m.transport == "mqtt"]
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.reconnect_delay_set(1, reconnect_max_s)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_command
        self._by_serial = {m.serial: m for m in self.meters}
        self.commands = 0  # commands obeyed
        self._downlinks: dict[str, list[tuple[int, bytes]]] = {}  # LoRaWAN downlinks waiting for an uplink
        self._downlink_lock = threading.Lock()
        self.connected = threading.Event()
        self.connections = 0  # successful (re)connections
        self._f_cnt: dict[str, int] = {}  # LoRaWAN uplink counter, per device
        self._last_events: datetime | None = None
        self.published = 0
        self.dropped = 0

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self.connections += 1
            client.subscribe(
                [
                    (f"{self.sim.config.mqtt.topic_prefix}/+/command", 1),
                    ("cmnd/+/POWER", 1),
                    (f"v3/{self.sim.config.mqtt.ttn_application}@ttn/devices/+/down/push", 1),
                ]
            )
            self.connected.set()
            if self.connections > 1:
                log.warning("MQTT broker %s:%d: reconnected, publishing resumes", self.host, self.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected.is_set():
            log.warning("MQTT broker %s:%d: connection lost (%s); reconnecting", self.host, self.port, reason)
        self.connected.clear()

    def _on_command(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if parts[0] == "cmnd" and len(parts) == 3 and parts[2] == "POWER":
            self._tasmota_power(client, parts[1], bytes(message.payload))
            return
        if parts[0] == "v3" and parts[-2:] == ["down", "push"]:
            self._ttn_downlink(client, message.topic, parts[-3], bytes(message.payload))
            return
        meter = self._by_serial.get(parts[-2]) if len(parts) >= 3 and parts[-1] == "command" else None
        if meter is None:
            return
        now = self.clock.now()
        if not self.sim.available(meter.index, now):
            return  # a meter in a communication loss hears nothing
        try:
            command = json.loads(message.payload)
            if not isinstance(command, dict):
                raise ValueError("not an object")
        except ValueError:
            log.warning("meter %s: command is not a JSON object: %r", meter.serial, message.payload[:200])
            return
        ack = obey(self.sim, meter, now, command)
        self.commands += ack["result"] == "ok"
        log.info("meter %s: %s -> %s", meter.serial, command.get("command"), ack["result"])
        client.publish(f"{message.topic}/ack", json.dumps(ack), qos=1)

    def _tasmota_power(self, client: mqtt.Client, device: str, payload: bytes) -> None:
        """Tasmota's POWER command: ``ON``, ``OFF``, ``TOGGLE`` or empty (ask); answers ``stat/<device>/POWER``."""
        meter = self._by_serial.get(device.removeprefix("sml-"))
        if meter is None or meter.mqtt_style != "tasmota":
            return
        now = self.clock.now()
        if not self.sim.available(meter.index, now):
            return
        word = payload.decode("utf-8", "replace").strip().upper()
        if word == "TOGGLE":
            word = "OFF" if self.sim.relay_closed(meter.index, now) else "ON"
        if word in ("ON", "1", "OFF", "0"):
            self.sim.set_relay(meter.index, now, closed=word in ("ON", "1"))
            self.commands += 1
        state = "ON" if self.sim.relay_closed(meter.index, now) else "OFF"
        client.publish(f"stat/{device}/RESULT", json.dumps({"POWER": state}), qos=1)
        client.publish(f"stat/{device}/POWER", state, qos=1)

    def _ttn_downlink(self, client: mqtt.Client, topic: str, device: str, payload: bytes) -> None:
        """A downlink pushed to The Things Stack: queued for the device until its next uplink (class A)."""
        meter = self._by_serial.get(device.split("-", 1)[-1])
        if meter is None or meter.mqtt_style != "ttn":
            return
        try:
            downlinks = json.loads(payload)["downlinks"]
            first = downlinks[0]
            raw = base64.b64decode(first["frm_payload"])
            port = int(first.get("f_port", 0))
        except (ValueError, KeyError, IndexError, TypeError):
            log.warning("device %s: downlink push is not TTS v3 JSON: %r", device, payload[:200])
            return
        with self._downlink_lock:
            self._downlinks.setdefault(meter.serial, []).append((port, raw))
        client.publish(topic.removesuffix("/push") + "/queued", json.dumps({"f_port": port}), qos=1)

    def _deliver_downlinks(self, meter: MeterSpec, ts: datetime, uplink_topic: str) -> list[tuple[str, dict[str, Any]]]:
        """After an uplink, the device hears its queued downlinks (port 2: byte 0 cuts the supply, 1 restores)."""
        with self._downlink_lock:
            pending = self._downlinks.pop(meter.serial, [])
        out = []
        for port, raw in pending:
            if port == 2 and raw[:1] in (b"\x00", b"\x01"):
                self.sim.set_relay(meter.index, ts, closed=raw[:1] == b"\x01")
                self.commands += 1
            out.append((uplink_topic.removesuffix("/up") + "/down/ack", {"f_port": port}))
        return out

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and start the network loop thread (which reconnects after an outage)."""
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise OSError(f"MQTT broker {self.host}:{self.port} did not accept the connection")

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
                f_cnt = self._f_cnt.get(meter.serial, -1) + 1
                self._f_cnt[meter.serial] = f_cnt
                uplink = ttn_payload(self.sim, meter, ts, f_cnt)
                out.append(uplink)
                out += self._deliver_downlinks(meter, ts, uplink[0])
            else:
                out.append(json_payload(self.sim, meter, ts))
        return out

    def event_messages(self, start: datetime, end: datetime) -> list[tuple[str, dict[str, Any]]]:
        """Event messages of MQTT meters for events in [start, end)."""
        mqtt_meters = {m.index for m in self.meters}
        return [event_payload(self.sim, ev) for ev in self.sim.events_between(start, end) if ev.meter in mqtt_meters]

    def publish(self, messages: list[tuple[str, dict[str, Any]]], timeout: float = 10.0) -> int:
        """Publish with QoS 1 and wait until the broker acknowledged each; return how many it did.

        Without a connection nothing is queued: the messages count as ``dropped``.
        """
        if not self.connected.is_set():
            self.dropped += len(messages)
            return 0
        infos = [self.client.publish(topic, json.dumps(body), qos=1) for topic, body in messages]
        done = 0
        deadline = time.monotonic() + timeout  # for the whole round, not per message
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):  # the connection went away under this message
                continue
            done += info.is_published()
        self.published += done
        self.dropped += len(infos) - done
        return done

    def publish_round(self, ts: datetime | None = None) -> int:
        """Publish readings at ``ts`` (default: the clock's now) and events since the last round."""
        now = ts or self.clock.now()
        since = self._last_events or now
        messages = self.messages(now) + self.event_messages(since, now) if since < now else self.messages(now)
        self._last_events = now
        return self.publish(messages)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish a round every ``mqtt.publish_every_s`` wall seconds until ``stop`` is set.

        A round that fails (broker away) is logged and the loop goes on: an outage never ends it.
        """
        every = self.sim.config.mqtt.publish_every_s
        while not stop.is_set():
            try:
                dropped = self.dropped
                count = await asyncio.to_thread(self.publish_round)
                if self.dropped > dropped:
                    log.warning("broker unreachable: %d MQTT messages of this round dropped", self.dropped - dropped)
                else:
                    log.info("published %d MQTT messages", count)
            except Exception:
                log.exception("MQTT round failed; trying again next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
