"""The inspection list: risk per meter, candidates with reasons in words and evidence, route exports.

:func:`score` turns :class:`~analytics.theft.data.TheftData` into a :class:`Ranking` (every meter
scored); :meth:`Ranking.candidates` selects, filters and explains the top of it. Every candidate
carries at least one reason in words and the evidence (series, events, balance) behind each.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analytics.theft import evidence as table
from analytics.theft import model as md
from analytics.theft import signals as sg
from analytics.theft.data import TheftData
from analytics.theft.features import FEATURES, ROW_BLOCK, Features, Progress, compute_features, zero_days
from releve.arrays import FloatArray, IntArray

#: Names of the supervised model's inputs (what a candidate stores to become a label later).
INPUT_NAMES: tuple[str, ...] = (*FEATURES, "rule", "forest")

_EVENT_WORDS = {
    "terminal_cover_open": "terminal-cover-open",
    "meter_cover_open": "meter-cover-open",
    "magnetic_field": "magnetic-field",
    "bypass": "bypass",
    "reverse_energy": "reverse-energy",
    "current_without_voltage": "current-without-voltage",
    "reverse_flow": "reverse-flow",
    "auth_failure": "authentication-failure",
    "removal": "removal",
    "cable_cut": "cable-cut",
}


def _r(x: float, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), nd)


def _series(a: np.ndarray) -> list[float | None]:
    """Each value rounded to 3 decimals as :func:`_r` rounds it (None where not finite)."""
    return [round(v, 3) if math.isfinite(v) else None for v in np.asarray(a, dtype=float).tolist()]


@dataclass
class Candidate:
    """One meter on the inspection list."""

    rank: int
    meter: str
    area: str
    commodity: str
    customer_class: str
    latitude: float | None
    longitude: float | None
    risk: float
    rule: float
    forest: float
    supervised: float | None
    unbilled: float
    expected_value: float
    reasons: list[str]
    evidence: dict[str, Any]
    inputs: dict[str, float]
    signal: str
    meter_id: int | None = None
    route_order: int | None = None
    #: Unit of the energy figures (``kWh``, ``m3``): the meter's, else its commodity's.
    unit: str = ""

    @property
    def unit_symbol(self) -> str:
        """The unit as printed (m³ for m3); the commodity's when the candidate has none stored."""
        return _unit_words(self.unit or COMMODITY_UNITS.get(self.commodity, ""))


#: The unit of each commodity's energy figures when a meter does not say.
COMMODITY_UNITS = {"electricity": "kWh", "water": "m3"}


