"""Injection kinds: one table entry per theft, fault or context kind the simulator injects.

An entry says everything about its kind, so adding one is adding an entry (and a test):

* who it fits (``commodities``, ``fits``) and its documentation (``effect``, ``params_doc``,
  ``events_doc``: the table in docs/simulators.md is generated from them);
* ``draw``: its parameters and the meter events it raises, drawn from the meter's own generator
  when the fleet is built (the order of the draws is part of the seeded fleet: keep it);
* its transforms over a block, each applied at its stage of :meth:`Simulation._compute`, in this order:

  1. ``flow``: what flows and what the meter counts, before theft (a leak adds to both, a spike to the
     recorded only, a communication loss blanks the availability);
  2. ``record`` (theft only): the recorded day profile from the true one (meters' days × intervals),
     and ``export``: the share of the true flow counted on the export/reverse register;
  3. ``reset``: on the internal indexes, at the episode's first step (a meter exchange);
  4. ``report``: on what the import register shows (frozen register, scale jump);

* ``shown``: the same as ``report`` for one live instant, and ``flag``: the status bit it raises at a step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from releve.model import Commodity, EventKind
from releve.profiles import DeviceProfile
from simulators.consumption import FloatArray


# The engine applies this table, so the table sees the engine only through what its entries use:
# these two protocols (simulators.engine.MeterSpec and Simulation satisfy them), not an import back.
class MeterSpec(Protocol):
    """The simulated meter an injection is drawn for (``simulators.engine.MeterSpec``)."""

    index: int
    commodity: Commodity
    daily: float
    initial_import: float

    @property
    def profile(self) -> DeviceProfile: ...

    @property
    def import_channel(self) -> str: ...


class _ModbusFacts(Protocol):
    @property
    def slow_delay_ms(self) -> float: ...


class _FleetFacts(Protocol):
    """What an injection reads of the fleet file (``simulators.config.FleetConfig``, which imports this table)."""

    @property
    def serial_base(self) -> int: ...

    @property
    def modbus(self) -> _ModbusFacts: ...


class Simulation(Protocol):
    """The parts of the engine an injection uses (``simulators.engine.Simulation``)."""

    @property
    def config(self) -> _FleetFacts: ...

    steps_per_day: int

    def _event(self, meter: int, step: int, kind: EventKind) -> None: ...

    def next_manual_read(self, meter: int, step: int) -> int: ...

    def _frozen_value(self, ep: Episode, first: int, imp_index: FloatArray) -> float: ...


BOTH = frozenset(Commodity)
ELECTRICITY = frozenset({Commodity.ELECTRICITY})
WATER = frozenset({Commodity.WATER})


@dataclass(slots=True)
class Episode:
    """An injection in step units (absolute interval numbers from the fleet start)."""

    meter: int
    category: str
    kind: str
    s0: int
    s1: int
    params: dict[str, Any]


@dataclass(slots=True)
class Draw:
    """An episode being drawn: the kind's ``draw`` sets its parameters, raises events, may move its steps."""

    sim: Simulation
    meter: MeterSpec
    rng: np.random.Generator
    s0: int
    s1: int
    params: dict[str, Any] = field(default_factory=dict)
    labelled: bool = True  # False: labelled where it happens instead (a rollover)

    def event(self, step: int, kind: EventKind) -> None:
        """Raise a meter event at ``step``."""
        self.sim._event(self.meter.index, step, kind)

    def uniform(self, low: float, high: float) -> float:
        """A parameter drawn uniformly, rounded to 3 decimals as labels show it."""
        return round(float(self.rng.uniform(low, high)), 3)


@dataclass(slots=True)
class Flows:
    """A block's arrays (meters × steps) the ``flow`` stage changes."""

    true: FloatArray
    rec: FloatArray
    available: np.ndarray
    dt_h: float


