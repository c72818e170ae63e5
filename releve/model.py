"""The shared data model: what a reading and a meter event are, wherever they come from.

Collectors and simulators produce these; ingest lands them; analytics reads them back from the
database. Timestamps are always timezone-aware UTC. Meters are named by serial number; the
database resolves serials to ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Commodity(StrEnum):
    """What a meter measures."""

    ELECTRICITY = "electricity"
    WATER = "water"


class Source(StrEnum):
    """How a reading reached Relevé."""

    MODBUS = "modbus"
    MQTT = "mqtt"
    MANUAL = "manual"
    IMPORT = "import"
    SIMULATOR = "simulator"


class ReadType(StrEnum):
    """Who produced the value (the utility's 'read type' column)."""

    ACTUAL = "actual"
    CUSTOMER = "customer"
    ESTIMATE = "estimate"


class ChannelKind(StrEnum):
    """Register: a cumulative index. Interval: consumption over one interval. Instant: a sample."""

    REGISTER = "register"
    INTERVAL = "interval"
    INSTANT = "instant"


@dataclass(frozen=True, slots=True)
class Channel:
    """A measured quantity, named by its OBIS-style code."""

    code: str
    kind: ChannelKind
    unit: str
    description: str
    interval_s: int | None = None


#: The channels Relevé knows out of the box. Device profiles map registers onto these codes.
CHANNELS: dict[str, Channel] = {
    c.code: c
    for c in (
        Channel("1-0:1.8.0", ChannelKind.REGISTER, "kWh", "active energy import, total"),
        Channel("1-0:2.8.0", ChannelKind.REGISTER, "kWh", "active energy export, total"),
        Channel("1-0:15.8.0", ChannelKind.REGISTER, "kWh", "active energy, absolute total"),
        Channel("1-0:1.29.0", ChannelKind.INTERVAL, "kWh", "active energy import per interval", 900),
        Channel("1-0:1.7.0", ChannelKind.INSTANT, "W", "active power import"),
        Channel("1-0:32.7.0", ChannelKind.INSTANT, "V", "voltage L1"),
        Channel("1-0:52.7.0", ChannelKind.INSTANT, "V", "voltage L2"),
        Channel("1-0:72.7.0", ChannelKind.INSTANT, "V", "voltage L3"),
        Channel("1-0:31.7.0", ChannelKind.INSTANT, "A", "current L1"),
        Channel("1-0:51.7.0", ChannelKind.INSTANT, "A", "current L2"),
        Channel("1-0:71.7.0", ChannelKind.INSTANT, "A", "current L3"),
        Channel("1-0:14.7.0", ChannelKind.INSTANT, "Hz", "supply frequency"),
        Channel("1-0:21.7.0", ChannelKind.INSTANT, "W", "active power import L1"),
        Channel("1-0:41.7.0", ChannelKind.INSTANT, "W", "active power import L2"),
        Channel("1-0:61.7.0", ChannelKind.INSTANT, "W", "active power import L3"),
        Channel("1-0:13.7.0", ChannelKind.INSTANT, "1", "power factor"),
        Channel("0-0:1.0.0", ChannelKind.INSTANT, "s", "meter clock minus collector time (clock offset)"),
        Channel("8-0:1.0.0", ChannelKind.REGISTER, "m3", "water volume, forward total"),
        Channel("8-0:2.0.0", ChannelKind.REGISTER, "m3", "water volume, reverse total"),
        Channel("8-0:1.29.0", ChannelKind.INTERVAL, "m3", "water volume per interval", 900),
        Channel("8-0:2.7.0", ChannelKind.INSTANT, "m3/h", "water flow rate"),
    )
}


@dataclass(frozen=True, slots=True)
class CommodityChannels:
    """The channels every meter of a commodity has: its main register, its reverse one, its intervals."""

    register: str  # the main register: the cumulative import/forward index bills and balances read
    export: str  # the export/reverse register
    interval: str  # consumption per interval
    unit: str


#: The main register (and its twins) of each commodity: the one home of this fact, keyed by
#: :class:`Commodity` (a plain ``"electricity"`` / ``"water"`` string finds its entry too).
COMMODITY_CHANNELS: dict[Commodity, CommodityChannels] = {
    Commodity.ELECTRICITY: CommodityChannels("1-0:1.8.0", "1-0:2.8.0", "1-0:1.29.0", "kWh"),
    Commodity.WATER: CommodityChannels("8-0:1.0.0", "8-0:2.0.0", "8-0:1.29.0", "m3"),
}
#: Main register per commodity value, e.g. ``MAIN_REGISTER["water"] == "8-0:1.0.0"``.
MAIN_REGISTER: dict[str, str] = {c.value: ch.register for c, ch in COMMODITY_CHANNELS.items()}
#: Interval channel per commodity value.
INTERVAL_CHANNEL: dict[str, str] = {c.value: ch.interval for c, ch in COMMODITY_CHANNELS.items()}
#: Every commodity's main register (for ``code = ANY(...)`` in SQL).
MAIN_REGISTERS: tuple[str, ...] = tuple(MAIN_REGISTER.values())


#: Bounds every meter obeys whatever its model, per channel, in the channel's unit: (lowest, highest),
#: None where physics sets none. A register index never goes negative, a power factor stays in
#: [-1, 1], grid frequency in 45…65 Hz. Device profiles narrow these per register.
CHANNEL_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "1-0:1.8.0": (0.0, None),
    "1-0:2.8.0": (0.0, None),
    "1-0:15.8.0": (0.0, None),
    "1-0:1.29.0": (0.0, None),
    "1-0:32.7.0": (0.0, None),
    "1-0:52.7.0": (0.0, None),
    "1-0:72.7.0": (0.0, None),
    "1-0:14.7.0": (45.0, 65.0),
    "1-0:13.7.0": (-1.0, 1.0),
    "8-0:1.0.0": (0.0, None),
    "8-0:2.0.0": (0.0, None),
    "8-0:1.29.0": (0.0, None),
}