@dataclass
class Ranking:
    """Every meter scored, and what is needed to explain any of them."""

    features: Features
    evidence: md.Evidence
    rule: FloatArray
    forest: FloatArray
    unsup: FloatArray
    supervised: FloatArray | None
    risk: FloatArray
    unbilled: FloatArray
    value: FloatArray
    model: md.Supervised | None = None
    excluded: set[str] = field(default_factory=set)
    n_outcomes: int = 0
    #: Per meter, days since its loss last showed (0: still going on at the end of the period).
    ended: IntArray | None = None

    @property
    def model_name(self) -> str:
        """Short name of what ranked (stored with a run)."""
        return "unsupervised" if self.model is None else self.model.name

    def model_note(self) -> str:
        """Which model ranked and why, in words (printed with the list and the report)."""
        if self.model is not None:
            w = min(0.8, self.model.n_labels / (self.model.n_labels + 50.0))
            return (
                f"ranked by the evidence rules and isolation forest blended ({100 * w:.0f} %) with a "
                f"{self.model.describe()}"
            )
        if self.n_outcomes:
            return (
                f"ranked by the evidence rules and isolation forest only: {self.n_outcomes} outcomes recorded, "
                f"a model needs at least {md.MIN_PU_POSITIVES} fraud (or {md.MIN_PER_CLASS} of each class)"
            )
        return "ranked by the evidence rules and isolation forest (no inspection outcomes recorded yet)"

    @property
    def data(self) -> TheftData:
        """The input."""
        return self.features.data

    def inputs(self, rows: slice | IntArray = slice(None)) -> FloatArray:
        """The supervised model's inputs for every meter (or ``rows``), columns :data:`INPUT_NAMES`."""
        return np.column_stack([self.features.X[rows], self.rule[rows], self.forest[rows]])

    def order(self, by: str = "risk") -> np.ndarray:
        """Meter indexes, most suspicious (or most valuable) first; excluded meters last."""
        key = self.value if by == "value" else self.risk
        key = np.where([s in self.excluded for s in self.data.serials], -np.inf, key)
        return np.argsort(-key, kind="stable")

    def top_signal(self, i: int) -> str:
        """The evidence component that contributes most to meter ``i``."""
        w = np.array([md.WEIGHTS[n] for n in self.evidence.names])
        contrib = self.evidence.values[i] * w
        return self.evidence.names[int(contrib.argmax())] if contrib.max() > 0 else "anomaly"

    def candidates(
        self,
        top: int = 50,
        by: str = "risk",
        areas: list[str] | None = None,
        commodity: str | None = None,
        customer_class: str | None = None,
        signal: str | None = None,
    ) -> list[Candidate]:
        """The top ``top`` meters after the filters, each with reasons and evidence."""
        d = self.data
        out: list[Candidate] = []
        for i in self.order(by):
            if len(out) >= top:
                break
            serial = d.serials[i]
            if serial in self.excluded:
                continue
            if areas and str(d.area[i]) not in areas:
                continue
            if commodity and str(d.commodity[i]) != commodity:
                continue
            if customer_class and str(d.customer_class[i]) != customer_class:
                continue
            sig = self.top_signal(int(i))
            if signal and sig != signal:
                continue
            out.append(self.explain(int(i), len(out) + 1))
        route_order(out)
        return out

    def explain(self, i: int, rank: int) -> Candidate:
        """Candidate ``i`` with its reasons in words and the evidence behind them."""
        d = self.data
        reasons, evidence = explain(self, i)
        inputs = dict(zip(INPUT_NAMES, self.inputs(np.array([i]))[0].tolist(), strict=True))
        lat, lon = float(d.latitude[i]), float(d.longitude[i])
        return Candidate(
            rank=rank,
            meter=d.serials[i],
            area=str(d.area[i]),
            commodity=str(d.commodity[i]),
            customer_class=str(d.customer_class[i]),
            latitude=lat if math.isfinite(lat) else None,
            longitude=lon if math.isfinite(lon) else None,
            risk=float(self.risk[i]),
            rule=float(self.rule[i]),
            forest=float(self.forest[i]),
            supervised=None if self.supervised is None else float(self.supervised[i]),
            unbilled=float(self.unbilled[i]),
            expected_value=float(self.value[i]),
            reasons=reasons,
            evidence=evidence,
            inputs=inputs,
            signal=self.top_signal(i),
            meter_id=None if d.meter_ids is None else d.meter_ids[i],
            unit=str(evidence["daily"]["unit"]),
        )


