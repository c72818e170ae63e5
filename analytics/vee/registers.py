"""Validation of cumulative register reads, vectorised over many series at once.

The input is every read of many (meter, channel) series as flat numpy columns sorted by series and
time. Each rule is a handful of array operations over the whole batch; Python objects are built only
for the few reads a rule flags. The steps, in order:

1. duplicates (same series and instant) are reported and set aside; the utility's own estimated
   reads (``read_type`` estimate) are not judged and are not history: the actual read after them is
   judged against the last actual read over the whole span (the catch-up), never blamed for them;
2. the raw delta from the previous read is corrected for a recorded meter exchange (removal and
   install indexes) and for a rollover at the register modulus (10^digits or 2^bits);
3. the expected usage is the median per-day usage of the previous ``history_reads`` reads × the days
   elapsed; the usage band is that × (low, high) and the read band is the previous read + the usage
   band (the utility's high/low check); the read after a stuck index is judged over the stuck span;
4. a read out of band whose neighbours agree with each other (previous → next in band) is an
   isolated bad read: the following read is not blamed for it; candidate corrections (scale
   ×10/×100/×1000, extra/missing/transposed digit) inside the band are ranked by likelihood;
5. typed-in reads: a read the next read falls below, or whose usage and the next one's are both far
   from the expected usage, is checked for a transposition of two adjacent digits that fits both
   neighbours (the in-band transpositions 19414 → 19144, 46352 → 46532, 26565 → 26556);
6. an index that drops near zero is a reset (exchange without record): consumption counts from zero;
   other drops are negative consumption;
7. zero consumption when the band says there should be some, frozen registers, and gaps against the
   series' usual cadence; short gaps are filled by linear interpolation.

A read is **replaced** (an error with a substitute) only when it is implausible beyond a hard limit
(usage above ``hard_factor`` × the expected usage, below the previous read, or above the next read)
AND a correction explains it — or when both neighbours contradict it. Plausible high use (a leak at
5× normal) is a warning held for review, never substituted. Rules run pass after pass: the first
bad read of a series is taken out and the series judged again, so a run of scaled reads is found
read by read, reported as one fault (``details.fault_start``), and every substitute is estimated
from good reads only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import bottleneck as bn
import numpy as np

from analytics.vee.estimate import ADL, LINEAR
from analytics.vee.params import RULES, RuleCode, RuleParams, Severity
from analytics.vee.suggest import Suggestion, adjacent_swaps, suggest_corrections

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
    #: Per row: 0 actual, 1 customer read, 2 the utility's estimate (None: all actual).
    read_type: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.value)


@dataclass
class Finding:
    """One rule that fired on one read (``row`` indexes the input columns)."""

    row: int
    rule: RuleCode
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


def trailing_median(x: np.ndarray, start: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median of the values of ``x`` in the previous ``window[i]`` rows of the same series.

    ``start[i]`` is the first row of row i's series (a series' rows are contiguous). NaNs are
    ignored. Returns (median, count). Each series is laid after ``max(window)`` NaNs, so a moving
    window never reaches into the series before; bottleneck's ``move_median`` (two heaps, in C)
    then slides over all of them at once, one pass per distinct window length, where sorting every
    row's window took three times as long at a million rows. Its median of an even count is the
    mean of the two middle values, as numpy's: the same figures to the bit.
    """
    n = len(x)
    med = np.full(n, np.nan)
    count = np.zeros(n, np.int64)
    w_max = int(window.max()) if n else 0
    if w_max == 0:
        return med, count
    starts = start == np.arange(n)
    pos = np.arange(n) + w_max * np.cumsum(starts)  # row i's place after its series' run of NaNs
    padded = np.full(n + w_max * int(starts.sum()), np.nan)
    padded[pos] = x
    present = np.concatenate(([0], np.cumsum(~np.isnan(padded))))  # ±inf counts, as a value
    for w in np.unique(window[window > 0]).tolist():
        rows = np.flatnonzero(window == w)
        end = pos[rows]  # the window is the w places before the row's own
        med[rows] = bn.move_median(padded, w, min_count=1)[end - 1]
        count[rows] = present[end] - present[end - w]
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
                msg = (
                    f"read at the same instant twice ({fmt(v[i])})"
                    if same
                    else f"two values for one instant: {fmt(other)} and {fmt(v[i])} (conflict)"
                )
                findings.append(
                    Finding(int(i), RuleCode.DUPLICATE, RULES[RuleCode.DUPLICATE].severity, msg, float(v[i]))
                )
            keep = np.flatnonzero(~dup)
            sub = RegisterSeries(
                s[keep],
                t[keep],
                v[keep],
                batch.modulus,
                batch.param_class,
                batch.params,
                emit[keep],
                batch.ex_series,
                batch.ex_t,
                batch.ex_removal,
                batch.ex_install,
                None if batch.read_type is None else batch.read_type[keep],
            )
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


#: read_type codes of :attr:`RegisterSeries.read_type`.
READ_ACTUAL, READ_CUSTOMER, READ_ESTIMATE = 0, 1, 2
#: A run of bad reads found one after another (a persistent scale error) needs one pass per read.
MAX_PASSES = 64


@dataclass
class _Pass:
    """What one pass of the rules found over a subset of rows (rows are indexes into the subset)."""

    consumption: np.ndarray
    expected: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    med: np.ndarray
    findings: list[Finding]
    gap_estimates: list[Estimate]
    bad: np.ndarray  # rows found unusable (implausible and explained, negative, isolated, transposed)
    emitted_bad: set[int]  # bad rows whose findings are reported


def _subset(batch: RegisterSeries, idx: np.ndarray) -> RegisterSeries:
    emit = batch.emit if batch.emit is not None else np.ones(len(batch), bool)
    rt = batch.read_type if batch.read_type is not None else np.zeros(len(batch), np.int8)
    return RegisterSeries(
        batch.series[idx],
        batch.t[idx],
        batch.value[idx],
        batch.modulus,
        batch.param_class,
        batch.params,
        emit[idx],
        batch.ex_series,
        batch.ex_t,
        batch.ex_removal,
        batch.ex_install,
        rt[idx],
    )


