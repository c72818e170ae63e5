"""Device profiles: one TOML file per meter model describing its Modbus register map.

A profile says, for every register a meter exposes, which channel it carries (an OBIS code from
:data:`releve.model.CHANNELS`, one of :data:`EXTRA_CHANNELS`, or a status name from
:data:`STATUS_CHANNELS`), where it lives (function code 3 holding / 4 input, 0-based address), how
it is encoded (data type, byte/word order, ``value = raw * scale + offset``) and how often it should
be polled (``poll_class``). The simulators encode register values with it; the collectors plan
merged reads and decode with it.

Byte and word orders name the four bytes of a 32-bit big-endian value ``A B C D`` as they appear on
the wire, register by register: ``ABCD`` big-endian (Eastron), ``CDAB`` word-swapped, ``BADC``
byte-swapped inside each word, ``DCBA`` fully reversed. 64-bit values extend the same rule to four
words. 16-bit values use ``AB`` (big-endian) or ``BA`` (byte-swapped). pymodbus's
``convert_from_registers`` handles word order only, so :func:`encode` and :func:`decode` do it all
here.

Each value register also says what the device can physically report, in its ``unit``:
``minimum``/``maximum`` and, for cumulative registers, ``max_rise_per_hour`` (the meter's maximum
power or flow). The collectors refuse decoded values beyond these (``collectors.plausibility``);
``unit`` must measure what the channel measures, and values are stored in the channel's unit.

Profiles ship in ``releve/profiles/<model>.toml``; :func:`load_profile` reads one by model name or
path and raises :class:`ProfileError` naming the file, the field and the problem.
"""

from __future__ import annotations

import math
import struct
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from releve.model import CHANNELS, DLMS_EVENT_CODES, Commodity, EventKind, UnitError, unit_factor
from releve.validation import describe, read_toml

#: Where the shipped profiles live.
PROFILE_DIR = Path(__file__).with_name("profiles")

_EXTRA: dict[str, tuple[str, str]] = {
    "1-0:21.7.0": ("W", "active power import L1"),
    "1-0:41.7.0": ("W", "active power import L2"),
    "1-0:61.7.0": ("W", "active power import L3"),
    "1-0:13.7.0": ("1", "power factor"),
}
#: OBIS codes (code -> (unit, description)) profiles may use that :data:`releve.model.CHANNELS` lacks.
EXTRA_CHANNELS: dict[str, tuple[str, str]] = {k: v for k, v in _EXTRA.items() if k not in CHANNELS}

#: Non-OBIS channels: meter state and events.
STATUS_CHANNELS: dict[str, str] = {
    "status": "alarm/status bitfield; bit meanings in the profile's [status_bits] table",
    "event_counter": "number of events logged since installation (wraps at the register width)",
    "last_event_code": "code of the most recent event (see EVENT_CODES)",
    "last_event_ts": "UNIX time (s) of the most recent event, by the meter's clock",
    "clock": "the meter's clock, UNIX time (s); differs from true time when the clock drifts",
}

#: Event codes on the wire: DLMS/IDIS standard codes where one exists, vendor-style codes beyond.
EVENT_CODES: dict[EventKind, int] = {
    EventKind.POWER_FAIL: 1,
    EventKind.POWER_RESTORED: 2,
    **DLMS_EVENT_CODES,
    EventKind.REVERSE_ENERGY: 200,
    EventKind.CURRENT_WITHOUT_VOLTAGE: 201,
    EventKind.BYPASS: 202,
    EventKind.REVERSE_FLOW: 210,
    EventKind.LEAK: 211,
    EventKind.BURST: 212,
    EventKind.CABLE_CUT: 213,
    EventKind.REMOVAL: 214,
}

#: Event kind for a code read from a meter.
EVENT_KINDS_BY_CODE: dict[int, EventKind] = {code: kind for kind, code in EVENT_CODES.items()}


class ProfileError(Exception):
    """A device profile is invalid; the message names the file, the field and the problem."""


