"""Plausibility at the edge: values a device cannot physically report never become readings.

Every value is first expressed in its channel's unit (:func:`normalise`: ``Wh`` → ``kWh``, ``L`` →
``m3``; a unit that measures something else is refused), then checked against :class:`Limits`:

* ``finite`` — NaN or ±infinity (what a wrong word order often makes of a float);
* ``tiny`` — a float register whose raw value is non-zero but below 1e-9 in magnitude: no meter
  resolves a nanowatt or a nanoampere, but a wrong word order turns round floats into such values
  (230.0 V read as CDAB is 3.7e-41, 0.95 is 4.2e-8);
* ``sign`` / ``range`` — outside the register's physical range (profile ``minimum``/``maximum``,
  narrowed by :data:`releve.model.CHANNEL_BOUNDS`; a cumulative index is never negative and, when
  the meter shows ``register_digits`` digits, never reaches 10^digits);
* ``order`` — Modbus: the other multi-register values read in the same byte/word order in the same
  poll as an impossible one (:func:`judge_poll`);
* ``backwards`` — a cumulative index below the last accepted one, unless it rolled over (the
  register's wrap, within the rise the meter allows);
* ``rate`` — a cumulative index that rose faster than ``max_rise_per_hour`` (the meter's maximum
  power or flow) since the last accepted one.

The last two compare with the last value accepted for the same meter and channel, kept in memory
(:class:`Guard`). When :data:`REBASELINE_AFTER` values in a row disagree with the reference but
agree with one another — an index that was reset, or a first value after start that was itself
wrong — the last of them is accepted as the new reference, so a guard never refuses a meter for
good.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache, lru_cache

from releve.model import CHANNEL_BOUNDS, CHANNELS, ChannelKind, Reading, UnitError, convert, unit_factor
from releve.profiles import DataType, DeviceProfile, RegisterEntry, channel_unit

#: Values in a row that disagree with the reference but agree among themselves: the last is taken.
REBASELINE_AFTER = 3

#: A non-zero float register below this in magnitude (raw, before scale) is a wrong byte/word order.
TINY = 1e-9

#: Relative noise of a float32 register (two units in the last place): an index that "steps back"
#: by less is unchanged, not backwards.
FLOAT_NOISE = 2.5e-7

#: Seconds added to the time between two reads before applying a rate limit: a poll's timestamp
#: is when it started, the device sampled a little later.
TIME_SLACK_S = 1.0


@dataclass(frozen=True)
class Limits:
    """What a value of one channel can be, in the channel's unit."""

    minimum: float | None = None
    maximum: float | None = None
    cumulative: bool = False
    max_rise_per_hour: float | None = None
    wrap: float | None = None
    resolution: float = 0.0

    def narrowed(self, minimum: float | None, maximum: float | None) -> Limits:
        """These limits with the range narrowed to [minimum, maximum] (None: no bound)."""
        low = self.minimum if minimum is None else minimum if self.minimum is None else max(self.minimum, minimum)
        high = self.maximum if maximum is None else maximum if self.maximum is None else min(self.maximum, maximum)
        return replace(self, minimum=low, maximum=high)


@dataclass(frozen=True)
class Implausible:
    """Why a value was refused: the rule and a sentence that says what and by how much."""

    rule: str
    reason: str

    def __str__(self) -> str:
        return f"implausible ({self.rule}): {self.reason}"


@lru_cache(maxsize=1024)  # bounded: channel names come from payloads
def channel_limits(channel: str) -> Limits:
    """What physics says about ``channel`` whatever the meter (see CHANNEL_BOUNDS)."""
    known = CHANNELS.get(channel)
    low, high = CHANNEL_BOUNDS.get(channel, (None, None))
    return Limits(low, high, cumulative=known is not None and known.kind is ChannelKind.REGISTER)


def register_limits(profile: DeviceProfile, entry: RegisterEntry) -> Limits:
    """The limits of ``entry`` in its channel's unit: the profile's, narrowed by the channel's."""
    return _register_limits(entry, profile.register_digits)


@cache
def _register_limits(entry: RegisterEntry, register_digits: int | None) -> Limits:
    factor = unit_factor(entry.unit, entry.channel_unit) if entry.unit else 1.0
    maximum = entry.maximum
    if entry.kind == "cumulative" and register_digits is not None and not entry.rollover:
        display = float(10**register_digits)
        maximum = display if maximum is None else min(maximum, display)
    integer = entry.data_type not in (DataType.FLOAT32, DataType.FLOAT64)

    def scaled(value: float | None) -> float | None:
        return None if value is None else value * factor

    limits = Limits(
        minimum=scaled(entry.minimum),
        maximum=scaled(maximum),
        cumulative=entry.kind == "cumulative",
        max_rise_per_hour=scaled(entry.max_rise_per_hour),
        wrap=scaled(entry.wrap),
        resolution=abs(entry.scale * factor) if integer else 0.0,
    )
    return limits.narrowed(*CHANNEL_BOUNDS.get(entry.channel, (None, None)))