def _validate(batch: RegisterSeries, emit: np.ndarray, findings: list[Finding]) -> RegisterResult:
    """Run the rules pass after pass: reads found bad leave the series and what follows is judged again.

    Utility estimates (``read_type`` estimate) are not judged and are not history: the actual read
    after them is judged against the last actual read (the catch-up). A read found bad (an
    implausible read a suggestion explains, a negative read, an isolated or transposed read) is
    taken out of its series and the series is judged again, so the read after it is compared with
    the last good read: a run of scaled reads is found read by read and reported as one fault, and
    substitutes are estimated from good reads only.
    """
    s, t, v = batch.series, batch.t, batch.value
    n = len(v)
    rt = batch.read_type if batch.read_type is not None else np.zeros(n, np.int8)
    est = rt == READ_ESTIMATE
    nxt = np.full(n, -1, np.int64)
    if n > 1:
        same_next = s[1:] == s[:-1]
        nxt[:-1] = np.where(same_next, np.arange(1, n), -1)
    emit_next = np.zeros(n, bool)
    emit_next[nxt >= 0] = emit[nxt[nxt >= 0]]
    active = ~est
    # Gaps are judged on every read (a read taken out as bad or an estimate is not a missing read).
    first_all = np.ones(n, bool)
    first_all[1:] = s[1:] != s[:-1]
    dt_all = np.full(n, np.nan)
    dt_all[1:] = (t[1:] - t[:-1]) / DAY
    dt_all[first_all] = np.nan
    cadence_all = _series_cadence(s, dt_all, first_all)[s]
    consumption = np.full(n, np.nan)
    expected = np.full(n, np.nan)
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    bad_rate = np.full(n, np.nan)
    bad = np.zeros(n, bool)
    current: list[Finding] = []
    bad_findings: list[Finding] = []
    emitted_bad: set[int] = set()
    gap_est: list[Estimate] = []
    todo: np.ndarray | None = None
    for _ in range(MAX_PASSES):
        mask = active if todo is None else active & np.isin(s, todo)
        idx = np.flatnonzero(mask)
        if not len(idx):
            break
        sub = replace(batch, emit=emit) if len(idx) == n else _subset(batch, idx)  # no copy on a first full pass
        p = _rules(sub, emit_next[idx], dt_all[idx], cadence_all[idx])
        if todo is not None:
            done = set(todo.tolist())
            current = [f for f in current if int(s[f.row]) not in done]
            gap_est = [e for e in gap_est if e.series not in done]
        # Only the first bad read of a series is settled per pass: what follows it was judged against
        # it, and is judged again without it.
        local_bad = np.flatnonzero(p.bad)
        if len(local_bad):
            ser = s[idx[local_bad]]
            local_bad = local_bad[np.r_[True, ser[1:] != ser[:-1]]]
        new_bad = idx[local_bad]
        new_bad_set = set(new_bad.tolist())
        pending = {int(idx[i]) for i in np.flatnonzero(p.bad)} - new_bad_set
        for f in p.findings:
            f.row = int(idx[f.row])
            if f.row in new_bad_set:
                bad_findings.append(f)
            elif f.row not in pending:
                current.append(f)
        emitted_bad |= {int(idx[i]) for i in p.emitted_bad} & new_bad_set
        gap_est.extend(p.gap_estimates)
        consumption[idx], expected[idx], lo[idx], hi[idx] = p.consumption, p.expected, p.lo, p.hi
        if not len(new_bad):
            break
        bad[new_bad] = True
        bad_rate[new_bad] = p.med[local_bad]
        active[new_bad] = False
        todo = np.unique(s[new_bad])

    # Utility estimates: consumption as read; an actual below the estimate before it revises it (info).
    prev_row = np.arange(n) - 1
    first = np.ones(n, bool)
    first[1:] = s[1:] != s[:-1]
    # Consumption telescopes along the reads: an estimate and the actual after it each count from the
    # read before them (the actual was judged against the last actual read, over the whole span).
    after_est = ~first & np.r_[False, est[:-1]]
    for i in np.flatnonzero((est | after_est) & ~first):
        consumption[i] = v[i] - v[i - 1]
    catch = np.flatnonzero(~est & ~bad & after_est & emit)
    for i in catch:
        j = int(prev_row[i])
        if v[i] < v[j]:
            k = j
            while k > 0 and not first[k] and est[k - 1]:
                k -= 1
            n_est = j - k + 1
            msg = (
                f"actual {fmt(v[i])} below the estimated read {fmt(v[j])} before it: catch-up after "
                f"{n_est} estimated read(s), the estimate(s) overstated usage by {fmt(v[j] - v[i])}"
            )
            current.append(
                Finding(
                    int(i),
                    RuleCode.CATCH_UP,
                    RULES[RuleCode.CATCH_UP].severity,
                    msg,
                    float(v[i]),
                    usage=_f(consumption[i]),
                    details={"estimates": n_est},
                )
            )

    # Substitutes for bad reads, from good reads only; faults are runs of consecutive bad reads.
    estimates = list(gap_est)
    good = active & ~est
    good_rows = np.flatnonzero(good)
    # A run of bad reads is filled read by read: each substitute is the anchor of the next, and the
    # good read after the run has its consumption counted from the last substitute.
    anchor: dict[int, tuple[int, float]] = {}  # series → (row, value) of its latest substitute
    for i in np.flatnonzero(bad):
        if int(i) not in emitted_bad:
            continue
        si = s[i]
        pos = int(np.searchsorted(good_rows, i))
        pg = int(good_rows[pos - 1]) if pos > 0 and s[good_rows[pos - 1]] == si else -1
        ng = int(good_rows[pos]) if pos < len(good_rows) and s[good_rows[pos]] == si else -1
        if pg < 0:
            continue
        mod = batch.modulus[si]
        c_ng = consumption[ng] if ng >= 0 else np.nan
        a_row, a_value = anchor.get(int(si), (pg, float(v[pg])))
        if a_row < pg:  # a substitute from an earlier run
            a_row, a_value = pg, float(v[pg])
        if ng >= 0 and np.isfinite(c_ng) and c_ng >= 0 and (v[ng] >= v[pg] or np.isfinite(mod)):
            frac = (t[i] - t[a_row]) / (t[ng] - t[a_row])
            value, method = a_value + frac * c_ng, LINEAR
        else:
            rate = bad_rate[i] if np.isfinite(bad_rate[i]) else 0.0
            value, method = v[pg] + rate * (t[i] - t[pg]) / DAY, ADL
        if np.isfinite(mod):
            value %= mod
        if _is_integral(v[np.searchsorted(s, si) : np.searchsorted(s, si, side="right")]):
            value = round(value)
        negative = any(f.row == i and f.rule == RuleCode.NEGATIVE for f in bad_findings)
        reason = RULES[RuleCode.NEGATIVE].reason if negative else RULES[RuleCode.OUTLIER].reason
        estimates.append(
            Estimate(int(si), float(t[i]), float(value), method, reason, "substitute", int(i), float(v[i]))
        )
        consumption[i] = value - a_value
        anchor[int(si)] = (int(i), float(value))
        if ng >= 0:
            consumption[ng] = v[ng] - value if v[ng] >= value else consumption[ng]
    _group_faults(bad_findings, bad, s, t, v)
    out = findings + [f for f in bad_findings if f.row in emitted_bad] + current
    return RegisterResult(consumption, expected, lo, hi, out, estimates)


