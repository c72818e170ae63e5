"""Validation of cumulative register reads, vectorised over many series at once.

The input is every read of many (meter, channel) series as flat numpy columns sorted by series and
time. Each rule is a handful of array operations over the whole batch; Python objects are built only
for the few reads a rule flags. The steps, in order:

1. duplicates (same series and instant) are reported and set aside;
2. the raw delta from the previous read is corrected for a recorded meter exchange (removal and
   install indexes) and for a rollover at the register modulus (10^digits or 2^bits);
3. the expected usage is the median per-day usage of the previous ``history_reads`` reads × the days
   elapsed; the usage band is that × (low, high) and the read band is the previous read + the usage
   band (the utility's high/low check);
4. a read out of band whose neighbours agree with each other (previous → next in band) is an
   isolated bad read: the following read is not blamed for it, and candidate corrections
   (scale ×10/×100/×1000, extra/missing/transposed digit) inside the band are suggested;
5. an index that drops near zero is a reset (exchange without record): consumption counts from zero;
   other drops are negative consumption;
6. zero consumption when the band says there should be some, frozen registers, and gaps against the
   series' usual cadence; short gaps are filled by linear interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analytics.vee.params import RULES, RuleParams, Severity
from analytics.vee.suggest import Suggestion, suggest_corrections

DAY = 86400.0


@dataclass
class RegisterSeries:
    """Register reads of many series as columns, rows sorted by (series, t).

    ``series`` indexes the per-series arrays (``modulus``, ``param_class``); ``t`` is seconds since
    the Unix epoch (UTC). ``emit`` marks the rows to report on (context rows loaded for history are
    validated but not reported). Exchanges are recorded per series: at ``ex_t`` the meter's index
    went from ``ex_removal`` (NaN when unknown) to ``ex_install``.
    """

    series: np.ndarray
    t: np.ndarray
    value: np.ndarray
    modulus: np.ndarray
    param_class: np.ndarray
    params: list[RuleParams]
    emit: np.ndarray | None = None
    ex_series: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ex_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ex_removal: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ex_install: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.value)


@dataclass
class Finding:
    """One rule that fired on one read (``row`` indexes the input columns)."""

    row: int
    rule: str
    severity: Severity
    message: str
    value: float
    usage: float | None = None
    band: tuple[float, float] | None = None
    read_band: tuple[float, float] | None = None
    suggestions: list[Suggestion] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Estimate:
    """A substitute value: for a bad read (``row`` set) or a missing one (``row`` None, at ``t``)."""

    series: int
    t: float
    value: float
    method: int
    reason: int
    rule: str
    row: int | None = None
    replaced: float | None = None


@dataclass
class RegisterResult:
    """What validation found: per-row arrays, findings and estimates."""

    consumption: np.ndarray
    expected: np.ndarray
    usage_lo: np.ndarray
    usage_hi: np.ndarray
    findings: list[Finding]
    estimates: list[Estimate]

    def flagged_rows(self, min_severity: Severity = Severity.WARNING) -> set[int]:
        """Rows with at least one finding of this severity or worse (info findings are not alarms)."""
        levels = {Severity.ERROR: 2, Severity.WARNING: 1, Severity.INFO: 0}
        floor = levels[min_severity]
        return {f.row for f in self.findings if levels[f.severity] >= floor}


def fmt(x: float) -> str:
    """A number for a message: whole numbers without decimals, others with up to 3."""
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.3f}".rstrip("0").rstrip(".")


def trailing_median(
    x: np.ndarray, start: np.ndarray, window: np.ndarray, chunk: int = 1 << 19
) -> tuple[np.ndarray, np.ndarray]:
    """Median of the values of ``x`` in the previous ``window[i]`` rows of the same series.

    ``start[i]`` is the first row of row i's series. NaNs are ignored. Returns (median, count).
    """
    n = len(x)
    med = np.full(n, np.nan)
    count = np.zeros(n, np.int64)
    w = int(window.max()) if n else 0
    if w == 0:
        return med, count
    offs = np.arange(1, w + 1)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        rows = np.arange(a, b)
        idx = rows[:, None] - offs[None, :]
        ok = (idx >= start[a:b, None]) & (offs[None, :] <= window[a:b, None])
        g = np.where(ok, x[np.maximum(idx, 0)], np.nan)
        g.sort(axis=1)
        k = np.count_nonzero(~np.isnan(g), axis=1)
        lo = np.take_along_axis(g, np.maximum((k - 1) // 2, 0)[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(g, np.minimum(k // 2, w - 1)[:, None], axis=1)[:, 0]
        m = (lo + hi) / 2
        m[k == 0] = np.nan
        med[a:b] = m
        count[a:b] = k
    return med, count


def _round_band(lo: np.ndarray, hi: np.ndarray, integral: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole-number series get whole-number bands (floor the low end, ceil the high end)."""
    return np.where(integral, np.floor(lo + 1e-9), lo), np.where(integral, np.ceil(hi - 1e-9), hi)


