"""The vectorised screen over many interval series: it never passes a series the per-series rules flag."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from analytics.vee.intervals import quiet_series, validate_interval_series
from analytics.vee.params import params_for

PARAMS = params_for("electricity")


def _series(rng: np.random.Generator, tz: ZoneInfo, start: datetime, days: int, step: int) -> np.ndarray:
    """End-stamped instants over whole local days from ``start`` (local midnight)."""
    a = start.replace(tzinfo=tz).astimezone(UTC).timestamp()
    return a + step * np.arange(1, days * 86400 // step + 1, dtype=np.float64)


def _damage(rng: np.random.Generator, t: np.ndarray, v: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(t)
    if kind == "gap":
        k = int(rng.integers(1, n - 10))
        keep = np.ones(n, bool)
        keep[k : k + int(rng.integers(1, 8))] = False
        return t[keep], v[keep]
    if kind == "spike":
        v = v.copy()
        v[int(rng.integers(0, n))] = 40.0
        return t, v
    if kind == "zeros":
        v = v.copy()
        k = int(rng.integers(0, n - 12))
        v[k : k + int(rng.integers(6, 12))] = 0.0
        return t, v
    if kind == "cut":  # the series ends mid-day (a day that ended short)
        k = int(rng.integers(1, 40))
        return t[: n - k], v[: n - k]
    if kind == "offgrid":
        return t + 60.0, v
    return t, v


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/Santiago", "Asia/Kathmandu"])
def test_a_series_the_screen_calls_quiet_gets_no_finding_and_no_estimate_from_the_rules(zone):
    tz = ZoneInfo(zone)
    rng = np.random.default_rng(7)
    series, emit = [], []
    for start in (datetime(2024, 3, 20), datetime(2024, 10, 20), datetime(2024, 6, 3), datetime(2025, 1, 6)):
        for kind in ("clean", "clean", "gap", "spike", "zeros", "cut", "offgrid"):
            for step in (900, 3600):
                t = _series(rng, tz, start, int(rng.integers(3, 12)), step)
                v = np.round(rng.gamma(4.0, 0.05, len(t)) * step / 900, 3) + 0.01
                t, v = _damage(rng, t, v, kind)
                n = len(t)
                series.append((t, v, step))
                emit.append(float(t[int(rng.integers(0, n))]))  # context before, new values after
    now = datetime.now(UTC)
    quiet_seen = noisy_seen = 0
    for step in (900, 3600):
        members = [i for i, s in enumerate(series) if s[2] == step]
        bounds = np.r_[0, np.cumsum([len(series[i][0]) for i in members])]
        t = np.concatenate([series[i][0] for i in members])
        v = np.concatenate([series[i][1] for i in members])
        quiet = quiet_series(t, v, bounds, np.array([emit[i] for i in members]), tz, step, PARAMS, now)
        for k, i in enumerate(members):
            found, estimates = validate_interval_series(series[i][0], series[i][1], emit[i], tz, step, PARAMS)
            if quiet[k]:
                quiet_seen += 1
                assert (found, estimates) == ([], []), (zone, i, step)
            else:
                noisy_seen += 1
    assert quiet_seen and noisy_seen  # the screen passes clean series, it is not merely cautious


def test_complete_clean_days_are_quiet_and_one_missing_interval_is_not():
    tz = ZoneInfo("Europe/Paris")
    t = _series(np.random.default_rng(1), tz, datetime(2024, 6, 3), 7, 900)
    v = np.full(len(t), 0.25)
    holed = np.delete(t, 300)
    bounds = np.array([0, len(t), 2 * len(t) - 1])
    quiet = quiet_series(np.r_[t, holed], np.r_[v, v[1:]], bounds, np.array([t[0], t[0]]), tz, 900, PARAMS)
    assert quiet.tolist() == [True, False]


def test_no_series_at_all_and_empty_series_are_quiet():
    tz = ZoneInfo("UTC")
    assert quiet_series(np.zeros(0), np.zeros(0), np.array([0, 0]), np.array([0.0]), tz, 900, PARAMS).tolist() == [
        True
    ]