def _is_integral(x: np.ndarray) -> bool:
    return bool(np.all(x == np.floor(x)))


def _group_faults(found: list[Finding], bad: np.ndarray, s: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
    """Consecutive bad reads of a series are one fault; a run off by one scale factor is a SCALE_JUMP."""
    rows = sorted({f.row for f in found})
    runs: list[list[int]] = []
    for r in rows:
        if runs and runs[-1][-1] == r - 1 and s[r - 1] == s[r]:
            runs[-1].append(r)
        else:
            runs.append([r])
    by_row: dict[int, list[Finding]] = {}
    for f in found:
        by_row.setdefault(f.row, []).append(f)
    for run in runs:
        start = datetime_text(t[run[0]])
        factors = set()
        for r in run:
            diag = [f for f in by_row[r] if f.suggestions]
            if diag and diag[0].suggestions[0].value > 0:
                factors.add(round(v[r] / diag[0].suggestions[0].value, 6))
            else:
                factors.add(None)
        scale = len(run) > 1 and len(factors) == 1 and next(iter(factors)) in _SCALE_RATIOS
        for r in run:
            for f in by_row[r]:
                f.details["fault_start"] = start
                f.details["fault_reads"] = len(run)
                if scale and f.rule in (RuleCode.DIGIT_ERROR, RuleCode.SCALE_JUMP, RuleCode.OUTLIER):
                    f.rule = RuleCode.SCALE_JUMP
                    ratio = next(iter(factors))
                    label = f"×{fmt(ratio)}" if ratio and ratio > 1 else f"÷{fmt(1 / ratio) if ratio else '?'}"
                    f.message = (
                        f"{fmt(v[r])}: read {run.index(r) + 1} of {len(run)} off by {label} since {start} "
                        f"(one fault); probably {fmt(f.suggestions[0].value)}"
                    )


_SCALE_RATIOS = {10.0, 100.0, 1000.0, 0.1, 0.01, 0.001}


def datetime_text(t: float) -> str:
    """An instant (Unix seconds) as ISO 8601 UTC, for messages."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(float(t), UTC).isoformat(timespec="minutes")


def _rules(batch: RegisterSeries, emit_next: np.ndarray, dt_all: np.ndarray, cadence: np.ndarray) -> _Pass:
    """One pass of every rule over ``batch`` (a subset of the rows: estimates and bad reads left out).

    ``dt_all`` and ``cadence`` are the days since the previous read and the usual interval, over all reads.
    """
    s, t, v = batch.series, batch.t, batch.value
    emit = batch.emit if batch.emit is not None else np.ones(len(v), bool)
    rt = batch.read_type if batch.read_type is not None else np.zeros(len(v), np.int8)
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

    cache: dict[str, np.ndarray] = {}

    def per_row(name: str) -> np.ndarray:
        """The parameter per row (one class: a zero-stride view, no copy)."""
        if name not in cache:
            per_class = np.array([getattr(p, name) for p in plist], dtype=float)
            used = np.unique(batch.param_class) if len(plist) > 1 else np.zeros(1, np.int64)
            same = len(plist) == 1 or bool(np.all(per_class[used] == per_class[used[0]]))
            cache[name] = np.broadcast_to(per_class[used[0]], n) if same else per_class[pc]
        return cache[name]

    modulus = batch.modulus[s]
    typed = (per_row("typed") > 0) | (rt == READ_CUSTOMER)

    v_prev = np.empty(n)
    v_prev[0] = np.nan
    v_prev[1:] = v[:-1]
    v_prev[first] = np.nan
    dt = np.empty(n)
    dt[0] = np.nan
    dt[1:] = (t[1:] - t[:-1]) / DAY
    dt[first] = np.nan
    d = v - v_prev

    # Each rule's mask, in the order they depend on one another (each function says what it reads).
    c, exchange = _exchange_mask(batch, s, t, v, d, first)
    wrap = _rollover_mask(v, v_prev, d, modulus, exchange)
    c = np.where(wrap, d + np.where(np.isfinite(modulus), modulus, 0), c)
    b = _band(s, t, v, d, c, dt, first, start, per_row)
    med, has_band, expected, lo, hi, in_band, hard = b.med, b.has_band, b.expected, b.lo, b.hi, b.in_band, b.hard
    v_next = np.full(n, np.nan)
    v_next[:-1] = v[1:]
    v_next[last] = np.nan
    dt_next = np.full(n, np.nan)
    dt_next[:-1] = dt[1:]
    c_next = np.full(n, np.nan)
    c_next[:-1] = c[1:]
    outlier, outlier_hard = _outlier_mask(
        v_prev, v_next, c, c_next, dt, dt_next, modulus, b, per_row, first, has_next, exchange
    )
    transposed, soft = _transposition_masks(
        v, v_prev, v_next, c, c_next, dt, dt_next, b, per_row, first, has_next, typed, rt, exchange, wrap, outlier
    )
    suppressed = np.zeros(n, bool)  # the read after an isolated or transposed read is not blamed for it
    suppressed[1:] = (outlier | transposed)[:-1]
    reset, neg, wrap = _reset_masks(v, v_prev, c, b, per_row, wrap, exchange, outlier, transposed, suppressed)
    c = np.where(reset, v, c)
    zero = _zero_mask(c, b, suppressed, outlier)
    out_band = _hilo_mask(c, b, neg, reset, outlier, suppressed, zero, transposed)
    integral = b.integral

    consumption = np.where(first, np.nan, c)
    ctx = _Ctx(batch, v, v_prev, v_next, t, c, lo, hi, expected, med, dt, dt_next, integral, typed)
    found = _Found(
        batch=batch,
        ctx=ctx,
        per_row=per_row,
        s=s,
        v=v,
        v_prev=v_prev,
        d=d,
        c=c,
        lo=lo,
        hi=hi,
        med=med,
        dt=dt,
        dt_all=dt_all,
        cadence=cadence,
        modulus=modulus,
        first=first,
        emit=emit,
        late=emit | emit_next,  # faults found with the next read are reported when that read lands
        has_band=has_band,
        has_next=has_next,
        typed=typed,
        in_band=in_band,
        hard=hard,
        suppressed=suppressed,
        exchange=exchange,
        wrap=wrap,
        reset=reset,
        zero=zero,
        out_band=out_band,
        neg=neg,
        outlier=outlier,
        outlier_hard=outlier_hard,
        transposed=transposed,
        soft=soft,
        frozen_reads=per_row("frozen_reads").astype(np.int64),
        findings=[],
        gap_estimates=[],
        bad=np.zeros(n, bool),
        emitted_bad=set(),
    )
    for _, report in REGISTER_CHECKS:
        report(found)
    return _Pass(consumption, expected, lo, hi, med, found.findings, found.gap_estimates, found.bad, found.emitted_bad)


PerRow = Callable[[str], np.ndarray]


def _exchange_mask(
    batch: RegisterSeries, s: np.ndarray, t: np.ndarray, v: np.ndarray, d: np.ndarray, first: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """EXCHANGE: (consumption ``d`` corrected across each recorded exchange, the reads right after one).

    Across an exchange: (removal index − previous read) + (read − install index); an unknown removal
    index counts as the previous read.
    """
    n = len(v)
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
    return c, exchange


def _rollover_mask(
    v: np.ndarray, v_prev: np.ndarray, d: np.ndarray, modulus: np.ndarray, exchange: np.ndarray
) -> np.ndarray:
    """ROLLOVER (before resets are told apart): a drop from the top half of the register's range to its bottom half.

    Not at a recorded exchange (``exchange``, which explains the drop).
    """
    return np.isfinite(modulus) & ~exchange & (d < 0) & (v_prev > modulus / 2) & (v < modulus / 2)


@dataclass
class _Band:
    """The usage band from history every band-based rule reads (HILO, OUTLIER, DIGIT_ERROR, RESET, ZERO).

    Per row: ``med`` the trailing median daily usage (gross rates and frozen runs left out), ``k``
    how many reads it rests on, ``has_band``, ``expected`` usage (over the stuck span after a
    frozen run), ``lo``/``hi`` the usage band, ``in_band``, ``hard`` (usage beyond the hard limit),
    ``integral`` (a whole-number series).
    """

    med: np.ndarray
    has_band: np.ndarray
    expected: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    in_band: np.ndarray
    hard: np.ndarray
    integral: np.ndarray


def _band(
    s: np.ndarray,
    t: np.ndarray,
    v: np.ndarray,
    d: np.ndarray,
    c: np.ndarray,
    dt: np.ndarray,
    first: np.ndarray,
    start: np.ndarray,
    per_row: PerRow,
) -> _Band:
    """The band from history for consumption ``c`` (exchange and rollover corrected)."""
    n = len(v)
    rows = np.arange(n)
    low_f, high_f, min_daily = per_row("low_factor"), per_row("high_factor"), per_row("min_daily_usage")
    # Frozen runs and the catch-up read after them are not history.
    in_run = _in_frozen_run(d, v, first, per_row("frozen_reads").astype(np.int64))
    rate = np.where((c >= 0) & (dt > 0) & ~in_run, c / np.where(dt > 0, dt, 1), np.nan)
    # Gross rates (a ×10/×1000 stretch, a catch-up) are not history: judged against the series' median.
    series_rate = _series_median(s, rate, first)[s]
    with np.errstate(invalid="ignore"):
        gross = rate > per_row("gross_factor") * series_rate
    rate = np.where(gross, np.nan, rate)
    med, k = trailing_median(rate, start, per_row("history_reads").astype(np.int64))
    has_band = (k >= per_row("min_history")) & ~first & np.isfinite(med)
    # The read after a stuck index (same value repeated) is judged over the whole stuck span.
    same = ~first & (d == 0) & (v != 0)
    run_from = np.maximum.accumulate(np.where(~same, rows, 0))  # first row of the identical values
    prev_same = np.zeros(n, bool)
    prev_same[1:] = same[:-1] & ~first[1:]
    rf_prev = np.zeros(n, np.int64)
    rf_prev[1:] = run_from[:-1]
    span = np.where(prev_same & ~same, (t - t[rf_prev]) / DAY, dt)
    expected = med * span
    integral = _integral_series(s, v, first)
    lo, hi = _round_band(low_f * med * dt, np.maximum(high_f * expected, min_daily * span), integral)
    lo = np.where(has_band, lo, np.nan)
    hi = np.where(has_band, hi, np.nan)
    with np.errstate(invalid="ignore"):
        in_band = np.where(has_band, (c >= lo) & (c <= hi), ~(c < 0))
        # Implausible beyond the hard limit: far above any expected use (negative usage is judged below).
        hard_hi = per_row("hard_factor") * np.maximum(med * span, min_daily * span)
        hard = has_band & (c > hard_hi)
    in_band[first] = True
    return _Band(med, has_band, expected, lo, hi, in_band, hard, integral)


def _outlier_mask(
    v_prev: np.ndarray,
    v_next: np.ndarray,
    c: np.ndarray,
    c_next: np.ndarray,
    dt: np.ndarray,
    dt_next: np.ndarray,
    modulus: np.ndarray,
    b: _Band,
    per_row: PerRow,
    first: np.ndarray,
    has_next: np.ndarray,
    exchange: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """OUTLIER: (isolated bad reads, those of them bad beyond doubt).

    Isolated: this read and the next are out of band (or, without a band, the next read falls
    below this one), but previous → next agrees, with no exchange (``exchange``) on either step.
    Bad beyond doubt: it stands above the next read, below the previous, or beyond the hard limit.
    Previous → next may wrap at the register's modulus.
    """
    n = len(c)
    low_f, high_f, min_daily = per_row("low_factor"), per_row("high_factor"), per_row("min_daily_usage")
    c2 = v_next - v_prev
    wrap2 = np.isfinite(modulus) & (c2 < 0) & (v_prev > modulus / 2) & (v_next < modulus / 2)
    c2 = np.where(wrap2, c2 + np.where(np.isfinite(modulus), modulus, 0), c2)
    dt2 = dt + dt_next
    lo2, hi2 = _round_band(low_f * b.med * dt2, np.maximum(high_f * b.med * dt2, min_daily * dt2), b.integral)
    exch_next = np.zeros(n, bool)
    exch_next[:-1] = exchange[1:]
    with np.errstate(invalid="ignore"):
        skip_ok = np.where(b.has_band, (c2 >= lo2) & (c2 <= hi2), c2 >= 0)
    skip_ok &= has_next & ~first & ~exchange & ~exch_next
    in_band_next = np.ones(n, bool)
    in_band_next[:-1] = b.in_band[1:]
    with np.errstate(invalid="ignore"):
        outlier = skip_ok & ((~b.in_band & ~in_band_next) | (~b.has_band & (c_next < 0)))
        # ... bad beyond doubt when it stands above the next read or below the previous, or is far off.
        outlier_hard = outlier & ((c_next < 0) | (c < 0) | b.hard)
    return outlier, outlier_hard


def _transposition_masks(
    v: np.ndarray,
    v_prev: np.ndarray,
    v_next: np.ndarray,
    c: np.ndarray,
    c_next: np.ndarray,
    dt: np.ndarray,
    dt_next: np.ndarray,
    b: _Band,
    per_row: PerRow,
    first: np.ndarray,
    has_next: np.ndarray,
    typed: np.ndarray,
    rt: np.ndarray,
    exchange: np.ndarray,
    wrap: np.ndarray,
    outlier: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """DIGIT_ERROR on typed-in reads: (hard, soft) transpositions of two adjacent digits.

    Hard: the next read falls below this one and a swap puts this read between its neighbours with
    both usages in band. Soft (a warning, held for review): both in band, but a swap brings both
    usages much closer to the expected usage. Not judged next to an exchange or a rollover
    (``exchange``, ``wrap``: the step is explained) nor on a utility estimate; an isolated read
    (``outlier``) is the OUTLIER rule's.
    """
    exch_next = np.zeros(len(v), bool)
    exch_next[:-1] = exchange[1:]
    wrap_next = np.zeros(len(v), bool)
    wrap_next[:-1] = wrap[1:]
    eligible = has_next & ~first & typed & ~exchange & ~exch_next & ~wrap & ~wrap_next & (rt != READ_ESTIMATE)
    transposed, soft = _transpositions(
        v,
        v_prev,
        v_next,
        c,
        c_next,
        b.lo,
        b.hi,
        b.med,
        dt,
        dt_next,
        b.has_band,
        eligible,
        b.in_band,
        per_row("soft_gain"),
        per_row("soft_fit"),
    )
    transposed &= ~outlier
    soft &= ~outlier & ~transposed
    return transposed, soft


def _reset_masks(
    v: np.ndarray,
    v_prev: np.ndarray,
    c: np.ndarray,
    b: _Band,
    per_row: PerRow,
    wrap: np.ndarray,
    exchange: np.ndarray,
    outlier: np.ndarray,
    transposed: np.ndarray,
    suppressed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RESET and NEGATIVE: (resets, negative reads, rollovers that are not resets).

    A drop not explained by an exchange, an isolated or transposed read, or the read after one
    (``suppressed``) is negative consumption — unless the index dropped near zero (a reset: an
    exchange without record), and ×10/×100/×1000 does not put the read back into its band (a scale
    jump is not a reset). A ROLLOVER (``wrap``) whose consumption is implausible while the new index
    itself is small is a reset too (an exchange on a narrow counter).
    """
    lo, hi, has_band = b.lo, b.hi, b.has_band
    reset_fraction = per_row("reset_fraction")
    with np.errstate(invalid="ignore"):
        neg = (c < 0) & ~outlier & ~suppressed & ~exchange & ~transposed
        near_zero = (v <= np.maximum(hi, 0)) | (v <= reset_fraction * v_prev)
        reset = neg & (v >= 0) & np.where(has_band, near_zero, v < reset_fraction * v_prev)
        # ... unless ×10/×100/×1000 puts the read back into its band (or, without a band, just above
        # the previous read): that is a scale jump, not a reset.
        for factor in (10.0, 100.0, 1000.0):
            back = np.where(
                has_band,
                (v * factor - v_prev >= lo) & (v * factor - v_prev <= hi),
                (v * factor >= v_prev) & (v * factor <= 1.5 * v_prev),
            )
            reset &= ~back
        small = (v <= np.maximum(hi, 0)) | (v <= reset_fraction * v_prev)
        reset_not_wrap = wrap & has_band & (c > hi) & small
    reset |= reset_not_wrap
    return reset, neg & ~reset, wrap & ~reset_not_wrap


def _zero_mask(c: np.ndarray, b: _Band, suppressed: np.ndarray, outlier: np.ndarray) -> np.ndarray:
    """ZERO: no consumption where the band's low end is above zero (not an isolated read or the read after one)."""
    with np.errstate(invalid="ignore"):
        return b.has_band & (c == 0) & (b.lo > 0) & ~suppressed & ~outlier


def _hilo_mask(
    c: np.ndarray,
    b: _Band,
    neg: np.ndarray,
    reset: np.ndarray,
    outlier: np.ndarray,
    suppressed: np.ndarray,
    zero: np.ndarray,
    transposed: np.ndarray,
) -> np.ndarray:
    """HILO_HIGH / HILO_LOW: usage out of band that no other rule explains.

    Not a negative read or a reset (NEGATIVE, RESET), an isolated read or the read after one
    (OUTLIER), a zero (ZERO) or a hard transposition (DIGIT_ERROR).
    """
    with np.errstate(invalid="ignore"):
        return b.has_band & ~b.in_band & ~neg & ~reset & ~outlier & ~suppressed & ~zero & ~transposed & (c >= 0)


@dataclass
class _Found:
    """What one pass computed per row (values, bands, the rules' masks) and what the reports collect."""

    batch: RegisterSeries
    ctx: _Ctx
    per_row: Callable[[str], np.ndarray]
    s: np.ndarray
    v: np.ndarray
    v_prev: np.ndarray
    d: np.ndarray  # raw delta from the previous read
    c: np.ndarray  # consumption (exchange, rollover and reset corrected)
    lo: np.ndarray
    hi: np.ndarray
    med: np.ndarray
    dt: np.ndarray
    dt_all: np.ndarray
    cadence: np.ndarray
    modulus: np.ndarray
    emit: np.ndarray
    late: np.ndarray
    has_band: np.ndarray
    has_next: np.ndarray
    typed: np.ndarray
    in_band: np.ndarray
    hard: np.ndarray
    suppressed: np.ndarray
    exchange: np.ndarray
    wrap: np.ndarray
    reset: np.ndarray
    zero: np.ndarray
    out_band: np.ndarray
    neg: np.ndarray
    outlier: np.ndarray
    first: np.ndarray
    outlier_hard: np.ndarray
    transposed: np.ndarray
    soft: np.ndarray
    frozen_reads: np.ndarray
    findings: list[Finding]
    gap_estimates: list[Estimate]
    bad: np.ndarray
    emitted_bad: set[int]

    def keep(self, i: int, found: list[Finding], is_bad: bool, report: bool) -> None:
        if is_bad:
            self.bad[i] = True
            if report:
                self.emitted_bad.add(i)
        if report:
            self.findings.extend(found)


def _exchange(f: _Found) -> None:
    """A recorded meter exchange: consumption across it (info)."""
    for i in np.flatnonzero(f.emit & f.exchange):
        f.findings.append(f.ctx.info(int(i), RuleCode.EXCHANGE, f"meter exchange: consumption {fmt(f.c[i])} across it"))


def _rollover(f: _Found) -> None:
    """The register wrapped at its modulus (info)."""
    for i in np.flatnonzero(f.emit & f.wrap):
        msg = f"rollover at {fmt(f.modulus[i])}: consumption {fmt(f.c[i])}, not {fmt(f.d[i])}"
        f.findings.append(f.ctx.info(int(i), RuleCode.ROLLOVER, msg))


def _reset(f: _Found) -> None:
    """The index dropped near zero without a recorded exchange (info)."""
    for i in np.flatnonzero(f.emit & f.reset):
        msg = f"index reset from {fmt(f.v_prev[i])} to {fmt(f.v[i])}: consumption counted from zero"
        f.findings.append(f.ctx.info(int(i), RuleCode.RESET, msg))


def _zero(f: _Found) -> None:
    """No consumption where the band expects some."""
    for i in np.flatnonzero(f.emit & f.zero):
        f.findings.append(f.ctx.band_finding(int(i), RuleCode.ZERO, with_suggestions=False))


def _hilo(f: _Found) -> None:
    """Out of band: suggestions for the reviewer; replaced only when implausible (hard) AND explained."""
    ctx, c, hi, hard = f.ctx, f.c, f.hi, f.hard
    for row in np.flatnonzero(f.out_band & (f.emit | hard)):
        i = int(row)
        rule = RuleCode.HILO_HIGH if c[i] > hi[i] else RuleCode.HILO_LOW
        listed = bool(hard[i] or not f.has_next[i] or f.typed[i])
        x = ctx.band_finding(i, rule, with_suggestions=listed)
        found = [x]
        explained = bool(hard[i] and x.suggestions)
        if explained:
            found.append(ctx.diagnosis(i, x.suggestions))
        elif hard[i]:
            x.details["implausible"] = True
        else:
            x.details["held_for_review"] = "plausible: warned, not substituted"
        f.keep(i, found, explained, bool(f.emit[i]))


def _negative(f: _Found) -> None:
    """A read below the previous one: substituted when a correction explains it, else held."""
    ctx = f.ctx
    for row in np.flatnonzero(f.neg):
        i = int(row)
        x = ctx.band_finding(i, RuleCode.NEGATIVE)
        found = [x]
        if x.suggestions:  # explained (a scale or digit mistake): substituted
            found.append(ctx.diagnosis(i, x.suggestions))
        else:  # which side of an unexplained drop is wrong takes a person: held, the raw read stands
            x.details["held_for_review"] = "unexplained drop: not substituted"
        f.keep(i, found, bool(x.suggestions), bool(f.emit[i]))


def _outlier(f: _Found) -> None:
    """An isolated bad read: its neighbours agree with each other."""
    ctx, c = f.ctx, f.c
    for row in np.flatnonzero(f.outlier):
        i = int(row)
        x = ctx.band_finding(i, RuleCode.HILO_HIGH if c[i] > 0 else RuleCode.NEGATIVE, around=True)
        if f.has_band[i] and c[i] >= 0 and c[i] < f.lo[i]:
            x.rule = RuleCode.HILO_LOW
        if f.outlier_hard[i]:
            f.keep(i, [x, ctx.diagnosis(i, x.suggestions, outlier=True)], True, bool(f.late[i]))
        else:
            x.details["held_for_review"] = "plausible: warned, not substituted"
            f.keep(i, [x], False, bool(f.late[i]))


def _transposition(f: _Found) -> None:
    """Two adjacent digits swapped in a typed-in read (hard: substituted; soft: held for review)."""
    for row in np.flatnonzero(f.transposed | f.soft):
        i = int(row)
        x = f.ctx.transposition(i, hard=bool(f.transposed[i]))
        f.keep(i, [x], bool(f.transposed[i]), bool(f.late[i]))


def _frozen(f: _Found) -> None:
    """The same non-zero index for ``frozen_reads`` reads while history shows usage."""
    v, med = f.v, f.med
    frozen_at = _frozen_runs(f.d, v, f.first, f.frozen_reads, med)
    for i in np.flatnonzero(f.emit & frozen_at):
        n_same = int(f.per_row("frozen_reads")[i])
        f.findings.append(
            Finding(
                int(i),
                RuleCode.FROZEN,
                RULES[RuleCode.FROZEN].severity,
                f"register stuck at {fmt(v[i])} for {n_same} reads while history shows {fmt(med[i])}/day",
                float(v[i]),
                details={"reads": n_same},
            )
        )


def _gap(f: _Found) -> None:
    """Reads missing against the series' usual cadence; short gaps filled by linear interpolation."""
    v, dt_all, cadence = f.v, f.dt_all, f.cadence
    plist = f.batch.params
    gap_f = f.per_row("gap_factor")
    with np.errstate(invalid="ignore"):
        gap = ~f.first & (dt_all > gap_f * cadence) & (dt_all - cadence > 0.5 / 24)
    for i in np.flatnonzero(f.emit & gap):
        missing = max(round(dt_all[i] / cadence[i]) - 1, 1)
        f.findings.append(
            Finding(
                int(i),
                RuleCode.GAP,
                RULES[RuleCode.GAP].severity,
                f"{missing} read(s) missing: {fmt(round(dt_all[i], 2))} days since the previous read "
                f"(usual {fmt(round(cadence[i], 3))})",
                float(v[i]),
                details={"missing": missing},
            )
        )
        fill = (
            missing <= plist[int(f.batch.param_class[f.s[i]])].max_fill_reads and f.in_band[i] and not f.suppressed[i]
        )
        if fill and f.dt[i] == dt_all[i]:
            f.gap_estimates.extend(f.ctx.fill_gap(int(i), missing, float(cadence[i])))


#: The register rules' reports, run in this order over each pass (the order findings are listed in).
#: A rule is its entry in :data:`~analytics.vee.params.RULES` (severity, reason, parameters, methods)
#: plus a report function here, which turns the rule's mask into findings (and marks reads bad).
#: A rule no other rule depends on computes its own mask in its report from the pass's values
#: (:class:`_Found`), as FROZEN and GAP do. A rule others depend on has a mask function
#: (``_exchange_mask``, ``_rollover_mask``, ``_outlier_mask``, ``_transposition_masks``,
#: ``_reset_masks``, ``_zero_mask``, ``_hilo_mask``) that takes the earlier rules' masks it needs
#: as arguments; :func:`_rules` calls them in dependency order. Diagnoses (SCALE_JUMP, DIGIT_ERROR,
#: OUTLIER) are added by the HILO, NEGATIVE and outlier reports; HILO_LOW is HILO's other side.
REGISTER_CHECKS: tuple[tuple[RuleCode, Callable[[_Found], None]], ...] = (
    (RuleCode.EXCHANGE, _exchange),
    (RuleCode.ROLLOVER, _rollover),
    (RuleCode.RESET, _reset),
    (RuleCode.ZERO, _zero),
    (RuleCode.HILO_HIGH, _hilo),
    (RuleCode.NEGATIVE, _negative),
    (RuleCode.OUTLIER, _outlier),
    (RuleCode.DIGIT_ERROR, _transposition),
    (RuleCode.FROZEN, _frozen),
    (RuleCode.GAP, _gap),
)


def _transpositions(
    v: np.ndarray,
    v_prev: np.ndarray,
    v_next: np.ndarray,
    c: np.ndarray,
    c_next: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    med: np.ndarray,
    dt: np.ndarray,
    dt_next: np.ndarray,
    has_band: np.ndarray,
    eligible: np.ndarray,
    in_band: np.ndarray,
    soft_gain: np.ndarray,
    soft_fit: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(hard, soft) masks of reads one adjacent-digit transposition away from a read that fits both neighbours."""
    n = len(v)
    hard = np.zeros(n, bool)
    soft = np.zeros(n, bool)
    rows = np.flatnonzero(eligible & np.isfinite(v) & (v >= 1) & (v < 1e15))
    if not len(rows):
        return hard, soft
    vv = np.floor(v[rows])
    frac = v[rows] - vv
    e1 = med[rows] * dt[rows]
    e2 = med[rows] * dt_next[rows]
    lo2 = lo[rows] * dt_next[rows] / np.where(dt[rows] > 0, dt[rows], 1)
    hi2 = hi[rows] * dt_next[rows] / np.where(dt[rows] > 0, dt[rows], 1)
    band = has_band[rows]
    digits = np.floor(np.log10(np.maximum(vv, 1))).astype(np.int64) + 1
    best_gain = np.full(len(rows), -np.inf)
    any_hard = np.zeros(len(rows), bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        obs = _dev(c[rows], e1) + _dev(c_next[rows], e2)
        for k in range(int(digits.max()) - 1):
            p = 10.0**k
            a = np.floor(vv / p) % 10
            b = np.floor(vv / (p * 10)) % 10
            ok = (k + 2 <= digits) & (a != b) & ~((k + 2 == digits) & (a == 0))
            x = vv + 9 * (a - b) * p + frac
            u1, u2 = x - v_prev[rows], v_next[rows] - x
            fits = (
                (u1 >= 0)
                & (u2 >= 0)
                & np.where(band, (u1 >= lo[rows]) & (u1 <= hi[rows]) & (u2 >= lo2) & (u2 <= hi2), True)
            )
            any_hard |= ok & fits & (c_next[rows] < 0)
            close = (np.abs(np.log((u1 + 1e-9) / e1)) <= np.log(soft_fit[rows])) & (
                np.abs(np.log((u2 + 1e-9) / e2)) <= np.log(soft_fit[rows])
            )
            gain = np.where(ok & fits & close & band & (e1 > 0) & (e2 > 0), obs - _dev(u1, e1) - _dev(u2, e2), -np.inf)
            best_gain = np.maximum(best_gain, gain)
    hard[rows] = any_hard
    with np.errstate(invalid="ignore"):
        soft[rows] = ~any_hard & in_band[rows] & (c_next[rows] >= 0) & (best_gain >= soft_gain[rows])
    return hard, soft


def _dev(u: np.ndarray, e: np.ndarray) -> np.ndarray:
    """|ln(usage / expected)| with a small floor (usage 0 is far from any expected use, not infinitely)."""
    eps = 0.05 * np.abs(e) + 1e-9
    return np.abs(np.log((np.maximum(u, 0) + eps) / (e + eps)))


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

    def __init__(
        self,
        batch: RegisterSeries,
        v: np.ndarray,
        v_prev: np.ndarray,
        v_next: np.ndarray,
        t: np.ndarray,
        c: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        expected: np.ndarray,
        med: np.ndarray,
        dt: np.ndarray,
        dt_next: np.ndarray,
        integral: np.ndarray,
        typed: np.ndarray,
    ) -> None:
        self.batch, self.v, self.v_prev, self.v_next, self.t = batch, v, v_prev, v_next, t
        self.c, self.lo, self.hi, self.expected, self.med = c, lo, hi, expected, med
        self.dt, self.dt_next, self.integral, self.typed = dt, dt_next, integral, typed

    def info(self, i: int, rule: RuleCode, message: str) -> Finding:
        return Finding(i, rule, RULES[rule].severity, message, float(self.v[i]), usage=float(self.c[i]))

    def read_band(self, i: int, around: bool = False) -> tuple[float, float]:
        lo = self.v_prev[i] + self.lo[i]
        hi = self.v_prev[i] + self.hi[i]
        if around and np.isfinite(self.v_next[i]):
            hi = min(hi, self.v_next[i]) if np.isfinite(hi) else self.v_next[i]
            if not np.isfinite(lo):
                lo = self.v_prev[i]
        return float(lo), float(hi)

    def band_finding(self, i: int, rule: RuleCode, around: bool = False, with_suggestions: bool = True) -> Finding:
        usage = float(self.c[i])
        lo, hi = float(self.lo[i]), float(self.hi[i])
        r_lo, r_hi = self.read_band(i, around)
        if np.isfinite(lo):
            msg = (
                f"usage {fmt(usage)}; correct usage {fmt(lo)}–{fmt(hi)}; "
                f"correct readings {fmt(self.v_prev[i] + lo)}–{fmt(self.v_prev[i] + hi)}"
            )
            band: tuple[float, float] | None = (lo, hi)
            read_band: tuple[float, float] | None = (float(self.v_prev[i] + lo), float(self.v_prev[i] + hi))
        elif usage < 0:
            msg = f"usage {fmt(usage)}; read {fmt(self.v[i])} below the previous read {fmt(self.v_prev[i])}"
            band = read_band = None
        else:
            msg = f"usage {fmt(usage)} (no history for a band); the next read {fmt(self.v_next[i])} is below this one"
            band = read_band = None
        sugg: list[Suggestion] = []
        if with_suggestions and np.isfinite(r_lo) and np.isfinite(r_hi):
            exp_read = self.v_prev[i] + (self.expected[i] if np.isfinite(self.expected[i]) else 0.0)
            sugg = suggest_corrections(
                float(self.v[i]),
                r_lo,
                r_hi,
                float(exp_read),
                bool(self.integral[i]),
                typed=bool(self.typed[i]),
                previous=float(self.v_prev[i]),
            )
            if sugg:
                msg += "; suggested: " + ", ".join(f"{fmt(x.value)} ({x.why})" for x in sugg)
        return Finding(
            i,
            rule,
            RULES[rule].severity,
            msg,
            float(self.v[i]),
            usage,
            band,
            read_band,
            sugg,
            {"expected_usage": _f(self.expected[i]), "days": _f(self.dt[i])},
        )

    def diagnosis(self, i: int, sugg: list[Suggestion], outlier: bool = False) -> Finding:
        if sugg and sugg[0].kind == "scale":
            rule = RuleCode.SCALE_JUMP
        elif sugg:
            rule = RuleCode.DIGIT_ERROR
        else:
            rule = RuleCode.OUTLIER
        if sugg:
            msg = f"{fmt(self.v[i])} looks like {sugg[0].why}; probably {fmt(sugg[0].value)}"
        else:
            msg = (
                f"{fmt(self.v[i])} disagrees with both neighbours ({fmt(self.v_prev[i])} before, "
                f"{fmt(self.v_next[i])} after), which agree with each other"
            )
        return Finding(
            i,
            rule,
            RULES[rule].severity,
            msg,
            float(self.v[i]),
            float(self.c[i]),
            suggestions=sugg,
            details={"isolated": outlier},
        )

    def transposition(self, i: int, hard: bool) -> Finding:
        """Two adjacent digits swapped, said by the next read or by the expected usage.

        Hard: the next read falls below this one. Soft: both usages in band but a swap fits both far
        better (a warning, held for review).
        """
        v, prev, nxt = float(self.v[i]), float(self.v_prev[i]), float(self.v_next[i])
        e1 = self.med[i] * self.dt[i] if np.isfinite(self.med[i]) else np.nan
        lo = prev + (self.lo[i] if np.isfinite(self.lo[i]) else 0.0)
        hi = min(prev + self.hi[i], nxt) if np.isfinite(self.hi[i]) else nxt
        exp_read = prev + (e1 if np.isfinite(e1) else 0.0)
        swaps = {x for x in adjacent_swaps(v) if lo <= x <= hi}
        sugg = [
            x
            for x in suggest_corrections(v, lo, hi, exp_read, bool(self.integral[i]), typed=True, previous=prev)
            if x.value in swaps or not hard
        ]
        if not sugg:
            sugg = [Suggestion(x, "digit", "digits transposed") for x in sorted(swaps, key=lambda x: abs(x - exp_read))]
        best = sugg[0].value if sugg else v
        if hard:
            msg = (
                f"{fmt(v)} stands above the next read {fmt(nxt)}; {fmt(best)} ({sugg[0].why if sugg else ''}) "
                f"fits both neighbours ({fmt(prev)} before)"
            )
        else:
            why = sugg[0].why if sugg else ""
            msg = (
                f"usage {fmt(self.c[i])} then {fmt(nxt - v)} where about {fmt(round(e1, 3))} each was "
                f"expected; {fmt(best)} ({why}) fits both: check the register (held for review)"
            )
        rule = RULES[RuleCode.DIGIT_ERROR]
        severity = rule.severity if hard else Severity.WARNING
        band = (float(self.lo[i]), float(self.hi[i])) if np.isfinite(self.lo[i]) else None
        read_band = (float(prev + self.lo[i]), float(prev + self.hi[i])) if band else None
        return Finding(
            i,
            rule.code,
            severity,
            msg,
            v,
            float(self.c[i]),
            band,
            read_band,
            sugg,
            {"expected_usage": _f(e1), "transposition": "hard" if hard else "soft"},
        )

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
            out.append(Estimate(s, float(tj), float(value), LINEAR, RULES[RuleCode.GAP].reason, RuleCode.GAP))
        return out


def _f(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
