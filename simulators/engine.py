"""The simulation engine: a fleet of meters, their true and recorded consumption, and injections.

Time is cut into intervals (15 min by default) counted from the fleet start, and intervals into
blocks of :data:`BLOCK_DAYS` days. A block is computed for all meters at once with numpy; its
random numbers come from a generator seeded by ``(fleet seed, meter index, block)``, so any block
(and any instant of live mode) is the same whichever way it was reached. Register indexes carry
from block to block, so blocks are computed in order and the last few are cached.

Three quantities are kept apart for every meter and interval:

* ``true``: what really flowed (for a feeder or bulk meter: Σ customers' true + technical losses);
* ``rec``: what the meter's metrology counted on its import/forward register (theft lowers it);
* ``exp``: what it counted on its export/reverse register (reverse energy, reverse flow).

What the meter *reports* for its register can differ again (frozen register, ×10/×1000 scale jump,
rollover of a narrow counter, index reset after an exchange): :meth:`Simulation.reported`.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from releve.arrays import FloatArray
from releve.model import COMMODITY_CHANNELS, Commodity, EventKind, MeterEvent, Reading, Source
from releve.profiles import EVENT_CODES, DeviceProfile, load_profile
from simulators.config import FleetConfig
from simulators.consumption import (
    COMMERCIAL,
    RESIDENTIAL,
    WATER,
    day_templates,
    lognormal_noise,
    season_factor,
)
from simulators.controls import MeterControls
from simulators.injections import FAULT_KINDS, INJECTIONS, THEFT_KINDS, VACANCY_FACTOR, Draw, Episode, Flows

BLOCK_DAYS = 7
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for one injected theft, fault or context period.

    ``end`` is exclusive; a point injection (spike, rollover, exchange, digit error) has ``end`` one
    interval after ``start``. ``params`` holds the kind's parameters (see docs/simulators.md).
    """

    meter: str
    category: str
    kind: str
    start: datetime
    end: datetime
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SimEvent:
    """A meter event at an absolute step, with its wire code."""

    meter: int
    step: int
    ts: datetime
    kind: EventKind
    code: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class LiveFaults:
    """Faults injected while the fleet runs (``releve demo``'s live scenarios), on top of the drawn ones.

    Sets are replaced, never mutated in place, so the Modbus and MQTT threads always read a whole one.
    """

    down: frozenset[int] = frozenset()  # meters that do not answer (a silent line, a dead gateway's meters)
    sag: dict[int, float] = field(default_factory=dict)  # meter -> voltage factor (0.85: a 15 % sag)


@dataclass(slots=True)
class MeterSpec:
    """One simulated meter: identity, place in the topology, protocol address and behaviour."""

    index: int
    serial: str
    model: str
    commodity: Commodity
    role: str
    customer_class: str
    area: str
    service_point: str
    latitude: float
    longitude: float
    transport: str = "tcp"
    gateway: int = 0
    unit_id: int = 1
    line: int = 0
    mqtt_style: str = ""
    daily: float = 0.0
    initial_import: float = 0.0
    power_factor: float = 0.95
    shift: int = 0
    season_amp: float = 0.0
    season_peak: float = 15.0
    phase_weights: tuple[float, float, float] = (1.0, 0.0, 0.0)
    vacancies: list[tuple[int, int]] = field(default_factory=list)

    @property
    def profile(self) -> DeviceProfile:
        """The device profile of this meter's model."""
        return load_profile(self.model)

    @property
    def unit(self) -> str:
        """Unit of the main register: kWh or m3."""
        return COMMODITY_CHANNELS[self.commodity].unit

    @property
    def import_channel(self) -> str:
        """OBIS code of the import/forward register."""
        return COMMODITY_CHANNELS[self.commodity].register

    @property
    def export_channel(self) -> str:
        """OBIS code of the export/reverse register."""
        return COMMODITY_CHANNELS[self.commodity].export

    @property
    def interval_channel(self) -> str:
        """OBIS code of the interval consumption channel."""
        return COMMODITY_CHANNELS[self.commodity].interval


@dataclass(slots=True)
class Area:
    """A transformer (electricity) or district metered area (water) with its feeder/bulk meter."""

    name: str
    kind: str
    commodity: Commodity
    feeder: int
    customers: list[int]
    loss_min: float
    loss_max: float
    nominal_peak: float
    latitude: float
    longitude: float


@dataclass(slots=True)
class Block:
    """All meters over one block of intervals. Arrays are meters × steps unless said otherwise."""

    number: int
    first_step: int
    times: np.ndarray  # datetime64[s], interval starts
    true: FloatArray
    rec: FloatArray
    exp: FloatArray
    imp_index: FloatArray  # internal import index at each interval start
    exp_index: FloatArray
    reported_imp: FloatArray  # what the import register shows at each interval start
    reported_exp: FloatArray
    available: np.ndarray  # bool: the meter answers its protocol
    voltage: FloatArray  # meters × 3 phases × steps
    frequency: FloatArray  # steps
    losses: FloatArray  # areas × steps: technical losses (kWh or m3 per interval)
    end_imp: FloatArray  # internal index at the end of the block (carried forward)
    end_exp: FloatArray

    @property
    def steps(self) -> int:
        """Number of intervals in the block."""
        return int(self.true.shape[1])


