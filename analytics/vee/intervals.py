"""Interval-data rules: counts per local day (DST aware), spikes, zero runs, and the sum check.

Interval values are consumption per interval (``channel.kind = 'interval'``), stamped at the end of
the interval in UTC. Days are the meter's local days (``zoneinfo``): a DST day holds 23 or 25 hours
of intervals, and the expected count follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from analytics.vee.params import RuleParams


@dataclass(frozen=True, slots=True)
class DayCount:
    """Intervals found vs expected in one local day."""

    day: date
    found: int
    expected: int


def expected_intervals(day: date, tz: ZoneInfo, interval_s: int) -> int:
    """Intervals in a local day: 24 h normally, 23 h or 25 h on DST change days."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(UTC)
    return int((end - start).total_seconds() // interval_s)


def local_days(t: np.ndarray, tz: ZoneInfo, interval_s: int) -> np.ndarray:
    """Local day (as numpy datetime64[D]) each interval belongs to; intervals are end-stamped."""
    if not len(t):
        return np.zeros(0, "datetime64[D]")
    return (local_starts(t, tz, interval_s) // 86400).astype("int64").astype("datetime64[D]")


def local_starts(t: np.ndarray, tz: ZoneInfo, interval_s: int) -> np.ndarray:
    """Each interval's start in local wall-clock seconds (Unix seconds shifted by the zone's offset then)."""
    start = t - interval_s  # the interval's start decides its day
    if not len(start):
        return start.astype(np.float64)
    lo = datetime.fromtimestamp(float(start.min()), UTC) - timedelta(days=1)
    hi = datetime.fromtimestamp(float(start.max()), UTC) + timedelta(days=2)
    # UTC offsets change rarely: find each distinct offset's span once, then shift in numpy.
    edges = [lo]
    probe = lo
    while probe < hi:
        probe += timedelta(hours=1)
        if probe.astimezone(tz).utcoffset() != edges[-1].astimezone(tz).utcoffset():
            edges.append(probe)
    edge_s = np.array([e.timestamp() for e in edges])
    offsets = np.array([e.astimezone(tz).utcoffset().total_seconds() for e in edges])  # type: ignore[union-attr]
    k = np.searchsorted(edge_s, start, side="right") - 1
    return start + offsets[np.clip(k, 0, len(offsets) - 1)]


def interval_counts(
    t: np.ndarray, tz: ZoneInfo, interval_s: int, now: datetime | None = None
) -> list[DayCount]:
    """Per local day, intervals found (distinct instants) vs expected; only days that differ.

    A day that has not ended yet (at ``now``, default the wall clock) is not judged: its intervals
    are still arriving.
    """
    days = local_days(np.unique(t), tz, interval_s)
    out: list[DayCount] = []
    if not len(days):
        return out
    today = (now or datetime.now(UTC)).astimezone(tz).date()
    uniq, counts = np.unique(days, return_counts=True)
    for d64, found in zip(uniq, counts, strict=True):
        day = d64.astype(object)
        if day >= today:
            continue
        expected = expected_intervals(day, tz, interval_s)
        if found != expected:
            out.append(DayCount(day, int(found), expected))
    return out


def spikes(values: np.ndarray, days: np.ndarray, params: RuleParams) -> np.ndarray:
    """Indexes of spiking intervals, by either of two checks.

    1. The day's highest interval exceeds ``spike_ratio`` × the day's third highest (Oracle's check).
    2. An interval exceeds ``spike_neighbour_ratio`` × the larger of its two neighbours: a spike at
       night is not the day's highest, but it towers over the intervals around it (adjacent-interval
       check, as Itron's).

    Both need the interval to reach ``spike_min``.
    """
    out: set[int] = set()
    order = np.lexsort((-values, days))
    sorted_days = days[order]
    starts = np.flatnonzero(np.r_[True, sorted_days[1:] != sorted_days[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for a, b in zip(starts, ends, strict=True):
        if b - a < 3:
            continue
        top, third = values[order[a]], values[order[a + 2]]
        if top >= params.spike_min and top > params.spike_ratio * max(third, params.spike_min / params.spike_ratio):
            out.add(int(order[a]))
    if len(values) >= 3:
        left = np.r_[np.inf, values[:-1]]
        right = np.r_[values[1:], np.inf]
        around = np.maximum(np.where(np.isfinite(left), left, right), np.where(np.isfinite(right), right, left))
        with np.errstate(invalid="ignore"):
            towering = (values >= params.spike_min) & (values > params.spike_neighbour_ratio * np.maximum(around, 1e-9))
        out.update(int(i) for i in np.flatnonzero(towering))
    return np.array(sorted(out), np.int64)


def zero_runs(values: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """(first, last) index of runs of at least ``min_len`` consecutive zero or negative intervals."""
    bad = values <= 0
    out: list[tuple[int, int]] = []
    edges = np.flatnonzero(np.diff(np.r_[0, bad.astype(np.int8), 0]))
    for i in range(0, len(edges), 2):
        a, b = int(edges[i]), int(edges[i + 1]) - 1
        if b - a + 1 >= min_len:
            out.append((a, b))
    return out


def sum_check(
    interval_sum: float, register_delta: float, multiplier: float, tolerance: float, abs_tolerance: float = 0.0
) -> tuple[str | None, str]:
    """Σ intervals vs register delta × multiplier: (rule code or None, message).

    The two agree within ``tolerance`` (relative) or ``abs_tolerance`` (the register's resolution),
    whichever is larger. When they differ exactly by the multiplier, the multiplier was forgotten (or
    applied twice).
    """
    expected = register_delta * multiplier
    slack = max(tolerance * abs(expected), abs_tolerance, 1e-9 * tolerance)
    if expected == interval_sum or abs(interval_sum - expected) <= slack:
        return None, f"Σ intervals {interval_sum:g} = register delta {register_delta:g} × {multiplier:g}"
    if multiplier != 1:
        for candidate in (register_delta, register_delta * multiplier * multiplier):
            if abs(interval_sum - candidate) <= tolerance * max(abs(candidate), 1e-9):
                return "MULTIPLIER", (
                    f"Σ intervals {interval_sum:g} matches the register delta with the multiplier "
                    f"{multiplier:g} not applied or applied twice (expected {expected:g})"
                )
    pct = 100 * (interval_sum - expected) / max(abs(expected), 1e-9)
    return "SUM_CHECK", (
        f"Σ intervals {interval_sum:g} differs from register delta {register_delta:g} × {multiplier:g} = "
        f"{expected:g} by {pct:.1f} %"
    )


@dataclass
class IntervalFinding:
    """A finding on interval data: ``t`` is the instant (end of interval) it is attached to."""

    t: float
    rule: str
    message: str
    value: float
    details: dict[str, object]


def validate_interval_series(
    t: np.ndarray, v: np.ndarray, emit_from: float, tz: ZoneInfo, interval_s: int, params: RuleParams
) -> tuple[list[IntervalFinding], list[tuple[float, float, int]]]:
    """Counts per local day, spikes, zero runs and estimates for one interval series.

    ``t`` (Unix seconds, end-stamped, sorted) and ``v`` include context before ``emit_from``; only
    findings and estimates at or after it are returned. Estimates are (t, value, method): linear
    interpolation (17) across gaps up to ``max_interp_s``, then the average of like days (15) for
    what is still missing on days that have ended.
    """
    findings: list[IntervalFinding] = []
    estimates: list[tuple[float, float, int]] = []
    if not len(t):
        return findings, estimates
    days = local_days(t, tz, interval_s)
    for dc in interval_counts(t, tz, interval_s):
        on_day = np.flatnonzero(days == np.datetime64(dc.day))
        at = float(t[on_day[-1]])
        if at >= emit_from:
            msg = f"{dc.day}: {dc.found} intervals, {dc.expected} expected ({tz.key} local day)"
            findings.append(IntervalFinding(at, "INTERVAL_COUNT", msg, float(v[on_day[-1]]),
                                            {"found": dc.found, "expected": dc.expected}))  # fmt: skip
    for i in spikes(v, days.astype(np.int64), params):
        if t[i] >= emit_from:
            msg = (f"spike: {v[i]:g} is more than {params.spike_ratio:g}× the day's third-highest interval "
                   f"or {params.spike_neighbour_ratio:g}× its neighbours")
            findings.append(IntervalFinding(float(t[i]), "SPIKE", msg, float(v[i]), {}))
    for a, b in zero_runs(v, params.zero_intervals):
        if t[b] >= emit_from:
            msg = f"{b - a + 1} consecutive zero or negative intervals from {datetime.fromtimestamp(t[a], UTC):%H:%M}Z"
            findings.append(IntervalFinding(float(t[a]), "ZERO", msg, float(v[a]), {"intervals": b - a + 1}))
    # Short gaps between two intervals: linear in time.
    steps = np.round(np.diff(t) / interval_s).astype(np.int64)
    max_missing = int(params.max_interp_s // interval_s)
    for i in np.flatnonzero((steps > 1) & (steps - 1 <= max_missing)):
        left, right = float(v[i]), float(v[i + 1])
        k = int(steps[i])
        for j in range(1, k):
            tj = float(t[i] + j * interval_s)
            if tj >= emit_from:
                estimates.append((tj, left + (right - left) * j / k, 17))
    estimates += like_day_fill(t, v, emit_from, tz, interval_s, {e[0] for e in estimates})
    return findings, estimates


def like_day_fill(
    t: np.ndarray, v: np.ndarray, emit_from: float, tz: ZoneInfo, interval_s: int, done: set[float],
    now: datetime | None = None,
) -> list[tuple[float, float, int]]:
    """Intervals still missing on ended days, from the average of the like days before (method 15).

    Days are local days of ``tz``; a day whose length is not 24 h (DST) is left to the count rule.
    Only complete earlier days serve as like days (Mon→Mon, Tue–Thu alike, Fri/Sat/Sun each their
    own, see :func:`analytics.vee.estimate.like_days`); ``done`` holds instants already estimated.
    """
    from analytics.vee.estimate import like_day_estimate

    per_day = 86400 // interval_s
    days64 = local_days(t, tz, interval_s)
    uniq, inverse = np.unique(days64, return_inverse=True)
    day_list: list[date] = [d.astype(object) for d in uniq]
    midnights = np.array([datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() for d in day_list])
    slots = np.rint((t - interval_s - midnights[inverse]) / interval_s).astype(np.int64)
    by_day: dict[date, np.ndarray] = {}
    for k, day in enumerate(day_list):
        if expected_intervals(day, tz, interval_s) != per_day:
            continue  # a DST day: the count rule speaks for it
        rows = np.flatnonzero((inverse == k) & (slots >= 0) & (slots < per_day))
        by_day[day] = np.full(per_day, np.nan)
        by_day[day][slots[rows]] = v[rows]
    today = (now or datetime.now(UTC)).astimezone(tz).date()
    out: list[tuple[float, float, int]] = []
    if not by_day:
        return out
    first, last = min(by_day), min(max(by_day), today - timedelta(days=1))
    day = first
    while day <= last:
        values = by_day.get(day, np.full(per_day, np.nan))
        midnight = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
        missing = np.flatnonzero(np.isnan(values))
        if len(missing) and midnight + 86400 > emit_from and expected_intervals(day, tz, interval_s) == per_day:
            earlier = {d: a for d, a in by_day.items() if d < day}
            est, method = like_day_estimate(earlier, day, average=True)
            if est is not None:
                for gap in missing.tolist():
                    at = midnight + (gap + 1) * interval_s  # end-stamped
                    if at >= emit_from and at not in done:
                        out.append((float(at), float(est[gap]), method))
        day += timedelta(days=1)
    return out


def quiet_series(
    t: np.ndarray, v: np.ndarray, bounds: np.ndarray, emit_from: np.ndarray, tz: ZoneInfo, interval_s: int,
    params: RuleParams, now: datetime | None = None,
) -> np.ndarray:  # fmt: skip
    """Which of many interval series :func:`validate_interval_series` would return nothing for, in one pass.

    Series ``k`` is ``t[bounds[k]:bounds[k + 1]]`` (sorted, end-stamped Unix seconds) and the same slice
    of ``v``; all share ``tz``, ``interval_s`` and ``params``. True means *quiet*: no finding and no
    estimate. The screen is conservative — it may call a series noisy that the per-series rules would
    pass, never the reverse — so running the per-series rules only on the noisy ones gives exactly what
    running them on every series gives. A series is noisy when, anywhere in it:

    1. an instant lies on or next to a local day that is not 24 h long (DST), or off the interval grid;
    2. two neighbouring instants are not exactly one interval apart (a gap: estimates);
    3. an ended local day does not hold one interval per slot and ``emit_from`` is within about two
       days of it (the count rule, the like-day fill);
    4. either spike check fires (the day's highest vs its third highest; an interval vs its neighbours);
    5. ``params.zero_intervals`` zero or negative intervals follow each other.
    """
    n_series = len(bounds) - 1
    noisy = np.zeros(n_series, bool)
    if not len(t):
        return ~noisy
    sid = np.repeat(np.arange(n_series), np.diff(bounds))
    first = np.zeros(len(t), bool)
    first[bounds[:-1][np.diff(bounds) > 0]] = True  # the first row of each series
    local = local_starts(t, tz, interval_s)
    day = (local // 86400).astype(np.int64)
    per_day = 86400 // interval_s
    # 1. DST days and their neighbours (the day a row falls on may shift near a change), off-grid instants.
    days = np.unique(day)
    odd = [d for d in days.tolist()
           if expected_intervals(date.fromordinal(_EPOCH_ORDINAL + d), tz, interval_s) != per_day]  # fmt: skip
    bad = (local % interval_s) != 0
    if odd:
        bad |= np.isin(day, np.array([d + k for d in odd for k in (-1, 0, 1)]))
    # 2. Gaps (or anything but one interval) between neighbours of one series.
    bad[1:] |= ~first[1:] & (np.diff(t) != interval_s)
    # 4b. An interval towering over its neighbours (the missing neighbour of an end is the other one).
    left = np.where(first, np.inf, np.r_[np.inf, v[:-1]])
    last = np.r_[first[1:], True]
    right = np.where(last, np.inf, np.r_[v[1:], np.inf])
    around = np.maximum(np.where(np.isfinite(left), left, right), np.where(np.isfinite(right), right, left))
    with np.errstate(invalid="ignore"):
        bad |= (v >= params.spike_min) & (v > params.spike_neighbour_ratio * np.maximum(around, 1e-9))
    # 5. Runs of zero or negative intervals (a run ends at a series' end).
    low = v <= 0
    if low.any():
        run_start = low & (first | ~np.r_[False, low[:-1]])
        run_id = np.cumsum(run_start) - 1
        lengths = np.bincount(run_id[low])
        bad[low] |= lengths[run_id[low]] >= params.zero_intervals
    noisy[sid[bad]] = True
    # 3. and 4a. Per (series, local day): how many intervals, and the highest vs the third highest.
    order = np.lexsort((-v, day, sid))
    g_sid, g_day = sid[order], day[order]
    head = np.flatnonzero(np.r_[True, (g_sid[1:] != g_sid[:-1]) | (g_day[1:] != g_day[:-1])])
    count = np.diff(np.r_[head, len(order)])
    today = (now or datetime.now(UTC)).astimezone(tz).date().toordinal() - _EPOCH_ORDINAL
    owner, on = g_sid[head], g_day[head]
    short = (count != per_day) & (on < today) & ((on + 3) * 86400 + interval_s > emit_from[owner])
    noisy[owner[short]] = True
    big = count >= 3
    top, third = v[order[head[big]]], v[order[head[big] + 2]]
    spiking = (top >= params.spike_min) & (
        top > params.spike_ratio * np.maximum(third, params.spike_min / params.spike_ratio)
    )
    noisy[owner[big][spiking]] = True
    return ~noisy


#: date(1970, 1, 1).toordinal(): local day numbers count days since then.
_EPOCH_ORDINAL = 719_163