@dataclass(frozen=True, slots=True)
class Injection:
    """One injection kind. Only ``kind``, ``category`` and the documentation are required."""

    kind: str
    category: str  # theft, fault or context
    effect: str
    params_doc: str = "—"
    events_doc: str = "—"
    commodities: frozenset[Commodity] = BOTH
    fits: Callable[[MeterSpec], bool] | None = None  # more than the commodity (a narrow counter for rollover)
    draw: Callable[[Draw], None] | None = None
    point: bool = False  # one interval long (from ``s0`` as the draw leaves it)
    flow: Callable[[Episode, Flows, slice], None] | None = None
    record: Callable[[dict[str, Any], FloatArray, FloatArray, int], FloatArray] | None = None
    export: Callable[[dict[str, Any]], float] | None = None
    reset: Callable[[Episode, FloatArray, FloatArray, int], None] | None = None
    report: Callable[[Simulation, Episode, FloatArray, FloatArray, slice, int], None] | None = None
    shown: Callable[[Simulation, Episode, float, int, FloatArray], float] | None = None
    flag: Callable[[Episode, int, int], EventKind | None] | None = None

    def fits_meter(self, meter: MeterSpec) -> bool:
        """Whether the kind can be injected on ``meter``."""
        return meter.commodity in self.commodities and (self.fits is None or self.fits(meter))


# -- parameters and events --------------------------------------------------------------------------


def _alpha(high: float) -> Callable[[Draw], None]:
    def draw(d: Draw) -> None:
        d.params["alpha"] = d.uniform(0.1, high)

    return draw


def _draw_h2(d: Draw) -> None:
    start_hour = float(d.rng.uniform(0, 20))
    d.params["start_hour"] = round(start_hour, 2)
    d.params["hours"] = round(float(d.rng.uniform(4, 24 - start_hour)), 2)


def _draw_gamma(d: Draw) -> None:
    d.params.update(gamma_min=0.1, gamma_max=0.8)


def _draw_bypass(d: Draw) -> None:
    d.params["beta"] = d.uniform(0.3, 0.9)
    d.params["flagged"] = bool(d.rng.random() < 0.5)
    if d.params["flagged"]:
        d.event(d.s0, EventKind.BYPASS)


def _draw_tamper(d: Draw) -> None:
    d.params["alpha"] = d.uniform(0.1, 0.5)
    trigger = EventKind.TERMINAL_COVER_OPEN if d.rng.random() < 0.5 else EventKind.MAGNETIC_FIELD
    d.params["event"] = trigger.value
    d.event(d.s0, trigger)
    if trigger is EventKind.TERMINAL_COVER_OPEN:
        d.event(d.s0 + 1, EventKind.TERMINAL_COVER_CLOSED)
    else:
        d.event(d.s1, EventKind.MAGNETIC_FIELD_GONE)


def _draw_reverse_energy(d: Draw) -> None:
    d.params["beta"] = d.uniform(0.6, 1.0)
    d.event(d.s0, EventKind.REVERSE_ENERGY)


def _draw_reverse_flow(d: Draw) -> None:
    d.event(d.s0, EventKind.REVERSE_FLOW)


def _draw_water_magnet(d: Draw) -> None:
    d.params["alpha"] = d.uniform(0.1, 0.5)
    d.event(d.s0, EventKind.MAGNETIC_FIELD)
    d.event(d.s1, EventKind.MAGNETIC_FIELD_GONE)


def _draw_slow(d: Draw) -> None:
    d.params["delay_ms"] = d.sim.config.modbus.slow_delay_ms


def _draw_clock_drift(d: Draw) -> None:
    d.params["seconds_per_day"] = round(float(d.rng.choice([-1, 1]) * d.rng.uniform(20, 120)), 1)
    d.event(d.s1, EventKind.CLOCK_ADJUSTED)


def _draw_rollover(d: Draw) -> None:
    # Place the index so that the narrow counter wraps during day s0 at the expected rate.
    meter, spd = d.meter, d.sim.steps_per_day
    entry = meter.profile.entry(meter.import_channel)
    assert entry is not None and entry.wrap is not None
    expected = meter.daily * d.s0 / spd
    meter.initial_import = round(entry.wrap - (expected % entry.wrap) - meter.daily * 0.5, 1) % entry.wrap
    d.params["wrap"] = entry.wrap
    d.labelled = False  # every wrap is labelled where it happens (Simulation._derive_rollovers)


