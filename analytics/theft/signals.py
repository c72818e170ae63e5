"""Theft signals: pure, vectorised functions over arrays of meters × days.

Conventions: ``daily`` is a float array (meters × days) of recorded consumption per day, ``NaN``
where nothing was read; ``hourly`` (meters × days × 24) is the recorded consumption per hour when
interval data exists. Every function returns arrays (one value per meter, or per meter and day);
none touches a database or a file, so each is unit-tested on a small hand-built fleet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Evidence weight of each meter event kind (0: not a theft signal). Tamper codes after domain §4.
EVENT_WEIGHTS: dict[str, float] = {
    "terminal_cover_open": 0.6,
    "meter_cover_open": 0.6,
    "magnetic_field": 0.7,
    "bypass": 0.8,
    "reverse_energy": 0.7,
    "current_without_voltage": 0.6,
    "reverse_flow": 0.7,
    "auth_failure": 0.3,
    "removal": 0.5,
    "cable_cut": 0.4,
}


def row_quantile(x: FloatArray, q: float) -> FloatArray:
    """Quantile ``q`` of each row ignoring NaN (NaN for an all-NaN row).

    Linear interpolation, as numpy's default; one sort of the whole array instead of a Python loop
    over rows (``np.nanquantile`` along an axis loops).
    """
    s = np.sort(np.where(np.isfinite(x), x, np.nan), axis=1)  # NaN sort last
    n = np.isfinite(x).sum(axis=1)
    pos = q * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    v_lo = np.take_along_axis(s, lo[:, None], axis=1)[:, 0]
    v_hi = np.take_along_axis(s, hi[:, None], axis=1)[:, 0]
    out = v_lo + (v_hi - v_lo) * (pos - lo)
    return np.where(n > 0, out, np.nan)


def _nanmedian_rows(x: FloatArray) -> FloatArray:
    """Median of each row ignoring NaN (NaN for an all-NaN row), without warnings."""
    return row_quantile(x, 0.5)


def box_lstsq2(x: FloatArray, y: FloatArray, lo: tuple[float, float], hi: tuple[float, float]) -> FloatArray:
    """Least squares ``y ≈ x @ c`` for two coefficients bounded to ``[lo, hi]`` (exact, closed form).

    The optimum is the unconstrained one when it is inside the box, else on an edge of it: every
    edge (one coefficient at a bound, the other solved and clipped) and corner is tried.
    """
    best = np.array([np.clip(0.0, lo[0], hi[0]), np.clip(0.0, lo[1], hi[1])])
    best_sse = np.inf
    cands: list[np.ndarray] = []
    sol, *_ = np.linalg.lstsq(x, y, rcond=None)
    cands.append(sol)
    for j in (0, 1):
        other = 1 - j
        for bound in (lo[j], hi[j]):
            rest = y - x[:, j] * bound
            den = float(x[:, other] @ x[:, other])
            c = np.empty(2)
            c[j] = bound
            c[other] = float(x[:, other] @ rest) / den if den > 0 else 0.0
            c[other] = np.clip(c[other], lo[other], hi[other])
            cands.append(c)
    for c in cands:
        if lo[0] - 1e-12 <= c[0] <= hi[0] + 1e-12 and lo[1] - 1e-12 <= c[1] <= hi[1] + 1e-12:
            sse = float(((y - x @ c) ** 2).sum())
            if sse < best_sse:
                best, best_sse = c, sse
    return best


def _masked_mean(x: FloatArray, mask: BoolArray) -> FloatArray:
    """Row means of ``x`` over ``mask`` ignoring NaN (NaN where nothing is left)."""
    ok = mask & np.isfinite(x)
    n = ok.sum(axis=1)
    s = np.where(ok, x, 0.0).sum(axis=1)
    return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def rolling_mean(x: FloatArray, window: int) -> FloatArray:
    """Centred rolling mean along the last axis, ignoring NaN (NaN where the window holds nothing)."""
    ok = np.isfinite(x)
    v = np.where(ok, x, 0.0)
    pad = [(0, 0)] * (x.ndim - 1) + [(1, 0)]
    cs = np.pad(np.cumsum(v, axis=-1), pad)
    cn = np.pad(np.cumsum(ok, axis=-1), pad)
    n = x.shape[-1]
    half = window // 2
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) - half + window, 0, n)
    s = cs[..., hi] - cs[..., lo]
    c = cn[..., hi] - cn[..., lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


@dataclass
class Cleaned:
    """Daily consumption with meter faults explained away, and what was found.

    ``values`` keeps NaN for days with no data. ``catch_up`` marks days where a jump after a run
    of silent (NaN) or zero days was spread back over the run (communication loss or a frozen
    register: the energy was recorded late, not lost); ``index_faults`` counts negative steps
    (rollover, meter exchange) and scale jumps / spikes per meter; ``silence_unrecovered`` is,
    per meter, the number of silent days after which the register did *not* catch up.
    """

    values: FloatArray
    catch_up: BoolArray
    frozen_days: IntArray
    index_faults: IntArray
    rollovers: IntArray
    silent_days: IntArray
    silence_unrecovered: IntArray


def clean_daily(
    daily: FloatArray, wrap: FloatArray | None = None, cumulative: bool = True, spike_factor: float = 4.0
) -> Cleaned:
    """Remove the footprints of honest meter faults from a daily consumption array.

    - a negative day is a rollover when adding the meter's ``wrap`` gives a plausible value, else
      an index reset (meter exchange): NaN;
    - with ``cumulative`` (daily values from register advances), a day more than 1.5× the meter's
      median that follows a run of NaN or zero days is a catch-up: it is spread over the run (a
      communication loss or a frozen register recorded the energy late);
    - a day above ``spike_factor`` × the median (×10 / ×1000 scale jump, spike) becomes NaN.
    """
    v = np.array(daily, dtype=float, copy=True)
    m, d = v.shape
    wrap = np.full(m, np.inf) if wrap is None else np.asarray(wrap, dtype=float)
    pos = np.where(v > 0, v, np.nan)
    med = _nanmedian_rows(pos)
    med = np.where(np.isfinite(med), med, 0.0)
    silent = ~np.isfinite(v)
    silent_days = silent.sum(axis=1).astype(np.int64)

    index_faults = np.zeros(m, dtype=np.int64)
    rollovers = np.zeros(m, dtype=np.int64)
    neg = np.isfinite(v) & (v < -1e-9)
    if neg.any():
        wrapped = v + wrap[:, None]
        ceiling = spike_factor * np.maximum(med, 1e-9)[:, None]
        plausible = neg & np.isfinite(wrapped) & (wrapped >= 0) & (wrapped <= ceiling)
        rollovers += plausible.sum(axis=1)
        v = np.where(plausible, wrapped, v)
        reset = neg & ~plausible
        index_faults += reset.sum(axis=1)
        v[reset] = np.nan

    catch_up = np.zeros((m, d), dtype=bool)
    frozen_days = np.zeros(m, dtype=np.int64)
    unrecovered = np.zeros(m, dtype=np.int64)
    if cumulative:
        run = np.zeros(m, dtype=np.int64)
        zrun = np.zeros(m, dtype=np.int64)  # zero days inside the current run
        srun = np.zeros(m, dtype=np.int64)  # days with no read at all inside the current run
        for day in range(d):
            x = v[:, day]
            quiet = ~np.isfinite(x) | (x <= 1e-9)
            jump = ~quiet & (run > 0) & (x > 1.5 * med)
            if jump.any():
                for i in np.flatnonzero(jump):
                    length = int(run[i])
                    share = x[i] / (length + 1)
                    v[i, day - length: day + 1] = share
                    catch_up[i, day - length: day + 1] = True
                    frozen_days[i] += int(zrun[i])
            ended = ~quiet & (run > 0) & ~jump
            if ended.any():
                unrecovered[ended] += srun[ended]
            zero = np.isfinite(x) & (x <= 1e-9)
            run = np.where(quiet, run + 1, 0)
            zrun = np.where(zero, zrun + 1, np.where(quiet, zrun, 0))
            srun = np.where(quiet, srun + silent[:, day], 0)
    spikes = np.isfinite(v) & (v > spike_factor * np.maximum(med, 1e-9)[:, None]) & (med[:, None] > 0)
    index_faults += spikes.sum(axis=1)
    v[spikes] = np.nan
    return Cleaned(v, catch_up, frozen_days, index_faults, rollovers, silent_days, unrecovered)


def seasonal_index(values: FloatArray, groups: IntArray) -> FloatArray:
    """Per group and day, the median of members' consumption relative to their own median.

    Returns an array (groups × days); it carries the season, the week (commercial Sundays) and
    holidays, so dividing by it leaves each meter's own level. Days where the group has no data
    get 1.
    """
    med = _nanmedian_rows(np.where(values > 0, values, np.nan))
    rel = values / np.where(med > 0, med, np.nan)[:, None]
    n_groups = int(groups.max()) + 1 if groups.size else 0
    out = np.ones((n_groups, values.shape[1]))
    for g in range(n_groups):
        rows = rel[groups == g]
        if rows.size == 0:
            continue
        ok = np.isfinite(rows).any(axis=0)
        if ok.any():
            out[g, ok] = np.nanmedian(rows[:, ok], axis=0)
    out = np.where(np.isfinite(out) & (out > 0), out, 1.0)
    return out


@dataclass
class Drop:
    """A sustained drop of consumption against the meter's own history.

    ``ratio`` (meters × days) is consumption over the expected level (the meter's upper-quantile
    level × the seasonal index); ``start``/``end`` the longest run of low days (−1 when none),
    ``depth`` 1 − mean ratio over that run, ``deficit`` the energy it lacks (meter units),
    ``expected`` per meter and day the energy the meter would have recorded, ``zero_days`` the days
    of exactly zero consumption while the meter reported (energised), and ``before`` the mean
    daily consumption before the run.
    """

    ratio: FloatArray
    expected: FloatArray
    level: FloatArray
    start: IntArray
    end: IntArray
    depth: FloatArray
    deficit: FloatArray
    zero_days: IntArray
    low: BoolArray


def sustained_drop(
    values: FloatArray, season: FloatArray, threshold: float = 0.8, quantile: float = 0.7, window: int = 7
) -> Drop:
    """Find each meter's longest run of days whose smoothed consumption stays below ``threshold`` × normal.

    ``season`` is the meter's seasonal index per day (meters × days, from :func:`seasonal_index`).
    The normal level is an upper quantile of the deseasonalised series, so a drop lasting up to
    ``1 − quantile`` of the period does not hide itself. The run is taken on a centred
    ``window``-day mean, then trimmed to raw days below the threshold.
    """
    norm = values / season
    level = row_quantile(norm, quantile)
    level = np.where(np.isfinite(level) & (level > 0), level, np.nan)
    expected = level[:, None] * season
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = values / expected
    smooth = rolling_mean(ratio, window)
    low = np.isfinite(smooth) & (smooth < threshold)
    raw_low = ~(ratio >= threshold)  # NaN days do not break a run
    low &= raw_low
    _, start, end, in_run = longest_true_span(low)
    r = np.where(in_run & np.isfinite(ratio), ratio, np.nan)
    n_in = np.isfinite(r).sum(axis=1)
    mean_r = np.where(n_in > 0, np.nansum(np.where(np.isfinite(r), r, 0.0), axis=1) / np.maximum(n_in, 1), 1.0)
    depth = np.clip(1.0 - mean_r, 0.0, 1.0)
    gap = np.where(in_run & np.isfinite(values), np.maximum(expected - values, 0.0), 0.0)
    deficit = np.nansum(gap, axis=1)
    zero_days = (np.isfinite(values) & (values <= 1e-9) & np.isfinite(expected)).sum(axis=1)
    return Drop(ratio, expected, level, start, end, depth, np.nan_to_num(deficit), zero_days, in_run)


@dataclass
class ProfileChange:
    """Days whose shape departs from the meter's usual shape for that day type.

    ``corr`` (meters × days) is the correlation of each day's hourly profile with the meter's
    mean profile of the same day type (weekday, Saturday, Sunday); ``flatness`` the day's
    spread over the usual spread. ``start``/``end`` the longest run of anomalous days, ``score``
    the fall of the smoothed agreement below its usual level (80th percentile; 0–2) × duration,
    ``reversed`` (the run's days match the usual shape mirrored in time better than the shape
    itself) and ``flattened`` (their spread is under half the usual) what the run looked like.
    """

    corr: FloatArray
    flatness: FloatArray
    start: IntArray
    end: IntArray
    score: FloatArray
    usual: FloatArray
    during: FloatArray
    reversed: BoolArray
    flattened: BoolArray


def profile_change(hourly: FloatArray, weekday: IntArray, drop: float = 0.35, window: int = 7) -> ProfileChange:
    """Flattened, reversed or reshaped daily profiles (from hourly interval data).

    ``weekday`` gives 0 (Monday) … 6 (Sunday) per day.
    """
    m, d = hourly.shape[:2]
    tot = hourly.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        shape = hourly / tot[:, :, None]
    shape[~(tot > 0)] = np.nan
    daytype = np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))
    corr = np.full((m, d), np.nan)
    rcorr = np.full((m, d), np.nan)
    flat = np.full((m, d), np.nan)
    for t in range(3):
        cols = np.flatnonzero(daytype == t)
        if cols.size == 0:
            continue
        sub = shape[:, cols, :]
        valid = np.isfinite(sub).all(axis=2)
        # The mean shape, not the median: when an anomalous shape covers most days the mean still
        # carries the usual one (a median of mostly flat days is flat, and has no shape at all).
        n_valid = valid.sum(axis=1)
        ref = np.where(valid[:, :, None], sub, 0.0).sum(axis=1) / np.maximum(n_valid, 1)[:, None]
        ref[n_valid == 0] = np.nan
        a = np.where(valid[:, :, None], sub, 0.0)
        a = a - a.mean(axis=2, keepdims=True)
        b = np.where(np.isfinite(ref), ref, 0.0)
        b = b - b.mean(axis=1, keepdims=True)
        num = np.einsum("mdh,mh->md", np.nan_to_num(a), np.nan_to_num(b))
        sa = np.sqrt(np.einsum("mdh,mdh->md", np.nan_to_num(a), np.nan_to_num(a)))
        sb = np.sqrt(np.einsum("mh,mh->m", np.nan_to_num(b), np.nan_to_num(b)))
        with np.errstate(invalid="ignore", divide="ignore"):
            c = num / (sa * sb[:, None])
            fl = sa / sb[:, None]
        c = np.where(sa <= 1e-12, 0.0, c)  # a perfectly flat day has no shape at all
        c = np.where(valid & (sb[:, None] > 1e-12), c, np.nan)
        corr[:, cols] = c
        num_r = np.einsum("mdh,mh->md", a, b[:, ::-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            rc = np.where(sa <= 1e-12, 0.0, num_r / (sa * sb[:, None]))
        rcorr[:, cols] = np.where(valid & (sb[:, None] > 1e-12), rc, np.nan)
        flat[:, cols] = np.where(valid, fl, np.nan)
    # The usual agreement is an upper quantile: an anomalous shape may cover most of the period.
    # The run is found on corr − ½·(mirrored corr): a reversed day loses on both counts, a flat day
    # on the first.
    stat = corr - 0.5 * np.nan_to_num(rcorr)
    usual = row_quantile(corr, 0.8)
    usual_stat = row_quantile(stat, 0.8)
    smooth = rolling_mean(stat, window)
    low = np.isfinite(smooth) & (smooth < (usual_stat - drop)[:, None])
    best_len, start, end, in_run = longest_true_span(low)
    during = np.where(best_len > 0, _masked_mean(corr, in_run), np.nan)
    fl_during = np.where(best_len > 0, _masked_mean(flat, in_run), 1.0)
    rev_during = np.where(best_len > 0, _masked_mean(rcorr, in_run), np.nan)
    stat_during = np.where(best_len > 0, _masked_mean(stat, in_run), np.nan)
    score = np.where(best_len > 0, np.clip(usual_stat - stat_during, 0.0, 2.0) * np.minimum(best_len / 14.0, 1.0), 0.0)
    score = np.nan_to_num(score)
    return ProfileChange(corr, flat, start, end, score, usual, during,
                         np.asarray(np.nan_to_num(rev_during, nan=-1.0) > np.maximum(np.nan_to_num(during), 0.3)),
                         np.asarray(np.nan_to_num(fl_during, nan=1.0) < 0.5))


def event_drop(
    event_meter: IntArray, event_day: IntArray, event_weight: FloatArray, ratio: FloatArray, span: int = 14
) -> tuple[FloatArray, FloatArray]:
    """Per event, the fall of consumption after it: mean ratio over ``span`` days before minus after.

    Returns ``(drop per event, score per meter)``; a meter's score is the highest
    ``weight × (0.5 + drop)`` of its events, capped at 1 — an event alone counts half, an event
    followed by a sustained drop counts fully.
    """
    m, d = ratio.shape
    drops = np.zeros(len(event_meter))
    score = np.zeros(m)
    for k, (i, day, w) in enumerate(zip(event_meter, event_day, event_weight, strict=True)):
        if w <= 0:
            continue
        before = ratio[i, max(0, day - span): max(0, day)]
        after = ratio[i, min(d, day + 1): min(d, day + 1 + span)]
        b = float(np.nanmean(before)) if np.isfinite(before).any() else 1.0
        a = float(np.nanmean(after)) if np.isfinite(after).any() else b
        drops[k] = max(0.0, min(1.0, b - a))
        score[i] = max(score[i], min(1.0, w * (0.5 + drops[k])))
    return drops, score


def reverse_share(daily_import: FloatArray, daily_export: FloatArray | None, import_only: BoolArray) -> FloatArray:
    """Export (or reverse-flow) energy over import energy, for import-only meters (0 elsewhere)."""
    if daily_export is None:
        return np.zeros(daily_import.shape[0])
    exp = np.nansum(np.clip(daily_export, 0, None), axis=1)
    imp = np.nansum(np.clip(daily_import, 0, None), axis=1)
    share = exp / np.maximum(imp + exp, 1e-9)
    return np.where(import_only, share, 0.0)


@dataclass
class Balance:
    """Energy balance per area: feeder minus customers minus the technical-loss baseline.

    ``ratio`` (areas × days) is the loss share of the feeder, ``baseline`` the fitted technical
    share, ``residual`` the loss above it in energy units (signed), ``excess`` its positive part,
    ``score`` per area the mean excess share over its worst 30 days.
    """

    ratio: FloatArray
    baseline: FloatArray
    residual: FloatArray
    excess: FloatArray
    score: FloatArray


def energy_balance(feeder: FloatArray, customers: FloatArray, technical_pct: FloatArray | None = None) -> Balance:
    """Fit each area's technical loss (share a + b·load²) on its lower envelope; the rest is excess.

    ``feeder`` and ``customers`` are areas × days (NaN missing). Technical losses grow with the
    square of the load, so a constant share would mark every winter as theft. The fit is least
    squares, refitted twice on the days at or below the 25th percentile of residuals (theft only
    ever adds to the loss, and may last most of the period). ``technical_pct`` (per area, NaN
    unknown) floors the baseline.
    """
    a_n, d = feeder.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (feeder - customers) / feeder
    baseline = np.full((a_n, d), np.nan)
    for a in range(a_n):
        ok = np.isfinite(ratio[a]) & (feeder[a] > 0)
        if ok.sum() < 5:
            if technical_pct is not None and np.isfinite(technical_pct[a]):
                baseline[a] = technical_pct[a] / 100.0
            continue
        load = feeder[a] / np.nanmean(feeder[a][ok])
        x = np.column_stack([np.ones(d), load**2])
        keep = ok.copy()
        coef = np.zeros(2)
        for _ in range(3):
            # Physical bounds: technical losses are a share in [0, 25 %] at no load and grow with the
            # load (b ≥ 0, at most 10 % at the mean load). Without them, a theft that follows the
            # load (a business stealing on weekdays) would be fitted as technical loss.
            coef = box_lstsq2(x[keep], ratio[a][keep], (0.0, 0.0), (0.25, 0.10))
            res = ratio[a] - x @ coef
            keep = ok & (res <= np.nanpercentile(res[ok], 25))
            if keep.sum() < 3:
                break
        # The fit follows the lower envelope (theft may cover most days); lift it to the centre
        # of the lowest quarter of days, where honest days' noise sits.
        res = ratio[a] - x @ coef
        lift = float(np.nanmedian(res[ok & (res <= np.nanpercentile(res[ok], 25))]))
        baseline[a] = x @ coef + lift
        if technical_pct is not None and np.isfinite(technical_pct[a]):
            baseline[a] = np.maximum(baseline[a], technical_pct[a] / 100.0)
    residual = (ratio - baseline) * feeder
    excess = np.clip(np.nan_to_num(residual), 0.0, None)
    share = np.nan_to_num(ratio - baseline)
    k = min(30, d)
    score = np.sort(share, axis=1)[:, d - k:].mean(axis=1) if d else np.zeros(a_n)
    return Balance(ratio, baseline, residual, excess, score)


def balance_coincidence(
    deficit: FloatArray, meters: IntArray, area_of: IntArray, residual: FloatArray
) -> FloatArray:
    """Share of each customer's missing energy that its area's unexplained loss accounts for.

    ``deficit`` (rows × days) is the energy missing from the low run of the customers in
    ``meters`` (0 outside the run), ``area_of`` the area row per meter (−1 none) and ``residual``
    areas × days the feeder's loss above the technical baseline (signed). Per area, the residual
    is regressed on the deficits of its customers, coefficients bounded to [0, 1], with a free
    intercept: a thief's drop reappears at the feeder (coefficient near 1); a vacant house lacks
    energy the feeder never delivered, and a neighbour's theft that started earlier is carried
    by the neighbour's own column (coefficient near 0). Returns the share (0–1) per row.
    """
    from scipy.optimize import lsq_linear

    share = np.zeros(len(meters))
    areas = area_of[meters]
    for a in np.unique(areas[areas >= 0]):
        rows = np.flatnonzero(areas == a)
        y = residual[a]
        ok = np.isfinite(y)
        if ok.sum() < 10:
            continue
        x = np.column_stack([deficit[rows].T, np.ones(len(y))])[ok]
        lo = np.r_[np.zeros(len(rows)), -np.inf]
        hi = np.r_[np.ones(len(rows)), np.inf]
        fit = lsq_linear(x, y[ok], bounds=(lo, hi), method="bvls" if len(rows) < 30 else "trf")
        share[rows] = np.clip(fit.x[: len(rows)], 0.0, 1.0)
    return share


def peer_outlier(level: FloatArray, groups: IntArray, min_group: int = 5) -> FloatArray:
    """How far below its peers (same class and area) a meter's normal level is, in robust z units (≥ 0)."""
    z = np.zeros(level.shape[0])
    lg = np.log(np.where(level > 0, level, np.nan))
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        vals = lg[rows]
        ok = np.isfinite(vals)
        if ok.sum() < min_group:
            continue
        med = np.median(vals[ok])
        mad = 1.4826 * np.median(np.abs(vals[ok] - med)) + 1e-6
        z[rows] = np.nan_to_num(np.clip((med - vals) / mad, 0.0, None))
    return z


