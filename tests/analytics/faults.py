"""Test helper: a small seeded fleet of daily register reads with injected index faults and labels.

Stand-in until the simulators' labelled fleet is wired in. Faults: scale jump, digit error, frozen
register, spike, gap. Context (must NOT raise alarms): rollover and meter exchange.
Each label covers reads ``first..last`` (by timestamp); an alarm on those reads or on the read just
after them (where the damage shows) counts as detecting that label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DAY = 86400.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % DAY)
FAULTS = ("scale_jump", "digit_error", "frozen", "spike", "gap")
CONTEXT = ("rollover", "exchange")


@dataclass
class Label:
    meter: int
    kind: str
    first: float  # timestamp of the first affected read
    last: float  # timestamp of the last affected read
    recorded: bool = False  # exchange: installation record exists
    usage: float = 0.0  # rollover / exchange: the true consumption of the read at ``first``


@dataclass
class Fleet:
    meters: int
    series: np.ndarray
    t: np.ndarray
    value: np.ndarray
    digits: np.ndarray  # per meter
    labels: list[Label] = field(default_factory=list)
    exchanges: list[tuple[int, float, float, float]] = field(default_factory=list)  # meter, t, removal, install

    def fault_labels(self) -> list[Label]:
        return [lb for lb in self.labels if lb.kind in FAULTS]


def _digit_error(value: float, rng: np.random.Generator) -> float:
    s = str(round(value))
    kind = rng.integers(0, 3)
    p = int(rng.integers(1, len(s) - 1))
    if kind == 0:  # extra digit
        s = s[:p] + str(rng.integers(0, 10)) + s[p:]
    elif kind == 1:  # missing digit
        s = s[:p] + s[p + 1 :]
    else:  # transposed: pick a pair that differs
        for q in range(1, len(s) - 1):
            if s[q] != s[q + 1]:
                s = s[:q] + s[q + 1] + s[q] + s[q + 2 :]
                break
        else:
            s = s + "7"
    return float(s)


def make_fleet(meters: int = 300, days: int = 90, seed: int = 7) -> Fleet:
    """Each meter gets at most one fault and at most one context event, away from the series' start."""
    rng = np.random.default_rng(seed)
    series, ts, vals = [], [], []
    digits = np.full(meters, 7, np.int64)
    labels: list[Label] = []
    exchanges: list[tuple[int, float, float, float]] = []
    kinds = [*FAULTS, *CONTEXT, "none"]
    for m in range(meters):
        rate = rng.uniform(4, 30)
        usage = rate * rng.lognormal(0, 0.25, days)
        t = T0 + np.arange(days) * DAY + 12 * 3600
        kind = kinds[m % len(kinds)]
        at = int(rng.integers(20, days - 10))
        start = float(rng.uniform(1_000, 50_000))
        if kind == "rollover":
            digits[m] = 6
            start = 1e6 - usage[:at].sum() - usage[at] / 2
        if kind == "spike":
            usage[at] *= 15
        v = np.round(start + np.cumsum(usage), 1)
        if kind == "rollover":
            v = np.round(np.mod(v, 1e6), 1)
            labels.append(Label(m, kind, t[at], t[at], usage=float(usage[at])))
        elif kind == "exchange":
            removal = v[at - 1] + usage[at] * 0.3
            install = float(rng.choice([0.0, 0.0, 2.5]))
            v[at:] = np.round(install + np.cumsum(usage[at:]) - usage[at] * 0.3, 1)
            recorded = bool((m // len(kinds)) % 2)
            labels.append(Label(m, kind, t[at], t[at], recorded, float(usage[at])))
            if recorded:
                exchanges.append((m, t[at] - 3600, float(removal), install))
        elif kind == "scale_jump":
            v[at] = v[at] * rng.choice([10, 100, 1000]) if rng.random() < 0.5 else round(v[at] / 1000, 4)
            labels.append(Label(m, kind, t[at], t[at]))
        elif kind == "digit_error":
            v[at] = _digit_error(v[at], rng)
            v = np.round(v)
            labels.append(Label(m, kind, t[at], t[at]))
        elif kind == "frozen":
            k = int(rng.integers(3, 6))
            v[at : at + k] = v[at - 1]
            labels.append(Label(m, kind, t[at], t[at + k - 1]))
        elif kind == "spike":
            labels.append(Label(m, kind, t[at], t[at]))
        keep = np.ones(days, bool)
        if kind == "gap":
            k = int(rng.integers(2, 6))
            keep[at : at + k] = False
            labels.append(Label(m, kind, t[at + k], t[at + k]))  # the gap shows at the next read
        series.append(np.full(keep.sum(), m, np.int64))
        ts.append(t[keep])
        vals.append(v[keep])
    return Fleet(meters, np.concatenate(series), np.concatenate(ts), np.concatenate(vals), digits, labels, exchanges)


def score(fleet: Fleet, alarms: set[tuple[int, float]]) -> tuple[float, float, list[Label], list[tuple[int, float]]]:
    """(recall, precision, missed labels, false alarms) for alarms given as (meter, timestamp)."""
    windows: dict[int, list[tuple[float, float, Label]]] = {}
    for lb in fleet.fault_labels():
        windows.setdefault(lb.meter, []).append((lb.first, lb.last + 1.5 * DAY, lb))
    hit: set[int] = set()
    false: list[tuple[int, float]] = []
    for meter, ts in alarms:
        matched = False
        for lo, hi, lb in windows.get(meter, []):
            if lo <= ts <= hi:
                hit.add(id(lb))
                matched = True
        if not matched:
            false.append((meter, ts))
    faults = fleet.fault_labels()
    missed = [lb for lb in faults if id(lb) not in hit]
    recall = 1 - len(missed) / len(faults) if faults else 1.0
    precision = 1 - len(false) / len(alarms) if alarms else 1.0
    return recall, precision, missed, false