def validate_registers(batch: RegisterSeries) -> RegisterResult:
    """Run every register rule over ``batch``; see the module docstring for the steps."""
    n = len(batch)
    emit = batch.emit if batch.emit is not None else np.ones(n, bool)
    s, t, v = batch.series, batch.t, batch.value
    findings: list[Finding] = []

    # 1. duplicates: report them, validate the rest.
    if n > 1:
        dup = np.zeros(n, bool)
        dup[1:] = (s[1:] == s[:-1]) & (t[1:] == t[:-1])
        if dup.any():
            for i in np.flatnonzero(dup & emit):
                other = v[i - 1]
                same = other == v[i]
                msg = (f"read at the same instant twice ({fmt(v[i])})" if same
                       else f"two values for one instant: {fmt(other)} and {fmt(v[i])} (conflict)")  # fmt: skip
                findings.append(Finding(int(i), "DUPLICATE", RULES["DUPLICATE"].severity, msg, float(v[i])))
            keep = np.flatnonzero(~dup)
            sub = RegisterSeries(
                s[keep], t[keep], v[keep], batch.modulus, batch.param_class, batch.params, emit[keep],
                batch.ex_series, batch.ex_t, batch.ex_removal, batch.ex_install,
            )  # fmt: skip
            inner = validate_registers(sub)
            full = np.full(n, np.nan)
            arrays = []
            for arr in (inner.consumption, inner.expected, inner.usage_lo, inner.usage_hi):
                out = full.copy()
                out[keep] = arr
                arrays.append(out)
            for f in inner.findings:
                f.row = int(keep[f.row])
            for e in inner.estimates:
                if e.row is not None:
                    e.row = int(keep[e.row])
            return RegisterResult(
                arrays[0], arrays[1], arrays[2], arrays[3], findings + inner.findings, inner.estimates
            )

    return _validate(batch, emit, findings)