def _has_rollover(meter: MeterSpec) -> bool:
    entry = meter.profile.entry(meter.import_channel)
    return entry is not None and entry.rollover


def _draw_exchange(d: Draw) -> None:
    d.params["new_initial"] = d.uniform(0, 5)
    d.params["new_serial"] = str(d.sim.config.serial_base + 500_000 + d.meter.index)


def _draw_spike(d: Draw) -> None:
    d.params["factor"] = round(float(d.rng.uniform(20, 60)), 1)


def _draw_scale_jump(d: Draw) -> None:
    d.params["factor"] = int(d.rng.choice([10, 1000]))


def _draw_digit_error(d: Draw) -> None:
    d.s0 = d.sim.next_manual_read(d.meter.index, d.s0)  # a typing error happens on a manual read
    d.params["error"] = str(d.rng.choice(["extra_digit", "missing_digit", "transposed"]))
    d.params["digit"] = int(d.rng.integers(0, 10))


def _draw_leak(d: Draw) -> None:
    d.params["litres_per_hour"] = round(float(d.rng.uniform(5, 40)), 1)
    d.event(min(d.s1 - 1, d.s0 + d.sim.steps_per_day), EventKind.LEAK)


# -- transforms -------------------------------------------------------------------------------------


def _flow_vacancy(ep: Episode, f: Flows, w: slice) -> None:
    f.true[ep.meter, w] *= ep.params["factor"]
    f.rec[ep.meter, w] *= ep.params["factor"]


def _flow_leak(ep: Episode, f: Flows, w: slice) -> None:
    extra = ep.params["litres_per_hour"] / 1000.0 * f.dt_h
    f.true[ep.meter, w] += extra
    f.rec[ep.meter, w] += extra


def _flow_spike(ep: Episode, f: Flows, w: slice) -> None:
    f.rec[ep.meter, w] += f.true[ep.meter, w] * (ep.params["factor"] - 1.0)


def _flow_silent(ep: Episode, f: Flows, w: slice) -> None:
    f.available[ep.meter, w] = False


# ``record`` functions: (params, true days × intervals, the meter's U(0, 1) draws shaped alike, intervals a day)
def _record_alpha(p: dict[str, Any], x: FloatArray, u: FloatArray, spd: int) -> FloatArray:
    return x * p["alpha"]


def _record_h2(p: dict[str, Any], x: FloatArray, u: FloatArray, spd: int) -> FloatArray:
    hours = (np.arange(spd) + 0.5) * 24.0 / spd
    off = (hours >= p["start_hour"]) & (hours < p["start_hour"] + p["hours"])
    return np.where(off[None, :], 0.0, x)


def _record_h3(p: dict[str, Any], x: FloatArray, u: FloatArray, spd: int) -> FloatArray:
    return (0.1 + 0.7 * u) * x


def _record_h4(p: dict[str, Any], x: FloatArray, u: FloatArray, spd: int) -> FloatArray:
    return (0.1 + 0.7 * u) * x.mean(axis=1, keepdims=True)


def _record_h5(p: dict[str, Any], x: FloatArray, u: FloatArray, spd: int) -> FloatArray:
    return np.broadcast_to(x.mean(axis=1, keepdims=True), x.shape)


def _record_h6(p: dict[str, Any], x: FloatArray, u: FloatArray, spd: int) -> FloatArray:
    return x[:, ::-1]


def _record_beta(p: dict[str, Any], x: FloatArray, u: FloatArray, spd: int) -> FloatArray:
    return x * (1.0 - p["beta"])


def _record_zero(p: dict[str, Any], x: FloatArray, u: FloatArray, spd: int) -> FloatArray:
    return np.zeros_like(x)


def _reset_exchange(ep: Episode, imp_index: FloatArray, exp_index: FloatArray, j: int) -> None:
    imp_index[ep.meter, j:] -= imp_index[ep.meter, j] - ep.params["new_initial"]
    exp_index[ep.meter, j:] -= exp_index[ep.meter, j]