class Simulation:
    """A seeded fleet: meters, areas, injections (with labels) and the block engine."""

    def __init__(self, config: FleetConfig) -> None:
        """Build the fleet and draw every injection from ``config.seed``."""
        self.config = config
        self.start = config.start
        self.dt = timedelta(minutes=config.interval_minutes)
        self.dt_s = config.interval_minutes * 60
        self.dt_h = config.interval_minutes / 60.0
        self.steps_per_day = 1440 // config.interval_minutes
        self.block_steps = BLOCK_DAYS * self.steps_per_day
        self.horizon_steps = config.horizon_days * self.steps_per_day
        self.templates = day_templates(self.steps_per_day)
        self.meters: list[MeterSpec] = []
        self.areas: list[Area] = []
        self.episodes: list[Episode] = []
        self.events: list[SimEvent] = []
        self.live = LiveFaults()
        self._derived: dict[tuple[int, int], Label] = {}
        self._frozen: dict[tuple[int, int], float] = {}
        self._build_topology()
        self._draw_injections()
        self._index_arrays()
        self._blocks: OrderedDict[int, Block] = OrderedDict()
        self._lock = threading.RLock()  # Modbus servers and the MQTT publisher read from several threads
        self.controls = MeterControls()  # commands applied to meters in live mode (relay, clock, demand)
        self._feeder_customers = {area.feeder: list(area.customers) for area in self.areas}
        self._carry: dict[int, tuple[FloatArray, FloatArray]] = {
            0: (self._initial_import.copy(), np.zeros(len(self.meters)))
        }

    # ------------------------------------------------------------------ fleet construction

    def _static_rng(self, index: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.config.seed, spawn_key=(0, index))))

    def _block_rng(self, index: int, block: int) -> np.random.Generator:
        seq = np.random.SeedSequence(self.config.seed, spawn_key=(1, index, block))
        return np.random.Generator(np.random.PCG64(seq))

    def _build_topology(self) -> None:
        cfg = self.config
        topo = cfg.topology
        rng = self._static_rng(10**6)
        names = list(topo.electricity_models)
        weights = np.array([topo.electricity_models[n] for n in names], dtype=float)
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(names), 1.0 / len(names))
        # Exact counts per model (largest remainder), in a seeded random order.
        total = topo.transformers * topo.customers_per_transformer
        counts = np.floor(weights * total).astype(int)
        remainder = weights * total - counts
        counts[np.argsort(-remainder, kind="stable")[: total - counts.sum()]] += 1
        electric_models = list(rng.permutation(np.repeat(np.arange(len(names)), counts)))
        plan: list[tuple[str, Commodity, int, int]] = [
            ("T", Commodity.ELECTRICITY, a, topo.customers_per_transformer) for a in range(topo.transformers)
        ] + [("DMA", Commodity.WATER, a, topo.customers_per_dma) for a in range(topo.dmas)]
        for prefix, commodity, number, count in plan:
            name = f"{prefix}{number + 1:03d}"
            lat = topo.latitude + rng.uniform(-0.05, 0.05)
            lon = topo.longitude + rng.uniform(-0.08, 0.08)
            electric = commodity is Commodity.ELECTRICITY
            feeder = self._add_meter(
                topo.feeder_model if electric else topo.bulk_model,
                commodity,
                "feeder",
                "feeder",
                name,
                lat,
                lon,
            )
            customers = []
            for _ in range(count):
                if electric:
                    model = names[int(electric_models.pop())]
                    klass = "commercial" if rng.random() < topo.commercial_share else "residential"
                else:
                    model, klass = topo.water_model, "water"
                customers.append(
                    self._add_meter(
                        model,
                        commodity,
                        "customer",
                        klass,
                        name,
                        lat + rng.normal(0, 0.002),
                        lon + rng.normal(0, 0.003),
                    ).index
                )
            nominal = sum(self.meters[c].daily for c in customers) / self.steps_per_day * 3.0
            self.areas.append(
                Area(
                    name=name,
                    kind="transformer" if electric else "dma",
                    commodity=commodity,
                    feeder=feeder.index,
                    customers=customers,
                    loss_min=topo.technical_loss_min,
                    loss_max=topo.technical_loss_max,
                    nominal_peak=max(nominal, 1e-9),
                    latitude=lat,
                    longitude=lon,
                )
            )
        self._assign_transports()

    def _add_meter(
        self, model: str, commodity: Commodity, role: str, klass: str, area: str, lat: float, lon: float
    ) -> MeterSpec:
        cfg = self.config
        index = len(self.meters)
        rng = self._static_rng(index)
        cons = cfg.consumption
        if klass == "residential":
            daily = cons.residential_kwh_per_day * rng.lognormal(0, 0.35)
        elif klass == "commercial":
            daily = cons.commercial_kwh_per_day * rng.lognormal(0, 0.5)
        elif klass == "water":
            daily = cons.water_litres_per_day / 1000.0 * rng.lognormal(0, 0.35)
        else:
            daily = 0.0
        initial = float(rng.uniform(100, 20000)) if commodity is Commodity.ELECTRICITY else float(rng.uniform(10, 900))
        weights = rng.dirichlet([8.0, 8.0, 8.0])
        spec = MeterSpec(
            index=index,
            serial=str(cfg.serial_base + index),
            model=model,
            commodity=commodity,
            role=role,
            customer_class=klass,
            area=area,
            service_point=f"SP-{area}-{index:05d}",
            latitude=round(lat, 6),
            longitude=round(lon, 6),
            daily=float(daily),
            initial_import=round(initial, 3),
            power_factor=float(rng.uniform(0.88, 0.99)),
            shift=int(rng.integers(-self.steps_per_day // 24, self.steps_per_day // 24 + 1)),
            season_amp=cons.seasonality * float(rng.uniform(0.6, 1.4)) if commodity is Commodity.ELECTRICITY else 0.15,
            season_peak=15.0 if commodity is Commodity.ELECTRICITY else 200.0,
            phase_weights=(float(weights[0]), float(weights[1]), float(weights[2]))
            if load_profile(model).phases == 3
            else (1.0, 0.0, 0.0),
        )
        if role == "customer" and rng.random() < cons.vacancy_rate:
            length = int(rng.uniform(5, 30) * self.steps_per_day)
            begin = int(rng.integers(0, max(1, self.horizon_steps - length)))
            spec.vacancies.append((begin, begin + length))
        self.meters.append(spec)
        return spec

    def _assign_transports(self) -> None:
        cfg = self.config
        rng = self._static_rng(10**6 + 1)
        rtu_capacity = cfg.modbus.rtu_lines * cfg.modbus.devices_per_line
        rtu_used = 0
        tcp_used = 0
        styles = cfg.mqtt.styles
        mqtt_used = 0
        for meter in self.meters:
            electric = meter.commodity is Commodity.ELECTRICITY
            if meter.role == "customer" and (not electric or rng.random() < cfg.mqtt.electricity_share):
                meter.transport = "mqtt"
                wanted = [s for s in styles if (s == "ttn") == (not electric)] or styles
                meter.mqtt_style = wanted[mqtt_used % len(wanted)]
                mqtt_used += 1
            elif meter.role == "customer" and rtu_used < rtu_capacity and rtu_used <= tcp_used:
                meter.transport = "rtu"
                meter.line, slot = divmod(rtu_used, cfg.modbus.devices_per_line)
                meter.unit_id = slot + 1
                rtu_used += 1
            else:
                meter.transport = "tcp"
                meter.gateway, slot = divmod(tcp_used, cfg.modbus.devices_per_gateway)
                meter.unit_id = slot + 1
                tcp_used += 1

    def _draw_injections(self) -> None:
        cfg = self.config
        for meter in self.meters:
            if meter.role != "customer":
                continue
            rng = self._static_rng(2 * 10**6 + meter.index)
            for vac in meter.vacancies:
                self._label_episode(
                    Episode(meter.index, "context", "vacancy", vac[0], vac[1], {"factor": VACANCY_FACTOR})
                )
            for category, section, allowed in (
                ("theft", cfg.theft, THEFT_KINDS),
                ("fault", cfg.faults, FAULT_KINDS),
            ):
                if rng.random() >= section.rate:
                    continue
                kinds = self._kinds_for(meter, section.kinds or dict.fromkeys(allowed, 1.0))
                if not kinds:
                    continue
                names = list(kinds)
                p = np.array([kinds[k] for k in names], dtype=float)
                if p.sum() <= 0:
                    continue
                kind = names[int(rng.choice(len(names), p=p / p.sum()))]
                days = rng.uniform(section.min_days, section.max_days)
                length = max(1, int(days * self.steps_per_day))
                s0 = int(rng.integers(self.steps_per_day, max(self.steps_per_day + 1, self.horizon_steps - length)))
                self._make_episode(meter, category, kind, s0, s0 + length, rng)
        self.events.sort(key=lambda e: (e.meter, e.step))
        self._events_by_meter: dict[int, list[SimEvent]] = {}
        for ev in self.events:
            self._events_by_meter.setdefault(ev.meter, []).append(ev)

    @staticmethod
    def _kinds_for(meter: MeterSpec, weights: dict[str, float]) -> dict[str, float]:
        return {kind: weight for kind, weight in weights.items() if INJECTIONS[kind].fits_meter(meter)}

    def _make_episode(
        self, meter: MeterSpec, category: str, kind: str, s0: int, s1: int, rng: np.random.Generator
    ) -> None:
        injection = INJECTIONS[kind]
        draw = Draw(self, meter, rng, s0, s1)
        if injection.draw is not None:
            injection.draw(draw)
        if injection.point:
            draw.s1 = draw.s0 + 1
        if draw.labelled:
            self._label_episode(Episode(meter.index, category, kind, draw.s0, draw.s1, draw.params))

    def _event(self, meter: int, step: int, kind: EventKind) -> None:
        self.events.append(SimEvent(meter, step, self.time_of(step), kind, EVENT_CODES[kind]))

    def _label_episode(self, episode: Episode) -> None:
        self.episodes.append(episode)

    def _index_arrays(self) -> None:
        ms = self.meters
        self._initial_import = np.array([m.initial_import for m in ms], dtype=float)
        self._daily = np.array([m.daily for m in ms])
        klass = {"residential": RESIDENTIAL, "commercial": COMMERCIAL, "water": WATER, "feeder": RESIDENTIAL}
        self._classes = np.array([klass[m.customer_class] for m in ms], dtype=np.int64)
        self._shifts = np.array([m.shift for m in ms], dtype=np.int64)
        self._season_amp = np.array([m.season_amp for m in ms])
        self._season_peak = np.array([m.season_peak for m in ms])
        self._electric = np.array([m.commodity is Commodity.ELECTRICITY for m in ms])
        self._wrap = np.array([self._import_wrap(m) for m in ms])
        self._by_meter: dict[int, list[Episode]] = {}
        for ep in self.episodes:
            self._by_meter.setdefault(ep.meter, []).append(ep)

    @staticmethod
    def _import_wrap(meter: MeterSpec) -> float:
        entry = meter.profile.entry(meter.import_channel)
        return entry.wrap if entry is not None and entry.wrap is not None else math.inf

    # ------------------------------------------------------------------ manual reads

    MANUAL_READ_DAYS = 30

    def next_manual_read(self, meter: int, step: int) -> int:
        """First manual-read step of ``meter`` at or after ``step``.

        A meter reader visits every 30 days at 10:00, starting on day ``1 + meter % 28``.
        """
        spd = self.steps_per_day
        first = (1 + meter % 28) * spd + (10 * spd) // 24
        period = self.MANUAL_READ_DAYS * spd
        k = max(0, math.ceil((step - first) / period))
        return first + k * period

    def manual_reads(self, days: float) -> Iterator[tuple[int, int, float, str, Label | None]]:
        """Manual reads of customer meters in the first ``days`` days.

        Yields (meter, step, value typed in, read type, digit-error label or None). Values are whole
        units (kWh or m3) of what the register shows, as a meter reader types them.
        """
        end_step = int(days * self.steps_per_day)
        errors = {(ep.meter, ep.s0): ep for ep in self.episodes if ep.kind == "digit_error"}
        due: list[tuple[int, int]] = []
        for spec in self.meters:
            if spec.role != "customer":
                continue
            step = self.next_manual_read(spec.index, 0)
            while step < end_step:
                due.append((step, spec.index))
                step += self.MANUAL_READ_DAYS * self.steps_per_day
        due.sort()
        for step, m in due:
            ts = self.time_of(step)
            true_value = int(self.values_at(m, ts)[self.meters[m].import_channel])
            read_type = "customer" if (m + step) % 3 == 0 else "actual"
            ep = errors.get((m, step))
            if ep is None:
                yield m, step, float(true_value), read_type, None
                continue
            typed = digit_error(true_value, str(ep.params["error"]), int(ep.params["digit"]))
            params = {**ep.params, "correct": true_value, "typed": typed}
            label = Label(self.meters[m].serial, "fault", "digit_error", ts, self.time_of(step + 1), params)
            yield m, step, float(typed), read_type, label

    # ------------------------------------------------------------------ time

    def time_of(self, step: int) -> datetime:
        """Start of absolute interval ``step``."""
        return self.start + step * self.dt

    def step_of(self, ts: datetime) -> tuple[int, float]:
        """Absolute interval containing ``ts`` and the fraction of it elapsed."""
        seconds = (ts - self.start).total_seconds()
        if seconds < 0:
            raise ValueError(f"{ts} is before the simulation start {self.start}")
        step = int(seconds // self.dt_s)
        return step, (seconds - step * self.dt_s) / self.dt_s

    # ------------------------------------------------------------------ blocks

    def block(self, number: int) -> Block:
        """Block ``number`` (computing earlier blocks first when their indexes are not known yet)."""
        with self._lock:
            return self._block(number)

    def _block(self, number: int) -> Block:
        cached = self._blocks.get(number)
        if cached is not None:
            self._blocks.move_to_end(number)
            return cached
        known = max(b for b in self._carry if b <= number)
        blk: Block | None = None
        for b in range(known, number + 1):
            blk = self._compute(b, *self._carry[b])
            self._carry[b + 1] = (blk.end_imp, blk.end_exp)
            self._blocks[b] = blk
            while len(self._blocks) > 3:
                self._blocks.popitem(last=False)
        assert blk is not None
        return blk

    def blocks(self, days: float) -> Iterator[Block]:
        """The blocks covering the first ``days`` days, in order (the last one may run past them)."""
        last_step = int(days * self.steps_per_day)
        for b in range(math.ceil(last_step / self.block_steps)):
            yield self.block(b)

    def _compute(self, number: int, carry_imp: FloatArray, carry_exp: FloatArray) -> Block:
        cfg = self.config
        n, spd = len(self.meters), self.steps_per_day
        s_count = self.block_steps
        first = number * s_count
        steps = np.arange(first, first + s_count)
        times = np.datetime64(self.start.replace(tzinfo=None), "s") + steps * np.timedelta64(self.dt_s, "s")
        slot = steps % spd
        days = times.astype("datetime64[D]")
        weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        daytype = np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))
        year_start = days.astype("datetime64[Y]").astype("datetime64[D]")
        doy = (days - year_start).astype(np.float64) + slot / spd

        z = np.empty((n, 4, s_count))
        uniform = np.empty((n, s_count))
        for i in range(n):
            gen = self._block_rng(i, number)
            z[i] = gen.standard_normal((4, s_count))
            uniform[i] = gen.random(s_count)
        grid = self._block_rng(10**6, number).standard_normal(s_count)

        shifted = (slot[None, :] + self._shifts[:, None]) % spd
        shape = self.templates[self._classes[:, None], daytype[None, :], shifted]
        season = season_factor(doy[None, :], self._season_amp[:, None], self._season_peak[:, None])
        true = (self._daily / spd)[:, None] * shape * season * lognormal_noise(z[:, 0], cfg.consumption.noise)
        rec = true.copy()
        exp = np.zeros_like(true)
        available = np.ones((n, s_count), dtype=bool)

        def window(s0: int, s1: int) -> slice | None:
            lo, hi = max(s0, first) - first, min(s1, first + s_count) - first
            return slice(lo, hi) if lo < hi else None

        n_days = s_count // spd
        flows = Flows(true, rec, available, self.dt_h)
        for ep in self.episodes:  # 1. what flows and what the meters count, before theft
            flow = INJECTIONS[ep.kind].flow
            w = window(ep.s0, ep.s1)
            if flow is not None and w is not None:
                flow(ep, flows, w)
        for ep in self.episodes:  # 2. theft: the recorded day profile from the true one
            injection = INJECTIONS[ep.kind]
            w = window(ep.s0, ep.s1)
            if w is None or injection.record is None:
                continue
            m = ep.meter
            mask = np.zeros(s_count, dtype=bool)
            mask[w] = True
            new = injection.record(ep.params, true[m].reshape(n_days, spd), uniform[m].reshape(n_days, spd), spd)
            if injection.export is not None:
                exp[m, w] += true[m, w] * injection.export(ep.params)
            rec[m] = np.where(mask.reshape(n_days, spd), new, rec[m].reshape(n_days, spd)).reshape(s_count)

        losses = np.zeros((len(self.areas), s_count))
        for a, area in enumerate(self.areas):
            total = true[area.customers].sum(axis=0)
            load = np.clip(total / area.nominal_peak, 0.0, 1.0)
            share = area.loss_min + (area.loss_max - area.loss_min) * load**2
            losses[a] = total * share
            true[area.feeder] = total + losses[a]
            rec[area.feeder] = true[area.feeder]

        imp_index = carry_imp[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(rec, axis=1)[:, :-1]], axis=1)
        exp_index = carry_exp[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(exp, axis=1)[:, :-1]], axis=1)
        for ep in self.episodes:  # 3. on the internal indexes, from the episode's first step
            reset = INJECTIONS[ep.kind].reset
            if reset is not None and first <= ep.s0 < first + s_count:
                reset(ep, imp_index, exp_index, ep.s0 - first)
        end_imp = imp_index[:, -1] + rec[:, -1]
        end_exp = exp_index[:, -1] + exp[:, -1]

        reported_imp = imp_index.copy()
        for ep in self.episodes:  # 4. on what the import register shows
            report = INJECTIONS[ep.kind].report
            w = window(ep.s0, ep.s1)
            if report is not None and w is not None:
                report(self, ep, reported_imp, imp_index, w, first)
        finite = np.isfinite(self._wrap)
        if finite.any():
            wrap = self._wrap[finite][:, None]
            self._derive_rollovers(np.flatnonzero(finite), imp_index[finite], end_imp[finite], first, wrap)
            reported_imp[finite] = np.mod(reported_imp[finite], wrap)

        drop = np.minimum(0.4 * rec / self.dt_h, 15.0)  # 0.4 V per kW of load, at most 15 V
        voltage = 230.0 + 2.0 * z[:, 1:4] - drop[:, None, :]
        frequency = 50.0 + 0.02 * grid
        return Block(
            number=number,
            first_step=first,
            times=times,
            true=true,
            rec=rec,
            exp=exp,
            imp_index=imp_index,
            exp_index=exp_index,
            reported_imp=reported_imp,
            reported_exp=exp_index.copy(),
            available=available,
            voltage=voltage,
            frequency=frequency,
            losses=losses,
            end_imp=end_imp,
            end_exp=end_exp,
        )

    def _frozen_value(self, ep: Episode, first: int, imp_index: FloatArray) -> float:
        key = (ep.meter, ep.s0)
        if key not in self._frozen:
            if ep.s0 < first:  # pragma: no cover - the block with s0 is always computed first
                raise RuntimeError("frozen register started before the computed block")
            self._frozen[key] = float(imp_index[ep.meter, ep.s0 - first])
        return self._frozen[key]

    def _derive_rollovers(
        self, meters: np.ndarray, index: FloatArray, end: FloatArray, first: int, wrap: FloatArray
    ) -> None:
        full = np.concatenate([index, end[:, None]], axis=1)
        turns = np.floor(full / wrap)
        for row, col in zip(*np.nonzero(np.diff(turns, axis=1) > 0), strict=True):
            m = int(meters[row])
            step = first + int(col) + 1
            if (m, step) not in self._derived:
                self._derived[(m, step)] = Label(
                    self.meters[m].serial,
                    "fault",
                    "rollover",
                    self.time_of(step),
                    self.time_of(step + 1),
                    {"wrap": float(wrap[row, 0])},
                )

    # ------------------------------------------------------------------ labels and events

    def labels(self, until: datetime | None = None) -> list[Label]:
        """Ground-truth labels starting before ``until`` (rollovers: those found in computed blocks)."""
        out = [
            Label(
                self.meters[ep.meter].serial,
                ep.category,
                ep.kind,
                self.time_of(ep.s0),
                self.time_of(ep.s1),
                dict(ep.params),
            )
            for ep in self.episodes
        ]
        out.extend(self._derived.values())
        if until is not None:
            out = [lb for lb in out if lb.start < until]
        out.sort(key=lambda lb: (lb.start, lb.meter, lb.kind))
        return out

    def events_between(self, start: datetime, end: datetime) -> list[SimEvent]:
        """Meter events in [start, end), in time order."""
        return sorted((e for e in self.events if start <= e.ts < end), key=lambda e: (e.step, e.meter))

    def event_state(self, meter: int, step: int) -> tuple[int, SimEvent | None]:
        """Number of events up to and including ``step`` and the most recent one."""
        evs = self._events_by_meter.get(meter, [])
        n = bisect.bisect_right([e.step for e in evs], step)
        return n, (evs[n - 1] if n else None)

    def active_flags(self, meter: int, step: int) -> set[str]:
        """Status flags (EventKind values) raised at ``step``."""
        flags: set[str] = set()
        for ep in self._by_meter.get(meter, []):
            flag = INJECTIONS[ep.kind].flag
            if flag is not None and ep.s0 <= step < ep.s1:
                raised = flag(ep, step, self.steps_per_day)
                if raised is not None:
                    flags.add(raised.value)
        return flags

    def has_episode(self, meter: int, kind: str) -> bool:
        """Whether ``meter`` has an episode of ``kind`` at any time."""
        return any(ep.kind == kind for ep in self._by_meter.get(meter, []))

    def episode(self, meter: int, kind: str, step: int) -> Episode | None:
        """The episode of ``kind`` active on ``meter`` at ``step``, if any."""
        for ep in self._by_meter.get(meter, []):
            if ep.kind == kind and ep.s0 <= step < ep.s1:
                return ep
        return None

    def clock_offset(self, meter: int, ts: datetime) -> float:
        """Seconds the meter's clock is ahead of true time at ``ts`` (drift, and any clock written to it)."""
        step, _ = self.step_of(ts)
        correction = self.controls.clock_correction(meter, ts)
        ep = self.episode(meter, "clock_drift", step)
        if ep is None:
            return correction
        elapsed_days = (ts - self.time_of(ep.s0)).total_seconds() / 86400.0
        return float(ep.params["seconds_per_day"]) * elapsed_days + correction

    # ------------------------------------------------------------------ commands (live mode)

    def _unswitched(self, meter: int, ts: datetime) -> tuple[float, float]:
        """The meter's internal (import, export) index at ``ts`` as if its relay had never opened."""
        step, frac = self.step_of(ts)
        blk = self.block(step // self.block_steps)
        j = step - blk.first_step
        return (
            float(blk.imp_index[meter, j]) + frac * float(blk.rec[meter, j]),
            float(blk.exp_index[meter, j]) + frac * float(blk.exp[meter, j]),
        )

    def set_relay(self, meter: int, ts: datetime, closed: bool) -> bool:
        """Close (connect) or open (disconnect) the meter's relay or valve at ``ts``; False if already so."""
        return self.controls.switch(meter, ts, closed, self._unswitched(meter, ts))

    def relay_closed(self, meter: int, ts: datetime) -> bool:
        """Whether the meter's supply is connected at ``ts``."""
        return self.controls.relay_closed(meter, ts)

    def set_clock(self, meter: int, ts: datetime, unix_seconds: float) -> None:
        """Set the meter's clock at simulated ``ts`` to ``unix_seconds``."""
        self.controls.set_clock(meter, ts, unix_seconds, self.clock_offset(meter, ts))

    def _lost(self, meter: int, ts: datetime, unswitched: tuple[float, float]) -> tuple[float, float]:
        """What the meter did not count up to ``ts``: its own open relay, or (feeders) its customers'."""
        if self.controls.has_relay_history(meter):
            return self.controls.lost(meter, ts, unswitched)
        imp = exp = 0.0
        for customer in self._feeder_customers.get(meter, ()):
            if self.controls.has_relay_history(customer):
                ci, ce = self.controls.lost(customer, ts, self._unswitched(customer, ts))
                imp, exp = imp + ci, exp + ce
        return imp, exp

    def response_delay(self, meter: int, ts: datetime) -> float:
        """Seconds the meter takes to answer a request at simulated time ``ts``."""
        step, _ = self.step_of(ts)
        base = self.config.modbus.response_delay_ms / 1000.0
        ep = self.episode(meter, "slow_device", step)
        return base + (float(ep.params["delay_ms"]) / 1000.0 if ep is not None else 0.0)

    def available(self, meter: int, ts: datetime) -> bool:
        """Whether the meter answers at ``ts`` (False during a communication loss)."""
        if meter in self.live.down:
            return False
        step, _ = self.step_of(ts)
        return self.episode(meter, "comm_loss", step) is None

    def inject_event(self, meter: int, ts: datetime, kind: EventKind) -> SimEvent:
        """A meter event raised now, live (a tamper during the demo): Modbus and MQTT report it like any other."""
        step, _ = self.step_of(ts)
        event = SimEvent(meter, step, ts, kind, EVENT_CODES[kind], {"injected": True})
        with self._lock:
            self.events.append(event)
            evs = self._events_by_meter.setdefault(meter, [])
            evs.insert(bisect.bisect_right([e.step for e in evs], step), event)
        return event

    # ------------------------------------------------------------------ instants

    def values_at(self, meter: int, ts: datetime) -> dict[str, float]:
        """Every channel the meter shows at ``ts``: registers, instantaneous values, status, clock."""
        spec = self.meters[meter]
        step, frac = self.step_of(ts)
        blk = self.block(step // self.block_steps)
        j = step - blk.first_step
        rec = float(blk.rec[meter, j])
        exp = float(blk.exp[meter, j])
        internal = float(blk.imp_index[meter, j]) + frac * rec
        export = float(blk.exp_index[meter, j]) + frac * exp
        supply = 1.0  # relay closed / valve open
        if self.controls.applied:
            lost_imp, lost_exp = self._lost(meter, ts, (internal, export))
            internal -= lost_imp
            export -= lost_exp
            if not self.controls.relay_closed(meter, ts):
                rec = exp = 0.0  # nothing flows through an open relay or a closed valve
                supply = 0.0
            for customer in self._feeder_customers.get(meter, ()):  # a feeder: its cut customers draw nothing
                if self.controls.has_relay_history(customer) and not self.controls.relay_closed(customer, ts):
                    rec -= float(blk.rec[customer, j])
                    exp -= float(blk.exp[customer, j])
        reported = internal
        for ep in self._by_meter.get(meter, []):  # what the register shows (frozen, scale jump)
            shown = INJECTIONS[ep.kind].shown
            if shown is not None and ep.s0 <= step < ep.s1:
                reported = shown(self, ep, reported, blk.first_step, blk.imp_index)
        wrap = float(self._wrap[meter])
        if math.isfinite(wrap):
            reported = math.fmod(reported, wrap)
        count, last = self.event_state(meter, step)
        offset = self.clock_offset(meter, ts)
        values: dict[str, float] = {
            spec.import_channel: reported,
            spec.export_channel: export,
            "status": float(spec.profile.status_word(self.active_flags(meter, step))),
            "event_counter": float(count % 65536),
            "last_event_code": float(last.code if last else 0),
            "last_event_ts": float(int((last.ts - _EPOCH).total_seconds() + offset) if last else 0),
            "clock": float(int((ts - _EPOCH).total_seconds() + offset)),
            "supply": supply,
        }
        if spec.commodity is Commodity.WATER:
            values["8-0:2.7.0"] = (rec - exp) / self.dt_h
            return values
        power = (rec - exp) * 1000.0 / self.dt_h
        pf = spec.power_factor
        weights = spec.phase_weights
        volts = blk.voltage[meter, :, j] * self.live.sag.get(meter, 1.0)
        values.update(
            {
                "1-0:15.8.0": internal + export,
                "1-0:1.7.0": power,
                "1-0:13.7.0": pf,
                "1-0:14.7.0": float(blk.frequency[j]),
            }
        )
        phases = (
            ("1-0:32.7.0", "1-0:31.7.0", "1-0:21.7.0"),
            ("1-0:52.7.0", "1-0:51.7.0", "1-0:41.7.0"),
            ("1-0:72.7.0", "1-0:71.7.0", "1-0:61.7.0"),
        )
        for p, (v_code, i_code, p_code) in enumerate(phases[: spec.profile.phases]):
            p_phase = power * weights[p]
            values[v_code] = float(volts[p])
            values[i_code] = abs(p_phase) / (float(volts[p]) * pf)
            values[p_code] = p_phase
        return values

    # ------------------------------------------------------------------ readings API

    def readings(self, days: float, channels: str = "registers") -> Iterator[Reading]:
        """Readings for the first ``days`` days: register reads (``registers``) or ``intervals``.

        Register reads are stamped at interval starts; interval values at their interval end. Reads
        a meter could not give (communication loss) are absent. ``device_ts`` carries clock drift.
        """
        end_step = int(days * self.steps_per_day)
        for blk in self.blocks(days):
            count = min(blk.steps, end_step - blk.first_step)
            stamps = [self.time_of(blk.first_step + j) for j in range(count)]
            for spec in self.meters:
                m = spec.index
                ok = blk.available[m]
                if channels == "intervals":
                    values = blk.rec[m]
                    width = timedelta(minutes=self.config.interval_minutes)
                    for j in range(count):
                        if ok[j]:
                            yield Reading(
                                spec.serial,
                                spec.interval_channel,
                                stamps[j] + width,
                                float(values[j]),
                                spec.unit,
                                source=Source.SIMULATOR,
                            )
                    continue
                for channel, series in (
                    (spec.import_channel, blk.reported_imp[m]),
                    (spec.export_channel, blk.reported_exp[m]),
                ):
                    for j in range(count):
                        if ok[j]:
                            yield Reading(
                                spec.serial,
                                channel,
                                stamps[j],
                                float(series[j]),
                                spec.unit,
                                source=Source.SIMULATOR,
                                device_ts=self._device_ts(m, stamps[j]),
                            )

    def instant_readings(self, meter: int, ts: datetime, source: Source = Source.SIMULATOR) -> list[Reading]:
        """Every OBIS channel the meter's profile carries, as :class:`Reading` objects at ``ts``."""
        spec = self.meters[meter]
        values = self.values_at(meter, ts)
        device_ts = self._device_ts(meter, ts)
        out = []
        for entry in spec.profile.registers:
            if entry.kind == "status" or entry.channel not in values:
                continue
            out.append(
                Reading(
                    spec.serial,
                    entry.channel,
                    ts,
                    values[entry.channel],
                    entry.unit,
                    source=source,
                    device_ts=device_ts,
                )
            )
        return out

    def _device_ts(self, meter: int, ts: datetime) -> datetime | None:
        if meter not in self._by_meter and not self.controls.clock_correction(meter, ts):
            return None
        offset = self.clock_offset(meter, ts)
        return ts + timedelta(seconds=offset) if offset else None

    def meter_events(self, days: float) -> Iterator[MeterEvent]:
        """Meter events of the first ``days`` days as :class:`releve.model.MeterEvent`."""
        end = self.start + timedelta(days=days)
        for ev in self.events_between(self.start, end):
            yield MeterEvent(
                self.meters[ev.meter].serial, ev.ts, ev.kind, Source.SIMULATOR, {"code": ev.code, **ev.details}
            )


def digit_error(value: int, error: str, digit: int) -> int:
    """A typing error on an index: ``extra_digit`` (899 -> 8995), ``missing_digit`` or ``transposed``."""
    text = str(value)
    if error == "extra_digit" or len(text) < 2:
        return int(text + str(digit))
    if error == "missing_digit":
        pos = digit % len(text)
        return int(text[:pos] + text[pos + 1 :] or "0")
    pos = digit % (len(text) - 1)
    swapped = text[:pos] + text[pos + 1] + text[pos] + text[pos + 2 :]
    if swapped == text:  # equal neighbours: type an extra digit instead
        return int(text + str(digit))
    return int(swapped)