def score(
    data: TheftData,
    training: tuple[FloatArray, np.ndarray] | None = None,
    tariff: dict[str, float] | None = None,
    exclude: set[str] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Ranking:
    """Score every meter; ``training`` (inputs, 0/1 labels) from inspection outcomes adds the supervised model.

    ``progress``: see :data:`analytics.theft.features.Progress` (the hourly signals, group by group).
    """
    f = compute_features(data, progress=progress)
    ev = md.evidence(f)
    rule = md.rule_score(ev)
    forest = md.iforest_score(f, seed=seed)
    unsup = md.unsupervised_risk(rule, forest)
    x_all = np.column_stack([f.X, rule, forest])
    sup = None
    model = None
    if training is not None and len(training[1]):
        model = md.train_supervised(_transform(training[0]), training[1])
        if model is None:
            model = md.train_pu(_transform(training[0]), training[1], _transform(x_all))
        if model is not None:
            sup = model.predict(_transform(x_all))
    risk = md.combine(unsup, sup, model.n_labels if model is not None else 0)
    ended = days_since_loss(f, ev)
    risk = risk * ongoing_factor(ended)
    energy = md.unbilled_energy(f)
    value = md.expected_value(risk, energy, data.commodity, tariff)
    n_out = 0 if training is None else len(training[1])
    return Ranking(f, ev, rule, forest, unsup, sup, risk, energy, value, model, set(exclude or ()), n_out, ended)


# ------------------------------------------------------------------ tonight: ongoing before ended

#: A loss whose last sign is at most this many days before the end of the period is still going on
#: (a week or two of normal days is a household's own noise, or a thief's holiday).
ONGOING_DAYS = 14
#: A loss that stopped this many days before the end of the period or more gets the full discount.
ENDED_DAYS = 90
#: The most an ended loss's risk is discounted: at similar evidence a meter losing tonight comes
#: first, while a strong case that ended stays above weak ones (it is still owed, and still a lead).
ENDED_DISCOUNT = 0.15
#: A component takes part in dating a meter's loss when it weighs at least this share of its strongest.
_DATING_SHARE = 0.25


def ongoing_factor(ended: IntArray) -> FloatArray:
    """Multiplier of the risk: 1 for a loss still going on, down to 1 − :data:`ENDED_DISCOUNT` for one long over."""
    ramp = np.clip((np.asarray(ended, dtype=float) - ONGOING_DAYS) / (ENDED_DAYS - ONGOING_DAYS), 0.0, 1.0)
    return 1.0 - ENDED_DISCOUNT * ramp


def days_since_loss(f: Features, ev: md.Evidence) -> IntArray:
    """Per meter, days between the last sign of its loss and the end of the period (0: going on tonight).

    Each component that dates what it saw gives the day after its last sign: the drop's run (or the
    period's end when the last two weeks are still low), the last zero day, the profile, flatter-day
    and tamper-mark runs, the last four-week window the hourly balance puts a quarter of its
    busiest window's energy per day on the meter, the last tamper event. The recent-change tests
    (the last 30 days) are ongoing by construction. Of the components weighing at least a quarter
    of the meter's strongest, the latest date counts, except that the hourly feeder balance, when
    it is one of them, decides alone (a household's own series changes for its own reasons long
    after a theft stopped); a meter whose evidence has no date (a peer outlier, the export
    register) counts as ongoing.
    """
    d = f.data
    n = d.n_days
    m = d.n_meters
    names = ev.names
    ends = np.full((m, len(names)), -1, dtype=np.int64)

    def put(name: str, end: np.ndarray) -> None:
        if name in names:
            ends[:, names.index(name)] = end

    drop = f.drop
    tail = drop.ratio[:, max(0, n - ONGOING_DAYS) :]
    ok = np.isfinite(tail)
    recent = np.where(ok.any(axis=1), np.nansum(np.where(ok, tail, 0.0), axis=1) / np.maximum(ok.sum(axis=1), 1), 1.0)
    put("drop", np.where(drop.start >= 0, np.where(recent < 0.8, n, drop.end), -1))
    zero = zero_days(f.cleaned.values, drop.expected)
    put("zero", np.where(zero.any(axis=1), n - np.argmax(zero[:, ::-1], axis=1), -1))
    if f.profile is not None:
        # A run from the first day that ends before the last is the old shape: the new one is going on
        # (as :func:`explain` words it, the change happened where the run ends).
        p0, p1 = f.profile.start, f.profile.end
        put("profile", np.where(p0 >= 0, np.where((p0 == 0) & (p1 < n), n, p1), -1))
    if f.spread_run is not None:
        put("flat_run", np.where(f.spread_run[1] > f.spread_run[0], f.spread_run[1], -1))
    if f.mark_runs:
        put("marks", np.maximum.reduce([np.where(b > a, b, -1) for a, b in f.mark_runs.values()]))
    if f.interval is not None:
        n_win = -(-n // 28)
        edges = np.arange(0, n, 28)
        per = np.zeros((m, n_win))
        # The attributed energy summed per window a block of meters at a time: its clipped copy is a
        # block's, not the fleet's (two meters × days arrays at the end of a 100,000-meter ranking).
        for a in range(0, m if n else 0, ROW_BLOCK):
            att = np.clip(np.nan_to_num(f.interval.attributed[a : a + ROW_BLOCK]), 0.0, None)
            per[a : a + ROW_BLOCK] = np.add.reduceat(att, edges, axis=1)
        per = per / np.diff(np.r_[edges, n])[None, :]  # per day: a short last window weighs as a whole one
        busy = per >= _DATING_SHARE * per.max(axis=1, keepdims=True)
        busy &= per > 0
        last_w = np.where(busy.any(axis=1), n_win - 1 - np.argmax(busy[:, ::-1], axis=1), -1)
        put("balance", np.where(last_w >= 0, np.minimum(n, 28 * (last_w + 1)), -1))
    event_end = np.full(m, -1, dtype=np.int64)
    for i, events in f.events_by_meter.items():
        days = [e.day for e, w, _ in events if w > 0]
        if days:
            event_end[i] = max(days) + 1
    put("event", event_end)
    for name in ("change", "fell", "texture"):
        put(name, np.full(m, n, dtype=np.int64))
    w = np.array([md.WEIGHTS[k] for k in names])
    contrib = ev.values * w[None, :]
    strong = (contrib > 0.02) & (contrib >= _DATING_SHARE * contrib.max(axis=1, keepdims=True))
    dated = np.where(strong & (ends >= 0), ends, -1).max(axis=1)
    if "balance" in names:
        # Where the hourly feeder balance takes part it decides, as it does the risk: the feeder saw
        # when the energy went missing, the meter's own series only what the household did.
        b = names.index("balance")
        decides = strong[:, b] & (ends[:, b] >= 0)
        dated = np.where(decides, ends[:, b], dated)
    return np.where(dated >= 0, np.clip(n - dated, 0, n), 0).astype(np.int64)


def _transform(x: FloatArray) -> FloatArray:
    """Log-scale the (non-negative) inputs for the linear model."""
    return np.log1p(np.clip(np.asarray(x, dtype=float), 0, None))


def _when(d: TheftData, day: int) -> str:
    return d.day(day).isoformat()


def _refine_start(ratio: np.ndarray, start: int, threshold: float = 0.8) -> int:
    for day in range(max(0, start - 3), min(len(ratio), start + 4)):
        if np.isfinite(ratio[day]) and ratio[day] < threshold:
            return day
    return start


def explain(r: Ranking, i: int) -> tuple[list[str], dict[str, Any]]:
    """Reasons in words (strongest first) and the evidence for meter ``i``."""
    f, d = r.features, r.data
    unit = str(d.unit[i]) if d.unit is not None and d.unit[i] else COMMODITY_UNITS.get(str(d.commodity[i]), "kWh")
    sym = _unit_words(unit)  # as printed
    comp = {n: float(v) for n, v in zip(r.evidence.names, r.evidence.values[i], strict=True)}
    weighted = sorted(((md.WEIGHTS[n] * v, n) for n, v in comp.items() if v > 0.02), reverse=True)
    reasons: list[str] = []
    ev: dict[str, Any] = {
        "components": {n: _r(v) for n, v in comp.items()},
        "scores": {"risk": _r(r.risk[i]), "rule": _r(r.rule[i]), "forest": _r(r.forest[i])},
    }
    drop = f.drop
    s0, s1 = int(drop.start[i]), int(drop.end[i])
    if s0 >= 0:
        lo, hi = max(0, s0 - 28), min(d.n_days, s1 + 14)
    else:
        lo, hi = max(0, d.n_days - 90), d.n_days
    hi = min(hi, lo + 180)
    ev["daily"] = {
        "from": _when(d, lo),
        "unit": unit,
        "recorded": _series(f.cleaned.values[i, lo:hi]),
        "raw": _series(d.daily[i, lo:hi]),
        "expected": _series(drop.expected[i, lo:hi]),
    }
    events = r.features.events_by_meter.get(i, [])
    ev["events"] = [
        {"ts": e.ts.isoformat(), "kind": e.kind, "code": e.code, "weight": _r(w), "drop_after": _r(dr)}
        for e, w, dr in events[:50]
    ]
    tamper = [(e, w, dr) for e, w, dr in events if w > 0]
    for score_, name in weighted:
        if name == "drop" and s0 >= 0:
            start = _refine_start(drop.ratio[i], s0)
            text = (
                f"consumption fell {round(100 * drop.depth[i])} % on {_when(d, start)} "
                f"and stayed down {_days(s1 - start)}"
            )
            before = [(start - e.day, e) for e, _, _ in tamper if 0 <= start - e.day <= 14]
            if before:
                gap, e = min(before, key=lambda t: t[0])
                text += (
                    f", {_days(gap)} after a {_EVENT_WORDS.get(e.kind, e.kind)} event"
                    if gap
                    else f", the day of a {_EVENT_WORDS.get(e.kind, e.kind)} event"
                )
            reasons.append(text)
            ev["drop"] = {
                "start": _when(d, start),
                "end": _when(d, s1 - 1),
                "depth": _r(drop.depth[i]),
                "missing_energy": _r(drop.deficit[i]),
                "unit": unit,
            }
            if f.col("has_balance")[i] > 0 and not f.col("has_interval")[i] > 0:  # the hourly balance says more
                a = int(f.area_of[i])
                share = f.col("balance_share")[i]
                assert f.balance is not None
                ev["balance"] = {
                    "area": f.area_names[a],
                    "share_confirmed": _r(share),
                    "loss_ratio": _series(f.balance.ratio[a, lo:hi]),
                    "technical_baseline": _series(f.balance.baseline[a, lo:hi]),
                    "excess": _series(f.balance.excess[a, lo:hi]),
                }
                before_r = _nanmean(f.balance.ratio[a, max(0, s0 - 28) : s0])
                during_r = _nanmean(f.balance.ratio[a, s0:s1])
                if share >= 0.3:
                    moved = _moved(before_r, during_r)
                    reasons.append(
                        f"area {f.area_names[a]}'s unexplained loss {moved} over the same days "
                        f"({_pct(before_r)} → {_pct(during_r)} of the feeder) and accounts for "
                        f"{round(100 * share)} % of the missing {drop.deficit[i]:.0f} {sym}"
                    )
                else:
                    reasons.append(
                        f"area {f.area_names[a]}'s energy balance confirms only {round(100 * share)} % "
                        f"of the drop (vacancy or a real change of use is possible)"
                    )
        elif name == "zero":
            n = int(f.col("zero_run")[i])
            run = f"{n} consecutive days" if n != 1 else "a day"
            reasons.append(f"zero consumption for {run} while the meter kept reporting")
            ev["zero"] = {"days": n}
        elif name == "profile" and f.profile is not None and f.profile.start[i] >= 0:
            p0, p1 = int(f.profile.start[i]), int(f.profile.end[i])
            how = "reversed" if f.profile.reversed[i] else "flattened" if f.profile.flattened[i] else "reshaped"
            if p0 == 0 and p1 < d.n_days:
                # The odd shape is the earlier one: the change happened where the run ends.
                earlier = "the day before looks" if p1 == 1 else f"the {p1} days before look"
                reasons.append(
                    f"daily profile changed on {_when(d, p1)}: {earlier} {how} against the rest "
                    f"(correlation {f.profile.during[i]:.2f} against {f.profile.usual[i]:.2f} usually)"
                )
            else:
                reasons.append(
                    f"daily profile {how} from {_when(d, p0)} for {_days(p1 - p0)} (correlation with the usual "
                    f"shape {f.profile.usual[i]:.2f} → {f.profile.during[i]:.2f})"
                )
            pl, ph = max(0, p0 - 14), min(d.n_days, p1 + 7)
            ev["profile"] = {
                "start": _when(d, p0),
                "end": _when(d, p1 - 1),
                "how": how,
                "usual_corr": _r(f.profile.usual[i]),
                "during_corr": _r(f.profile.during[i]),
                "from": _when(d, pl),
                "daily_corr": _series(f.profile.corr[i, pl:ph]),
            }
            if d.hourly is not None:
                ev["profile"]["usual_day"] = _median_day(d.hourly[i, max(0, p0 - 14) : p0])
                ev["profile"]["anomalous_day"] = _median_day(d.hourly[i, p0:p1])
        elif name == "event" and tamper:
            e, _, dr = max(tamper, key=lambda t: t[1] * (0.5 + t[2]))
            text = f"{_EVENT_WORDS.get(e.kind, e.kind)} event on {e.ts.date().isoformat()}"
            if len(tamper) > 1:
                text += f" ({len(tamper)} tamper-type events in all)"
            if dr >= 0.15:
                text += f", consumption {round(100 * dr)} % lower in the two weeks after"
            reasons.append(text)
        elif name == "reverse":
            energy = float(f.reverse_energy[i]) if f.reverse_energy is not None else 0.0
            what = "reverse-flow register" if d.commodity[i] == "water" else "export register"
            reasons.append(
                f"{what} counted {energy:.1f} {sym} on an import-only meter "
                f"({round(100 * f.col('reverse_share')[i])} % of its energy)"
            )
            ev["reverse"] = {"energy": _r(energy), "share": _r(f.col("reverse_share")[i]), "unit": unit}
        elif name == "balance" and f.interval is not None:
            ib = f.interval
            area_code = str(d.area[i])
            kind = _REGRESSOR_WORDS.get(sg.REGRESSORS[int(ib.kind[i])], "") if ib.kind[i] >= 0 else ""
            first = int(ib.first_day[i])
            n_win = -(-d.n_days // 28)
            energy = float(f.col("interval_energy")[i])
            text = (
                f"area {area_code}'s hourly feeder balance puts {energy:.0f} {sym} of unexplained loss "
                f"on this meter ({round(100 * f.col('interval_share')[i])} % of what it recorded)"
            )
            if ib.windows[i] > 0:
                text += f", in {int(ib.windows[i])} of {n_win} four-week windows"
            if first >= 0:
                text += f" from {_when(d, first)}"
            if kind:
                text += f"; the missing energy follows {kind}"
            reasons.append(text)
            row = f.interval_areas.index(area_code) if area_code in f.interval_areas else -1
            ev["interval_balance"] = {
                "area": area_code,
                "share": _r(f.col("interval_share")[i]),
                "strength": _r(ib.strength[i], 1),
                "energy": _r(energy),
                "unit": unit,
                "windows": int(ib.windows[i]),
                "first_window": _when(d, first) if first >= 0 else None,
                "kind": sg.REGRESSORS[int(ib.kind[i])] if ib.kind[i] >= 0 else None,
                "from": _when(d, lo),
                "attributed": _series(ib.attributed[i, lo:hi]),
                "technical": _series(ib.technical[row, lo:hi]) if row >= 0 else None,
                "residual": _series(ib.residual[row, lo:hi]) if row >= 0 else None,
            }
        elif name == "change" and f.recent_shift is not None and f.recent_z is not None:
            names = list(sg.CHANGE_STATS)[: f.recent_z.shape[1]]
            z = f.recent_z[i]
            j = int(np.argmax(np.where(np.arange(len(names)) == 0, z, 0.3 * z)))
            if names[j] == "level":
                fell = 100 * (1 - math.exp(-max(float(f.recent_shift[i, 0]), 0.0)))
                text = (
                    f"the last 30 days are {fell:.0f} % below the same season earlier "
                    f"({_times(z[0])} the fleet's usual change)"
                )
            else:
                text = (
                    f"the last 30 days show {_CHANGE_WORDS[names[j]]} against the same season earlier "
                    f"({_times(z[j])} the fleet's usual change)"
                )
            reasons.append(text)
            ev["change"] = {
                n: {"shift": _r(float(f.recent_shift[i, k])), "z": _r(float(z[k]))} for k, n in enumerate(names)
            }
        elif name == "fell" and f.col("recent_drop")[i] >= 0.15:  # a few % is a household's own noise
            fell = 100 * float(f.col("recent_drop")[i])
            reasons.append(
                f"the last 30 days are {fell:.0f} % below the first 45 of the period (both against the season)"
            )
            ev["fell"] = {"relative_drop": _r(f.col("recent_drop")[i])}
        elif name == "flat_run" and f.spread_run is not None and f.col("spread_run_z")[i] >= 3:
            a, b = int(f.spread_run[0][i]), int(f.spread_run[1][i])
            reasons.append(
                f"flatter days than usual from {_when(d, a)} for {_days(b - a)} "
                f"({_times(f.col('spread_run_z')[i])} the fleet's usual contrast)"
            )
            ev["flat_run"] = {"start": _when(d, a), "end": _when(d, b - 1), "z": _r(f.col("spread_run_z")[i])}
        elif name == "marks":
            which = max(sg.MARKS, key=lambda n: float(f.col(f"mark_{n}")[i]))
            share = float(f.col(f"mark_{which}")[i])
            if which in f.mark_runs:
                a, b = int(f.mark_runs[which][0][i]), int(f.mark_runs[which][1][i])
                reasons.append(
                    f"{_MARK_WORDS[which]} from {_when(d, a)} for {_days(b - a)} "
                    f"(on {100 * share:.0f} percentage points more of its days than in its other weeks)"
                )
                ev["marks"] = {"mark": which, "start": _when(d, a), "end": _when(d, b - 1), "share": _r(share)}
        elif name == "on_off" and f.alternate_run is not None:
            a, b = int(f.alternate_run[0][i]), int(f.alternate_run[1][i])
            low = 100 * math.exp(-float(f.col("alternate_weeks")[i]))
            reasons.append(
                f"consumption alternates week by week from {_when(d, a)} for {_days(b - a)} "
                f"(the low weeks about {low:.0f} % of the others)"
            )
            ev["on_off"] = {"start": _when(d, a), "end": _when(d, b - 1), "log_ratio": _r(f.col("alternate_weeks")[i])}
        elif name == "reversed" and f.reversed_run is not None:
            a, b = int(f.reversed_run[0][i]), int(f.reversed_run[1][i])
            reasons.append(
                f"days shaped like its usual day reversed in time from {_when(d, a)} for {_days(b - a)} "
                f"({int(f.col('reversed_run')[i])} weeks in a row whose mean day is its earliest weeks' reversed)"
            )
            ev["reversed"] = {"start": _when(d, a), "end": _when(d, b - 1), "weeks": int(f.col("reversed_run")[i])}
        elif name == "texture" and f.recent_texture is not None:
            z = float(f.col("recent_texture_z")[i])
            rougher = 100 * (math.exp(float(f.recent_texture[i])) - 1)
            reasons.append(
                f"in the last 30 days its half-hours jump from one to the next {rougher:.0f} % more than in the "
                f"same season earlier ({_times(z)} the fleet's usual change), while its level fell "
                f"{100 * float(f.col('recent_drop')[i]):.0f} %: each half-hour recorded a different share"
            )
            ev["texture"] = {"shift": _r(float(f.recent_texture[i])), "z": _r(z)}
        elif name == "peer":
            z = float(f.col("peer_low")[i])
            who = "" if str(d.customer_class[i]) in ("", "unknown") else f"{d.customer_class[i]} "
            where = f" of area {d.area[i]}" if d.area[i] else ""
            reasons.append(
                f"normal consumption {'far ' if z >= 3 else ''}below its peers' ({_times(z)} their usual spread "
                f"under the middle, among the {who}customers{where})"
            )
        elif name == "small_steps":
            steps, peer = float(f.col("small_steps")[i]), float(f.col("peer_low")[i])
            reasons.append(
                f"its largest hourly steps are small for its level ({_times(steps)} the fleet's usual spread "
                f"below the line of steps against level) and its consumption far below its peers' "
                f"({_times(peer)} their usual spread): an appliance draws the same power in any home, a "
                "register scaled since before the data shrinks its steps with its level (no feeder to confirm)"
            )
            ev["small_steps"] = {"steps_z": _r(steps), "peer_z": _r(peer)}
        elif name == "silence":
            reasons.append(
                f"silent {_days(int(f.col('silence_unrecovered')[i]))} and the register did not catch up afterwards"
            )
        elif name == "vee":
            n = int(f.col("estimate_streak")[i])
            streak = f"{n} consecutive days" if n != 1 else "a day"
            reasons.append(f"{streak} estimated by validation")
        elif name not in _OWN_WORDS:  # a component with no words of its own: its table entry's
            c = table.BY_NAME[name]
            values = ", ".join(f"{_words(n)} {f.col(n)[i]:.2f}" for n in c.reads)
            reasons.append(f"{c.explanation} ({values})")
        del score_
    if not reasons:
        top = sorted(((abs(float(v)), n) for n, v in zip(f.names, f.X[i], strict=True)), reverse=True)[:3]
        reasons.append(
            f"an unusual combination of figures, stranger than {round(100 * r.forest[i])} % of the fleet's: "
            + ", ".join(f"{_words(n)} {v:.2f}" for v, n in top)
        )
    if r.ended is not None and r.ended[i] > ONGOING_DAYS:
        gone = int(r.ended[i])
        reasons.append(
            f"the loss last showed around {_when(d, d.n_days - gone - 1)}, {_days(gone)} before the end of the data: "
            "listed below losses still going on"
        )
        ev["ended"] = {"last_day": _when(d, d.n_days - gone - 1), "days": gone}
    idx = int(f.col("index_faults")[i])
    if idx:
        what = "index inconsistency" if idx == 1 else "index inconsistencies"
        reasons.append(f"note: {idx} {what} (read below previous, scale jump, spike)")
    ev["features"] = {n: _r(v) for n, v in zip(f.names, f.X[i], strict=True)}
    return reasons, ev


#: The components :func:`explain` words itself; any other gets its table entry's explanation.
_OWN_WORDS = frozenset(
    {
        "drop",
        "zero",
        "profile",
        "event",
        "reverse",
        "balance",
        "change",
        "fell",
        "flat_run",
        "marks",
        "on_off",
        "reversed",
        "texture",
        "small_steps",
        "peer",
        "silence",
        "vee",
    }
)

_MARK_WORDS = {
    "zeroed": "hours recorded as exactly zero on days of normal consumption",
    "flat": "days on which every hour recorded the same value",
    "ceiling": "peaks cut off at one repeated value",
}

_REGRESSOR_WORDS = {
    "scaled": "a share of its own load",
    "zeroed": "its usual load in the hours it recorded zero",
    "clipped": "its peaks above a ceiling",
    "reshaped": "a reshaped day with the same daily total",
    "shortfall": "days below its normal level",
    "short_day": "a share of its own load on the days it fell short",
}

_CHANGE_WORDS = {
    "zeros": "more zero hours",
    "clipped": "more hours at its ceiling (clipped peaks)",
    "spread": "flatter days",
    "smooth": "a jagged hour-to-hour load",
    "shape": "days unlike its usual shape",
}


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


def _moved(before: float, during: float) -> str:
    """Which way a ratio went, in a word."""
    if not (math.isfinite(before) and math.isfinite(during)):
        return "changed"
    return "rose" if during > before else "fell" if during < before else "stayed"


def _times(z: float) -> str:
    """A robust z-score in words: '3.2 times'; past 100 (a near-constant fleet makes it explode) 'over 100 times'."""
    return f"{float(z):.1f} times" if z < 100 else "over 100 times"


def _unit_words(unit: str) -> str:
    """A unit as printed: m3 is m³."""
    return UNIT_SYMBOLS.get(unit, unit)


#: How units are printed (the database and the files say ``m3``).
UNIT_SYMBOLS = {"m3": "m³"}

#: Features in words, for the fallback reasons (a feature not named here: its name with spaces).
_FEATURE_WORDS = {
    "drop_depth": "depth of its drop",
    "drop_days": "days of its drop",
    "drop_share": "share of the year's energy missing",
    "balance_share": "share of the drop the area's balance confirms",
    "zero_run": "longest run of zero days",
    "profile_score": "change of its daily profile",
    "event_score": "tamper events",
    "reverse_share": "share of its energy counted in reverse",
    "peer_low": "distance below its peers",
    "silence_unrecovered": "silent days not caught up",
}


def _words(feature: str) -> str:
    """A feature's name in words."""
    return _FEATURE_WORDS.get(feature, feature.replace("_", " "))


def _nanmean(x: np.ndarray) -> float:
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def _median_day(days: np.ndarray) -> list[float | None] | None:
    """Median hourly profile of the given days (None when no day is complete)."""
    ok = np.isfinite(days).all(axis=1) if days.size else np.zeros(0, dtype=bool)
    return _series(np.median(days[ok], axis=0)) if ok.any() else None


def _pct(x: Any) -> str:
    return "n/a" if not math.isfinite(float(x)) else f"{100 * float(x):.1f} %"


def route_order(cands: list[Candidate]) -> None:
    """Number the candidates along a greedy nearest-neighbour route, from the top-ranked one."""
    pts = [(k, c) for k, c in enumerate(cands) if c.latitude is not None and c.longitude is not None]
    if not pts:
        return
    left = dict(pts)
    cur = pts[0][1]
    del left[pts[0][0]]
    cur.route_order = 1
    n = 1
    while left:
        lat0 = math.radians(cur.latitude or 0.0)
        k, nxt = min(
            left.items(),
            key=lambda kv: (
                ((kv[1].latitude or 0) - (cur.latitude or 0)) ** 2
                + (((kv[1].longitude or 0) - (cur.longitude or 0)) * math.cos(lat0)) ** 2
            ),
        )
        del left[k]
        n += 1
        nxt.route_order = n
        cur = nxt


CSV_COLUMNS = (
    "rank",
    "route_order",
    "meter",
    "area",
    "commodity",
    "customer_class",
    "latitude",
    "longitude",
    "risk",
    "expected_value",
    "currency",
    "unbilled_energy",
    "unit",
    "signal",
    "reasons",
)


def write_csv(cands: list[Candidate], path: Path, currency: str = "") -> None:
    """The list as CSV (coordinates and route order for a night route; reasons joined by ' | ').

    ``expected_value`` is in ``currency`` (the tariff's), ``unbilled_energy`` in ``unit`` (kWh, m³).
    """
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for c in cands:
            w.writerow(
                [
                    c.rank,
                    c.route_order or "",
                    c.meter,
                    c.area,
                    c.commodity,
                    c.customer_class,
                    "" if c.latitude is None else c.latitude,
                    "" if c.longitude is None else c.longitude,
                    f"{c.risk:.4f}",
                    f"{c.expected_value:.2f}",
                    currency,
                    f"{c.unbilled:.3f}",
                    c.unit_symbol,
                    c.signal,
                    " | ".join(c.reasons),
                ]
            )


def geojson(cands: list[Candidate]) -> dict[str, Any]:
    """The candidates with coordinates as a GeoJSON FeatureCollection of points."""
    feats = []
    for c in cands:
        if c.latitude is None or c.longitude is None:
            continue
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [c.longitude, c.latitude]},
                "properties": {
                    "rank": c.rank,
                    "route_order": c.route_order,
                    "meter": c.meter,
                    "area": c.area,
                    "risk": round(c.risk, 4),
                    "expected_value": round(c.expected_value, 2),
                    "signal": c.signal,
                    "reasons": c.reasons,
                },
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def write_geojson(cands: list[Candidate], path: Path) -> None:
    """Write :func:`geojson` to ``path``."""
    Path(path).write_text(json.dumps(geojson(cands), indent=1))


def format_table(cands: list[Candidate], currency: str = "") -> str:
    """The list as text for a terminal: one line per candidate, its reasons indented below.

    The expected value of a visit is in ``currency`` (the tariff's), the unbilled energy in the meter's unit.
    """
    cur = f" {currency}" if currency else ""
    lines = [f"{'rank':>4}  {'meter':<12} {'area':<8} {'risk':>6} {'expected value':>16} {'unbilled':>14}  signal"]
    for c in cands:
        value = f"{c.expected_value:,.2f}{cur}"
        energy = f"{c.unbilled:,.1f} {c.unit_symbol}".strip()
        lines.append(
            f"{c.rank:>4}  {c.meter:<12} {c.area:<8} {c.risk:>6.3f} {value:>16} {energy:>14}  "
            f"{c.signal.replace('_', ' ')}"
        )
        lines.extend(f"        - {r}" for r in c.reasons)
    return "\n".join(lines)