def _report_frozen(
    sim: Simulation, ep: Episode, reported: FloatArray, imp_index: FloatArray, w: slice, first: int
) -> None:
    reported[ep.meter, w] = sim._frozen_value(ep, first, imp_index)


def _report_scale(
    sim: Simulation, ep: Episode, reported: FloatArray, imp_index: FloatArray, w: slice, first: int
) -> None:
    reported[ep.meter, w] *= ep.params["factor"]


def _shown_frozen(sim: Simulation, ep: Episode, value: float, first: int, imp_index: FloatArray) -> float:
    return sim._frozen_value(ep, first, imp_index)


def _shown_scale(sim: Simulation, ep: Episode, value: float, first: int, imp_index: FloatArray) -> float:
    return value * ep.params["factor"]


def _flag(kind: EventKind) -> Callable[[Episode, int, int], EventKind | None]:
    def flag(ep: Episode, step: int, spd: int) -> EventKind | None:
        return kind

    return flag


def _flag_tamper(ep: Episode, step: int, spd: int) -> EventKind | None:
    if ep.params["event"] == EventKind.MAGNETIC_FIELD.value:
        return EventKind.MAGNETIC_FIELD
    return EventKind.TERMINAL_COVER_OPEN if step == ep.s0 else None


def _flag_bypass(ep: Episode, step: int, spd: int) -> EventKind | None:
    return EventKind.BYPASS if ep.params.get("flagged") else None


def _flag_leak(ep: Episode, step: int, spd: int) -> EventKind | None:
    return EventKind.LEAK if step >= ep.s0 + spd else None


# -- the table --------------------------------------------------------------------------------------

