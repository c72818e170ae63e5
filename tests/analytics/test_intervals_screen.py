"""The interval rules over many series at once give what the per-series rules give, series by series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from analytics.vee.intervals import interval_estimates, offset_edges, screen_intervals, validate_interval_series
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
def test_many_series_at_once_give_the_findings_and_estimates_of_the_per_series_rules(zone):
    tz = ZoneInfo(zone)
    rng = np.random.default_rng(7)
    series, emit = [], []
    for start in (datetime(2024, 3, 20), datetime(2024, 10, 20), datetime(2024, 6, 3), datetime(2025, 1, 6)):
        for kind in ("clean", "clean", "gap", "spike", "zeros", "cut", "offgrid"):
            for step in (900, 3600):
                t = _series(rng, tz, start, int(rng.integers(3, 12)), step)
                v = np.round(rng.gamma(4.0, 0.05, len(t)) * step / 900, 3) + 0.01
                t, v = _damage(rng, t, v, kind)
                series.append((t, v, step))
                emit.append(float(t[int(rng.integers(0, len(t)))]))  # context before, new values after
    now = datetime.now(UTC)
    seen = {"exact": 0, "not exact": 0, "estimates": 0, "findings": 0}
    for step in (900, 3600):
        members = [i for i, s in enumerate(series) if s[2] == step]
        bounds = np.r_[0, np.cumsum([len(series[i][0]) for i in members])]
        t = np.concatenate([series[i][0] for i in members])
        v = np.concatenate([series[i][1] for i in members])
        screen = screen_intervals(t, v, bounds, np.array([emit[i] for i in members]), tz, step, PARAMS, now)
        for k, i in enumerate(members):
            found, estimates = validate_interval_series(series[i][0], series[i][1], emit[i], tz, step, PARAMS)
            if not screen.exact[k]:
                seen["not exact"] += 1
                continue
            seen["exact"] += 1
            assert screen.findings[k] == found, (zone, i, step)
            if screen.may_estimate[k]:
                assert interval_estimates(series[i][0], series[i][1], emit[i], tz, step, PARAMS) == estimates
            else:
                assert estimates == [], (zone, i, step)
            seen["estimates"] += bool(estimates)
            seen["findings"] += bool(found)
    assert seen["exact"] and seen["estimates"] and seen["findings"], seen  # not merely cautious
    if zone == "Europe/Paris":
        assert seen["not exact"]  # series over its DST days (March and October 2024) go to the per-series rules


def test_a_complete_clean_series_needs_no_estimate_and_one_missing_interval_may():
    tz = ZoneInfo("Europe/Paris")
    t = _series(np.random.default_rng(1), tz, datetime(2024, 6, 3), 7, 900)
    v = np.full(len(t), 0.25)
    holed = np.delete(t, 300)
    bounds = np.array([0, len(t), 2 * len(t) - 1])
    screen = screen_intervals(np.r_[t, holed], np.r_[v, v[1:]], bounds, np.array([t[0], t[0]]), tz, 900, PARAMS)
    assert screen.may_estimate.tolist() == [False, True]
    assert [[f.rule for f in found] for found in screen.findings] == [[], ["INTERVAL_COUNT"]]


def test_no_values_at_all_give_nothing():
    screen = screen_intervals(np.zeros(0), np.zeros(0), np.array([0, 0]), np.array([0.0]), ZoneInfo("UTC"), 900, PARAMS)
    assert (screen.findings, screen.may_estimate.tolist()) == ([[]], [False])


def _probe_every_hour(tz: ZoneInfo, lo: datetime, hi: datetime) -> list[datetime]:
    """The offset edges as the interval rules first found them: one ``utcoffset`` per hour."""
    edges = [lo]
    probe = lo
    while probe < hi:
        probe += timedelta(hours=1)
        if probe.astimezone(tz).utcoffset() != edges[-1].astimezone(tz).utcoffset():
            edges.append(probe)
    return edges


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Paris", "America/St_Johns", "Australia/Lord_Howe", "Africa/Casablanca", "Pacific/Apia"]
)
def test_offset_edges_are_those_of_probing_every_hour(zone):
    """Newfoundland changes at :30 UTC, Lord Howe by 30 minutes, Casablanca twice around Ramadan."""
    tz = ZoneInfo(zone)
    rng = np.random.default_rng(5)
    for _ in range(20):
        a = float(
            rng.uniform(datetime(2016, 1, 1, tzinfo=UTC).timestamp(), datetime(2027, 1, 1, tzinfo=UTC).timestamp())
        )
        a = round(a, int(rng.choice([0, 3, 6])))
        span = float(rng.choice([5 * 3600, 3 * 86400, 40 * 86400, 200 * 86400]))
        lo = datetime.fromtimestamp(a, UTC) - timedelta(days=1)
        hi = datetime.fromtimestamp(a + span, UTC) + timedelta(days=2)
        assert offset_edges(tz, lo, hi) == _probe_every_hour(tz, lo, hi), (zone, lo, hi)