def silence_when_high(values: FloatArray, season: FloatArray) -> IntArray:
    """Silent (NaN) days on days when the meter's seasonal index is above its median."""
    med = np.median(season, axis=1, keepdims=True)
    return (~np.isfinite(values) & (season > med)).sum(axis=1).astype(np.int64)


def longest_true_run(mask: BoolArray) -> IntArray:
    """Length of the longest run of True per row."""
    return longest_true_span(mask)[0]


def longest_true_span(mask: BoolArray) -> tuple[IntArray, IntArray, IntArray, BoolArray]:
    """Per row, the longest run of True (the first when tied).

    Returns its length, start and end (exclusive; -1 when there is none) and a mask of its days.
    """
    m, d = mask.shape
    best_len = np.zeros(m, dtype=np.int64)
    best_end = np.full(m, -1, dtype=np.int64)
    cur = np.zeros(m, dtype=np.int64)
    for day in range(d):
        cur = np.where(mask[:, day], cur + 1, 0)
        better = cur > best_len
        best_len = np.where(better, cur, best_len)
        best_end = np.where(better, day + 1, best_end)
    start = np.where(best_len > 0, best_end - best_len, -1)
    end = np.where(best_len > 0, best_end, -1)
    days = np.arange(d)[None, :]
    return best_len, start, end, (days >= start[:, None]) & (days < end[:, None])
