"""The simulated fleet as :class:`~analytics.theft.data.TheftData`, straight from the engine's blocks.

For bench/ and tests only: it joins the simulators to the theft ranking, which analytics may not
import (docs/architecture.md), so it lives here rather than in ``analytics.theft``.

What a utility would see, computed with numpy: daily consumption from the register *as the meter
shows it* (frozen registers, scale jumps, rollovers and exchanges included) read at the last
instant the meter answered each day (none while it is silent, so the day after a communication
loss carries the catch-up), the export / reverse register, hourly recorded consumption from the
interval channel, meter events, and each area's feeder / bulk meter. Ground truth comes back
separately (:class:`SimTruth`) and is never part of the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.theft.data import Event, TheftData, register_advance
from releve.arrays import FloatArray
from simulators.engine import Simulation


@dataclass
class SimTruth:
    """Ground truth per customer meter (rows in the order of the data)."""

    theft_kind: list[str]  # '' for honest meters
    fault_kind: list[str]  # '' when no fault episode
    vacancy: np.ndarray  # bool
    stolen: FloatArray  # energy not recorded over the period (true − recorded, ≥ 0 per day)
    area_stolen: dict[str, float]


def _day_last(values: FloatArray, avail: np.ndarray) -> FloatArray:
    """Per meter and day, the value at the last available interval of the day (NaN if none)."""
    spd = values.shape[2]
    rev = avail[:, :, ::-1]
    last = spd - 1 - rev.argmax(axis=2)
    out = np.take_along_axis(values, last[:, :, None], axis=2)[:, :, 0]
    return np.where(avail.any(axis=2), out, np.nan)


def from_simulation(sim: Simulation, days: int, hourly: bool = True) -> tuple[TheftData, SimTruth]:
    """Customer meters of ``sim`` over ``days`` days as theft input, with their ground truth."""
    spd = sim.steps_per_day
    customers = [m.index for m in sim.meters if m.role == "customer"]
    feeders = {a.name: a.feeder for a in sim.areas}
    n_all = len(sim.meters)
    last_imp = np.full((n_all, days), np.nan)
    last_exp = np.full((n_all, days), np.nan)
    hours = np.full((n_all, days, 24), np.nan) if hourly else None
    true_d = np.zeros((n_all, days))
    rec_d = np.zeros((n_all, days))
    stolen_d = np.zeros((n_all, days))
    done = 0
    for blk in sim.blocks(days):
        nd = min(blk.steps // spd, days - done)
        if nd <= 0:
            break
        cut = nd * spd
        shape = (n_all, nd, spd)
        avail = blk.available[:, :cut].reshape(shape)
        last_imp[:, done : done + nd] = _day_last(blk.reported_imp[:, :cut].reshape(shape), avail)
        last_exp[:, done : done + nd] = _day_last(blk.reported_exp[:, :cut].reshape(shape), avail)
        if hours is not None and spd % 24 == 0:
            h = blk.rec[:, :cut].reshape(n_all, nd, 24, spd // 24)
            a = avail.reshape(n_all, nd, 24, spd // 24)
            hours[:, done : done + nd] = np.where(a.all(axis=3), h.sum(axis=3), np.nan)
        t = blk.true[:, :cut].reshape(shape).sum(axis=2)
        r = blk.rec[:, :cut].reshape(shape).sum(axis=2)
        true_d[:, done : done + nd] = t
        rec_d[:, done : done + nd] = r
        stolen_d[:, done : done + nd] = np.maximum(t - r, 0.0)
        done += nd
    # Registers: the day's advance is measured from the previous day's last read (the first day
    # from the simulation's initial index).
    initial = np.array([m.initial_import for m in sim.meters])
    daily_all = register_advance(last_imp, initial)
    export_all = register_advance(last_exp, np.zeros(n_all))
    wrap = np.asarray(sim._wrap, dtype=float)  # the register width is registry data (meter table)
    idx = np.array(customers)
    specs = [sim.meters[i] for i in customers]
    data = TheftData(
        serials=[m.serial for m in specs],
        first_day=sim.start.date(),
        daily=daily_all[idx],
        commodity=np.array([str(m.commodity.value) for m in specs], dtype=object),
        customer_class=np.array([m.customer_class for m in specs], dtype=object),
        area=np.array([m.area for m in specs], dtype=object),
        latitude=np.array([m.latitude for m in specs]),
        longitude=np.array([m.longitude for m in specs]),
        import_only=np.ones(len(specs), dtype=bool),
        wrap=wrap[idx],
        cumulative=True,
        export=export_all[idx],
        hourly=None if hours is None else hours[idx],
        unit=np.array([m.unit for m in specs], dtype=object),
    )
    position = {m: k for k, m in enumerate(customers)}
    for ev in sim.events:
        k = position.get(ev.meter)
        day = (ev.ts.date() - data.first_day).days
        if k is not None and 0 <= day < days:
            data.events.append(Event(k, day, ev.ts, ev.kind.value, ev.code))
    feeder_last = register_advance(last_imp, initial)
    for name, f in feeders.items():
        data.feeders[name] = feeder_last[f].copy()
    theft = [""] * len(customers)
    fault = [""] * len(customers)
    vacancy = np.zeros(len(customers), dtype=bool)
    end = sim.time_of(days * spd)
    for lb in sim.labels():
        if lb.start >= end:
            continue
        k = position.get(int(lb.meter) - sim.config.serial_base)
        if k is None:
            continue
        if lb.category == "theft":
            theft[k] = lb.kind
        elif lb.category == "fault":
            fault[k] = fault[k] or lb.kind
        elif lb.kind == "vacancy":
            vacancy[k] = True
    stolen = stolen_d[idx].sum(axis=1)
    area_stolen: dict[str, float] = {}
    for k, m in enumerate(specs):
        area_stolen[m.area] = area_stolen.get(m.area, 0.0) + float(stolen[k])
    return data, SimTruth(theft, fault, vacancy, stolen, area_stolen)