def _validate(batch: RegisterSeries, emit: np.ndarray, findings: list[Finding]) -> RegisterResult:
    s, t, v = batch.series, batch.t, batch.value
    n = len(v)
    rows = np.arange(n)
    first = np.ones(n, bool)
    first[1:] = s[1:] != s[:-1]
    start = np.maximum.accumulate(np.where(first, rows, 0))
    last = np.ones(n, bool)
    last[:-1] = first[1:]
    has_next = ~last

    # Per-row parameters from the per-series class.
    pc = batch.param_class[s]
    plist = batch.params

    def per_row(name: str) -> np.ndarray:
        return np.array([getattr(p, name) for p in plist], dtype=float)[pc]

    low_f, high_f, min_daily = per_row("low_factor"), per_row("high_factor"), per_row("min_daily_usage")
    window = per_row("history_reads").astype(np.int64)
    min_hist = per_row("min_history")
    modulus = batch.modulus[s]

    v_prev = np.empty(n)
    v_prev[0] = np.nan
    v_prev[1:] = v[:-1]
    v_prev[first] = np.nan
    dt = np.empty(n)
    dt[0] = np.nan
    dt[1:] = (t[1:] - t[:-1]) / DAY
    dt[first] = np.nan
    d = v - v_prev

    # 2. exchanges (recorded) and rollovers.
    c = d.copy()
    exchange = np.zeros(n, bool)
    if len(batch.ex_series):
        seg_start = np.flatnonzero(first)
        seg_end = np.append(seg_start[1:], n)
        series_at = s[seg_start]
        pos = np.searchsorted(series_at, batch.ex_series)
        for j, p in enumerate(pos):
            if p >= len(series_at) or series_at[p] != batch.ex_series[j]:
                continue
            a, b = seg_start[p], seg_end[p]
            i = a + int(np.searchsorted(t[a:b], batch.ex_t[j], side="right"))
            if i >= b or i == a:
                continue
            removal = batch.ex_removal[j]
            tail = removal - v[i - 1] if np.isfinite(removal) else 0.0
            c[i] = tail + (v[i] - batch.ex_install[j])
            exchange[i] = True
    wrap = np.isfinite(modulus) & ~exchange & (d < 0) & (v_prev > modulus / 2) & (v < modulus / 2)
    c = np.where(wrap, d + np.where(np.isfinite(modulus), modulus, 0), c)

    # 3. the band from history (frozen runs and the catch-up read after them are not history).
    frozen_reads = per_row("frozen_reads").astype(np.int64)
    in_run = _in_frozen_run(d, v, first, frozen_reads)
    rate = np.where((c >= 0) & (dt > 0) & ~in_run, c / np.where(dt > 0, dt, 1), np.nan)
    # Gross rates (a ×10/×1000 stretch, a catch-up) are not history: judged against the series' median.
    series_rate = _series_median(s, rate, first)[s]
    with np.errstate(invalid="ignore"):
        gross = rate > per_row("gross_factor") * series_rate
    rate = np.where(gross, np.nan, rate)
    med, k = trailing_median(rate, start, window)
    has_band = (k >= min_hist) & ~first & np.isfinite(med)
    expected = med * dt
    integral = _integral_series(s, v, first)
    lo, hi = _round_band(low_f * expected, np.maximum(high_f * expected, min_daily * dt), integral)
    lo = np.where(has_band, lo, np.nan)
    hi = np.where(has_band, hi, np.nan)
    with np.errstate(invalid="ignore"):
        in_band = np.where(has_band, (c >= lo) & (c <= hi), ~(c < 0))
    in_band[first] = True

    # 4. isolated bad reads: previous → next agrees.
    v_next = np.full(n, np.nan)
    v_next[:-1] = v[1:]
    v_next[last] = np.nan
    dt_next = np.full(n, np.nan)
    dt_next[:-1] = dt[1:]
    c2 = v_next - v_prev
    wrap2 = np.isfinite(modulus) & (c2 < 0) & (v_prev > modulus / 2) & (v_next < modulus / 2)
    c2 = np.where(wrap2, c2 + np.where(np.isfinite(modulus), modulus, 0), c2)
    dt2 = dt + dt_next
    lo2, hi2 = _round_band(low_f * med * dt2, np.maximum(high_f * med * dt2, min_daily * dt2), integral)
    exch_next = np.zeros(n, bool)
    exch_next[:-1] = exchange[1:]
    with np.errstate(invalid="ignore"):
        skip_ok = np.where(has_band, (c2 >= lo2) & (c2 <= hi2), c2 >= 0)
    skip_ok &= has_next & ~first & ~exchange & ~exch_next
    in_band_next = np.ones(n, bool)
    in_band_next[:-1] = in_band[1:]
    c_next = np.full(n, np.nan)
    c_next[:-1] = c[1:]
    with np.errstate(invalid="ignore"):
        outlier = skip_ok & ((~in_band & ~in_band_next) | (~has_band & (c_next < 0)))
    suppressed = np.zeros(n, bool)
    suppressed[1:] = outlier[:-1]

    # 5. resets near zero, negative consumption.
    with np.errstate(invalid="ignore"):
        neg = (c < 0) & ~outlier & ~suppressed & ~exchange
        near_zero = (v <= np.maximum(hi, 0)) | (v <= per_row("reset_fraction") * v_prev)
        reset = neg & (v >= 0) & np.where(has_band, near_zero, v < per_row("reset_fraction") * v_prev)
        # ... unless ×10/×100/×1000 puts the read back into its band (or, without a band, just above
        # the previous read): that is a scale jump, not a reset.
        for factor in (10.0, 100.0, 1000.0):
            back = np.where(has_band, (v * factor - v_prev >= lo) & (v * factor - v_prev <= hi),
                            (v * factor >= v_prev) & (v * factor <= 1.5 * v_prev))  # fmt: skip
            reset &= ~back
        # A "rollover" whose consumption is implausible while the new index itself is: a reset.
        small = (v <= np.maximum(hi, 0)) | (v <= per_row("reset_fraction") * v_prev)
        reset_not_wrap = wrap & has_band & (c > hi) & small
    wrap &= ~reset_not_wrap
    reset |= reset_not_wrap
    c = np.where(reset, v, c)
    neg &= ~reset

    # 6. zero, frozen, gaps.
    with np.errstate(invalid="ignore"):
        zero = has_band & (c == 0) & (lo > 0) & ~suppressed & ~outlier
        out_band = has_band & ~in_band & ~neg & ~reset & ~outlier & ~suppressed & ~zero & (c >= 0)
    frozen_at = _frozen_runs(d, v, first, frozen_reads, med)
    cadence = _series_cadence(s, dt, first)[s]
    gap_f = per_row("gap_factor")
    with np.errstate(invalid="ignore"):
        gap = ~first & (dt > gap_f * cadence) & (dt - cadence > 0.5 / 24)

    # consumption after corrections; bad reads get an estimate instead.
    consumption = np.where(first, np.nan, c)
    estimates: list[Estimate] = []
    ctx = _Ctx(batch, v, v_prev, v_next, t, c, lo, hi, expected, med, dt, dt_next, integral)

    for i in np.flatnonzero(emit & exchange):
        findings.append(ctx.info(int(i), "EXCHANGE", f"meter exchange: consumption {fmt(c[i])} across it"))
    for i in np.flatnonzero(emit & wrap):
        msg = f"rollover at {fmt(modulus[i])}: consumption {fmt(c[i])}, not {fmt(d[i])}"
        findings.append(ctx.info(int(i), "ROLLOVER", msg))
    for i in np.flatnonzero(emit & reset):
        msg = f"index reset from {fmt(v_prev[i])} to {fmt(v[i])}: consumption counted from zero"
        findings.append(ctx.info(int(i), "RESET", msg))
    for i in np.flatnonzero(emit & zero):
        findings.append(ctx.band_finding(int(i), "ZERO", with_suggestions=False))
    for i in np.flatnonzero(emit & out_band):
        rule = "HILO_HIGH" if c[i] > hi[i] else "HILO_LOW"
        gross = c[i] > 10 * hi[i] or not has_next[i]
        f = ctx.band_finding(int(i), rule, with_suggestions=bool(gross))
        findings.append(f)
        if f.suggestions:
            findings.append(ctx.diagnosis(int(i), f.suggestions))
            estimates.append(ctx.substitute(int(i)))
    for i in np.flatnonzero(emit & neg):
        f = ctx.band_finding(int(i), "NEGATIVE")
        findings.append(f)
    for i in np.flatnonzero(emit & outlier):
        f = ctx.band_finding(int(i), "HILO_HIGH" if c[i] > 0 else "NEGATIVE", around=True)
        if has_band[i] and c[i] >= 0 and c[i] < lo[i]:
            f.rule = "HILO_LOW"
        findings.append(f)
        findings.append(ctx.diagnosis(int(i), f.suggestions, outlier=True))
        estimates.append(ctx.substitute(int(i)))
    for i in np.flatnonzero(emit & frozen_at):
        n_same = int(per_row("frozen_reads")[i])
        findings.append(Finding(
            int(i), "FROZEN", RULES["FROZEN"].severity,
            f"register stuck at {fmt(v[i])} for {n_same} reads while history shows {fmt(med[i])}/day",
            float(v[i]), details={"reads": n_same},
        ))  # fmt: skip
    for i in np.flatnonzero(emit & gap):
        missing = max(round(dt[i] / cadence[i]) - 1, 1)
        findings.append(Finding(
            int(i), "GAP", RULES["GAP"].severity,
            f"{missing} read(s) missing: {fmt(round(dt[i], 2))} days since the previous read "
            f"(usual {fmt(round(cadence[i], 3))})",
            float(v[i]), details={"missing": missing},
        ))  # fmt: skip
        if missing <= plist[int(batch.param_class[s[i]])].max_fill_reads and in_band[i] and not suppressed[i]:
            estimates.extend(ctx.fill_gap(int(i), missing, float(cadence[i])))
    for e in estimates:
        if e.row is not None:
            i = e.row
            consumption[i] = e.value - v_prev[i] if not first[i] else np.nan
            if has_next[i]:
                consumption[i + 1] = v[i + 1] - e.value
    return RegisterResult(consumption, expected, lo, hi, findings, estimates)


