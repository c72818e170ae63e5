"""The fast forms of the signals give the figures of the simple per-meter ones, to the bit.

Each fast function is set against a plain reference (one meter, one run or one quantile at a time,
or numpy's own function) on small hand-built arrays with NaN, ties, short series and empty rows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from analytics.theft import signals as sg
from tests.analytics.theft.reference import quantile_by_sort


def _rows(seed: int, m: int, d: int, nan: float = 0.2, decimals: int = 1) -> np.ndarray:
    """Rows with ties (rounded values), NaN holes, an all-NaN row and ±inf."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, d)).round(decimals)
    x[rng.random((m, d)) < nan] = np.nan
    if m > 2 and d:
        x[1] = np.nan
        x[2, 0] = np.inf
        x[0, -1] = -np.inf
    return x


def _contrast_per_meter(weekly: np.ndarray, min_weeks: int, min_out: int) -> tuple[float, int, int]:
    """One meter's best run by the definition: every run in turn, the first of the highest kept."""
    ok = np.isfinite(weekly)
    best, b_s, b_e = 0.0, 0, 0
    w = len(weekly)
    for s in range(w):
        for e in range(s + min_weeks, w + 1):
            inside = np.zeros(w, dtype=bool)
            inside[s:e] = True
            n_in, n_out = int((ok & inside).sum()), int((ok & ~inside).sum())
            if n_in < min_weeks or n_out < min_out:
                continue
            total = np.cumsum(np.where(ok, weekly, 0.0))[-1] if w else 0.0
            cs = np.concatenate([[0.0], np.cumsum(np.where(ok, weekly, 0.0))])
            s_in = cs[e] - cs[s]
            t = s_in / max(n_in, 1) - (total - s_in) / max(n_out, 1)
            if t > best:
                best, b_s, b_e = t, s, e
    return best, b_s, b_e


@pytest.mark.parametrize("seed", range(6))
def test_run_contrast_equals_the_run_by_run_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, w = 12, int(rng.integers(0, 16))
    weekly = rng.normal(size=(m, w)).round(int(rng.integers(0, 3)))  # rounded: equal contrasts
    weekly[rng.random((m, w)) < 0.1] = np.nan
    weekly[0] = 0.25  # a constant meter: no run stands out
    for min_weeks, min_out in ((3, 3), (6, 3), (1, 0)):
        best, first, end = sg.run_contrast(weekly, min_weeks, min_out)
        assert best.dtype == np.float64 and first.dtype == np.int64
        for i in range(m):
            assert (best[i], first[i], end[i]) == _contrast_per_meter(weekly[i], min_weeks, min_out)
        pairs = sg._run_contrast_pairs(weekly, min_weeks, min_out)
        for fast, slow in zip((best, first, end), pairs, strict=True):
            assert np.array_equal(fast, slow)


def test_run_contrast_of_no_meters_and_too_few_weeks() -> None:
    best, first, end = sg.run_contrast(np.zeros((0, 10)))
    assert best.shape == first.shape == end.shape == (0,)
    best, first, end = sg.run_contrast(np.ones((3, 4)))  # 3 weeks inside and 3 outside do not fit in 4
    assert not best.any() and not first.any() and not end.any()


@pytest.mark.parametrize("seed", range(4))
def test_row_quantile_and_median_equal_a_sort(seed: int) -> None:
    for m, d in ((9, 1), (9, 2), (9, 13), (1, 40), (20, 30)):
        x = _rows(seed, m, d)
        for q in (0.0, 0.1, 0.5, 0.8, 0.995, 1.0):
            assert np.array_equal(sg.row_quantile(x, q), quantile_by_sort(x, q), equal_nan=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert np.array_equal(sg.nanmedian_rows(x), np.nanmedian(x, axis=1), equal_nan=True)
    assert sg.row_quantile(np.zeros((0, 5)), 0.5).shape == (0,)


@pytest.mark.parametrize("seed", range(4))
def test_percentile_and_median_of_one_series_equal_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n in (1, 2, 3, 4, 5, 8, 27, 365):
        v = rng.normal(size=n).round(1) * 10.0 ** rng.integers(-4, 4)
        for q in (0, 25, 50, 99.5, 100):
            assert sg.percentile_1d(v, q) == np.percentile(v, q)
        assert sg.median_1d(v) == np.median(v)
    assert np.isnan(sg.median_1d(np.zeros(0)))


def test_week_sums_add_as_numpy_reduces_a_week() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 7 * 9 + 3)) * 10.0 ** rng.integers(-8, 8, size=(40, 7 * 9 + 3))
    for p in range(4):
        part = x[:, p : p + 63]
        assert np.array_equal(sg._week_sums(part), part.reshape(40, 9, 7).sum(axis=2))
    kept = rng.random((5, 14)) < 0.5
    assert np.array_equal(sg._week_sums(kept.view(np.int8)), kept.reshape(5, 2, 7).sum(axis=2))


