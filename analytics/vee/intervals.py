"""Interval-data rules: counts per local day (DST aware), spikes, zero runs, and the sum check.

Interval values are consumption per interval (``channel.kind = 'interval'``), stamped at the end of
the interval in UTC. Days are the meter's local days (``zoneinfo``): a DST day holds 23 or 25 hours
of intervals, and the expected count follows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from analytics.vee.params import RuleCode, RuleParams


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
    edges = offset_edges(tz, lo, hi)
    edge_s = np.array([e.timestamp() for e in edges])
    offsets = np.array([e.astimezone(tz).utcoffset().total_seconds() for e in edges])  # type: ignore[union-attr]
    k = np.searchsorted(edge_s, start, side="right") - 1
    return start + offsets[np.clip(k, 0, len(offsets) - 1)]


def offset_edges(tz: ZoneInfo, lo: datetime, hi: datetime) -> list[datetime]:
    """Where the zone's UTC offset changes, probed hour by hour from ``lo`` until a probe reaches ``hi``.

    The first edge is ``lo``; each further edge is the first hourly probe (``lo`` + k hours) whose
    offset differs from the last edge's, so an instant between a change and the probe after it
    keeps the old offset. Probing every hour of a long range costs one ``utcoffset`` call per hour
    (most of the interval rules' time per series); only the probes right after one of the zone's
    changes can be edges, so those are the only ones looked at (the changes of a year are found
    once per zone, :func:`_zone_changes`). The edges are the same as probing every hour.
    """
    hour = 3_600_000_000
    lo_us = (lo - _EPOCH_DT) // timedelta(microseconds=1)
    last_probe = max(1, -((lo_us - (hi - _EPOCH_DT) // timedelta(microseconds=1)) // hour))  # first probe >= hi
    probes: set[int] = set()
    for year in range(lo.year, (lo + timedelta(hours=last_probe)).year + 1):
        for change in _zone_changes(tz, year):
            k = -((lo_us - change * 1_000_000) // hour)  # the first probe at or after the change
            if 1 <= k <= last_probe:
                probes.add(k)
    edges = [lo]
    for k in sorted(probes):
        probe = lo + timedelta(hours=k)
        if probe.astimezone(tz).utcoffset() != edges[-1].astimezone(tz).utcoffset():
            edges.append(probe)
    return edges


@functools.lru_cache(maxsize=1024)
def _zone_changes(tz: ZoneInfo, year: int) -> tuple[int, ...]:
    """Unix seconds at which the zone's UTC offset changes, after 1 January ``year`` 00:00 UTC up to the next.

    Found by looking at every whole hour of the year, then to the second within the hour of a change.
    """
    start = datetime(year, 1, 1, tzinfo=UTC)
    base = int(start.timestamp())
    hours = (datetime(year + 1, 1, 1, tzinfo=UTC) - start) // timedelta(hours=1)

    def offset(s: int) -> timedelta | None:
        return (start + timedelta(seconds=s)).astimezone(tz).utcoffset()

    out = []
    before = offset(0)
    for h in range(1, hours + 1):
        now = offset(3600 * h)
        if now != before:
            a, b = 3600 * (h - 1), 3600 * h  # the offset of a is ``before``, that of b is not
            while b - a > 1:
                m = (a + b) // 2
                a, b = (m, b) if offset(m) == before else (a, m)
            out.append(base + b)
            before = now
    return tuple(out)


_EPOCH_DT = datetime(1970, 1, 1, tzinfo=UTC)


def sum_check(
    interval_sum: float, register_delta: float, multiplier: float, tolerance: float, abs_tolerance: float = 0.0
) -> tuple[RuleCode | None, str]:
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
                return RuleCode.MULTIPLIER, (
                    f"Σ intervals {interval_sum:g} matches the register delta with the multiplier "
                    f"{multiplier:g} not applied or applied twice (expected {expected:g})"
                )
    pct = 100 * (interval_sum - expected) / max(abs(expected), 1e-9)
    return RuleCode.SUM_CHECK, (
        f"Σ intervals {interval_sum:g} differs from register delta {register_delta:g} × {multiplier:g} = "
        f"{expected:g} by {pct:.1f} %"
    )


@dataclass
class IntervalFinding:
    """A finding on interval data: ``t`` is the instant (end of interval) it is attached to."""

    t: float
    rule: RuleCode
    message: str
    value: float
    details: dict[str, object]


def validate_interval_series(
    t: np.ndarray,
    v: np.ndarray,
    emit_from: float,
    tz: ZoneInfo,
    interval_s: int,
    params: RuleParams,
    now: datetime | None = None,
) -> tuple[list[IntervalFinding], list[tuple[float, float, int]]]:
    """The interval rules (:data:`INTERVAL_CHECKS`) and estimates for one interval series.

    ``t`` (Unix seconds, end-stamped, sorted) and ``v`` include context before ``emit_from``; only
    findings and estimates at or after it are returned. Local days are placed from this series'
    own instants, and a DST day expects its 23 or 25 hours of intervals. Estimates are (t, value,
    method): linear interpolation (17) across gaps up to ``max_interp_s``, then the average of like
    days (15) for what is still missing on days that have ended.
    """
    if not len(t):
        return [], []
    days = _Days(t, v, np.array([0, len(t)]), np.array([emit_from], np.float64), tz, interval_s, params, now)
    return days.findings()[0], interval_estimates(t, v, emit_from, tz, interval_s, params)


def interval_estimates(
    t: np.ndarray, v: np.ndarray, emit_from: float, tz: ZoneInfo, interval_s: int, params: RuleParams
) -> list[tuple[float, float, int]]:
    """The estimates of :func:`validate_interval_series` alone: short gaps linear in time, then like days."""
    estimates: list[tuple[float, float, int]] = []
    if not len(t):
        return estimates
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
    return estimates


def like_day_fill(
    t: np.ndarray,
    v: np.ndarray,
    emit_from: float,
    tz: ZoneInfo,
    interval_s: int,
    done: set[float],
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


@dataclass
class IntervalScreen:
    """The interval rules over many series at once (see :func:`screen_intervals`)."""

    exact: np.ndarray  # per series: ``findings`` are the per-series rules' findings
    may_estimate: np.ndarray  # per series: estimates are possible (ask :func:`interval_estimates`)
    findings: list[list[IntervalFinding]]


class _Days:
    """Many interval series grouped by (series, local day): what every interval rule reads.

    Series ``k`` is ``t[bounds[k]:bounds[k + 1]]`` (sorted, end-stamped Unix seconds) and the same
    slice of ``v``. Local days are placed from all the instants at once (:func:`local_starts`).
    Per row: ``sid`` (series), ``first``/``last`` (of its series), ``day`` (local day number),
    ``emit`` (the series' ``emit_from``). Per (series, day) group, in series then day order:
    ``head`` (its first position in ``order``, the rows by series, day and decreasing value),
    ``count``, ``owner`` (series), ``on`` (day), ``latest`` (its last row in time), ``expected``
    (intervals in that local day, DST aware), ``ended`` (the day ended before ``now``).
    """

    def __init__(
        self,
        t: np.ndarray,
        v: np.ndarray,
        bounds: np.ndarray,
        emit_from: np.ndarray,
        tz: ZoneInfo,
        interval_s: int,
        params: RuleParams,
        now: datetime | None = None,
    ) -> None:
        self.t, self.v, self.bounds, self.tz, self.interval_s, self.params = t, v, bounds, tz, interval_s, params
        self.n_series = len(bounds) - 1
        self.sid = np.repeat(np.arange(self.n_series), np.diff(bounds))
        self.first = np.zeros(len(t), bool)
        self.first[bounds[:-1][np.diff(bounds) > 0]] = True  # the first value of each series
        self.last = np.r_[self.first[1:], True]
        self.local = local_starts(t, tz, interval_s)
        self.day = (self.local // 86400).astype(np.int64)
        self.per_day = 86400 // interval_s
        span = range(int(self.day.min()) - 3, int(self.day.max()) + 4)
        #: Local days that are not 24 h long (DST changes) → their intervals.
        self.odd = {d: n for d in span if (n := expected_intervals(_day(d), tz, interval_s)) != self.per_day}
        self.emit = np.asarray(emit_from, np.float64)[self.sid]
        self.order = np.lexsort((-v, self.day, self.sid))
        g_sid, g_day = self.sid[self.order], self.day[self.order]
        self.head = np.flatnonzero(np.r_[True, (g_sid[1:] != g_sid[:-1]) | (g_day[1:] != g_day[:-1])])
        self.count = np.diff(np.r_[self.head, len(self.order)])
        self.owner, self.on = g_sid[self.head], g_day[self.head]
        self.latest = np.maximum.reduceat(self.order, self.head)  # values are in time order within a series
        self.expected = np.full(len(self.head), self.per_day)
        for d, n in self.odd.items():
            self.expected[self.on == d] = n
        today = (now or datetime.now(UTC)).astimezone(tz).date().toordinal() - _EPOCH_ORDINAL
        self.ended = self.on < today

    def findings(self) -> list[list[IntervalFinding]]:
        """Every rule's findings per series: by rule (:data:`INTERVAL_CHECKS` order), then by row."""
        out: list[tuple[int, int, int, IntervalFinding]] = []
        for rank, (_, check) in enumerate(INTERVAL_CHECKS):
            out += [(int(self.sid[i]), rank, i, f) for i, f in check(self)]
        out.sort(key=lambda x: x[:3])
        per_series: list[list[IntervalFinding]] = [[] for _ in range(self.n_series)]
        for k, _, _, finding in out:
            per_series[k].append(finding)
        return per_series


def _day(number: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + number)


def _interval_count(d: _Days) -> list[tuple[int, IntervalFinding]]:
    """INTERVAL_COUNT: an ended local day holding more or fewer values than it has intervals (DST aware).

    Attached to the day's last value.
    """
    out = []
    t, v, latest = d.t, d.v, d.latest
    for g in np.flatnonzero((d.count != d.expected) & d.ended & (t[latest] >= d.emit[latest])).tolist():
        i, day, found, expected = int(latest[g]), _day(int(d.on[g])), int(d.count[g]), int(d.expected[g])
        msg = f"{day}: {found} intervals, {expected} expected ({d.tz.key} local day)"
        out.append(
            (
                i,
                IntervalFinding(
                    float(t[i]), RuleCode.INTERVAL_COUNT, msg, float(v[i]), {"found": found, "expected": expected}
                ),
            )
        )
    return out


def _spike(d: _Days) -> list[tuple[int, IntervalFinding]]:
    """SPIKE: a value far above its day's or its neighbours' values.

    The day's highest value above ``spike_ratio`` × its third highest (Oracle's check), or a value
    above ``spike_neighbour_ratio`` × the larger of its neighbours (Itron's adjacent-interval check:
    a spike at night is not the day's highest). Either needs the value to reach ``spike_min``.
    """
    p, t, v, order, head = d.params, d.t, d.v, d.order, d.head
    spike = np.zeros(len(t), bool)
    big = d.count >= 3
    top, third = v[order[head[big]]], v[order[head[big] + 2]]
    floor = p.spike_min / p.spike_ratio
    spike[order[head[big]]] = (top >= p.spike_min) & (top > p.spike_ratio * np.maximum(third, floor))
    left = np.where(d.first, np.inf, np.r_[np.inf, v[:-1]])
    right = np.where(d.last, np.inf, np.r_[v[1:], np.inf])
    around = np.maximum(np.where(np.isfinite(left), left, right), np.where(np.isfinite(right), right, left))
    long_enough = np.diff(d.bounds)[d.sid] >= 3
    with np.errstate(invalid="ignore"):
        spike |= long_enough & (v >= p.spike_min) & (v > p.spike_neighbour_ratio * np.maximum(around, 1e-9))
    msg = (
        f"spike: {{:g}} is more than {p.spike_ratio:g}× the day's third-highest interval "
        f"or {p.spike_neighbour_ratio:g}× its neighbours"
    )
    return [
        (i, IntervalFinding(float(t[i]), RuleCode.SPIKE, msg.format(v[i]), float(v[i]), {}))
        for i in np.flatnonzero(spike & (t >= d.emit)).tolist()
    ]


def _zero_run(d: _Days) -> list[tuple[int, IntervalFinding]]:
    """ZERO: at least ``zero_intervals`` consecutive zero or negative values (a run ends at its series' end).

    Attached to the run's first value, reported once its last value is at or after ``emit_from``.
    """
    t, v = d.t, d.v
    out: list[tuple[int, IntervalFinding]] = []
    low = v <= 0
    if not low.any():
        return out
    starts = np.flatnonzero(low & (d.first | ~np.r_[False, low[:-1]]))
    ends = np.flatnonzero(low & (d.last | ~np.r_[low[1:], False]))
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if b - a + 1 >= d.params.zero_intervals and t[b] >= d.emit[b]:
            msg = f"{b - a + 1} consecutive zero or negative intervals from {datetime.fromtimestamp(t[a], UTC):%H:%M}Z"
            out.append((a, IntervalFinding(float(t[a]), RuleCode.ZERO, msg, float(v[a]), {"intervals": b - a + 1})))
    return out


#: The interval rules, in the order their findings are listed for a series. A rule is a function of
#: the grouped values (:class:`_Days`) returning (row, finding) pairs, plus its entry in
#: :data:`~analytics.vee.params.RULES`; it runs over every series of a batch at once.
INTERVAL_CHECKS: tuple[tuple[RuleCode, Callable[[_Days], list[tuple[int, IntervalFinding]]]], ...] = (
    (RuleCode.INTERVAL_COUNT, _interval_count),
    (RuleCode.SPIKE, _spike),
    (RuleCode.ZERO, _zero_run),
)


def screen_intervals(
    t: np.ndarray,
    v: np.ndarray,
    bounds: np.ndarray,
    emit_from: np.ndarray,
    tz: ZoneInfo,
    interval_s: int,
    params: RuleParams,
    now: datetime | None = None,
) -> IntervalScreen:
    """The findings of :func:`validate_interval_series` for many series in one numpy pass, and who may need estimates.

    Series ``k`` is ``t[bounds[k]:bounds[k + 1]]`` (sorted, end-stamped Unix seconds) and the same
    slice of ``v``; all share ``tz``, ``interval_s`` and ``params``. In steps:

    1. Local days for every value at once. Near a DST change the per-series rules place a value by
       probing the zone hour by hour from the series' own start, so a series with a value within
       two days of a day that is not 24 h long is left to them (``exact`` False).
    2. Every rule of :data:`INTERVAL_CHECKS` over all the series at once, each finding emitted only
       at or after its series' ``emit_from``, in the per-series order.
    3. Estimates are possible only where a value is missing: a gap between neighbours, an off-grid
       instant, or an ended day that is short within about two days of ``emit_from`` and has an
       earlier complete day of its kind to copy (like days). ``may_estimate`` is conservative:
       False means :func:`interval_estimates` would return nothing.
    """
    n_series = len(bounds) - 1
    exact = np.ones(n_series, bool)
    may_estimate = np.zeros(n_series, bool)
    if not len(t):
        return IntervalScreen(exact, may_estimate, [[] for _ in range(n_series)])
    d = _Days(t, v, bounds, emit_from, tz, interval_s, params, now)
    sid = d.sid
    # 1. Days that are not 24 h long, and the values near them.
    if d.odd:
        near = np.isin(d.day, np.array([day + k for day in d.odd for k in range(-2, 3)]))
        exact[sid[near]] = False
    # 3a. Gaps and off-grid instants: something is missing.
    gap = np.zeros(len(t), bool)
    gap[1:] = ~d.first[1:] & (np.diff(t) != interval_s)
    gap |= (d.local % interval_s) != 0
    may_estimate[sid[gap]] = True
    # 3b. A short ended day near emit_from with an earlier complete day of its kind: like-day estimates.
    owner, on = d.owner, d.on
    kind = (on + 3) % 7  # weekday: 1970-01-01 was a Thursday
    kind = np.where((kind >= 1) & (kind <= 3), 1, kind)  # Tue/Wed/Thu are alike
    complete = d.count == d.per_day
    first_complete = np.full((n_series, 7), np.iinfo(np.int64).max)
    np.minimum.at(first_complete, (owner[complete], kind[complete]), on[complete])
    short = ~complete & d.ended & ((on + 3) * 86400 + interval_s > emit_from[owner])
    may_estimate[owner[short & (first_complete[owner, kind] < on)]] = True
    # 2. The rules.
    return IntervalScreen(exact, may_estimate, d.findings())


#: date(1970, 1, 1).toordinal(): local day numbers count days since then.
_EPOCH_ORDINAL = 719_163
