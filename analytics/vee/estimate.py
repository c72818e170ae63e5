"""Estimation methods, named by their NEM12 method codes (see :data:`analytics.vee.params.METHODS`).

All work on numpy arrays where NaN marks a missing or rejected value, and return the filled array
and the method code used per position (0 where nothing was filled).

- **17 linear interpolation** for short gaps (at most ``max_span`` positions); flat fill when only
  one side has a valid value.
- **14 like day** and **15 average like day** for interval data: the same position on the like days
  (Mon → previous Mondays; Tue/Wed/Thu → any of Tue/Wed/Thu; Fri, Sat, Sun → the same weekday;
  holidays → Sunday).
- **25 average daily load** for registers: the previous read + history's daily rate × days.
- **24 scaling** to a register delta when one exists: estimates are scaled so the period adds up.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, timedelta

import numpy as np

LINEAR, LIKE_DAY, AVG_LIKE_DAY, SCALED, ADL = 17, 14, 15, 24, 25


def linear_fill(values: np.ndarray, max_span: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN runs of at most ``max_span``: linear between valid ends, flat when only one side exists."""
    out = values.astype(float).copy()
    method = np.zeros(len(out), np.int16)
    bad = np.isnan(out)
    if not bad.any() or bad.all():
        return out, method
    edges = np.flatnonzero(np.diff(np.r_[0, bad.astype(np.int8), 0]))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if b - a > max_span:
            continue
        left = out[a - 1] if a > 0 else np.nan
        right = out[b] if b < len(out) else np.nan
        if np.isnan(left):
            out[a:b] = right
        elif np.isnan(right):
            out[a:b] = left
        else:
            out[a:b] = left + (right - left) * np.arange(1, b - a + 1) / (b - a + 1)
        method[a:b] = LINEAR
    return out, method


def like_days(day: date, candidates: Collection[date], holidays: Collection[date] = (), count: int = 4) -> list[date]:
    """The ``count`` most recent earlier days that are like ``day`` (see the module docstring)."""
    target = 6 if day in holidays else day.weekday()

    def kind(d: date) -> int:
        wd = 6 if d in holidays else d.weekday()
        return 1 if wd in (1, 2, 3) else wd  # Tue/Wed/Thu are alike

    wanted = kind(day) if target != 6 else 6
    found = sorted((d for d in candidates if d < day and kind(d) == wanted), reverse=True)
    return found[:count]


def like_day_estimate(
    profile: dict[date, np.ndarray], day: date, holidays: Collection[date] = (), average: bool = False, count: int = 4
) -> tuple[np.ndarray | None, int]:
    """Intervals for ``day`` from its like day (14) or the average of its like days (15)."""
    complete = [d for d, v in profile.items() if not np.isnan(v).any()]
    days = like_days(day, complete, holidays, count if average else 1)
    if not days:
        return None, 0
    if average:
        return np.mean([profile[d] for d in days], axis=0), AVG_LIKE_DAY
    return profile[days[0]].astype(float).copy(), LIKE_DAY


def scale_to_delta(estimates: np.ndarray, actual_part: float, register_delta: float) -> np.ndarray:
    """Scale estimates so ``actual_part + Σ estimates`` equals the register delta (method 24)."""
    total = float(np.sum(estimates))
    remaining = register_delta - actual_part
    if total <= 0 or remaining < 0:
        return np.full(len(estimates), max(remaining, 0.0) / max(len(estimates), 1))
    return estimates * (remaining / total)


def fill_interval_day(
    values: np.ndarray,
    day: date,
    profile: dict[date, np.ndarray],
    max_span: int,
    register_delta: float | None = None,
    holidays: Collection[date] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """One day's intervals: linear for short gaps, average like day for the rest, scaled to the register delta."""
    out, method = linear_fill(values, max_span)
    rest = np.isnan(out)
    if rest.any():
        est, code = like_day_estimate(profile, day, holidays, average=True)
        if est is None:
            est, code = like_day_estimate(profile, day - timedelta(days=0), holidays, average=False)
        if est is not None:
            out[rest] = est[rest]
            method[rest] = code
    filled = method > 0
    if register_delta is not None and filled.any() and not np.isnan(out).any():
        out[filled] = scale_to_delta(out[filled], float(np.sum(out[~filled])), register_delta)
        method[filled] = SCALED
    return out, method
