"""Every injected theft and fault shows in the registers exactly where its label says.

For each kind, a small fleet where every eligible customer gets that kind; consumption is recomputed
from the register series a collector would read (differences of the reported index) and compared
with the true consumption the simulator kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pytest

from releve.model import EventKind
from simulators.config import FAULT_KINDS, THEFT_KINDS
from simulators.engine import Label, Simulation

from .conftest import small_fleet

DAYS = 28


@dataclass
class Series:
    sim: Simulation
    true: np.ndarray
    rec: np.ndarray
    reported: np.ndarray
    internal: np.ndarray
    export: np.ndarray
    available: np.ndarray

    def step(self, ts: datetime) -> int:
        return self.sim.step_of(ts)[0]

    def register_consumption(self, m: int) -> np.ndarray:
        """Consumption per interval as recomputed from the reported register (rollover undone)."""
        d = np.diff(self.reported[m])
        wrap = self.sim.meters[m].profile.entry(self.sim.meters[m].import_channel).wrap
        return np.mod(d, wrap) if wrap else d


def simulate(category: str, kind: str) -> tuple[Series, list[Label]]:
    section = {"rate": 1.0, "kinds": {kind: 1.0}, "min_days": 2.0, "max_days": 5.0}
    other = {"rate": 0.0}
    sim = Simulation(
        small_fleet(
            consumption={"vacancy_rate": 0.0},
            theft=section if category == "theft" else other,
            faults=section if category == "fault" else other,
        )
    )
    blocks = list(sim.blocks(DAYS))
    cat = lambda name: np.concatenate([getattr(b, name) for b in blocks], axis=1)  # noqa: E731
    series = Series(
        sim, cat("true"), cat("rec"), cat("reported_imp"), cat("imp_index"), cat("reported_exp"), cat("available")
    )
    labels = [lb for lb in sim.labels() if lb.kind == kind]
    if kind == "digit_error":
        labels = [lb for *_, lb in sim.manual_reads(DAYS) if lb is not None]
    assert labels, f"no {kind} injected"
    return series, labels


def meter_of(series: Series, label: Label) -> int:
    return next(m.index for m in series.sim.meters if m.serial == label.meter)


@pytest.mark.parametrize("kind", THEFT_KINDS)
def test_theft_shows_in_register_consumption_inside_its_label_only(kind):
    s, labels = simulate("theft", kind)
    spd = s.sim.steps_per_day
    by_meter = {meter_of(s, lb): lb for lb in labels}
    for meter in s.sim.meters:
        if meter.role != "customer":
            continue
        m = meter.index
        d = s.register_consumption(m)
        true = s.true[m, : d.size]
        differs = ~np.isclose(d, true, rtol=1e-7, atol=1e-9)
        label = by_meter.get(m)
        if label is None:
            assert not differs.any(), f"{meter.serial}: unlabelled difference"
            continue
        s0, s1 = s.step(label.start), s.step(label.end)
        inside = np.zeros(d.size, dtype=bool)
        inside[s0:s1] = True
        assert not differs[~inside].any(), f"{kind} on {meter.serial} leaks outside its label"
        if kind != "h5":  # a flat day can equal the true day only by accident, not every interval
            assert differs[inside].mean() > (0.1 if kind == "h2" else 0.3)
        w, p = slice(s0, s1), label.params
        if kind in ("h1", "tamper_drop", "water_magnet"):
            np.testing.assert_allclose(d[w], p["alpha"] * true[w], rtol=1e-7, atol=1e-12)
        elif kind == "bypass":
            np.testing.assert_allclose(d[w], (1 - p["beta"]) * true[w], rtol=1e-7, atol=1e-12)
        elif kind == "h2":
            hours = ((np.arange(d.size) % spd) + 0.5) * 24 / spd
            off = inside & (hours >= p["start_hour"]) & (hours < p["start_hour"] + p["hours"])
            assert off.any()
            np.testing.assert_allclose(d[off], 0.0, atol=1e-9)
        elif kind == "h3":
            ratio = d[w] / true[w]
            assert ratio.min() >= 0.1 - 1e-9
            assert ratio.max() <= 0.8 + 1e-9
        elif kind in ("h4", "h5", "h6"):
            for k in range(s0, s1):
                day = slice(k - k % spd, k - k % spd + spd)
                if kind == "h5":
                    assert d[k] == pytest.approx(true[day].mean(), rel=1e-7)
                elif kind == "h4":
                    assert 0.1 - 1e-9 <= d[k] / true[day].mean() <= 0.8 + 1e-9
                else:
                    assert d[k] == pytest.approx(true[day.start + spd - 1 - k % spd], rel=1e-7)
        elif kind in ("meter_stopped", "water_reverse_flow"):
            np.testing.assert_allclose(d[w], 0.0, atol=1e-9)
            assert true[w].sum() > 0
        if kind in ("reverse_energy", "water_reverse_flow"):
            beta = p.get("beta", 1.0)
            np.testing.assert_allclose(np.diff(s.export[m])[w], beta * true[w], rtol=1e-7, atol=1e-12)
            assert np.diff(s.export[m])[~inside[: d.size]].max(initial=0) == 0
        events = [e for e in s.sim.events if e.meter == m]
        if kind in ("tamper_drop", "reverse_energy", "water_reverse_flow", "water_magnet"):
            assert events[0].step == s0
            assert (
                events[0].kind.value
                == {
                    "tamper_drop": p.get("event"),
                    "reverse_energy": "reverse_energy",
                    "water_reverse_flow": "reverse_flow",
                    "water_magnet": "magnetic_field",
                }[kind]
            )
            status = s.sim.values_at(m, label.start)["status"]
            assert status != 0, "the status register raises a flag when the theft starts"


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_shows_in_the_registers_where_its_label_says(kind):
    s, labels = simulate("fault", kind)
    sim = s.sim
    for label in labels:
        m = meter_of(s, label)
        s0, s1 = s.step(label.start), s.step(label.end)
        p = label.params
        rep, internal = s.reported[m], s.internal[m]
        wrap = sim.meters[m].profile.entry(sim.meters[m].import_channel).wrap

        def shown(values, wrap=wrap):
            return np.mod(values, wrap) if wrap else values

        others = np.ones(rep.size, dtype=bool)
        others[s0:s1] = False
        if kind == "comm_loss":
            assert not s.available[m, s0:s1].any()
            assert s.available[m, others].all()
            assert not sim.available(m, label.start)
        elif kind == "frozen_register":
            assert np.all(rep[s0:s1] == rep[s0])
            assert internal[s1 - 1] > internal[s0]
            assert rep[s1] == pytest.approx(shown(internal[s1]))
        elif kind == "scale_jump":
            np.testing.assert_allclose(rep[s0:s1], shown(internal[s0:s1] * p["factor"]))
            np.testing.assert_allclose(rep[others], shown(internal[others]))
        elif kind == "meter_exchange":
            assert rep[s0] == pytest.approx(p["new_initial"])
            assert rep[s0 - 1] > rep[s0] + 50
            assert np.all(np.diff(internal)[others[1:]] >= 0), "the index only drops at the exchange"
        elif kind == "spike":
            d = np.diff(rep)
            assert d[s0] == pytest.approx(p["factor"] * s.true[m, s0])
            assert d[s0] > 5 * d[s0 - 4 : s0].mean()
        elif kind == "rollover":
            d = np.diff(rep)
            assert rep[s0] < rep[s0 - 1]
            assert d[s0 - 1] + p["wrap"] == pytest.approx(s.rec[m, s0 - 1])
            assert (d < 0).sum() == 1
        elif kind == "clock_drift":
            before_end = sim.time_of(s1 - 1)
            elapsed = (before_end - label.start).total_seconds() / 86400
            assert sim.clock_offset(m, before_end) == pytest.approx(p["seconds_per_day"] * elapsed)
            assert sim.clock_offset(m, label.end) == 0
            assert any(e.kind is EventKind.CLOCK_ADJUSTED and e.step == s1 for e in sim.events if e.meter == m)
        elif kind == "slow_device":
            assert sim.response_delay(m, label.start) == pytest.approx(p["delay_ms"] / 1000)
            assert sim.response_delay(m, sim.time_of(s1)) == 0
        elif kind == "leak":
            floor = p["litres_per_hour"] / 1000 * sim.dt_h
            assert s.rec[m, s0:s1].min() >= floor
            assert s.rec[m, others].min() < floor
        elif kind == "digit_error":
            assert p["typed"] != p["correct"]
            assert p["correct"] == int(sim.values_at(m, label.start)[sim.meters[m].import_channel])