def _integral_series(s: np.ndarray, v: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per row: whether its series holds whole numbers only (typed-in indexes)."""
    frac = (v != np.floor(v)).astype(np.int64)
    starts = np.flatnonzero(first)
    per_series = np.add.reduceat(frac, starts) == 0 if len(starts) else np.zeros(0, bool)
    seg = np.cumsum(first) - 1
    return per_series[seg]


def _series_median(s: np.ndarray, x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Median of the finite values of ``x`` per series (NaN when none), indexed by series id.

    Rows are grouped by series already, so each series becomes a row of a matrix padded with +inf
    and sorted row by row (many short sorts beat one global lexsort). Very ragged series (the matrix
    would be much larger than the data) take the lexsort path.
    """
    size = int(s.max()) + 1 if len(s) else 0
    out = np.full(size, np.nan)
    ok = ~first & np.isfinite(x)
    ss, xx = s[ok], x[ok]
    if not len(ss):
        return out
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    counts = np.diff(np.r_[starts, len(ss)])
    width = int(counts.max())
    mid_lo, mid_hi = (counts - 1) // 2, counts // 2
    if len(starts) * width <= 3 * len(ss) + 4096:
        grid = np.full((len(starts), width), np.inf)
        rows = np.repeat(np.arange(len(starts)), counts)
        grid[rows, np.arange(len(ss)) - np.repeat(starts, counts)] = xx
        grid.sort(axis=1)
        lo = np.take_along_axis(grid, mid_lo[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(grid, mid_hi[:, None], axis=1)[:, 0]
    else:
        order = np.lexsort((xx, ss))
        xx = xx[order]
        lo, hi = xx[starts + mid_lo], xx[starts + mid_hi]
    out[ss[starts]] = (lo + hi) / 2
    return out


def _series_cadence(s: np.ndarray, dt: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Median interval between reads per series (days), indexed by series id."""
    return _series_median(s, dt, first)


def _in_frozen_run(d: np.ndarray, v: np.ndarray, first: np.ndarray, reads: np.ndarray) -> np.ndarray:
    """Rows inside a run of identical non-zero reads at least ``reads`` long, and the read after it."""
    same = ~first & (d == 0) & (v != 0)
    n = len(d)
    if n == 0:
        return same
    starts = np.r_[True, same[1:] != same[:-1]]
    run_id = np.cumsum(starts) - 1
    length = np.bincount(run_id)[run_id]
    long_run = same & (length >= reads - 1)
    after = np.zeros(n, bool)
    after[1:] = long_run[:-1] & ~long_run[1:] & ~first[1:]
    return long_run | after


def _frozen_runs(d: np.ndarray, v: np.ndarray, first: np.ndarray, reads: np.ndarray, med: np.ndarray) -> np.ndarray:
    """Rows where a run of identical non-zero reads reaches ``reads`` reads while history shows usage."""
    same = ~first & (d == 0) & (v != 0)
    n = len(d)
    idx = np.arange(n)
    # run length of consecutive `same` rows ending at i
    reset_at = np.where(~same, idx, -1)
    last_reset = np.maximum.accumulate(reset_at)
    run = idx - last_reset  # number of zero deltas ending here
    with np.errstate(invalid="ignore"):
        return same & (run == reads - 1) & (med > 0)


class _Ctx:
    """Builds the objects for flagged rows (only these rows pay for Python)."""

    def __init__(self, batch: RegisterSeries, v: np.ndarray, v_prev: np.ndarray, v_next: np.ndarray,
                 t: np.ndarray, c: np.ndarray, lo: np.ndarray, hi: np.ndarray, expected: np.ndarray,
                 med: np.ndarray, dt: np.ndarray, dt_next: np.ndarray, integral: np.ndarray) -> None:  # fmt: skip
        self.batch, self.v, self.v_prev, self.v_next, self.t = batch, v, v_prev, v_next, t
        self.c, self.lo, self.hi, self.expected, self.med = c, lo, hi, expected, med
        self.dt, self.dt_next, self.integral = dt, dt_next, integral

    def info(self, i: int, rule: str, message: str) -> Finding:
        return Finding(i, rule, RULES[rule].severity, message, float(self.v[i]), usage=float(self.c[i]))

    def read_band(self, i: int, around: bool = False) -> tuple[float, float]:
        lo = self.v_prev[i] + self.lo[i]
        hi = self.v_prev[i] + self.hi[i]
        if around and np.isfinite(self.v_next[i]):
            hi = min(hi, self.v_next[i]) if np.isfinite(hi) else self.v_next[i]
            if not np.isfinite(lo):
                lo = self.v_prev[i]
        return float(lo), float(hi)

    def band_finding(self, i: int, rule: str, around: bool = False, with_suggestions: bool = True) -> Finding:
        usage = float(self.c[i])
        lo, hi = float(self.lo[i]), float(self.hi[i])
        r_lo, r_hi = self.read_band(i, around)
        if np.isfinite(lo):
            msg = (f"usage {fmt(usage)}; correct usage {fmt(lo)}–{fmt(hi)}; "
                   f"correct readings {fmt(self.v_prev[i] + lo)}–{fmt(self.v_prev[i] + hi)}")  # fmt: skip
            band: tuple[float, float] | None = (lo, hi)
            read_band: tuple[float, float] | None = (float(self.v_prev[i] + lo), float(self.v_prev[i] + hi))
        elif usage < 0:
            msg = f"usage {fmt(usage)}; read {fmt(self.v[i])} below the previous read {fmt(self.v_prev[i])}"
            band = read_band = None
        else:
            msg = (f"usage {fmt(usage)} (no history for a band); the next read {fmt(self.v_next[i])} "
                   f"is below this one")  # fmt: skip
            band = read_band = None
        sugg: list[Suggestion] = []
        if with_suggestions and np.isfinite(r_lo) and np.isfinite(r_hi):
            exp_read = self.v_prev[i] + (self.expected[i] if np.isfinite(self.expected[i]) else 0.0)
            sugg = suggest_corrections(float(self.v[i]), r_lo, r_hi, float(exp_read), bool(self.integral[i]))
            if sugg:
                msg += "; suggested: " + ", ".join(f"{fmt(x.value)} ({x.why})" for x in sugg)
        return Finding(i, rule, RULES[rule].severity, msg, float(self.v[i]), usage, band, read_band, sugg,
                       {"expected_usage": _f(self.expected[i]), "days": _f(self.dt[i])})  # fmt: skip

    def diagnosis(self, i: int, sugg: list[Suggestion], outlier: bool = False) -> Finding:
        if sugg and sugg[0].kind == "scale":
            rule = "SCALE_JUMP"
        elif sugg:
            rule = "DIGIT_ERROR"
        else:
            rule = "OUTLIER"
        if sugg:
            msg = f"{fmt(self.v[i])} looks like {sugg[0].why}; probably {fmt(sugg[0].value)}"
        else:
            msg = (f"{fmt(self.v[i])} disagrees with both neighbours ({fmt(self.v_prev[i])} before, "
                   f"{fmt(self.v_next[i])} after), which agree with each other")  # fmt: skip
        return Finding(i, rule, RULES[rule].severity, msg, float(self.v[i]), float(self.c[i]), suggestions=sugg,
                       details={"isolated": outlier})  # fmt: skip

    def substitute(self, i: int) -> Estimate:
        """Linear between the neighbours when the next read agrees, else average daily load (history)."""
        s = int(self.batch.series[i])
        reason = 93
        if np.isfinite(self.v_next[i]) and np.isfinite(self.dt_next[i]) and self.v_next[i] >= self.v_prev[i]:
            frac = self.dt[i] / (self.dt[i] + self.dt_next[i])
            value = self.v_prev[i] + frac * (self.v_next[i] - self.v_prev[i])
            method = 17
        else:
            rate = self.med[i] if np.isfinite(self.med[i]) else 0.0
            value = self.v_prev[i] + rate * self.dt[i]
            method = 25
        if self.integral[i]:
            value = round(value)
        return Estimate(s, float(self.t[i]), float(value), method, reason, "substitute", i, float(self.v[i]))

    def fill_gap(self, i: int, missing: int, cadence: float) -> list[Estimate]:
        """Missing reads between i-1 and i, linear in time along the corrected consumption."""
        s = int(self.batch.series[i])
        t0 = self.t[i] - self.dt[i] * DAY
        mod = self.batch.modulus[s]
        out = []
        for j in range(1, missing + 1):
            tj = t0 + j * cadence * DAY
            if tj >= self.t[i] - 60:
                break
            frac = (tj - t0) / (self.t[i] - t0)
            value = self.v_prev[i] + frac * self.c[i]
            if np.isfinite(mod):
                value %= mod
            out.append(Estimate(s, float(tj), float(value), 17, 76, "GAP"))
        return out


def _f(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