def raw_problem(entry: RegisterEntry, value: float) -> Implausible | None:
    """Rules on the decoded register value itself, before any unit: ``finite`` and ``tiny``."""
    if not math.isfinite(value):
        return Implausible("finite", f"{value!r} is not a finite number")
    if entry.data_type in (DataType.FLOAT32, DataType.FLOAT64):
        raw = (value - entry.offset) / entry.scale
        if raw != 0 and abs(raw) < TINY:
            return Implausible("tiny", f"{value:.3g} is a float no meter reports (a wrong byte/word order?)")
    return None


def range_problem(value: float, limits: Limits, unit: str) -> Implausible | None:
    """Apply ``finite``, ``sign`` and ``range``: None when ``value`` fits the limits."""
    if not math.isfinite(value):
        return Implausible("finite", f"{value!r} is not a finite number")
    low, high = limits.minimum, limits.maximum
    if low is not None and value < low:
        if low == 0:
            return Implausible("sign", f"{value:.6g} {unit} is negative, which this value cannot be")
        return Implausible("range", f"{value:.6g} {unit} is below the lowest possible {low:g} {unit}")
    if high is not None and value > high:
        return Implausible("range", f"{value:.6g} {unit} is above the highest possible {high:g} {unit}")
    return None


@dataclass
class _Seen:
    ts: datetime
    value: float


@dataclass
class Guard:
    """Range checks plus the memory the ``backwards`` and ``rate`` rules need, per (meter, channel).

    ``rate_factor`` multiplies every ``max_rise_per_hour`` (1 for real meters; a simulator running
    96 times faster than the wall clock needs 96).
    """

    rate_factor: float = 1.0
    last: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    refused: dict[tuple[str, str], list[_Seen]] = field(default_factory=dict)
    rebaselined: int = 0

    def check(
        self, meter: str, channel: str, ts: datetime, value: float, limits: Limits, unit: str
    ) -> Implausible | None:
        """None when ``value`` is plausible (and then remembered), else why not."""
        problem = range_problem(value, limits, unit)
        if problem is not None or not limits.cumulative:
            return problem
        key = (meter, channel)
        last = self.last.get(key)
        if last is not None and ts <= last.ts:
            return None  # not newer than the reference (a redelivery, out of order): range only
        if last is None or (problem := self._step(last, ts, value, limits, unit)) is None:
            self.last[key] = _Seen(ts, value)
            self.refused.pop(key, None)
            return None
        chain = self.refused.setdefault(key, [])
        if chain and not (ts > chain[-1].ts and self._step(chain[-1], ts, value, limits, unit) is None):
            chain.clear()
        chain.append(_Seen(ts, value))
        if len(chain) >= REBASELINE_AFTER:
            self.last[key] = chain[-1]
            self.refused.pop(key, None)
            self.rebaselined += 1
            return None
        return problem

    def _step(self, last: _Seen, ts: datetime, value: float, limits: Limits, unit: str) -> Implausible | None:
        hours = ((ts - last.ts).total_seconds() + TIME_SLACK_S) / 3600
        # An integer register does not jitter: half a count back is already a step back. A float
        # register may wobble by its last bits. A rise is quantised to whole counts either way.
        noise = limits.resolution / 2 if limits.resolution else FLOAT_NOISE * abs(value)
        tolerance = max(limits.resolution, FLOAT_NOISE * abs(value))
        allowed = math.inf if limits.max_rise_per_hour is None else limits.max_rise_per_hour * self.rate_factor * hours
        rise = value - last.value
        if rise < -noise:
            wrapped = None if limits.wrap is None else value + limits.wrap - last.value
            if wrapped is None or wrapped > allowed + tolerance:
                return Implausible(
                    "backwards",
                    f"{value:.6g} {unit} is below the last accepted {last.value:.6g} {unit} "
                    f"({last.ts.isoformat()}) and is no rollover",
                )
            rise = wrapped
        if rise > allowed + tolerance:
            return Implausible(
                "rate",
                f"rose {rise:.6g} {unit} in {hours * 3600 - TIME_SLACK_S:.0f} s since {last.value:.6g} {unit} "
                f"({last.ts.isoformat()}): more than the {limits.max_rise_per_hour:g} {unit} per hour the meter allows",
            )
        return None