#: Every kind, thefts then faults then context, in the order the fleet file's defaults draw them
#: (the order is part of a seeded fleet: add new kinds at the end of their category).
INJECTIONS: dict[str, Injection] = {
    i.kind: i
    for i in (
        Injection("h1", "theft", "recorded = α·true", "`alpha` ~ U(0.1, 0.8)", draw=_alpha(0.8), record=_record_alpha),
        Injection(
            "h2",
            "theft",
            "zero inside a daily window of ≥ 4 h",
            "`start_hour`, `hours`",
            commodities=ELECTRICITY,
            draw=_draw_h2,
            record=_record_h2,
        ),
        Injection(
            "h3",
            "theft",
            "recorded = γₜ·true, γₜ ~ U(0.1, 0.8) per interval",
            "`gamma_min`, `gamma_max`",
            commodities=ELECTRICITY,
            draw=_draw_gamma,
            record=_record_h3,
        ),
        Injection(
            "h4",
            "theft",
            "recorded = γₜ·mean(day)",
            "`gamma_min`, `gamma_max`",
            commodities=ELECTRICITY,
            draw=_draw_gamma,
            record=_record_h4,
        ),
        Injection("h5", "theft", "recorded = mean(day) (flat)", commodities=ELECTRICITY, record=_record_h5),
        Injection("h6", "theft", "recorded = day profile reversed (x₂₄₋ₜ)", commodities=ELECTRICITY, record=_record_h6),
        Injection(
            "bypass",
            "theft",
            "recorded = (1 − β)·true",
            "`beta`, `flagged`",
            "`bypass` event and bit when flagged",
            draw=_draw_bypass,
            record=_record_beta,
            flag=_flag_bypass,
        ),
        Injection(
            "meter_stopped", "theft", "register stops while power flows", commodities=ELECTRICITY, record=_record_zero
        ),
        Injection(
            "tamper_drop",
            "theft",
            "cover-open or magnet event, then recorded = α·true",
            "`alpha`, `event`",
            "cover open (40, closed 41 one interval later) or magnetic field (42 … 43 at end)",
            commodities=ELECTRICITY,
            draw=_draw_tamper,
            record=_record_alpha,
            flag=_flag_tamper,
        ),
        Injection(
            "reverse_energy",
            "theft",
            "import = (1 − β)·true, export += β·true",
            "`beta`",
            "`reverse_energy` (200) and bit",
            commodities=ELECTRICITY,
            draw=_draw_reverse_energy,
            record=_record_beta,
            export=lambda p: p["beta"],
            flag=_flag(EventKind.REVERSE_ENERGY),
        ),
        Injection(
            "water_reverse_flow",
            "theft",
            "forward stops, reverse register counts everything",
            events_doc="`reverse_flow` (210) and bit",
            commodities=WATER,
            draw=_draw_reverse_flow,
            record=_record_zero,
            export=lambda p: 1.0,
            flag=_flag(EventKind.REVERSE_FLOW),
        ),
        Injection(
            "water_magnet",
            "theft",
            "forward = α·true",
            "`alpha`",
            "magnetic field 42 / 43, bit",
            commodities=WATER,
            draw=_draw_water_magnet,
            record=_record_alpha,
            flag=_flag(EventKind.MAGNETIC_FIELD),
        ),
        Injection(
            "comm_loss",
            "fault",
            "the meter does not answer (RTU silence, TCP exception 0x0B, no MQTT, no rows)",
            flow=_flow_silent,
        ),
        Injection("slow_device", "fault", "answers `slow_delay_ms` late", "`delay_ms`", draw=_draw_slow),
        Injection(
            "clock_drift",
            "fault",
            "device clock runs off by `seconds_per_day` (in `device_ts`, the `clock` register, MQTT `ts`)",
            "`seconds_per_day`",
            "`clock_adjusted` (4) at the end",
            draw=_draw_clock_drift,
        ),
        Injection(
            "rollover",
            "fault",
            "a 16-bit counter wraps (placed to wrap near the drawn day; every wrap is labelled where it happens)",
            "`wrap`",
            fits=_has_rollover,
            draw=_draw_rollover,
            point=True,
        ),
        Injection(
            "meter_exchange",
            "fault",
            "index resets to `new_initial`",
            "`new_initial`, `new_serial`",
            draw=_draw_exchange,
            point=True,
            reset=_reset_exchange,
        ),
        Injection(
            "frozen_register",
            "fault",
            "register shows the same value, then jumps to the true index",
            report=_report_frozen,
            shown=_shown_frozen,
        ),
        Injection(
            "spike",
            "fault",
            "one interval counts `factor` × its true consumption",
            "`factor` 20–60",
            draw=_draw_spike,
            point=True,
            flow=_flow_spike,
        ),
        Injection(
            "scale_jump",
            "fault",
            "register shows ×10 or ×1000 (Wh/kWh mix-up)",
            "`factor`",
            draw=_draw_scale_jump,
            report=_report_scale,
            shown=_shown_scale,
        ),
        Injection(
            "digit_error",
            "fault",
            "a manual read is typed wrong (extra, missing or transposed digit; 899 → 8995)",
            "`error`, `digit`, `correct`, `typed`",
            draw=_draw_digit_error,
            point=True,
        ),
        Injection(
            "leak",
            "fault",
            "true and recorded flow + constant leak, night flow never zero",
            "`litres_per_hour`",
            "`leak` (211) after a day, bit",
            commodities=WATER,
            draw=_draw_leak,
            flow=_flow_leak,
            flag=_flag_leak,
        ),
        Injection("vacancy", "context", "consumption at 8 %", "`factor`", flow=_flow_vacancy),
    )
}

#: Kinds the fleet file can ask for, per category.
THEFT_KINDS = tuple(k for k, i in INJECTIONS.items() if i.category == "theft")
FAULT_KINDS = tuple(k for k, i in INJECTIONS.items() if i.category == "fault")

#: Share of a vacant customer's consumption that still flows.
VACANCY_FACTOR = 0.08


def markdown_table() -> str:
    """The injection table of docs/simulators.md, generated from :data:`INJECTIONS`."""
    rows = ["| kind | category | effect | params | events / status |", "|---|---|---|---|---|"]
    for i in INJECTIONS.values():
        name = f"`{i.kind}`" + (" (water)" if i.commodities == WATER and i.category == "fault" else "")
        rows.append(f"| {name} | {i.category} | {i.effect} | {i.params_doc} | {i.events_doc} |")
    return "\n".join(rows) + "\n"
