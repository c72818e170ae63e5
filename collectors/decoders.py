"""MQTT payload decoders: bytes on a topic → readings and events, or a clear reason why not.

A decoder is a function ``(message: Message) -> Decoded`` registered under a name with
``@decoder("name")``. Shipped: ``json`` (Relevé's plain JSON per meter), ``tasmota`` (Tasmota
smart-meter SML readers, ``tele/<device>/SENSOR``) and ``ttn`` (The Things Stack v3 LoRaWAN
uplinks). A subscription may also name its own as ``"package.module:function"``. A decoder raises
``DecodeError`` with a message that says what is wrong; the collector keeps the payload as a dead
letter and carries on.

``message.fields`` holds what the subscription's topic template captured (``{serial}`` and any
other ``{name}``); ``message.options`` holds the subscription's ``options`` table (field maps,
time zone). A time without a zone is refused unless ``options.timezone`` names the zone the
device stamps in. Decoders return values in the unit the payload states; the collector then
expresses each in its channel's unit and checks it (``collectors.plausibility``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from releve.model import CHANNELS, EventKind, MeterEvent, Reading, Source


class DecodeError(ValueError):
    """The payload cannot be turned into readings; the message says why."""


@dataclass(frozen=True)
class Message:
    """One MQTT message as a decoder sees it."""

    topic: str
    payload: bytes
    fields: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Decoded:
    """What a message held."""

    readings: list[Reading] = field(default_factory=list)
    events: list[MeterEvent] = field(default_factory=list)


Decoder = Callable[[Message], Decoded]
DECODERS: dict[str, Decoder] = {}


def decoder(name: str) -> Callable[[Decoder], Decoder]:
    """Register a decoder under ``name``."""

    def register(func: Decoder) -> Decoder:
        DECODERS[name] = func
        return func

    return register


def get_decoder(name: str) -> Decoder:
    """A registered decoder, or ``"module:function"`` imported on demand."""
    if name in DECODERS:
        return DECODERS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            func = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"decoder {name!r} cannot be imported: {exc}") from exc
        if not callable(func):
            raise ValueError(f"decoder {name!r} is not a function")
        return func
    raise ValueError(f"unknown decoder {name!r}; known: {', '.join(sorted(DECODERS))}, or 'module:function'")


# -- helpers ----------------------------------------------------------------------------------------
def _json(message: Message) -> dict[str, Any]:
    try:
        body = json.loads(message.payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"payload is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise DecodeError(f"payload is JSON {type(body).__name__}, expected an object")
    return body


def _time(text: Any, what: str, tz: Any = None) -> datetime:
    """Return an ISO 8601 time as UTC.

    A time without a zone takes ``tz`` (the subscription's ``options.timezone``, an IANA name);
    without one it is refused, never guessed as UTC.
    """
    if not isinstance(text, str):
        raise DecodeError(f"{what} is missing or not a string")
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DecodeError(f"{what} {text!r} is not an ISO 8601 time") from exc
    if ts.tzinfo is None:
        if not tz:
            raise DecodeError(
                f"{what} {text!r} has no time zone: send an offset (Z, +01:00) or name the device's zone "
                "in the subscription's options.timezone"
            )
        ts = ts.replace(tzinfo=_zone(tz))
    try:
        return ts.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+01:00 and the like
        raise DecodeError(f"{what} {text!r} is out of range in UTC") from exc


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DecodeError(f"options.timezone {name!r} is not an IANA time zone (Europe/Paris, UTC)") from exc


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{what} is {value!r}, not a number")
    return float(value)


def _serial(message: Message, body_value: Any = None) -> str:
    serial = message.fields.get("serial") or body_value
    if not serial:
        raise DecodeError("no meter serial in the topic or the payload")
    return str(serial)


# -- Relevé plain JSON ------------------------------------------------------------------------------
@decoder("json")
def decode_json(message: Message) -> Decoded:
    """``{"meter", "ts", "readings": [{"channel", "value", "unit"}]}`` or an event ``{"meter", "ts", "kind"}``."""
    body = _json(message)
    serial = _serial(message, body.get("meter"))
    ts = _time(body.get("ts"), "ts", message.options.get("timezone"))
    out = Decoded()
    if "kind" in body:
        try:
            kind = EventKind(body["kind"])
        except ValueError as exc:
            raise DecodeError(f"unknown event kind {body['kind']!r}") from exc
        out.events.append(MeterEvent(serial, ts, kind, Source.MQTT, {"code": body.get("code")}))
        return out
    readings = body.get("readings")
    if not isinstance(readings, list) or not readings:
        raise DecodeError("'readings' is missing or empty")
    for i, item in enumerate(readings):
        if not isinstance(item, dict) or "channel" not in item:
            raise DecodeError(f"readings[{i}] has no channel")
        channel = str(item["channel"])
        unit = item.get("unit") or (CHANNELS[channel].unit if channel in CHANNELS else "")
        if not isinstance(unit, str):
            raise DecodeError(f"readings[{i}].unit is {unit!r}, not a text")
        out.readings.append(
            Reading(serial, channel, ts, _number(item.get("value"), f"readings[{i}].value"), unit, Source.MQTT)
        )
    return out


#: A payload field's name → (channel, unit, factor): where its value goes, scaled by the factor.
FieldMap = dict[str, tuple[str, str, float]]


def _fields(message: Message, defaults: FieldMap) -> FieldMap:
    """The decoder's field table ``defaults`` with the subscription's ``options.fields`` over it."""
    return {**defaults, **{k: tuple(v) for k, v in message.options.get("fields", {}).items()}}


def _field_readings(mapping: FieldMap, values: dict[str, Any], serial: str, ts: datetime, where: str) -> list[Reading]:
    """A reading per field of ``values`` that ``mapping`` knows (the others are passed over); ``where`` names them."""
    readings = []
    for key, value in values.items():
        if key in mapping:
            channel, unit, factor = mapping[key]
            readings.append(Reading(serial, channel, ts, _number(value, f"{where}.{key}") * factor, unit, Source.MQTT))
    return readings


# -- Tasmota SML ------------------------------------------------------------------------------------
#: Tasmota SML field → (channel, unit, factor). Override per subscription with options.fields.
TASMOTA_FIELDS: FieldMap = {
    "Total_in": ("1-0:1.8.0", "kWh", 1.0),
    "Total_out": ("1-0:2.8.0", "kWh", 1.0),
    "Power_curr": ("1-0:1.7.0", "W", 1.0),
    "Volt_p1": ("1-0:32.7.0", "V", 1.0),
    "Volt_p2": ("1-0:52.7.0", "V", 1.0),
    "Volt_p3": ("1-0:72.7.0", "V", 1.0),
    "Amperage_p1": ("1-0:31.7.0", "A", 1.0),
    "Amperage_p2": ("1-0:51.7.0", "A", 1.0),
    "Amperage_p3": ("1-0:71.7.0", "A", 1.0),
    "Freq": ("1-0:14.7.0", "Hz", 1.0),
}


@decoder("tasmota")
def decode_tasmota(message: Message) -> Decoded:
    """``{"Time": local time, "<name>": {"Total_in": …, "Power_curr": …}}`` from ``tele/<device>/SENSOR``.

    Tasmota stamps local time without a zone: ``options.timezone`` names it, and without it the
    payload is refused (a guessed zone would shift every reading). The meter is the topic's
    ``{serial}``, else the block's ``Meter_id``.
    """
    body = _json(message)
    ts = _time(body.get("Time"), "Time", message.options.get("timezone"))
    blocks = [(k, v) for k, v in body.items() if isinstance(v, dict)]
    if not blocks:
        raise DecodeError("no meter block (an object beside 'Time')")
    mapping = _fields(message, TASMOTA_FIELDS)
    out = Decoded()
    for name, block in blocks:
        serial = _serial(message, block.get("Meter_id") or name)
        out.readings.extend(_field_readings(mapping, block, serial, ts, name))
    if not out.readings:
        raise DecodeError(f"no known field in {', '.join(n for n, _ in blocks)}; known: {', '.join(mapping)}")
    return out


# -- The Things Stack v3 (LoRaWAN) ------------------------------------------------------------------
TTN_FIELDS: FieldMap = {
    "volume_m3": ("8-0:1.0.0", "m3", 1.0),
    "reverse_m3": ("8-0:2.0.0", "m3", 1.0),
    "flow_m3h": ("8-0:2.7.0", "m3/h", 1.0),
    "energy_in_kwh": ("1-0:1.8.0", "kWh", 1.0),
    "energy_out_kwh": ("1-0:2.8.0", "kWh", 1.0),
    "power_w": ("1-0:1.7.0", "W", 1.0),
}

#: Alarm flags in decoded payloads → event kinds (raised when the flag is true).
TTN_ALARMS: dict[str, EventKind] = {
    "reverse_flow": EventKind.REVERSE_FLOW,
    "magnet_tamper": EventKind.MAGNETIC_FIELD,
    "magnetic_field": EventKind.MAGNETIC_FIELD,
    "leak": EventKind.LEAK,
    "burst": EventKind.BURST,
    "cable_cut": EventKind.CABLE_CUT,
    "removal": EventKind.REMOVAL,
    "terminal_cover_open": EventKind.TERMINAL_COVER_OPEN,
    "meter_cover_open": EventKind.METER_COVER_OPEN,
    "reverse_energy": EventKind.REVERSE_ENERGY,
    "bypass": EventKind.BYPASS,
}


@decoder("ttn")
def decode_ttn(message: Message) -> Decoded:
    """A TTS v3 uplink: ``end_device_ids.device_id``, ``received_at``, ``uplink_message.decoded_payload``.

    The meter is the topic's ``{serial}`` or, with ``options.device_prefix`` (e.g. ``"water-"``),
    the device id without that prefix. The reading time is ``decoded_payload.meter_time`` when the
    device reports its clock, else the network server's ``received_at``.
    """
    body = _json(message)
    ids = body.get("end_device_ids")
    uplink = body.get("uplink_message")
    if not isinstance(ids, dict) or not isinstance(uplink, dict):
        raise DecodeError("not a TTS v3 uplink: 'end_device_ids' or 'uplink_message' missing")
    decoded = uplink.get("decoded_payload")
    if not isinstance(decoded, dict):
        raise DecodeError("uplink has no decoded_payload (no payload formatter on the application?)")
    device = str(ids.get("device_id", ""))
    prefix = message.options.get("device_prefix", "")
    serial = _serial(message, device[len(prefix) :] if prefix and device.startswith(prefix) else device)
    ts = _time(decoded.get("meter_time") or body.get("received_at"), "received_at", message.options.get("timezone"))
    mapping = _fields(message, TTN_FIELDS)
    out = Decoded()
    out.readings.extend(_field_readings(mapping, decoded, serial, ts, "decoded_payload"))
    alarms = decoded.get("alarms", {})
    if isinstance(alarms, dict):
        for flag, on in alarms.items():
            if on is True and flag in TTN_ALARMS:
                out.events.append(MeterEvent(serial, ts, TTN_ALARMS[flag], Source.MQTT, {"flag": flag}))
    if not out.readings and not out.events:
        raise DecodeError(f"decoded_payload has no known field; known: {', '.join(mapping)}")
    return out