def _rolling_gathered(x: np.ndarray, window: int) -> np.ndarray:
    """The former rolling_mean: both ends of every window gathered by index from the cumulative sums."""
    ok = np.isfinite(x)
    pad = [(0, 0)] * (x.ndim - 1) + [(1, 0)]
    cs = np.pad(np.cumsum(np.where(ok, x, 0.0), axis=-1), pad)
    cn = np.pad(np.cumsum(ok, axis=-1), pad)
    n = x.shape[-1]
    lo = np.clip(np.arange(n) - window // 2, 0, n)
    hi = np.clip(np.arange(n) - window // 2 + window, 0, n)
    s, c = cs[..., hi] - cs[..., lo], cn[..., hi] - cn[..., lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def test_rolling_mean_equals_the_window_by_window_mean() -> None:
    x = _rows(7, 6, 23, nan=0.3)
    x[np.isinf(x)] = np.nan
    for window in (1, 2, 7, 8, 40):
        got = sg.rolling_mean(x, window)
        assert np.array_equal(got, _rolling_gathered(x, window), equal_nan=True)
        stacked = np.stack([x, x[::-1]], axis=1)  # meters × statistics × days
        assert np.array_equal(sg.rolling_mean(stacked, window), _rolling_gathered(stacked, window), equal_nan=True)
        half = window // 2
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                part = x[i, max(0, j - half) : max(0, j - half + window)]
                part = part[np.isfinite(part)]
                want = part.sum() / part.size if part.size else np.nan
                assert got[i, j] == pytest.approx(want, nan_ok=True, rel=1e-12, abs=1e-12)


def _alternation_per_meter(values: np.ndarray, season: np.ndarray, min_weeks: int = 6) -> tuple[float, int, int]:
    """One meter's on/off statistic by the definition, with numpy's nanmedian and nanmean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(np.where(values > 0, values, np.nan))
        keep = np.isfinite(values) & (values > 0.05 * np.nan_to_num(med)) & (season > 0)
        level = np.where(keep, np.log(np.where(keep, values, 1.0) / np.where(season > 0, season, 1.0)), np.nan)
    best, first, end = 0.0, 0, 0
    d = len(values)
    for p in range(7):
        w = (d - p) // 7
        if w < min_weeks + 5:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            weekly = np.nanmean(level[p : p + 7 * w].reshape(w, 7), axis=1)
        a = weekly[1:-1] - 0.5 * (weekly[:-2] + weekly[2:])
        pair = a[:-1] * a[1:]
        score = np.where(pair < 0, np.minimum(np.abs(a[:-1]), np.abs(a[1:])), 0.0)
        score = np.where(np.isfinite(pair), score, np.nan)
        stat, w0, w1 = _contrast_per_meter(score, min_weeks, 3)
        if stat > best:
            best, first, end = stat, p + 7 * (w0 + 2), p + 7 * (w1 + 2)
    return best, first, end


def test_weekly_alternation_equals_the_meter_by_meter_definition() -> None:
    rng = np.random.default_rng(9)
    d = 7 * 16 + 3
    values = rng.lognormal(2, 0.3, (8, d))
    values[2, 56:] = np.where((np.arange(56, d) // 7) % 2 == 1, 0.3, 1.0) * values[2, 56:]  # on/off weeks
    values[3] = np.nan  # silent
    values[4, 20:50] = np.nan  # weeks without data: the run-by-run path
    values[5, ::3] = 0.0
    values[6, :30] = 0.0
    season = np.broadcast_to(1 + 0.2 * np.cos(np.arange(d) / 15), values.shape)
    stat, first, end = sg.weekly_alternation(values, season)
    for i in range(values.shape[0]):
        assert (stat[i], first[i], end[i]) == _alternation_per_meter(values[i], season[i])
    assert stat[2] > 0.5 and stat[3] == 0
    short = sg.weekly_alternation(values[:, :60], np.ones((8, 60)))
    assert not short[0].any()


def test_weekly_alternation_by_blocks_equals_one_call() -> None:
    from analytics.theft.features import by_rows

    rng = np.random.default_rng(4)
    values = rng.lognormal(2, 0.3, (23, 7 * 14))
    values[rng.random(values.shape) < 0.1] = np.nan
    values[5, 40:] *= np.where((np.arange(40, 98) // 7) % 2 == 1, 0.2, 1.0)
    season = np.ones_like(values)
    whole = sg.weekly_alternation(values, season)
    blocks = by_rows(sg.weekly_alternation, values, season, rows=4)
    assert isinstance(blocks, tuple) and len(blocks) == 3
    for a, b in zip(whole, blocks, strict=True):
        assert np.array_equal(a, b) and a.dtype == b.dtype


def _top_repeat_per_row(row: np.ndarray) -> tuple[float, float, float]:
    """The definition on one row: the smallest of the finite values repeated most, its count, the next count (≥ 1).

    Where no value repeats, the row's smallest value (none when that is −inf).
    """
    values, counts = np.unique(row[np.isfinite(row)], return_counts=True)
    if values.size == 0 or (counts.max() == 1 and (row == -np.inf).any()):
        return np.nan, 0.0, 1.0
    j = int(np.argmax(counts))  # the first (smallest) value of the highest count
    others = np.delete(counts, j)
    return float(values[j]), float(counts[j]), float(max(others.max() if others.size else 0, 1))


@pytest.mark.parametrize("seed", range(6))
def test_top_repeat_equals_the_row_by_row_count(seed: int) -> None:
    x = _rows(seed, 9, 40, decimals=0)
    x[3, :5] = np.inf  # a run of inf is no repeat
    x[5, :3] = -np.inf
    x[6] = np.arange(40.0)  # no value repeats
    x[6, 7] = -np.inf
    x[4] = 0.0
    x[4, ::2] = -0.0
    top, count, second = sg._top_repeat(x)
    for i, row in enumerate(x):
        assert np.array_equal([top[i], count[i], second[i]], _top_repeat_per_row(row), equal_nan=True), i