class UnitError(ValueError):
    """A value's unit cannot be converted to the unit asked for; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit of measurement: the quantity it measures and its factor to that quantity's base unit."""

    code: str
    quantity: str
    factor: float


#: Units Relevé converts between: value_in_base = value * factor. Every conversion is a pure factor.
UNITS: dict[str, Unit] = {
    u.code: u
    for u in (
        Unit("Wh", "active energy", 0.001),
        Unit("kWh", "active energy", 1.0),
        Unit("MWh", "active energy", 1000.0),
        Unit("varh", "reactive energy", 0.001),
        Unit("kvarh", "reactive energy", 1.0),
        Unit("W", "active power", 1.0),
        Unit("kW", "active power", 1000.0),
        Unit("MW", "active power", 1e6),
        Unit("mV", "voltage", 0.001),
        Unit("V", "voltage", 1.0),
        Unit("kV", "voltage", 1000.0),
        Unit("mA", "current", 0.001),
        Unit("A", "current", 1.0),
        Unit("kA", "current", 1000.0),
        Unit("Hz", "frequency", 1.0),
        Unit("L", "volume", 0.001),
        Unit("m3", "volume", 1.0),
        Unit("L/h", "flow", 0.001),
        Unit("L/min", "flow", 0.06),
        Unit("m3/h", "flow", 1.0),
        Unit("1", "ratio", 1.0),
        Unit("%", "ratio", 0.01),
        Unit("s", "time", 1.0),
        Unit("count", "count", 1.0),
    )
}

#: Other spellings met in payloads and profiles, mapped to the code in :data:`UNITS`. Case matters
#: elsewhere: ``MWh`` and ``mWh`` are a billion apart, so only spellings that cannot clash are here.
UNIT_ALIASES: dict[str, str] = {
    "l": "L",
    "litre": "L",
    "liter": "L",
    "litres": "L",
    "liters": "L",
    "m³": "m3",
    "m^3": "m3",
    "l/h": "L/h",
    "m³/h": "m3/h",
    "m^3/h": "m3/h",
    "l/min": "L/min",
    "kwh": "kWh",
    "KWh": "kWh",
    "kVArh": "kvarh",
    "kvarh": "kvarh",
    "VArh": "varh",
}


