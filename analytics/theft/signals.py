"""Theft signals: pure, vectorised functions over arrays of meters × days.

Conventions: ``daily`` is a float array (meters × days) of recorded consumption per day, ``NaN``
where nothing was read; ``hourly`` (meters × days × 24) is the recorded consumption per hour when
interval data exists. Every function returns arrays (one value per meter, or per meter and day);
none touches a database or a file, so each is unit-tested on a small hand-built fleet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from releve.arrays import BoolArray, FloatArray, IntArray

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
    """Quantile ``q`` of each row ignoring NaN (NaN for an all-NaN row); ±inf count as missing.

    Linear interpolation, as numpy's default (``v_lo + (v_hi − v_lo) · frac``); the two order
    statistics come from :func:`row_ranks` (a partition, not a sort, of the rows). ``x`` is
    copied with ±inf as NaN only when it holds an infinity (rarely: the copy is a fleet-sized
    temporary).
    """
    x = np.asarray(x, dtype=float)
    if np.isinf(x).any():
        x = np.where(np.isfinite(x), x, np.nan)
    n = x.shape[1] - np.count_nonzero(np.isnan(x), axis=1)
    pos = q * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)

    def ranks(c: int) -> tuple[int, int]:
        below = int(np.floor(q * max(c - 1, 0)))
        return below, min(below + 1, max(c - 1, 0))

    v_lo, v_hi = row_ranks(x, n, ranks)
    out = v_lo + (v_hi - v_lo) * (pos - lo)
    return np.where(n > 0, out, np.nan)


#: :func:`row_ranks` partitions rows at least this long at both ranks at once.
PARTITION_BOTH = 2_048

#: :func:`row_ranks` looks for ranks among a row's largest values only (:func:`_upper_ranks`) when at
#: most one in this many of its values are at or above them (a 99th percentile, not a median).
UPPER_SHARE = 32


def row_ranks(
    x: FloatArray, n: IntArray, ranks: Callable[[int], tuple[int, int]], overwrite: bool = False
) -> tuple[FloatArray, FloatArray]:
    """Per row, the values at ranks ``ranks(n)`` (``a`` and ``a`` or ``a + 1``) of its values sorted.

    ``n`` is each row's number of values that are not NaN (NaN sort last). Ranks among a row's
    largest values (an upper percentile) come from those values only (:func:`_upper_ranks`). The
    other rows are grouped by count, as the rows of the same count share their ranks: each
    count's rows are partitioned once at ``a`` and ``b`` (``np.partition``: the values a full
    sort puts there, in linear time). Rows without a value give NaN. ``overwrite``: ``x`` is the
    caller's scratch copy, which may be reordered within its rows (no copy of it is made).
    """
    m = x.shape[0]
    w = x.shape[1] if x.ndim == 2 else 0
    first = np.full(m, np.nan)
    second = np.full(m, np.nan)
    if m == 0:
        return first, second
    counts, inverse = np.unique(n, return_inverse=True)
    pairs = [ranks(int(c)) if c > 0 else (0, 0) for c in counts]
    a = np.array([p[0] for p in pairs], dtype=np.int64)[inverse.reshape(-1)]
    b = np.array([p[1] for p in pairs], dtype=np.int64)[inverse.reshape(-1)]
    todo = n > 0
    upper = todo & ((n - a) * UPPER_SHARE <= w)
    if upper.any():
        todo &= ~_upper_ranks(x, n, a, b, upper, first, second)
    if not todo.any():
        return first, second
    whole = bool(todo.all())
    rows_all = np.arange(m) if whole else np.flatnonzero(todo)
    order = rows_all[np.argsort(n[rows_all], kind="stable")]
    counts, starts = np.unique(n[order], return_index=True)
    for c, lo, hi in zip(counts, starts, np.r_[starts[1:], order.size][: counts.size], strict=True):
        ra, rb = ranks(int(c))
        rows: slice | IntArray = slice(None) if whole and counts.size == 1 else order[lo:hi]
        # A group's rows are a copy (x[rows]), partitioned in place; the whole x is copied unless scratch.
        part = (x if overwrite else x.copy()) if isinstance(rows, slice) else x[rows]
        # Along long rows one partition at both ranks costs less than one at ``a`` and a minimum
        # right of it; along short rows (a few hundred values) it costs more.
        both = rb != ra and w >= PARTITION_BOTH
        part.partition((ra, rb) if both else ra, axis=1)
        first[rows] = part[:, ra]
        second[rows] = part[:, rb] if both or rb == ra else np.fmin.reduce(part[:, ra + 1 :], axis=1)
    return first, second


def _upper_ranks(
    x: FloatArray, n: IntArray, a: IntArray, b: IntArray, rows: BoolArray, first: FloatArray, second: FloatArray
) -> BoolArray:
    """:func:`row_ranks` of ``rows`` whose ranks are among their few largest values; returns the rows done.

    A row's ``k = n − a`` largest values hold its ranks ``a`` and ``b``. Split the row's columns
    into ``B ≥ k`` sets: at least ``k`` of its values are at or above the ``k``-th largest of
    the sets' maxima, so every one of its ``k`` largest values is too, and among those
    candidates (a few times ``k``) they are the ``k`` largest still. The candidates are sorted
    (a row's share of them, not its whole width); a row with too many (ties at the threshold,
    all its values alike) or too few sets with a value is left to the partition.
    """
    idx = np.flatnonzero(rows)
    sub = x if idx.size == x.shape[0] else x[idx]
    k = (n - a)[idx]
    w = sub.shape[1]
    sets = max(256, 4 * int(k.max()))
    depth = w // sets
    done = np.zeros(x.shape[0], dtype=bool)
    if depth < 8:
        return done
    # The sets are strided (columns j, j + sets, j + 2·sets…): one elementwise maximum per layer,
    # instead of a reduction along short rows.
    top = sub[:, :sets].copy()
    for layer in range(1, depth):
        np.fmax(top, sub[:, layer * sets : (layer + 1) * sets], out=top)  # NaN only where a set has no value
    top.sort(axis=1)  # NaN last
    filled = sets - np.count_nonzero(np.isnan(top), axis=1)
    ok = filled >= k
    floor = top[np.arange(idx.size), np.where(ok, filled - k, 0)]
    with np.errstate(invalid="ignore"):
        cand = sub >= floor[:, None]  # NaN is no candidate
    size = np.count_nonzero(cand, axis=1)
    ok &= size <= 4 * k + 64
    if not ok.any():
        return done
    if not ok.all():
        cand[~ok] = False
        size = np.where(ok, size, 0)
    width = int(size.max())
    # Each row's candidates right-aligned after −inf: its k largest are then the last k columns.
    packed = np.full((idx.size, width), -np.inf)
    ends = np.cumsum(size)
    shift = np.repeat(width - ends, size)  # each candidate's packed column is its flat index + shift
    flat = np.arange(int(ends[-1])) + shift
    packed[np.repeat(np.arange(idx.size), size), flat] = sub[cand]
    packed.sort(axis=1)
    col_a = np.where(ok, width - k, 0)
    r = np.arange(idx.size)
    va = packed[r, col_a]
    vb = packed[r, col_a + (b[idx] - a[idx])]
    first[idx[ok]] = va[ok]
    second[idx[ok]] = vb[ok]
    done[idx[ok]] = True
    return done


def nanmedian_rows(x: FloatArray, overwrite: bool = False) -> FloatArray:
    """``np.nanmedian(x, axis=1)`` to the bit (the two middle values' sum over 2), without its sort or warnings.

    ``overwrite``: ``x`` is a scratch copy that may be reordered within its rows.
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[1] - np.count_nonzero(np.isnan(x), axis=1)
    lo, hi = row_ranks(x, n, lambda c: ((c - 1) // 2, c // 2), overwrite=overwrite)
    return (lo + hi) / 2.0


def _nanmedian_rows(x: FloatArray) -> FloatArray:
    """Median of each row ignoring NaN (NaN for an all-NaN row), without warnings."""
    return row_quantile(x, 0.5)


def box_lstsq2(x: FloatArray, y: FloatArray, lo: tuple[float, float], hi: tuple[float, float]) -> FloatArray:
    """Least squares ``y ≈ x @ c`` for two coefficients bounded to ``[lo, hi]`` (exact, closed form).

    The optimum is the unconstrained one when it is inside the box, else on an edge of it: every
    edge (one coefficient at a bound, the other solved and clipped) and corner is tried.
    """
    best = np.array([_clip(0.0, lo[0], hi[0]), _clip(0.0, lo[1], hi[1])])
    best_sse = np.inf
    cands: list[np.ndarray] = []
    sol, *_ = np.linalg.lstsq(x, y, rcond=None)
    cands.append(sol)
    for j in (0, 1):
        other = 1 - j
        den = float(x[:, other] @ x[:, other])
        for bound in (lo[j], hi[j]):
            rest = y - x[:, j] * bound
            c = np.empty(2)
            c[j] = bound
            c[other] = _clip(float(x[:, other] @ rest) / den if den > 0 else 0.0, lo[other], hi[other])
            cands.append(c)
    for c in cands:
        if lo[0] - 1e-12 <= c[0] <= hi[0] + 1e-12 and lo[1] - 1e-12 <= c[1] <= hi[1] + 1e-12:
            sse = float(((y - x @ c) ** 2).sum())
            if sse < best_sse:
                best, best_sse = c, sse
    return best


def _clip(v: float, lo: float, hi: float) -> float:
    """``np.clip`` of one number (at a tenth of its cost; NaN stays NaN)."""
    return min(max(v, lo), hi)


def _masked_mean(x: FloatArray, mask: BoolArray) -> FloatArray:
    """Row means of ``x`` over ``mask`` ignoring NaN (NaN where nothing is left)."""
    ok = mask & np.isfinite(x)
    n = ok.sum(axis=1)
    s = np.where(ok, x, 0.0).sum(axis=1)
    return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def rolling_mean(x: FloatArray, window: int) -> FloatArray:
    """Centred rolling mean along the last axis, ignoring NaN (NaN where the window holds nothing)."""
    ok = np.isfinite(x)
    n = x.shape[-1]
    half = window // 2
    # Cumulative sums from 0, their first value repeated ``half`` times before and their last
    # ``window − half`` times after: a window's two ends are then two shifted slices (ends clipped
    # to the series, as the window is).
    width = n + 1 + window
    cs = np.zeros((*x.shape[:-1], width))
    cn = np.zeros((*x.shape[:-1], width), dtype=np.int64)
    np.cumsum(np.where(ok, x, 0.0), axis=-1, out=cs[..., half + 1 : half + 1 + n])
    np.cumsum(ok, axis=-1, out=cn[..., half + 1 : half + 1 + n])
    cs[..., half + 1 + n :] = cs[..., half + n : half + 1 + n]
    cn[..., half + 1 + n :] = cn[..., half + n : half + 1 + n]
    s = cs[..., window : window + n] - cs[..., :n]
    c = cn[..., window : window + n] - cn[..., :n]
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
        # Day by day over days × meters copies: a day is then one contiguous row, not a column
        # strided across the fleet (a cache line per meter and day).
        by_day = np.ascontiguousarray(v.T)
        caught = np.zeros((d, m), dtype=bool)
        silent_by_day = np.ascontiguousarray(silent.T)
        for day in range(d):
            x = by_day[day]
            quiet = ~np.isfinite(x) | (x <= 1e-9)
            jump = ~quiet & (run > 0) & (x > 1.5 * med)
            if jump.any():
                for i in np.flatnonzero(jump):
                    length = int(run[i])
                    share = x[i] / (length + 1)
                    by_day[day - length : day + 1, i] = share
                    caught[day - length : day + 1, i] = True
                    frozen_days[i] += int(zrun[i])
            ended = ~quiet & (run > 0) & ~jump
            if ended.any():
                unrecovered[ended] += srun[ended]
            zero = np.isfinite(x) & (x <= 1e-9)
            run = np.where(quiet, run + 1, 0)
            zrun = np.where(zero, zrun + 1, np.where(quiet, zrun, 0))
            srun = np.where(quiet, srun + silent_by_day[day], 0)
        v = np.ascontiguousarray(by_day.T)
        catch_up = np.ascontiguousarray(caught.T)
    spikes = np.isfinite(v) & (v > spike_factor * np.maximum(med, 1e-9)[:, None]) & (med[:, None] > 0)
    index_faults += spikes.sum(axis=1)
    v[spikes] = np.nan
    return Cleaned(v, catch_up, frozen_days, index_faults, rollovers, silent_days, unrecovered)


#: Meters per block where a whole-fleet signal works meter by meter: each temporary is then a block's
#: (8 MB at 365 days), reused by the allocator, instead of a fleet-sized array that the kernel must
#: hand over page by page, zeroed, each time (at 100,000 × 365 a third of the ranking's time).
ROWS = 2_048


def seasonal_index(values: FloatArray, groups: IntArray) -> FloatArray:
    """Per group and day, the median of members' consumption relative to their own median.

    Returns an array (groups × days); it carries the season, the week (commercial Sundays) and
    holidays, so dividing by it leaves each meter's own level. Days where the group has no data
    get 1.

    Each group's relative consumption is laid out days × members, a block of :data:`ROWS`
    meters at a time (no meters × days temporary besides that layout), so that each day's median
    runs along one contiguous row.
    """
    m, d = values.shape
    n_groups = int(groups.max()) + 1 if groups.size else 0
    sizes = np.bincount(groups, minlength=n_groups) if groups.size else np.zeros(0, dtype=np.int64)
    by_day = [np.empty((d, int(size))) for size in sizes]
    filled = np.zeros(n_groups, dtype=np.int64)
    for a in range(0, m, ROWS):
        block = values[a : a + ROWS]
        med = _nanmedian_rows(np.where(block > 0, block, np.nan))
        rel = block / np.where(med > 0, med, np.nan)[:, None]
        g_block = groups[a : a + ROWS]
        for g in np.unique(g_block):
            members = rel[g_block == g]
            by_day[g][:, filled[g] : filled[g] + len(members)] = members.T
            filled[g] += len(members)
    out = np.ones((n_groups, d))
    for g in range(n_groups):
        if sizes[g] == 0:
            continue
        ok = np.isfinite(by_day[g]).any(axis=1)
        if ok.any():
            out[g, ok] = nanmedian_rows(by_day[g] if ok.all() else by_day[g][ok])
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
        filled = np.where(valid[:, :, None], sub, 0.0)
        ref = filled.sum(axis=1) / np.maximum(n_valid, 1)[:, None]
        ref[n_valid == 0] = np.nan
        a = filled - filled.mean(axis=2, keepdims=True)
        del filled
        b = np.where(np.isfinite(ref), ref, 0.0)
        b = b - b.mean(axis=1, keepdims=True)
        # np.nan_to_num changes nothing in finite arrays (a is, unless a share overflowed): no copies then.
        a0 = a if np.isfinite(a).all() else np.nan_to_num(a)
        b0 = b if np.isfinite(b).all() else np.nan_to_num(b)
        num = np.einsum("mdh,mh->md", a0, b0)
        sa = np.sqrt(np.einsum("mdh,mdh->md", a0, a0))
        sb = np.sqrt(np.einsum("mh,mh->m", b0, b0))
        del a0
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
    return ProfileChange(
        corr,
        flat,
        start,
        end,
        score,
        usual,
        during,
        np.asarray(np.nan_to_num(rev_during, nan=-1.0) > np.maximum(np.nan_to_num(during), 0.3)),
        np.asarray(np.nan_to_num(fl_during, nan=1.0) < 0.5),
    )


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
        before = ratio[i, max(0, day - span) : max(0, day)]
        after = ratio[i, min(d, day + 1) : min(d, day + 1 + span)]
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


def percentile_1d(v: FloatArray, q: float) -> float:
    """``np.percentile(v, q)`` (linear) to the bit for a 1-D array of finite values, without its overhead.

    Per area and day loop of :func:`energy_balance`: numpy's general quantile machinery costs
    about 100 µs a call. The same order statistics and numpy's interpolation (from the upper
    value when the fraction is at least ½).
    """
    n = v.size
    if n < 2:
        return float(np.percentile(v, q))
    virtual = (n - 1) * (q / 100)
    below = int(np.floor(virtual))
    if below >= n - 1:
        return float(np.max(v))
    s = np.partition(v, below)
    a = float(s[below])
    b = float(np.min(s[below + 1 :]))
    g = virtual - below
    diff = b - a
    return b - diff * (1 - g) if g >= 0.5 else a + diff * g


def median_1d(v: FloatArray) -> float:
    """``np.median(v)`` to the bit for a 1-D array of finite values (the two middle values' sum over 2)."""
    n = v.size
    if n == 0:
        return float("nan")
    s = np.partition(v, (n - 1) // 2)
    a = float(s[(n - 1) // 2])
    return a if n % 2 else (a + float(np.min(s[n // 2 :]))) / 2


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
            keep = ok & (res <= percentile_1d(res[ok], 25))
            if keep.sum() < 3:
                break
        # The fit follows the lower envelope (theft may cover most days); lift it to the centre
        # of the lowest quarter of days, where honest days' noise sits.
        res = ratio[a] - x @ coef
        lift = median_1d(res[ok & (res <= percentile_1d(res[ok], 25))])
        baseline[a] = x @ coef + lift
        if technical_pct is not None and np.isfinite(technical_pct[a]):
            baseline[a] = np.maximum(baseline[a], technical_pct[a] / 100.0)
    residual = (ratio - baseline) * feeder
    excess = np.clip(np.nan_to_num(residual), 0.0, None)
    share = np.nan_to_num(ratio - baseline)
    k = min(30, d)
    score = np.sort(share, axis=1)[:, d - k :].mean(axis=1) if d else np.zeros(a_n)
    return Balance(ratio, baseline, residual, excess, score)


def balance_coincidence(deficit: FloatArray, meters: IntArray, area_of: IntArray, residual: FloatArray) -> FloatArray:
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
    for rows in _group_rows(groups):
        vals = lg[rows]
        ok = np.isfinite(vals)
        if ok.sum() < min_group:
            continue
        med = np.median(vals[ok])
        mad = 1.4826 * np.median(np.abs(vals[ok] - med)) + 1e-6
        z[rows] = np.nan_to_num(np.clip((med - vals) / mad, 0.0, None))
    return z


def _group_rows(groups: IntArray) -> list[IntArray]:
    """The rows of each group, groups in increasing order and rows in increasing order within each."""
    order = np.argsort(groups, kind="stable")
    _, starts = np.unique(groups[order], return_index=True)
    return np.split(order, starts[1:]) if order.size else []


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
    by_day = np.ascontiguousarray(mask.T)  # a day is a contiguous row, not a column across the fleet
    for day in range(d):
        cur = np.where(by_day[day], cur + 1, 0)
        better = cur > best_len
        best_len = np.where(better, cur, best_len)
        best_end = np.where(better, day + 1, best_end)
    start = np.where(best_len > 0, best_end - best_len, -1)
    end = np.where(best_len > 0, best_end, -1)
    days = np.arange(d)[None, :]
    return best_len, start, end, (days >= start[:, None]) & (days < end[:, None])


# ----------------------------------------------------------------------- interval energy balance


#: :func:`nanquantile_last` partitions slices at least this long instead of sorting them (along a
#: year of days a partition costs less; along four weeks numpy's sort of short rows costs less).
PARTITION_SLICES = 128


def _nanquantile_by_ranks(x: FloatArray, q: float) -> FloatArray:
    """:func:`nanquantile_last` from the two order statistics :func:`row_ranks` finds (same indices, same lerp)."""
    x = np.asarray(x, dtype=float)
    width = x.shape[-1]
    flat = x.reshape(-1, width)
    scratch = not np.may_share_memory(flat, x)  # reshape copied a moved axis: partitioned in place
    n = width - np.count_nonzero(np.isnan(flat), axis=1)

    def index(c: int) -> tuple[int, int]:
        """The two indices numpy takes for ``c`` values: below the virtual index, and the next (itself at the end)."""
        virtual = (c - 1) * q
        at_end = virtual >= c - 1
        lo = c - 1 if at_end else int(np.floor(virtual))
        return lo, lo if at_end else lo + 1

    a, b = row_ranks(flat, n, index, overwrite=scratch)
    virtual = (n - 1) * q
    prev = np.where(virtual >= n - 1, n - 1, np.floor(virtual))
    prev = np.where(virtual < 0, 0, prev)
    gamma = virtual - prev
    diff = b - a
    out = np.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)
    return np.where(n > 0, out, np.nan).reshape(x.shape[:-1])


def nanquantile_last(x: FloatArray, q: float) -> FloatArray:
    """``np.nanquantile(x, q, axis=-1)`` to the bit, without its Python loop over the other axes.

    numpy's own call drops each slice's NaN and interpolates slice by slice (``apply_along_axis``):
    at 2,000 meters × 365 four-week windows that loop was most of the interval balance. Here one
    sort (NaN last) and numpy's index and interpolation arithmetic (``_lerp``: from the upper
    value when the fraction is ≥ 0.5) over every slice at once; NaN for an all-NaN slice, without
    the warning. Slices of at least :data:`PARTITION_SLICES` values take their two order
    statistics from :func:`row_ranks` instead (a partition, not a sort).
    """
    if x.shape[-1] >= PARTITION_SLICES:
        return _nanquantile_by_ranks(x, q)
    s = np.sort(x, axis=-1)
    n = (~np.isnan(x)).sum(axis=-1)
    virtual = (n - 1) * q  # numpy's "linear" virtual index
    prev = np.floor(virtual)
    above = virtual >= n - 1
    prev = np.where(above, n - 1, prev)
    below = virtual < 0
    prev = np.where(below, 0, prev)
    gamma = virtual - prev
    lo_i = prev.astype(np.intp)
    hi_i = np.where(above | below, lo_i, lo_i + 1)
    a = np.take_along_axis(s, np.maximum(lo_i, 0)[..., None], axis=-1)[..., 0]
    b = np.take_along_axis(s, np.maximum(hi_i, 0)[..., None], axis=-1)[..., 0]
    diff = b - a
    out = np.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)
    return np.where(n > 0, out, np.nan)


def nanmedian_last(x: FloatArray) -> FloatArray:
    """``np.nanmedian(x, axis=-1)`` to the bit, for any number of axes (:func:`nanmedian_rows` on the slices).

    Along a short axis numpy goes through masked arrays (``np.ma.median``), several passes and
    copies of the whole array; NaN for an all-NaN slice, without the warning.
    """
    x = np.asarray(x, dtype=float)
    flat = x.reshape(-1, x.shape[-1])  # a copy when the last axis was moved there: scratch then
    return nanmedian_rows(flat, overwrite=not np.may_share_memory(flat, x)).reshape(x.shape[:-1])


def clean_hourly(hourly: FloatArray, factor: float = 5.0) -> tuple[FloatArray, FloatArray]:
    """Hours above ``factor`` × the meter's 99.5th percentile hour become NaN (spikes, scale jumps).

    A spike is energy recorded that the feeder never delivered; left in, it would read as a meter
    giving energy back and blur every hourly signal. Returns the cleaned array and, per meter,
    the number of hours removed.
    """
    m = hourly.shape[0]
    top = row_quantile(hourly.reshape(m, -1), 0.995)
    with np.errstate(invalid="ignore"):
        spike = np.isfinite(hourly) & (hourly > factor * np.nan_to_num(top)[:, None, None]) & (top[:, None, None] > 0)
    out = np.where(spike, np.nan, hourly)
    return out, spike.reshape(m, -1).sum(axis=1).astype(float)


#: Regressors per meter in the interval balance: what a tampered meter's missing energy looks like in
#: time, built from the meter's own recorded load (see :func:`meter_regressors`).
REGRESSORS = ("scaled", "zeroed", "clipped", "reshaped", "shortfall", "short_day")


def usual_hour_profile(hourly: FloatArray, weekday: IntArray) -> FloatArray:
    """Per meter, day type (weekday / Saturday / Sunday) and hour: the median share of the day.

    ``hourly`` is meters × days × hours. The median over days, so that a reshaped profile covering
    a minority of the days does not move it. Rows sum to 1 (uniform where nothing is known).
    """
    m, _d, h = hourly.shape
    tot = hourly.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = hourly / tot[:, :, None]
    share[~(tot > 0)] = np.nan
    daytype = np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))
    out = np.full((m, 3, h), 1.0 / h)
    by_hour = np.moveaxis(share, 1, 2)  # meters × hours × days (a view)
    for t in range(3):
        cols = np.flatnonzero(daytype == t)
        if cols.size == 0:
            continue
        # The day type's days gathered hour by hour (one copy, each hour's days contiguous), then
        # partitioned in place; a meter's hour without a finite share is NaN however its median falls.
        sub = by_hour[:, :, cols]
        has = np.isfinite(sub).any(axis=2)
        med = np.where(has, nanmedian_rows(sub.reshape(m * h, cols.size), overwrite=True).reshape(m, h), np.nan)
        s = np.nansum(med, axis=1, keepdims=True)
        out[:, t, :] = np.where((s > 0) & np.isfinite(med), med / np.where(s > 0, s, 1.0), 1.0 / h)
    return out


#: Below this coefficient of variation of its usual hours a meter's own profile counts as flat.
FLAT_PROFILE = 0.1


def regressor_profile(
    hourly: FloatArray, weekday: IntArray, usual: FloatArray | None = None, area_of: IntArray | None = None
) -> FloatArray:
    """Per meter, the usual profile its regressors spread energy over (:func:`usual_hour_profile`, meters × 3 × 24).

    A meter whose usual day is flat (it has recorded a flattened day all along) has no shape of
    its own left to compare with: it gets the median usual profile of the other (not flat) meters
    of its area (``area_of``: each meter's area, −1 none), when there are at least three; with no
    ``area_of``, of all the meters of ``hourly``. Per area, the stand-in is the same whichever
    group of whole areas the ranking works on at once; a flat meter of an area with fewer than
    three others that are not flat, or of none, keeps its own. ``usual``: :func:`usual_hour_profile`
    of ``hourly`` when the caller has it already (not changed).
    """
    h = hourly.shape[2]
    prof = usual_hour_profile(hourly, weekday) if usual is None else usual.copy()
    flat = prof.std(axis=2).max(axis=1) * h < FLAT_PROFILE
    if not flat.any():
        return prof
    if area_of is None:
        if (~flat).sum() >= 3:
            prof[flat] = np.median(prof[~flat], axis=0)
        return prof
    for a in np.unique(area_of[flat & (area_of >= 0)]):
        mine = area_of == a
        if (mine & ~flat).sum() >= 3:
            prof[mine & flat] = np.median(prof[mine & ~flat], axis=0)
    return prof


def meter_regressors(hourly: FloatArray, weekday: IntArray, profile: FloatArray | None = None) -> FloatArray:
    """Per meter, the series its missing energy would follow under each tamper family (meters × 6 × days·hours).

    :func:`_regressor_series` stacked: see there.
    """
    m, d, h = hourly.shape
    return np.stack(_regressor_series(hourly, weekday, profile), axis=1).reshape(m, len(REGRESSORS), d * h)


def _regressor_series(hourly: FloatArray, weekday: IntArray, profile: FloatArray | None = None) -> list[FloatArray]:
    """The :data:`REGRESSORS` of each meter, one meters × days × hours array each.

    - ``scaled``: the recorded load itself (a share of the true load is taken: scaling, random
      scaling, progressive, intermittent; theft running since the first day included);
    - ``zeroed``: where the meter recorded zero, its usual load for that hour (zero windows,
      zeroing below a cut-off);
    - ``clipped``: where the meter sits at its own ceiling (within 3 % of the 99.5th percentile,
      hours at the ceiling at least 1 % of the time), its usual peak excess (capped peaks);
    - ``reshaped``: the day's recorded total spread over the usual profile, minus what was
      recorded (signed; flattened, reversed or randomised days lose shape, not energy). A meter
      whose usual profile is flat (coefficient of variation of its hours under
      :data:`FLAT_PROFILE`: a day flattened since before the data starts, or randomised around its
      mean) has no shape of its own left: the median usual profile of the other meters stands
      in for it;
    - ``shortfall``: the meter's normal day for the season (upper quartile of its day totals over
      the four weeks around) spread over the usual profile, less what was recorded, where positive
      (on/off theft: intermittent, short zero spells);
    - ``short_day``: the recorded hours scaled by how far the day fell short of that normal day
      (``x · clip(normal / day total − 1, 0, 4)``): a share taken on some days only (on/off weeks,
      a scaling that starts and stops) follows the day's own recorded shape, not the usual one. A
      real household's hours wander too far from its usual profile for ``shortfall`` to follow
      them; on the real-load bench this term took an intermittent thief's missing energy from
      the neighbours' loads that had shared it.

    Missing hours are 0 in every regressor (the balance rows where a meter is missing are dropped
    by the caller). ``profile`` is :func:`regressor_profile` of these meters, or of a larger group
    they belong to (whose not-flat meters then lend their shape to the flat ones of their area);
    by default the meters' own.
    """
    m = hourly.shape[0]
    x = np.nan_to_num(hourly)
    tot = x.sum(axis=2)
    prof = regressor_profile(hourly, weekday) if profile is None else profile
    daytype = np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))
    usual_share = prof[:, daytype, :]  # meters × days × hours
    pos = np.where(hourly > 0, hourly, np.nan)
    level = nanmedian_rows(pos.reshape(m, -1)) if np.isfinite(pos).any() else np.zeros(m)
    level = np.nan_to_num(level)
    usual_load = usual_share * nanmedian_rows(np.where(tot > 0, tot, np.nan))[:, None, None]
    usual_load = np.nan_to_num(usual_load)
    zeroed = np.where(np.isfinite(hourly) & (hourly <= 1e-9), np.maximum(usual_load, 0.25 * level[:, None, None]), 0.0)
    top = row_quantile(hourly.reshape(m, -1), 0.995)
    at_top = np.isfinite(hourly) & (hourly >= 0.97 * np.nan_to_num(top)[:, None, None]) & (top[:, None, None] > 0)
    share_top = at_top.reshape(m, -1).mean(axis=1)
    clipped = np.where(at_top & (share_top >= 0.01)[:, None, None], np.nan_to_num(top)[:, None, None], 0.0)
    reshaped = tot[:, :, None] * usual_share - x
    # The meter's own recent normal day: the upper quartile of its day totals over the 4 weeks around.
    day_tot = np.where(np.isfinite(hourly).all(axis=2), tot, np.nan)
    pad = np.pad(day_tot, ((0, 0), (14, 13)), constant_values=np.nan)
    win = np.lib.stride_tricks.sliding_window_view(pad, 28, axis=1)
    normal = np.nan_to_num(nanquantile_last(win, 0.75))
    shortfall = np.where(np.isfinite(hourly), np.clip(normal[:, :, None] * usual_share - x, 0.0, None), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        short = np.clip(normal / np.where(tot > 0, tot, np.nan) - 1.0, 0.0, 4.0)
    short_day = np.where(np.isfinite(hourly), x * np.nan_to_num(short)[:, :, None], 0.0)
    return [x, zeroed, clipped, reshaped, shortfall, short_day]


#: Honest regressors of the interval balance: what a meter whose clock runs an hour late or early
#: leaves in the residual (the feeder's hour minus the meter's, both of the same energy). They take
#: part in the fit, so a clock-shifted meter's residual is explained, but what they explain is never
#: put on the meter as missing energy.
HONEST_REGRESSORS = ("clock_late", "clock_early")


def clock_regressors(hourly: FloatArray) -> FloatArray:
    """Per meter, the residual a clock shift of one hour leaves (meters × 2 × days·hours, signed).

    A meter stamping every value an hour late records at hour t what was drawn at t − 1: the feeder
    saw at t what the meter records at t + 1, so the residual is ``x[t+1] − x[t]`` (``clock_late``);
    an hour early, ``x[t−1] − x[t]`` (``clock_early``). Both sum to nearly nothing over a day: a
    shifted clock moves energy, it does not lose any. 0 where the meter or its neighbour hour is
    missing.
    """
    return np.stack(_clock_series(hourly), axis=1)


def _clock_series(hourly: FloatArray) -> list[FloatArray]:
    """:func:`clock_regressors`' two series, meters × days·hours each."""
    m = hourly.shape[0]
    x = hourly.reshape(m, -1)
    nxt = np.full_like(x, np.nan)
    nxt[:, :-1] = x[:, 1:]
    prv = np.full_like(x, np.nan)
    prv[:, 1:] = x[:, :-1]
    late = np.nan_to_num(nxt - x)
    early = np.nan_to_num(prv - x)
    return [late, early]


@dataclass
class IntervalBalance:
    """The feeder residual at interval resolution attributed to its meters.

    ``attributed`` (meters × days) is the energy of the residual each meter's regressors explain per
    day (signed, summed over the day's hours); ``strength`` per meter the residual's sum of squares
    its regressors explain, over the noise variance left by the fit (an F-like statistic summed
    over windows: tens for chance, thousands for a thief); ``share`` the residual energy attributed
    to the meter (absolute) over its own recorded energy in the windows it was fitted in (a
    technical-loss crumb is a few %, a thief's missing energy tens of %); ``kind`` the regressor
    (:data:`REGRESSORS`) that explains most; ``windows`` how many windows selected the meter and
    ``first_day`` the first day of the first such window; ``technical`` (areas × days) the fitted
    technical loss and ``residual`` (areas × days) feeder − Σ meters.
    """

    attributed: FloatArray
    strength: FloatArray
    share: FloatArray
    kind: IntArray
    windows: IntArray
    first_day: IntArray
    technical: FloatArray
    residual: FloatArray

    @property
    def energy(self) -> FloatArray:
        """Positive energy of the residual attributed to each meter (the ``interval_energy`` feature)."""
        return np.asarray(np.clip(self.attributed, 0, None).sum(axis=1))


def robust_var(x: FloatArray, med: float | None = None) -> float:
    """Variance from the median absolute deviation (a few wild values do not inflate it); ``x`` finite.

    ``med``: ``median_1d(x)`` when the caller has it already.
    """
    med = median_1d(x) if med is None else med
    return max((1.4826 * median_1d(np.abs(x - med))) ** 2, 1e-12)


#: Up to this many runs of consecutive fitted hours, the interval balance copies its regressors at
#: them run by run (a slice copy each); beyond, one gather (:func:`numpy.take`).
MAX_RUNS = 64


def _day_sums(values: FloatArray, day: IntArray, hour: IntArray, n_days: int, h: int) -> FloatArray:
    """Per row of ``values`` (rows × hours, column j at ``day[j]``, ``hour[j]``; no pair twice), its day sums.

    Rows × ``n_days``, each day summed hour after hour from 0 as ``np.add.at`` into zeros sums it
    (the same bits: an hour that is not there adds +0.0, which changes no sum that starts from
    +0.0), in a scatter and ``h`` vector additions instead of one scalar addition per value.
    """
    buf = np.zeros((values.shape[0], h, n_days))
    buf[:, hour, day] = values
    out = np.zeros((values.shape[0], n_days))
    for j in range(h):
        out += buf[:, j]
    return out


def interval_balance(
    feeder: FloatArray,
    hourly: FloatArray,
    area_of: IntArray,
    weekday: IntArray,
    window: int = 28,
    min_f: float = 15.0,
    usual: FloatArray | None = None,
) -> IntervalBalance:
    """Attribute each area's hourly feeder residual to the meters whose shortfall matches it in time.

    ``feeder`` is areas × days × hours (NaN missing), ``hourly`` meters × days × hours, ``area_of``
    the area row of each meter (−1 none). Per area, the residual (feeder − Σ meters, over the hours
    where every meter and the feeder reported) is explained by:

    - the technical loss: a no-load part (constant) and a load part (∝ feeder²: I²R), never a
      share of the load, which would swallow a thief stealing a constant share of its own load;
      one pair for the whole period, so that a theft lasting a few windows cannot hide in it;
    - per window of ``window`` days, every meter's regressors (:func:`meter_regressors`) at once,
      non-negative least squares, so collinear households share only what they explain together;
      with them each meter's honest clock terms (:func:`clock_regressors`): a meter stamping an
      hour late leaves a residual a reshaped day would also explain, and it must not read as one.

    The two are fitted in turn (block coordinate descent, three rounds). Per meter and window, the
    sum of squares its terms explain over the robust variance of what is left is its strength;
    only the windows where it exceeds ``min_f`` make its ``share`` (noise windows leave crumbs on
    honest meters); those above 4 × ``min_f`` are the ``windows`` a reason names. No drop is needed
    first: a meter stealing since the first hour has its missing energy in the residual from the
    start. An honest meter explains nothing the feeder did not also deliver; vacancies and new
    appliances show at the feeder too and leave the residual alone. ``usual``:
    :func:`usual_hour_profile` of ``hourly`` when the caller has it already.
    """
    from scipy.optimize import nnls

    from analytics.theft.nnls import DesignNNLS

    m, d, h = hourly.shape
    n_areas = feeder.shape[0]
    # The flat meters' stand-in shape comes from their area's other meters (regressor_profile); the
    # regressors themselves are built one area at a time (an area's 8 series of each meter, not
    # the whole group's: 8 × the hourly array, fresh memory the kernel hands over page by page).
    profile = regressor_profile(hourly, weekday, usual, area_of=area_of)
    k_theft = len(REGRESSORS)  # the first k_theft are theft regressors, the rest honest ones
    k = k_theft + len(HONEST_REGRESSORS)
    attributed = np.zeros((m, d))
    strength = np.zeros(m)
    per_kind = np.zeros((m, k_theft))
    moved = np.zeros(m)
    own = np.zeros(m)
    windows = np.zeros(m, dtype=np.int64)
    first_day = np.full(m, -1, dtype=np.int64)
    technical = np.full((n_areas, d), np.nan)
    residual_out = np.full((n_areas, d), np.nan)
    for a in range(n_areas):
        rows = np.flatnonzero(area_of == a)
        if rows.size == 0:
            continue
        fa = feeder[a].reshape(-1)
        xa = hourly[rows].reshape(rows.size, -1)
        complete = np.isfinite(fa) & np.isfinite(xa).all(axis=0)
        resid = fa - np.nansum(xa, axis=0)
        residual_out[a] = np.where(np.isfinite(feeder[a]).all(axis=1), np.nansum(resid.reshape(d, h), axis=1), np.nan)
        if complete.sum() < 4 * h:
            continue
        scale = float(np.mean(fa[complete]))
        scale = scale if scale > 0 else 1.0
        tt = np.flatnonzero(complete)
        y = resid[tt] / scale
        load = fa[tt] / scale
        win = (tt // h) // window
        # Hours where meters recorded far more than the feeder delivered (a spike, a scale jump)
        # would swamp the fit: dropped, 12 robust sigmas below the rest of their window. Only
        # below: theft only ever adds to the residual, and a large one must stay in.
        sane = np.ones(tt.size, dtype=bool)
        for w in np.unique(win):
            sel = win == w
            med = median_1d(y[sel])
            sane[sel] = y[sel] - med >= -12.0 * np.sqrt(robust_var(y[sel], med))
        tt, y, load, win = tt[sane], y[sane], load[sane], win[sane]
        n_rows = tt.size
        tech = np.column_stack([np.ones(n_rows), load**2])
        # Each series taken at the fitted hours straight into the candidates (one copy, not a stack,
        # a concatenation, a selection and a division of copies: the same values).
        cand3 = np.empty((rows.size, k, n_rows))
        made = _regressor_series(hourly[rows], weekday, profile[rows]) + _clock_series(hourly[rows])
        # The fitted hours are a few runs of consecutive hours (all of them where nothing is
        # missing): copied run by run, as slices, rather than gathered hour by hour.
        cut = np.flatnonzero(np.diff(tt) != 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1, int(p)) for r, p in zip(np.split(tt, cut), np.r_[0, cut], strict=True)]
        # Each value divided by the scale on the way in (the same quotients), but the recorded load's:
        # its own energy is summed first.
        for j, one in enumerate(made):
            flat = one.reshape(rows.size, -1)
            to = 1.0 if j == 0 else scale
            if len(runs) <= MAX_RUNS:
                for first, end, at in runs:
                    np.divide(flat[:, first:end], to, out=cand3[:, j, at : at + end - first])
            else:
                np.take(flat, tt, axis=1, out=cand3[:, j])
                cand3[:, j] /= to
        del made
        # Summed hour after hour (a column-major copy), as over the selection's layout before: the same bits.
        own[rows] = np.nansum(np.asfortranarray(cand3[:, 0]), axis=1)
        cand3[:, 0] /= scale
        cand = cand3.reshape(rows.size * k, n_rows)  # candidates × rows
        blocks = [np.flatnonzero(win == w) for w in range(int(win.max()) + 1)]
        # Block coordinate descent: the technical pair over the whole period, then every window's
        # meter coefficients (non-negative least squares over all the area's meters at once, so
        # that collinear households share nothing they do not explain), three times over.
        # Each window's design (hours × candidates) and its live columns (a candidate that is zero
        # all window long explains nothing) are the same in every round: built once.
        fitted = [w for w, b in enumerate(blocks) if b.size >= 2 * h]
        # The fitted hours are in time order, so a window's hours are a run of them, a slice of
        # ``cand``. Its design is laid out hours-major (C order), as numpy lays out ``cand[:, hours]``:
        # the products below round as they did.
        span = {w: slice(int(blocks[w][0]), int(blocks[w][-1]) + 1) for w in fitted}
        designs = {w: np.ascontiguousarray(cand[:, span[w]].T) for w in fitted}  # the window's hours × candidates
        live = {w: np.flatnonzero(np.abs(designs[w]).sum(axis=0) > 0) for w in fitted}
        # Each window's solver keeps its design's Gram matrix and the last round's positive
        # coefficients (analytics.theft.nnls: scipy's solution to rounding, in a fraction of its time).
        solvers = {
            w: DesignNNLS(np.take(designs[w], live[w], axis=1), maxiter=30 * live[w].size)
            for w in fitted
            if live[w].size
        }
        coef_t, _ = nnls(tech, y)
        meter_fit = np.zeros(n_rows)
        coefs: list[np.ndarray] = [np.zeros(rows.size * k) for _ in blocks]
        for round_ in range(3):
            r_tech = y - tech @ coef_t
            before = np.zeros(rows.size * k)
            for w in fitted:
                b = blocks[w]
                sol = np.zeros(rows.size * k)
                if w in solvers:
                    if round_ == 0:  # a start: what the window before took (any start gives the same solution)
                        solvers[w].passive = before[live[w]] > 0
                    sol[live[w]] = solvers[w].solve(r_tech[b])
                coefs[w] = before = sol
                meter_fit[b] = designs[w] @ sol
            coef_t, _ = nnls(tech, y - meter_fit)
        res = y - tech @ coef_t - meter_fit
        tech_fit = (tech @ coef_t) * scale
        tech_day = np.full(d, np.nan)
        tech_sum = _day_sums(tech_fit[None, :], tt // h, tt % h, d, h)[0]
        seen = np.zeros(d, dtype=bool)
        seen[tt // h] = True
        tech_day[seen] = tech_sum[seen]
        technical[a] = tech_day
        for w, b in enumerate(blocks):
            if b.size < 2 * h or not coefs[w].any():
                continue
            sigma2 = robust_var(res[b])
            # Only the theft regressors put energy on the meter; the clock terms explain an honest
            # fault and stay in the fit. All the window's meters with a theft term at once.
            c = coefs[w].reshape(rows.size, k)[:, :k_theft]
            taken = np.flatnonzero((c > 0).any(axis=1))
            if taken.size == 0:
                continue
            i = rows[taken]
            series = cand3[taken, :k_theft, span[w]]  # meters × regressors × hours
            parts = series * c[taken][:, :, None]
            contrib = parts.sum(axis=1)
            per_kind[i] += (parts**2).sum(axis=2)
            rb = res[b]
            gain = ((rb + contrib) ** 2).sum(axis=1) - (rb**2).sum()
            up = gain > 0
            i, contrib, f = i[up], contrib[up], gain[up] / sigma2
            strength[i] += f
            clear = f >= min_f  # energy only from windows where the meter stands out of the noise
            moved[i[clear]] += np.abs(contrib[clear]).sum(axis=1) * scale
            named = f >= 4 * min_f  # the windows a reason names: clearly taken
            windows[i[named]] += 1
            day0 = int(tt[b[0]] // h)
            first_day[i[named]] = np.where(first_day[i[named]] < 0, day0, np.minimum(first_day[i[named]], day0))
            day = tt[b] // h
            span_days = int(day[-1]) + 1 - day0
            attributed[i, day0 : day0 + span_days] += _day_sums(contrib * scale, day - day0, tt[b] % h, span_days, h)
    # A meter that records almost nothing would get a huge share from a crumb of noise: its energy
    # is floored at a quarter of its area's typical meter.
    floor = np.zeros(m)
    for a in range(n_areas):
        rows = np.flatnonzero(area_of == a)
        if rows.size:
            floor[rows] = 0.25 * float(np.median(own[rows]))
    share = np.where(own > 0, moved / np.maximum(np.maximum(own, floor), 1e-9), 0.0)
    kind = np.where(per_kind.max(axis=1) > 0, per_kind.argmax(axis=1), -1).astype(np.int64)
    return IntervalBalance(attributed, strength, share, kind, windows, first_day, technical, residual_out)


# ------------------------------------------------------------------- change tests on own series

#: Daily statistics of a meter's own series tested for a recent change (:func:`recent_change`), and
#: the direction theft moves each: −1 down, +1 up.
CHANGE_STATS: dict[str, int] = {
    "level": -1,  # day total (log; the season is matched by the test's reference days)
    "zeros": +1,  # share of hours recorded as zero while the meter reported
    "clipped": +1,  # share of hours at the meter's own ceiling (within 3 % of its 99.5th percentile)
    "spread": -1,  # within-day spread (std / mean of the hours): flattened days
    "smooth": -1,  # hour-to-hour correlation within the day: random per-interval scaling breaks it
    "shape": -1,  # correlation of the day with the meter's usual shape: reversed or reshaped days
}


def daily_stats(
    hourly: FloatArray | None, daily: FloatArray, weekday: IntArray, usual: FloatArray | None = None
) -> FloatArray:
    """Meters × statistics (:data:`CHANGE_STATS`) × days (NaN where the day is incomplete).

    Without interval data only the level is known: meters × 1 × days. ``usual``:
    :func:`usual_hour_profile` of ``hourly`` when the caller has it already.
    """
    m, d = daily.shape
    per_day = np.full((m, len(CHANGE_STATS) if hourly is not None else 1, d), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_day[:, 0] = np.log(np.maximum(daily, 1e-3))
        if hourly is not None:
            ok = np.asarray(np.isfinite(hourly).all(axis=2), dtype=bool)
            # Incomplete days blanked (a copy only when there is one: x is read, never written).
            x = np.asarray(hourly, dtype=float) if ok.all() else np.where(ok[:, :, None], hourly, np.nan)
            per_day[:, 1] = np.where(ok, (x <= 1e-9).mean(axis=2), np.nan)
            top = row_quantile(x.reshape(m, -1), 0.995)
            per_day[:, 2] = np.where(ok, (x >= 0.97 * top[:, None, None]).mean(axis=2), np.nan)
            mean = x.mean(axis=2)
            # The day's hours about their mean: x.std's own steps (the same mean, differences, squares,
            # sum over 24 and root), and the shape statistic's below, in one temporary.
            c = x - mean[:, :, None]
            c_sq = np.square(c).sum(axis=2)  # c**2 is np.square(c)
            per_day[:, 3] = np.where(ok & (mean > 0), np.sqrt(c_sq / x.shape[2]) / mean, np.nan)
            a = x[:, :, :-1] - x[:, :, :-1].mean(axis=2, keepdims=True)
            b = x[:, :, 1:] - x[:, :, 1:].mean(axis=2, keepdims=True)
            # The squares and the product in one scratch array (the same numbers as a**2, b**2, a * b):
            # fewer fresh temporaries, each handed over by the kernel page by page.
            prod = np.square(a)
            a_sq = prod.sum(axis=2)
            b_sq = np.square(b, out=prod).sum(axis=2)
            den = np.sqrt(a_sq * b_sq)
            num = np.multiply(a, b, out=prod).sum(axis=2)
            del a, b, prod
            per_day[:, 4] = np.where(ok & (den > 0), num / np.where(den > 0, den, 1.0), np.nan)
            prof = usual_hour_profile(hourly, weekday) if usual is None else usual
            daytype = np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))
            # The usual day centred once per meter and day type, then laid out per day: every day of
            # a type holds the same 24 values, whose mean and sum of squares are the same numbers.
            centred = prof - prof.mean(axis=2, keepdims=True)
            u = centred[:, daytype, :]  # a fresh array: the product goes into it
            den = np.sqrt((centred**2).sum(axis=2)[:, daytype] * c_sq)
            num = np.multiply(u, c, out=u).sum(axis=2)
            per_day[:, 5] = np.where(ok & (den > 0), num / np.where(den > 0, den, 1.0), np.nan)
    return per_day


def recent_change(
    per_day: FloatArray, season: FloatArray, recent: int = 30, reference: int = 45, gap: int = 30
) -> tuple[FloatArray, FloatArray]:
    """What the last ``recent`` days look like against the same season earlier, per meter and statistic.

    ``per_day`` is meters × statistics × days (:func:`daily_stats`), ``season`` the fleet's
    seasonal index per day. The reference is the ``reference`` days, ending at least ``gap`` days
    before the recent window, whose seasonal index is closest to the recent window's (with a year
    of data: the same weeks of the year before, or the same season at the other end of it). The
    shift (recent − reference means, in the theft direction; the level is a log) is set against
    the fleet's shifts (robust z): real households change too, and that is the reference.
    Returns ``(shift, z)``.
    Ongoing losses are what tonight's visits can still stop.
    """
    t = recent_shift(per_day, season, recent, reference, gap)
    return np.nan_to_num(t), shift_z(t)


def recent_shift(
    per_day: FloatArray, season: FloatArray, recent: int = 30, reference: int = 45, gap: int = 30
) -> FloatArray:
    """The per-meter half of :func:`recent_change`: the shift, NaN where it cannot be tested.

    Meter by meter, so the fleet may be computed a group of meters at a time; :func:`shift_z`
    then sets the whole fleet's shifts against each other.
    """
    import warnings

    m, k, d = per_day.shape
    dirs = np.array(list(CHANGE_STATS.values())[:k], dtype=float)
    t = np.zeros((m, k))
    if d < recent + gap + 14:
        return t
    rec, ref = same_season_windows(season, recent, reference, gap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a = np.nanmean(per_day[:, :, rec], axis=2)
        b = np.nanmean(per_day[:, :, ref], axis=2)
        sd = np.nanstd(per_day, axis=2)
    n_a = np.isfinite(per_day[:, :, rec]).sum(axis=2)
    n_b = np.isfinite(per_day[:, :, ref]).sum(axis=2)
    # The plain shift: dividing by the meter's own spread would favour steady households over
    # heating ones, whose days vary more with the weather; the fleet calibration follows.
    t = (a - b) * dirs[None, :]
    return np.where((n_a >= 7) & (n_b >= 7) & (sd > 0), t, np.nan)


def same_season_windows(
    season: FloatArray, recent: int = 30, reference: int = 45, gap: int = 30
) -> tuple[IntArray, IntArray]:
    """The days of :func:`recent_shift`'s two windows, as index arrays.

    The last ``recent`` days, and the ``reference`` days ending at least ``gap`` days before them
    whose seasonal index is closest to theirs (with a year of data: the same season).
    """
    d = season.shape[0]
    rec = np.arange(d - recent, d)
    cand = np.arange(0, d - recent - gap)
    target = float(np.mean(season[rec]))
    return rec, cand[np.argsort(np.abs(season[cand] - target), kind="stable")[:reference]]


def shift_z(t: FloatArray) -> FloatArray:
    """Robust z of each meter's shift per statistic against the fleet's (0 where NaN)."""
    m, k = t.shape
    z = np.zeros((m, k))
    for j in range(k):
        col = t[:, j]
        live = np.isfinite(col)
        if live.sum() < 5:
            continue
        med = float(np.median(col[live]))
        mad = 1.4826 * float(np.median(np.abs(col[live] - med))) + 1e-6
        z[:, j] = np.where(live, (col - med) / mad, 0.0)
    return z


def relative_drop(
    values: FloatArray, season: FloatArray, recent: int = 30, reference: int = 45, min_days: int = 7
) -> FloatArray:
    """1 − (last ``recent`` days) / (first ``reference`` days), both divided by the seasonal index.

    The earliest weeks are the reference a utility has before any change it is looking for; the
    seasonal index (per class) keeps winter against summer from reading as a drop. 0 where either
    window has fewer than ``min_days`` days, or the reference level is not positive.
    """
    import warnings

    m, d = values.shape
    if d < recent + reference:
        return np.zeros(m)
    # The two windows only (not the whole period divided, then sliced).
    early = values[:, :reference] / np.where(season[:, :reference] > 0, season[:, :reference], np.nan)
    late = values[:, d - recent :] / np.where(season[:, d - recent :] > 0, season[:, d - recent :], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = np.nanmean(early, axis=1)
        last = np.nanmean(late, axis=1)
    n_first = np.isfinite(early).sum(axis=1)
    n_last = np.isfinite(late).sum(axis=1)
    ok = (n_first >= min_days) & (n_last >= min_days) & (first > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 1.0 - last / first
    return np.where(ok, np.nan_to_num(out), 0.0)


def weekly_means(x: FloatArray, week: int = 7) -> FloatArray:
    """Meters × weeks: NaN-aware means of whole weeks, counted back from the last day."""
    import warnings

    m, d = x.shape
    w = d // week
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x[:, d - w * week :].reshape(m, w, week), axis=2)


def segment_shift(weekly: FloatArray, min_weeks: int = 3) -> tuple[FloatArray, IntArray, IntArray]:
    """The strongest run of weeks that sits below the rest of the meter's weeks, as a t-like statistic.

    Over every run ``[s, e)`` of at least ``min_weeks`` weeks (and 3 weeks outside it): (mean outside −
    mean inside) / noise × √(n_in·n_out / n), the noise being the robust spread of week-to-week
    differences / √2 (it is the meter's own, so a steady household's small change counts as much as a
    noisy one's large change). A theft that starts and stops mid-period is a run; so is one that lasts
    to the end. Returns ``(statistic, first week, end week)``; statistic 0 where no run qualifies.
    """
    import warnings

    m, w = weekly.shape
    ok = np.isfinite(weekly)
    y0 = np.where(ok, weekly, 0.0)
    cs = np.concatenate([np.zeros((m, 1)), np.cumsum(y0, axis=1)], axis=1)
    cn = np.concatenate([np.zeros((m, 1)), np.cumsum(ok, axis=1)], axis=1)
    tot, ntot = cs[:, -1], cn[:, -1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dif = np.diff(weekly, axis=1)
        noise = 1.4826 * np.nanmedian(np.abs(dif - np.nanmedian(dif, axis=1, keepdims=True)), axis=1) / np.sqrt(2)
    noise = np.nan_to_num(noise) + 1e-3
    best = np.zeros(m)
    b_s = np.zeros(m, dtype=np.int64)
    b_e = np.zeros(m, dtype=np.int64)
    rows = np.arange(m)
    col = (slice(None), None)  # a per-meter value against each end week
    for s in range(w):
        # Every end week of runs starting at ``s`` at once (the whole period is no run); the first
        # largest, and a start only when it beats the earlier starts': the earliest run of the largest.
        ends = np.arange(s + min_weeks, w + 1 if s > 0 else w)
        if ends.size == 0:
            continue
        s_in = cs[:, ends] - cs[:, s][col]
        n_in = cn[:, ends] - cn[:, s][col]
        n_out = ntot[col] - n_in
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (
                ((tot[col] - s_in) / n_out - s_in / n_in)
                / noise[col]
                * np.sqrt(n_in * n_out / np.maximum(ntot, 1)[col])
            )
        t = np.where((n_in >= min_weeks) & (n_out >= 3) & np.isfinite(t), t, 0.0)
        at = t.argmax(axis=1)
        top = t[rows, at]
        up = top > best
        best = np.where(up, top, best)
        b_s = np.where(up, s, b_s)
        b_e = np.where(up, ends[at], b_e)
    return best, b_s, b_e


def fleet_z(x: FloatArray) -> FloatArray:
    """Robust z of each meter's value against the fleet's (median, 1.4826 · MAD)."""
    live = np.isfinite(x)
    if live.sum() < 5:
        return np.zeros(x.shape)
    med = float(np.median(x[live]))
    mad = 1.4826 * float(np.median(np.abs(x[live] - med))) + 1e-9
    return np.where(live, (x - med) / mad, 0.0)


#: Tamper marks: per-day footprints that a tampered register leaves and real household load
#: almost never has (the meter records exact values; households do not repeat them).
MARKS = ("zeroed", "flat", "ceiling")


def _top_repeat(values: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per row: the most repeated finite value, its count and the next value's count (NaN ignored).

    The most repeated value is the smallest of those repeated most often (where none repeats, the
    row's smallest value, none if that is −inf); the next count is the largest count of any other
    finite value, at least 1. Each row is sorted (NaN last), and its
    runs of equal values are found on the flattened rows at once: a run starts at a row's first
    column and wherever the value changes (every NaN is a run of its own; ±inf count 0).
    """
    m, n = values.shape
    if n < 2:
        return np.full(m, np.nan), np.zeros(m), np.zeros(m)
    s = np.sort(values, axis=1).reshape(-1)  # NaN last in each row
    starts_at = np.ones(m * n, dtype=bool)
    starts_at[1:] = s[1:] != s[:-1]  # NaN != NaN: a run each
    starts_at[::n] = True
    starts = np.flatnonzero(starts_at)
    length = np.diff(np.append(starts, m * n)).astype(float)
    length[~np.isfinite(s[starts])] = 0.0
    first_run = np.searchsorted(starts, np.arange(m) * n)  # each row's first run
    best = np.maximum.reduceat(length, first_run)
    row_of_run = np.repeat(np.arange(m), np.diff(np.append(first_run, starts.size)))
    index = np.arange(starts.size)
    top_run = np.minimum.reduceat(np.where(length == best[row_of_run], index, starts.size), first_run)
    top_run = np.where(best <= 1, first_run, top_run)  # no value repeats: the row's smallest (−inf: none)
    top = s[starts[top_run] + np.maximum(length[top_run], 1).astype(np.int64) - 1]  # the run's last value
    others = length.copy()
    others[top_run] = 0.0
    second = np.maximum(np.maximum.reduceat(others, first_run), 1.0)
    known = np.isfinite(top)
    return np.where(known, top, np.nan), np.where(known, best, 0.0), second


def _above_median(x: FloatArray) -> FloatArray:
    """Per row, the values above the row's median (:func:`nanmedian_rows`), NaN elsewhere, in fewer columns.

    ``np.where(x > med, x, nan)`` holds the same values in each row, which is all
    :func:`_top_repeat` reads (not their order, nor how many NaN): a row's values above its median
    are among those right of the lower middle value once the row is partitioned there, so only
    that right part (about half the row) is kept, and sorted later. The median is the one
    :func:`nanmedian_rows` gives (the same two middle values).
    """
    m, w = x.shape
    n = w - np.count_nonzero(np.isnan(x), axis=1)
    if m == 0 or w < 2:
        med = nanmedian_rows(x)
        with np.errstate(invalid="ignore"):
            return np.where(x > med[:, None], x, np.nan)
    order = np.argsort(n, kind="stable")
    counts, starts = np.unique(n[order], return_index=True)
    # The widest right part is the one of the fewest values (≥ 2 columns, as _top_repeat needs).
    low = (int(counts[0]) - 1) // 2 if counts[0] > 0 else -1
    out = np.full((m, max(w - low - 1, 2)), np.nan)
    for c, lo, hi in zip(counts, starts, np.r_[starts[1:], m][: counts.size], strict=True):
        if c <= 0:
            continue
        a, b = (int(c) - 1) // 2, int(c) // 2
        rows = order[lo:hi]
        part = x[rows]  # a copy, partitioned in place
        part.partition((a, b) if b != a else a, axis=1)
        med = (part[:, a] + part[:, b]) / 2.0
        right = part[:, a + 1 :]  # every value above the median is here (ranks above a), NaN last
        with np.errstate(invalid="ignore"):
            out[rows, : right.shape[1]] = np.where(right > med[:, None], right, np.nan)
    return out


def tamper_marks(hourly: FloatArray, level: float = 0.5, min_repeats: int = 20, dominance: float = 4.0) -> FloatArray:
    """Meters × :data:`MARKS` × days: 1 where the day carries the mark, 0 where not, NaN incomplete.

    - ``zeroed``: two or more hours recorded as exactly zero on a day whose total is at least
      ``level`` × the meter's median day, in hours of the day when the meter usually draws at
      least half its typical hour (zero windows, zeroing below a cut-off; a vacancy's day is low,
      and a household with a tiny night load records honest zeros at night: neither counts);
    - ``flat``: every hour of a normal-sized day recorded the same value (a day flattened to its
      mean);
    - ``ceiling``: an hour at the meter's ceiling, the one value above its median hour that the
      meter repeats at least ``min_repeats`` times and ``dominance`` × as often as any other
      (peaks capped at a fixed value; real hourly load is never cut off at one figure).
    """
    import warnings

    m, d, _ = hourly.shape
    ok = np.asarray(np.isfinite(hourly).all(axis=2), dtype=bool)
    # Incomplete days blanked (a copy only when there is one: x is read, never written).
    x = np.asarray(hourly, dtype=float) if ok.all() else np.where(ok[:, :, None], hourly, np.nan)
    out = np.full((m, len(MARKS), d), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        day = np.nansum(x, axis=2)
        normal = day >= level * np.nan_to_num(nanmedian_rows(np.where(ok, day, np.nan)))[:, None]
        normal &= day > 0
        # A zero counts only in an hour of the day when the meter usually draws at least half its
        # typical hour (the upper quartile over days, so a theft covering most days does not hide
        # it): a household whose night load is tiny records honest zeros at night.
        usual = nanquantile_last(np.moveaxis(x, 1, -1), 0.75)  # meters × hours of the day
        typical = nanmedian_rows(usual)
        live = np.nan_to_num(usual) >= 0.5 * np.nan_to_num(typical)[:, None]
        live &= np.nan_to_num(usual) > 0
        zeros = ((x <= 1e-9) & live[:, None, :]).sum(axis=2)
        hi = np.nanmax(x, axis=2)
        lo = np.nanmin(x, axis=2)
    flat = (hi - lo) <= 1e-6 * np.abs(hi) + 1e-9
    above = _above_median(x.reshape(m, -1))
    top, count, second = _top_repeat(above)
    is_ceiling = (count >= min_repeats) & (count >= dominance * second)
    # A day at the ceiling counts only on a meter that has one: the others' days are not compared.
    at_top = np.zeros((m, d), dtype=bool)
    capped = np.flatnonzero(is_ceiling)
    if capped.size:
        t = top[capped, None, None]
        at_top[capped] = (np.abs(x[capped] - t) <= 1e-9 * np.maximum(np.abs(t), 1.0)).any(axis=2)
    out[:, 0] = np.where(ok, (zeros >= 2) & normal, np.nan)
    out[:, 1] = np.where(ok, flat & normal, np.nan)
    out[:, 2] = np.where(ok, at_top & is_ceiling[:, None] & ~flat, np.nan)
    return out


def run_contrast(weekly: FloatArray, min_weeks: int = 3, min_out: int = 3) -> tuple[FloatArray, IntArray, IntArray]:
    """The run of weeks where a share stands highest above the meter's other weeks.

    Over every run ``[s, e)`` of at least ``min_weeks`` weeks with data (and ``min_out`` outside):
    mean inside − mean outside. A mark that a household shows all year (a meter recording zero
    at night) contrasts with nothing; a tamper that starts (and maybe stops) stands out.
    Returns ``(contrast in −1…1, first week, end week)``; 0 where no run qualifies; of equal
    contrasts the earliest run (first week, then end week).

    Meters with every week known (most) take :func:`_run_contrast_whole`, the others
    :func:`_run_contrast_pairs`: the same figures to the bit.
    """
    m, _ = weekly.shape
    best = np.zeros(m)
    b_s = np.zeros(m, dtype=np.int64)
    b_e = np.zeros(m, dtype=np.int64)
    whole = np.isfinite(weekly).all(axis=1)
    for rows, fn in ((whole, _run_contrast_whole), (~whole, _run_contrast_pairs)):
        if rows.any():
            best[rows], b_s[rows], b_e[rows] = fn(weekly[rows], min_weeks, min_out)
    return best, b_s, b_e


def _run_contrast_pairs(weekly: FloatArray, min_weeks: int, min_out: int) -> tuple[FloatArray, IntArray, IntArray]:
    """:func:`run_contrast` run by run: every ``[s, e)`` in turn over all meters (weeks may be NaN)."""
    m, w = weekly.shape
    ok = np.isfinite(weekly)
    cs = np.concatenate([np.zeros((m, 1)), np.cumsum(np.where(ok, weekly, 0.0), axis=1)], axis=1)
    cn = np.concatenate([np.zeros((m, 1)), np.cumsum(ok, axis=1)], axis=1)
    best = np.zeros(m)
    b_s = np.zeros(m, dtype=np.int64)
    b_e = np.zeros(m, dtype=np.int64)
    for s in range(w):
        for e in range(s + min_weeks, w + 1):
            s_in = cs[:, e] - cs[:, s]
            n_in = cn[:, e] - cn[:, s]
            n_out = cn[:, -1] - n_in
            t = s_in / np.maximum(n_in, 1) - (cs[:, -1] - s_in) / np.maximum(n_out, 1)
            t = np.where((n_in >= min_weeks) & (n_out >= min_out), t, 0.0)
            up = t > best
            best = np.where(up, t, best)
            b_s = np.where(up, s, b_s)
            b_e = np.where(up, e, b_e)
    return best, b_s, b_e


def _run_contrast_whole(weekly: FloatArray, min_weeks: int, min_out: int) -> tuple[FloatArray, IntArray, IntArray]:
    """:func:`run_contrast` of meters with every week known, one run length at a time.

    Every run of ``L`` weeks then has ``L`` weeks inside and ``w − L`` outside, and its contrast
    ``x / L − (total − x) / (w − L)`` never falls as its sum ``x`` grows (each rounded step is
    monotone): the best run of each length is the one of the largest sum, one subtraction and one
    maximum per run instead of a dozen operations. The contrasts are computed as
    :func:`_run_contrast_pairs` computes them, so the best is the same number; the earliest run
    reaching it is then looked up among the lengths that reach it (two runs of different sums may
    round to the same contrast).
    """
    m, w = weekly.shape
    cs = np.concatenate([np.zeros((m, 1)), np.cumsum(weekly, axis=1)], axis=1)
    total = cs[:, -1]
    by_week = np.ascontiguousarray(cs.T)  # weeks × meters: each length's sums are whole rows
    lengths = [n for n in range(max(min_weeks, 1), w + 1) if w - n >= min_out]
    best = np.zeros(m)
    b_s = np.zeros(m, dtype=np.int64)
    b_e = np.zeros(m, dtype=np.int64)
    if not lengths or m == 0:
        return best, b_s, b_e

    def contrast(x: FloatArray, n: int, tot: FloatArray) -> FloatArray:
        return x / float(n) - (tot - x) / float(max(w - n, 1))

    per_length = np.empty((len(lengths), m))
    sums = np.empty_like(by_week)
    for k, n in enumerate(lengths):
        runs = np.subtract(by_week[n:], by_week[: w + 1 - n], out=sums[: w + 1 - n])
        per_length[k] = contrast(runs.max(axis=0), n, total)
    top = per_length.max(axis=0)
    live = top > 0
    first = np.full(m, w + 1, dtype=np.int64)
    for k, n in enumerate(lengths):
        rows = np.flatnonzero(live & (per_length[k] == top))
        if rows.size == 0:
            continue
        t = contrast(cs[rows, n:] - cs[rows, : w + 1 - n], n, total[rows, None])
        s = np.argmax(t == top[rows, None], axis=1)
        earlier = s < first[rows]
        first[rows[earlier]] = s[earlier]
        b_e[rows[earlier]] = s[earlier] + n
    best[live] = top[live]
    b_s[live] = first[live]
    return best, b_s, b_e


def _week_sums(x: np.ndarray) -> np.ndarray:
    """Sums of each row's consecutive 7 columns (meters × weeks), as ``x.reshape(m, w, 7).sum(axis=2)`` gives them.

    numpy adds the 7 values of such a short axis in order, one after another; seven strided slices
    added in that order give the same numbers without its reduction of 7 values per week (slow:
    one inner loop each). ``tests/analytics/theft/test_vectorised.py`` holds it to that.
    """
    total = x[:, 0::7].copy()
    for j in range(1, 7):
        total += x[:, j::7]
    return total


def weekly_alternation(
    values: FloatArray, season: FloatArray, min_weeks: int = 6, floor: float = 0.05
) -> tuple[FloatArray, IntArray, IntArray]:
    """On/off weeks: the run of weeks whose level alternates week by week most, per meter.

    The level is ``log(values / season)`` (a day at or below ``floor`` × the meter's median day is
    left out: a vacant or switched-off week is another story, told by the zero and drop signals).
    For each of the 7 week phases, the weekly mean levels ``L``; each week's deviation from its
    two neighbours ``a = L_k − (L_{k−1} + L_{k+1}) / 2``; a pair of consecutive weeks scores
    ``min(|a_k|, |a_{k+1}|)`` when the two deviate in opposite directions (0 otherwise). The run of
    at least ``min_weeks`` pairs whose mean score stands highest above the meter's other weeks
    (:func:`run_contrast`) is the statistic: about |log f| for a theft that records a share ``f``
    every other week, near 0 for a household whose weeks wander (a single week away scores half
    its depth for two pairs, which a six-week run averages away). Returns ``(statistic, first day,
    end day)`` of the best run over the phases; 0 where none qualifies.
    """
    import warnings

    m, d = values.shape
    med = nanmedian_rows(np.where(values > 0, values, np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        keep = np.isfinite(values) & (values > floor * np.nan_to_num(med)[:, None]) & (season > 0)
        # The level where kept, 0 elsewhere: each phase's weekly means are then sums over counts
        # (what ``np.nanmean`` computes, without its copy of the fleet per phase).
        level = np.where(keep, np.log(np.where(keep, values, 1.0) / np.where(season > 0, season, 1.0)), 0.0)
    kept = keep.view(np.int8)  # 0 / 1, counts of up to 7 a week
    best = np.zeros(m)
    first = np.zeros(m, dtype=np.int64)
    end = np.zeros(m, dtype=np.int64)
    for p in range(7):
        w = (d - p) // 7
        if w < min_weeks + 5:
            break
        with np.errstate(invalid="ignore", divide="ignore"):
            weekly = _week_sums(level[:, p : p + 7 * w]) / _week_sums(kept[:, p : p + 7 * w])
        a = weekly[:, 1:-1] - 0.5 * (weekly[:, :-2] + weekly[:, 2:])
        pair = a[:, :-1] * a[:, 1:]
        score = np.where(pair < 0, np.minimum(np.abs(a[:, :-1]), np.abs(a[:, 1:])), 0.0)
        score = np.where(np.isfinite(pair), score, np.nan)
        stat, w0, w1 = run_contrast(score, min_weeks=min_weeks)
        up = stat > best
        best = np.where(up, stat, best)
        # Pair k spans weeks k + 1 and k + 2 of this phase; the run starts with the second of its
        # first pair (the first is the last normal week, half of whose deviation is its neighbour's).
        first = np.where(up, p + 7 * (w0 + 2), first)
        end = np.where(up, p + 7 * (w1 + 2), end)
    return best, first, end


def reversed_weeks(
    hourly: FloatArray,
    reference: int = 42,
    mirrored: float = 0.5,
    margin: float = 0.5,
    same_hours: float = 0.25,
    week: int = 7,
) -> FloatArray:
    """Meters × weeks: 1 where the week's mean day is the meter's earliest weeks' day reversed in time.

    Each day is the share of its total per hour; a week's mean day and the reference (the mean day
    of the meter's first ``reference`` complete days, before any change a utility looks for; a meter
    installed during the period has its own start) are compared three ways.
    A week is marked when its correlation with the reference mirrored in time is above
    ``mirrored`` and exceeds the plain correlation by ``margin`` (the peaks moved to the mirrored
    hours), and its hours sorted by size stay within ``same_hours`` (L1 of the shares) of the
    reference's sorted: a reversed day is the same hours in another order, while a new appliance
    at night (storage heating, a car charging) moves the load towards the night by adding a block
    of it, which changes the sorted hours. A week averages a household's odd days (a night shift,
    guests) away; a register that records the day backwards marks week after week.
    Weeks are whole weeks counted back from the last day (:func:`weekly_means`); NaN for a week
    without a complete day; 0 everywhere when the period is shorter than the reference and three
    weeks.
    """
    import warnings

    m, d, h = hourly.shape
    w = d // week
    if d < reference + 3 * week or h < 2:
        return np.zeros((m, w))
    x = np.asarray(hourly, dtype=float)
    tot = x.sum(axis=2)
    ok = np.isfinite(x).all(axis=2) & (tot > 0)
    shape = np.where(ok[:, :, None], x / np.where(ok, tot, 1.0)[:, :, None], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # The meter's own first ``reference`` complete days: a meter installed mid-period has its own start.
        first = ok & (np.cumsum(ok, axis=1) <= reference)
        # Only the days up to the last meter's last reference day: the days after would add NaN
        # (nothing: 0 to the sums, none to the counts) to the same means.
        span = int(np.flatnonzero(first.any(axis=0))[-1]) + 1 if first.any() else 1
        ref = np.nanmean(np.where(first[:, :span, None], shape[:, :span], np.nan), axis=1)
        weekly = np.nanmean(shape[:, d - w * week :].reshape(m, w, week, h), axis=2)

    def corr(a: FloatArray, b: FloatArray) -> FloatArray:
        a = a - a.mean(axis=-1, keepdims=True)
        b = b - b.mean(axis=-1, keepdims=True)
        den = np.sqrt((a**2).sum(axis=-1) * (b**2).sum(axis=-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 1e-12, (a * b).sum(axis=-1) / den, 0.0)

    plain = corr(weekly, ref[:, None, :])
    mirror = corr(weekly, ref[:, None, ::-1])
    sorted_gap = np.abs(np.sort(weekly, axis=2) - np.sort(ref, axis=1)[:, None, :]).sum(axis=2)
    marked = (mirror > mirrored) & (mirror - plain > margin) & (sorted_gap < same_hours)
    known = np.isfinite(weekly).all(axis=2) & np.isfinite(ref).all(axis=1)[:, None]
    return np.where(known, marked.astype(float), np.nan)


def steps_held(
    hourly: FloatArray,
    daily: FloatArray,
    season: FloatArray,
    quantile: float = 0.99,
    recent: int = 30,
    reference: int = 45,
    gap: int = 30,
    min_rises: int = 50,
) -> FloatArray:
    """Per meter, how far its largest load steps held while its level changed, lately (log, ≈ 0 when scaled).

    Real appliances draw a fixed power: a kettle, an oven or a shower switched on raises the
    hour by about as much in a household that uses less as in one that uses more. A register
    scaled by ``k`` (by a shunt, a tampered constant, or a share taken every interval) shrinks
    every step by ``k`` too. Over :func:`recent_shift`'s two windows (the last ``recent`` days and
    the ``reference`` days of the same season earlier, :func:`same_season_windows`): the
    ``quantile`` of the rises between consecutive hours (only rises, within each day: the big
    switch-ons), and the mean day. The statistic is log(step ratio) − log(level ratio): about 0
    when every hour was scaled alike (the steps fell with the level), positive when the level
    fell and the appliances' steps held (a household that is out more, a milder month), negative
    when the steps fell more than the level (clipped peaks). 0 where a window has fewer than
    ``min_rises`` rises or 7 days, or no level.
    """
    import warnings

    m, d, _h = hourly.shape
    if d < recent + gap + 14:
        return np.zeros(m)
    rec, ref = same_season_windows(season, recent, reference, gap)
    out = []
    for days in (rec, ref):
        step = step_size(hourly[:, days, :], quantile, min_rises)  # NaN with too few rises
        n_days = np.isfinite(daily[:, days]).sum(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            level = np.nanmean(daily[:, days], axis=1)
        ok = np.isfinite(step) & (n_days >= 7) & (level > 0) & (step > 0)
        out.append((np.where(ok, step, np.nan), np.where(ok, level, np.nan)))
    (step_a, level_a), (step_b, level_b) = out
    with np.errstate(invalid="ignore", divide="ignore"):
        held = np.log(step_a / step_b) - np.log(level_a / level_b)
    return np.where(np.isfinite(held), held, 0.0)


def step_size(hourly: FloatArray, quantile: float = 0.99, min_rises: int = 100) -> FloatArray:
    """Per meter, the ``quantile`` of its rises between consecutive hours within each day (NaN: too few).

    The household's largest switch-ons over the whole period (only rises, within each day): a
    kettle, an oven, a shower. NaN with fewer than ``min_rises`` rises.
    """
    m = hourly.shape[0]
    rise = np.diff(hourly, axis=2).reshape(m, -1)
    rise = np.where(rise > 0, rise, np.nan)
    enough = np.isfinite(rise).sum(axis=1) >= min_rises
    return np.where(enough, row_quantile(rise, quantile), np.nan)


def theil_sen(x: FloatArray, y: FloatArray, max_pairs: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """Robust line ``y ≈ a + b·x``: the median of the pairwise slopes, then the median intercept.

    Over every pair up to ``max_pairs`` pairs, else over that many pairs drawn with ``seed`` (the
    same fleet gives the same line). ``(nan, nan)`` with fewer than two distinct ``x``.
    """
    n = x.size
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i, j = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
    dx = x[j] - x[i]
    keep = np.abs(dx) > 1e-12
    if not keep.any():
        return float("nan"), float("nan")
    b = float(np.median((y[j] - y[i])[keep] / dx[keep]))
    return float(np.median(y - b * x)), b


def small_steps(step: FloatArray, level: FloatArray, groups: IntArray, min_group: int = 20) -> FloatArray:
    """How far below the fleet's steps for its level a meter's largest steps sit, in robust z units.

    Appliances draw a fixed power, so a household's largest hourly rises (:func:`step_size`) grow
    more slowly than its level across a fleet: log(step) against log(level) has a slope ``b`` < 1
    (≈ 0.6 on real London households). A small household keeps steps of normal size; a register
    scaled by ``k`` shrinks its steps with its level and sits ``(1 − b)·|ln k|`` below the fleet's
    line. Per group (commodity and class, at least ``min_group`` meters with both): a Theil–Sen
    line (:func:`theil_sen`, slope clipped to 0–1), and the robust z of each meter's residual,
    positive when its steps are small for its level. 0 where unknown.
    """
    z = np.zeros(step.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        x, y = np.log(level), np.log(step)
    for rows in _group_rows(groups):
        ok = rows[np.isfinite(x[rows]) & np.isfinite(y[rows])]
        if ok.size < min_group:
            continue
        _, b = theil_sen(x[ok], y[ok])
        if not np.isfinite(b):
            continue
        b = min(max(b, 0.0), 1.0)
        r = y[ok] - b * x[ok]
        med = float(np.median(r))
        mad = 1.4826 * float(np.median(np.abs(r - med))) + 1e-6
        z[ok] = (med - r) / mad
    return z