class DataType(StrEnum):
    """Register data types."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"


_STRUCT: dict[DataType, str] = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}


def channel_unit(channel: str) -> str | None:
    """The unit a channel is stored in (None for status channels, which carry no unit)."""
    if channel in CHANNELS:
        return CHANNELS[channel].unit
    if channel in EXTRA_CHANNELS:
        return EXTRA_CHANNELS[channel][0]
    return None


ORDERS_16 = ("AB", "BA")
ORDERS_WIDE = ("ABCD", "CDAB", "BADC", "DCBA")


def register_count(data_type: DataType) -> int:
    """Return how many 16-bit registers a value of ``data_type`` takes."""
    return struct.calcsize(_STRUCT[data_type]) // 2


class RegisterEntry(BaseModel):
    """One value in a meter's register map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Unique name inside the profile.")
    channel: str = Field(description="OBIS code (releve.model.CHANNELS / EXTRA_CHANNELS) or status name.")
    function: Literal[3, 4] = Field(description="3 holding registers, 4 input registers.")
    address: int = Field(ge=0, le=65535, description="0-based register address (PDU addressing).")
    data_type: DataType
    order: str = Field(default="", description="Byte/word order; empty: big-endian.")
    scale: float = Field(default=1.0, description="value = raw * scale + offset")
    offset: float = 0.0
    unit: str = ""
    kind: Literal["cumulative", "instantaneous", "status"]
    poll_class: str = Field(default="instant", pattern=r"^[a-z][a-z0-9_]*$", description="energy, instant, events…")
    rollover: bool = Field(default=False, description="Integer counter that wraps at 2^bits instead of overflowing.")
    minimum: float | None = Field(
        default=None, description="Lowest value the device can physically report, in ``unit``."
    )
    maximum: float | None = Field(
        default=None, description="Highest value the device can physically report, in ``unit``."
    )
    max_rise_per_hour: float | None = Field(
        default=None,
        gt=0,
        description="Cumulative registers: the largest increase per hour (the meter's maximum power or "
        "flow), in ``unit``.",
    )

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, value: str) -> str:
        if value in CHANNELS or value in EXTRA_CHANNELS or value in STATUS_CHANNELS:
            return value
        raise ValueError(f"unknown channel {value!r}: not in releve.model.CHANNELS, EXTRA_CHANNELS or STATUS_CHANNELS")

    @field_validator("scale")
    @classmethod
    def _nonzero_scale(cls, value: float) -> float:
        if value == 0 or not math.isfinite(value):
            raise ValueError("scale must be finite and non-zero")
        return value

    @model_validator(mode="after")
    def _check_order(self) -> RegisterEntry:
        width16 = register_count(self.data_type) == 1
        allowed = ORDERS_16 if width16 else ORDERS_WIDE
        if not self.order:
            object.__setattr__(self, "order", allowed[0])
        elif self.order not in allowed:
            raise ValueError(f"order {self.order!r} is not valid for {self.data_type}: use one of {allowed}")
        if self.rollover and self.data_type not in (DataType.UINT16, DataType.UINT32, DataType.UINT64):
            raise ValueError("rollover needs an unsigned integer data type")
        if self.address + self.count > 65536:
            raise ValueError("register block runs past address 65535")
        self._check_limits()
        return self

    def _check_limits(self) -> None:
        for name in ("minimum", "maximum", "max_rise_per_hour"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        if self.kind == "status" and (self.minimum, self.maximum, self.max_rise_per_hour) != (None, None, None):
            raise ValueError("status registers take no minimum, maximum or max_rise_per_hour")
        if self.minimum is not None and self.maximum is not None and self.minimum >= self.maximum:
            raise ValueError(f"minimum {self.minimum:g} must be below maximum {self.maximum:g}")
        if self.max_rise_per_hour is not None and self.kind != "cumulative":
            raise ValueError("max_rise_per_hour applies to cumulative registers only")
        if self.kind == "cumulative" and self.minimum is not None and self.minimum < 0:
            raise ValueError(f"minimum {self.minimum:g}: a cumulative register cannot be negative")
        target = channel_unit(self.channel)
        if self.unit and target is not None:
            try:
                unit_factor(self.unit, target)
            except UnitError as exc:
                raise ValueError(f"unit: {exc} (the unit of channel {self.channel})") from exc

    @property
    def channel_unit(self) -> str:
        """The unit values of this register are stored in: the channel's (status registers: none)."""
        return channel_unit(self.channel) or self.unit

    @property
    def count(self) -> int:
        """Number of registers this entry occupies."""
        return register_count(self.data_type)

    @property
    def wrap(self) -> float | None:
        """The engineering value at which a rolling-over counter returns to zero (None: no rollover)."""
        if not self.rollover:
            return None
        return float(2 ** (16 * self.count)) * self.scale


class SerialSpec(BaseModel):
    """Where the serial number lives: unsigned words at ``addresses``, most significant first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: Literal[3, 4] = 3
    addresses: list[int] = Field(min_length=1, max_length=4)
    data_type: Literal[DataType.UINT16, DataType.UINT32] = DataType.UINT32
    order: str = "ABCD"


#: Commands a profile may describe (the kinds of releve.meter_commands).
COMMAND_KINDS = ("disconnect", "reconnect", "clock_sync", "demand_reset")


class CommandWrite(BaseModel):
    """What a command writes: function 5 (one coil), 6 (one register) or 16 (several registers).

    ``value``: for function 5, 1 (coil on, 0xFF00) or 0 (off); for 6, one 16-bit word; for 16, a list
    of words, or ``"clock"``: the collector's time as UNIX seconds, encoded as ``data_type``/``order``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: Literal[5, 6, 16]
    address: int = Field(ge=0, le=65535)
    value: int | list[int] | Literal["clock"]
    data_type: DataType = DataType.UINT32
    order: str = "ABCD"

    @model_validator(mode="after")
    def _check_value(self) -> CommandWrite:
        v = self.value
        if self.function == 5 and v not in (0, 1):
            raise ValueError("function 5 writes one coil: value must be 0 or 1")
        if self.function == 6 and (not isinstance(v, int) or not 0 <= v <= 0xFFFF):
            raise ValueError("function 6 writes one register: value must be an integer 0..65535")
        if self.function == 16:
            if isinstance(v, int):
                raise ValueError('function 16 writes registers: value must be a list of words or "clock"')
            if isinstance(v, list) and not (1 <= len(v) <= 123 and all(0 <= w <= 0xFFFF for w in v)):
                raise ValueError("function 16: 1 to 123 words of 0..65535")
        if v == "clock" and self.function != 16:
            raise ValueError('value "clock" needs function 16')
        return self

    def registers(self, now: float) -> list[int]:
        """The words (function 6/16) or the coil state (function 5, one element) to write at UNIX time ``now``."""
        if self.value == "clock":
            entry = RegisterEntry(
                name="clock",
                channel="clock",
                function=3,
                address=self.address,
                data_type=self.data_type,
                order=self.order,
                kind="status",
            )
            return encode(entry, int(now))
        return list(self.value) if isinstance(self.value, list) else [self.value]


class CommandConfirm(BaseModel):
    """How a command is confirmed: read ``address`` with ``function`` (1 coils, 2 discrete inputs, 3/4 registers).

    ``expect``: the value that confirms it (a coil: 0/1), ``"clock"`` (the meter's clock within
    ``tolerance_s`` of the collector's) or ``"increment"`` (a counter, read before the write, has
    gone up: demand resets).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: Literal[1, 2, 3, 4]
    address: int = Field(ge=0, le=65535)
    data_type: DataType = DataType.UINT16
    order: str = ""
    expect: int | Literal["clock", "increment"]
    tolerance_s: float = Field(10.0, gt=0, description="clock: how far the read-back may be from the time written")

    @property
    def entry(self) -> RegisterEntry:
        """The read-back as a register entry (to decode it)."""
        return RegisterEntry(
            name="confirm",
            channel="status",
            function=3 if self.function in (1, 2, 3) else 4,
            address=self.address,
            data_type=self.data_type,
            order=self.order,
            kind="status",
        )

    @property
    def count(self) -> int:
        """Registers (or bits) to read."""
        return 1 if self.function in (1, 2) else register_count(self.data_type)

    @model_validator(mode="after")
    def _check(self) -> CommandConfirm:
        self.entry  # noqa: B018 - validates data_type and order
        if self.function in (1, 2) and self.expect not in (0, 1):
            raise ValueError("a coil or discrete input reads 0 or 1: expect must be 0 or 1")
        return self


class CommandSpec(BaseModel):
    """One command of a meter model: the write, and the read-back that confirms it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    write: CommandWrite
    confirm: CommandConfirm
    settle_s: float = Field(0.2, ge=0, le=60, description="Wait this long after the write before reading back.")
    confirm_within_s: float = Field(
        5.0, gt=0, le=600, description="Keep reading back this long before the attempt counts as unconfirmed."
    )


class DeviceProfile(BaseModel):
    """A meter model: identity, commodity and its register map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    manufacturer: str = ""
    description: str = ""
    commodity: Commodity
    phases: Literal[1, 3] = 1
    register_digits: int | None = Field(
        default=None, ge=3, le=12, description="Digits of the display index (rollover at 10^digits units)."
    )
    serial: SerialSpec | None = None
    status_bits: dict[str, int] = Field(default_factory=dict, description="EventKind value -> bit 0..15.")
    registers: list[RegisterEntry] = Field(min_length=1)
    commands: dict[str, CommandSpec] = Field(
        default_factory=dict, description="disconnect, reconnect, clock_sync, demand_reset: how each is done."
    )

    @field_validator("commands")
    @classmethod
    def _known_commands(cls, value: dict[str, CommandSpec]) -> dict[str, CommandSpec]:
        for kind in value:
            if kind not in COMMAND_KINDS:
                raise ValueError(f"unknown command {kind!r} (expected one of {', '.join(COMMAND_KINDS)})")
        return value

    @field_validator("status_bits")
    @classmethod
    def _check_bits(cls, value: dict[str, int]) -> dict[str, int]:
        kinds = {k.value for k in EventKind}
        for name, bit in value.items():
            if name not in kinds:
                raise ValueError(f"{name!r} is not an EventKind ({sorted(kinds)})")
            if not 0 <= bit <= 15:
                raise ValueError(f"bit {bit} of {name!r} is outside 0..15")
        if len(set(value.values())) != len(value):
            raise ValueError("two status flags share a bit")
        return value

    @model_validator(mode="after")
    def _check_map(self) -> DeviceProfile:
        names: set[str] = set()
        channels: set[str] = set()
        used: dict[tuple[int, int], str] = {}
        for entry in self.registers:
            if entry.name in names:
                raise ValueError(f"registers: duplicate name {entry.name!r}")
            names.add(entry.name)
            if entry.channel in channels:
                raise ValueError(f"registers: channel {entry.channel!r} mapped twice")
            channels.add(entry.channel)
            for reg in range(entry.address, entry.address + entry.count):
                other = used.get((entry.function, reg))
                if other is not None:
                    raise ValueError(
                        f"registers: {entry.name!r} overlaps {other!r} at function {entry.function} address {reg}"
                    )
                used[(entry.function, reg)] = entry.name
        if self.serial is not None:
            width = register_count(self.serial.data_type)
            for address in self.serial.addresses:
                for reg in range(address, address + width):
                    if (self.serial.function, reg) in used:
                        other = used[(self.serial.function, reg)]
                        raise ValueError(f"serial: address {reg} overlaps {other!r}")
        if self.status_bits and "status" not in channels:
            raise ValueError("status_bits given but no register carries the 'status' channel")
        for kind, spec in self.commands.items():
            c = spec.confirm
            if c.function in (3, 4):
                for reg in range(c.address, c.address + c.count):
                    other = used.get((c.function, reg))
                    if other is not None and not (other == "clock" and c.expect == "clock"):
                        raise ValueError(f"commands.{kind}.confirm: address {reg} overlaps {other!r}")
        return self

    def command_registers(self) -> dict[int, set[int]]:
        """Function code (1..4) -> addresses the command read-backs use (simulators serve them)."""
        out: dict[int, set[int]] = {}
        for spec in self.commands.values():
            c = spec.confirm
            out.setdefault(c.function, set()).update(range(c.address, c.address + c.count))
        return out

    def entry(self, channel: str) -> RegisterEntry | None:
        """Return the register entry carrying ``channel``, if the model has one."""
        for entry in self.registers:
            if entry.channel == channel:
                return entry
        return None

    def status_word(self, active: set[str]) -> int:
        """Return the status register value with the bits of the ``active`` event kinds set."""
        word = 0
        for name in active:
            bit = self.status_bits.get(name)
            if bit is not None:
                word |= 1 << bit
        return word

    def _serial_entry(self, address: int) -> RegisterEntry:
        assert self.serial is not None
        spec = self.serial
        width = register_count(spec.data_type)
        return RegisterEntry(
            name="serial",
            channel="status",
            function=spec.function,
            address=address,
            data_type=spec.data_type,
            order=spec.order if width > 1 else "AB",
            kind="status",
        )

    def decode_serial(self, words: list[list[int]]) -> int:
        """Return the serial number from the registers read at each of ``serial.addresses``."""
        if self.serial is None:
            raise ValueError(f"{self.model} has no serial-number registers")
        bits = 16 * register_count(self.serial.data_type)
        value = 0
        for address, regs in zip(self.serial.addresses, words, strict=True):
            value = (value << bits) | int(decode(self._serial_entry(address), regs))
        return value

    def serial_registers(self, serial: int) -> dict[tuple[int, int], int]:
        """Map (function, address) to register value for the serial number ``serial``."""
        if self.serial is None:
            return {}
        spec = self.serial
        width = register_count(spec.data_type)
        bits = 16 * width
        n = len(spec.addresses)
        if serial < 0 or serial >= 2 ** (bits * n):
            raise ValueError(f"serial {serial} does not fit {n} x {spec.data_type}")
        out: dict[tuple[int, int], int] = {}
        for i, address in enumerate(spec.addresses):
            part = (serial >> (bits * (n - 1 - i))) & ((1 << bits) - 1)
            for j, reg in enumerate(encode(self._serial_entry(address), part)):
                out[(spec.function, address + j)] = reg
        return out


def _swap(data: bytes, order: str) -> bytes:
    """Reorder big-endian ``data`` into wire order (the mapping is its own inverse)."""
    if order in ("ABCD", "AB"):
        return data
    if order in ("DCBA", "BA"):
        return data[::-1]
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if order == "CDAB":
        return b"".join(reversed(words))
    if order == "BADC":
        return b"".join(w[::-1] for w in words)
    raise ValueError(f"unknown order {order!r}")


def encode(entry: RegisterEntry, value: float) -> list[int]:
    """Return the registers carrying engineering ``value`` for ``entry`` (raw = (value - offset) / scale).

    Integer types round to the nearest raw count; rolling-over counters wrap modulo 2^bits; any
    other out-of-range value raises ValueError.
    """
    exact = isinstance(value, int) and entry.scale == 1 and entry.offset == 0
    raw = value if exact else (value - entry.offset) / entry.scale
    fmt = _STRUCT[entry.data_type]
    if entry.data_type in (DataType.FLOAT32, DataType.FLOAT64):
        data = struct.pack(fmt, raw)
    else:
        if not math.isfinite(raw):
            raise ValueError(f"{entry.name}: cannot encode {value!r} as {entry.data_type}")
        count = int(raw) if exact else round(raw)
        bits = 16 * entry.count
        if entry.rollover:
            count %= 1 << bits
        try:
            data = struct.pack(fmt, count)
        except struct.error as exc:
            raise ValueError(f"{entry.name}: {value!r} (raw {count}) does not fit {entry.data_type}") from exc
    wire = _swap(data, entry.order)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]


def decode(entry: RegisterEntry, registers: list[int]) -> float:
    """Return the engineering value of ``entry`` from its registers as read off the wire."""
    if len(registers) != entry.count:
        raise ValueError(f"{entry.name}: {entry.data_type} needs {entry.count} registers: {len(registers)}")
    wire = b"".join(int(r).to_bytes(2, "big") for r in registers)
    (raw,) = struct.unpack(_STRUCT[entry.data_type], _swap(wire, entry.order))
    return float(raw) * entry.scale + entry.offset


def parse_profile(data: dict[str, object], origin: str = "<profile>") -> DeviceProfile:
    """Validate an already-parsed profile; ProfileError names ``origin``, the field and the problem."""
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{origin}: invalid profile: {describe(exc, '(profile)')}") from exc


def load_profile_file(path: Path) -> DeviceProfile:
    """Read and validate one profile file."""
    data = read_toml(path, ProfileError)
    profile = parse_profile(data, str(path))
    if profile.model != path.stem:
        raise ProfileError(f"{path}: model: {profile.model!r} does not match the file name {path.stem!r}")
    return profile


@cache
def load_profile(name: str) -> DeviceProfile:
    """Load a shipped profile by model name (``sdm630``), or a profile file by path."""
    path = Path(name)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name}.toml"
        if not path.is_file():
            shipped = ", ".join(profile_names())
            raise ProfileError(f"{path}: no profile for model {name!r}; shipped: {shipped}")
    return load_profile_file(path)


def profile_names() -> list[str]:
    """Return the model names of the shipped profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def markdown_table(profile: DeviceProfile) -> str:
    """Return the register map of ``profile`` as a Markdown table (docs/simulators.md embeds these)."""
    lines = [
        f"**{profile.model}** — {profile.description} ({profile.commodity.value}, {profile.phases} phase"
        f"{'s' if profile.phases > 1 else ''})",
        "",
        "| name | channel | FC | address | type | order | scale | unit | kind | poll class |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in sorted(profile.registers, key=lambda e: (e.function, e.address)):
        scale = f"{e.scale:g}" + (f" + {e.offset:g}" if e.offset else "") + (" (rolls over)" if e.rollover else "")
        lines.append(
            f"| {e.name} | `{e.channel}` | {e.function} | {e.address} | {e.data_type.value} | {e.order} "
            f"| {scale} | {e.unit} | {e.kind} | {e.poll_class} |"
        )
    if profile.serial is not None:
        s = profile.serial
        lines.append(
            f"| serial number | — | {s.function} | {', '.join(map(str, s.addresses))} | "
            f"{s.data_type.value} each, most significant first | {s.order} | 1 | | status | — |"
        )
    if profile.status_bits:
        bits = ", ".join(f"bit {b} {name}" for name, b in sorted(profile.status_bits.items(), key=lambda kv: kv[1]))
        lines += ["", f"Status bits: {bits}."]
    if profile.commands:
        lines += ["", "| command | write | confirmed when |", "|---|---|---|"]
        for kind in COMMAND_KINDS:
            spec = profile.commands.get(kind)
            if spec is None:
                continue
            w, c = spec.write, spec.confirm
            value = (
                f"the time ({w.data_type.value} {w.order})"
                if w.value == "clock"
                else (("on" if w.value else "off") if w.function == 5 else str(w.value))
            )
            expect = {
                "clock": f"it reads the time written ± {c.tolerance_s:g} s",
                "increment": "it went up by one",
            }.get(str(c.expect), f"it reads {c.expect}")
            lines.append(
                f"| {kind} | FC {w.function:02d} at {w.address} ← {value} "
                f"| FC {c.function:02d} at {c.address}: {expect} |"
            )
    return "\n".join(lines) + "\n"


def markdown_register_maps() -> str:
    """Return the register maps of every shipped profile, as embedded in docs/simulators.md."""
    return "\n".join(markdown_table(load_profile(name)) for name in profile_names())