def unit_of(code: str) -> Unit:
    """The :class:`Unit` for ``code`` or one of its aliases; UnitError names the known ones."""
    if not isinstance(code, str):
        raise UnitError(f"unit {code!r} is not a text")
    unit = UNITS.get(code) or UNITS.get(UNIT_ALIASES.get(code, ""))
    if unit is None:
        raise UnitError(f"unknown unit {code!r}; known: {', '.join(UNITS)}")
    return unit


def unit_factor(from_unit: str, to_unit: str) -> float:
    """The factor that turns a value in ``from_unit`` into ``to_unit``; UnitError when they measure different things."""
    source, target = unit_of(from_unit), unit_of(to_unit)
    if source.quantity != target.quantity:
        raise UnitError(f"{from_unit!r} ({source.quantity}) cannot be converted to {to_unit!r} ({target.quantity})")
    return source.factor / target.factor


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """``value`` in ``from_unit`` expressed in ``to_unit`` (kept exact when the units are the same)."""
    if from_unit == to_unit:
        return value
    factor = unit_factor(from_unit, to_unit)
    if factor >= 1.0:
        return value * factor
    # Dividing by the exact inverse (1000, not multiplying by 0.001) keeps 7183079 Wh = 7183.079 kWh.
    return value / (unit_of(to_unit).factor / unit_of(from_unit).factor)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one channel of one meter at one instant.

    ``ts`` is when the value was measured (poll start for polled meters); ``device_ts`` keeps the
    meter's own clock when it reports one, so clock drift can be checked.
    """

    meter: str
    channel: str
    ts: datetime
    value: float
    unit: str
    source: Source = Source.MODBUS
    read_type: ReadType = ReadType.ACTUAL
    quality: int = 0
    device_ts: datetime | None = None


class EventKind(StrEnum):
    """Meter events; DLMS/IDIS standard codes where one exists (``releve.profiles.EVENT_CODES``)."""

    POWER_FAIL = "power_fail"
    POWER_RESTORED = "power_restored"
    CLOCK_ADJUSTED = "clock_adjusted"
    CLOCK_INVALID = "clock_invalid"
    TERMINAL_COVER_OPEN = "terminal_cover_open"
    TERMINAL_COVER_CLOSED = "terminal_cover_closed"
    MAGNETIC_FIELD = "magnetic_field"
    MAGNETIC_FIELD_GONE = "magnetic_field_gone"
    METER_COVER_OPEN = "meter_cover_open"
    METER_COVER_CLOSED = "meter_cover_closed"
    AUTH_FAILURE = "auth_failure"
    REVERSE_ENERGY = "reverse_energy"
    CURRENT_WITHOUT_VOLTAGE = "current_without_voltage"
    BYPASS = "bypass"
    REVERSE_FLOW = "reverse_flow"
    LEAK = "leak"
    BURST = "burst"
    CABLE_CUT = "cable_cut"
    REMOVAL = "removal"


#: DLMS/IDIS standard event codes for the kinds that have one.
DLMS_EVENT_CODES: dict[EventKind, int] = {
    EventKind.CLOCK_ADJUSTED: 4,
    EventKind.CLOCK_INVALID: 6,
    EventKind.TERMINAL_COVER_OPEN: 40,
    EventKind.TERMINAL_COVER_CLOSED: 41,
    EventKind.MAGNETIC_FIELD: 42,
    EventKind.MAGNETIC_FIELD_GONE: 43,
    EventKind.METER_COVER_OPEN: 44,
    EventKind.METER_COVER_CLOSED: 45,
    EventKind.AUTH_FAILURE: 46,
}


@dataclass(frozen=True, slots=True)
class MeterEvent:
    """Something a meter reported about itself: tamper, power fail, clock change, reverse flow."""

    meter: str
    ts: datetime
    kind: EventKind
    source: Source = Source.MODBUS
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that could not be accepted: kept whole, with where it came from and why.

    ``payload`` is the input exactly as received: ``bytes`` for what arrived as bytes (an MQTT
    payload may hold anything, a NUL byte included), ``str`` for what was already text.
    """

    origin: str
    reason: str
    payload: str | bytes
    source: Source = Source.IMPORT