def normalise(value: float, unit: str, channel: str) -> tuple[float, str]:
    """``value`` in ``unit`` expressed in ``channel``'s unit; UnitError when it cannot be.

    A channel Relevé does not know, or a value without a unit, is left as it is (the write path
    refuses unknown channels and units with its own reason).
    """
    target = channel_unit(channel)
    if target is None or not unit or unit == target:
        return value, unit or target or ""
    return convert(value, unit, target), target


#: Rules that say a value cannot come from the device at all (the others judge it against history).
IMPOSSIBLE = ("finite", "tiny", "sign", "range")


def judge_poll(
    guard: Guard, meter: str, profile: DeviceProfile, ts: datetime, decoded: Iterable[tuple[RegisterEntry, float]]
) -> tuple[dict[RegisterEntry, float], dict[RegisterEntry, Implausible]]:
    """Judge the values one poll decoded: accepted (in their channels' units) and refused, by register.

    A wrong word order or a wrong profile garbles every multi-register value decoded the same way,
    and some garbled values fall inside their limits by chance (6951.0 W read as CDAB is 3.06e-5 W).
    So when one multi-register value of a poll is impossible, the others of the same byte/word order
    in that poll are refused with it (rule ``order``). Status registers pass unchecked.
    """
    accepted: dict[RegisterEntry, float] = {}
    refused: dict[RegisterEntry, Implausible] = {}
    stored: dict[RegisterEntry, float] = {}
    for entry, value in decoded:
        if entry.kind == "status":
            accepted[entry] = value
            continue
        stored[entry] = convert(value, entry.unit, entry.channel_unit) if entry.unit else value
        problem = raw_problem(entry, value) or range_problem(
            stored[entry], register_limits(profile, entry), entry.channel_unit
        )
        if problem is not None:
            refused[entry] = problem
    garbled: dict[str, list[str]] = {}
    for entry, problem in refused.items():
        if entry.count > 1 and problem.rule in IMPOSSIBLE:
            garbled.setdefault(entry.order, []).append(entry.name)
    for entry, value in stored.items():
        if entry in refused:
            continue
        if entry.count > 1 and entry.order in garbled:
            names = ", ".join(garbled[entry.order])
            refused[entry] = Implausible(
                "order",
                f"{value:.6g} {entry.channel_unit} is suspect: {names}, read in the same {entry.order} "
                "order in this poll, cannot be what the device reports (wrong byte/word order or profile?)",
            )
            continue
        problem = guard.check(meter, entry.channel, ts, value, register_limits(profile, entry), entry.channel_unit)
        if problem is None:
            accepted[entry] = value
        else:
            refused[entry] = problem
    return accepted, refused


def value_limits(profile: DeviceProfile | None, channel: str) -> Limits:
    """The limits a value of ``channel`` is judged by: ``profile``'s register for it, else physics."""
    entry = profile.entry(channel) if profile is not None else None
    if profile is not None and entry is not None and entry.kind != "status":
        return register_limits(profile, entry)
    return channel_limits(channel)


def check_value(
    guard: Guard, meter: str, channel: str, ts: datetime, value: float, unit: str, limits: Limits
) -> tuple[float, str, str | None]:
    """``value`` in its channel's unit, and why it is refused (None when it passes; then remembered)."""
    what = f"{meter} {channel}"
    try:
        value, unit = normalise(value, unit, channel)
    except UnitError as exc:
        return value, unit, f"{what}: (unit) {exc}"
    problem = guard.check(meter, channel, ts, value, limits, unit)
    if problem is not None:
        return value, unit, f"{what}: ({problem.rule}) {problem.reason}"
    return value, unit, None


def check_readings(
    guard: Guard, readings: Sequence[Reading], profile: DeviceProfile | None = None
) -> tuple[list[Reading], list[str]]:
    """Return the readings that pass, in their channels' units, and why the others do not.

    The limits come from ``profile``'s register for the channel when there is one, else from what
    physics says about the channel (:func:`channel_limits`).
    """
    kept: list[Reading] = []
    problems: list[str] = []
    for reading in readings:
        if not isinstance(reading.ts, datetime) or reading.ts.tzinfo is None:
            problems.append(f"{reading.meter} {reading.channel}: (time) {reading.ts!r} has no time zone")
            continue  # a custom decoder's slip
        value, unit, problem = check_value(
            guard,
            reading.meter,
            reading.channel,
            reading.ts,
            reading.value,
            reading.unit,
            value_limits(profile, reading.channel),
        )
        if problem is not None:
            problems.append(problem)
            continue
        same = value == reading.value and unit == reading.unit
        kept.append(reading if same else replace(reading, value=value, unit=unit))
    return kept, problems
