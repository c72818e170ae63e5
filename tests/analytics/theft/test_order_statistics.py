"""The order statistics behind the hourly signals give the figures of a full sort, to the bit.

:func:`analytics.theft.signals.row_ranks` takes an upper rank from a row's largest values only and
partitions long rows at both ranks at once; :func:`analytics.theft.signals._above_median` keeps only
the right half of a partitioned row; :func:`analytics.theft.signals.daily_stats` centres the usual
day once per day type. Each is set against the plain form it replaced on hostile rows: NaN
holes, all-NaN rows, ±inf, heavy ties, a row of one value, rows a few columns wide and rows
thousands wide (where the shortcuts start), values from 1e-300 to 1e300.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from analytics.theft import signals as sg
from tests.analytics.theft.reference import quantile_by_sort


def _hostile(seed: int, m: int, w: int) -> np.ndarray:
    """Rows of one of several kinds, with NaN holes, ±inf, an all-NaN row and a constant row."""
    rng = np.random.default_rng(seed)
    kind = seed % 5
    if kind == 0:
        x = rng.normal(size=(m, w))
    elif kind == 1:
        x = rng.exponential(size=(m, w)).round(1)  # many ties at the top
    elif kind == 2:
        x = rng.integers(0, 3, size=(m, w)).astype(float)  # three values only
    elif kind == 3:
        x = rng.normal(size=(m, w)).round(2)
        x[:, : w // 3] = 5.0  # a third of every row at its maximum
    else:
        x = rng.normal(size=(m, w)) * 10.0 ** rng.integers(-300, 300, size=(m, 1))
    x[rng.random((m, w)) < rng.random() * 0.6] = np.nan
    if seed % 3 == 0:
        x[rng.random((m, w)) < 0.01] = np.inf
    if seed % 4 == 0:
        x[rng.random((m, w)) < 0.01] = -np.inf
    if m > 3:
        x[1] = np.nan
        x[2] = 7.0
        x[3, : w // 2] = np.nan
    return x


SIZES = ((7, 1), (7, 2), (7, 30), (5, 1024), (6, 2048), (9, 3001), (5, 8760))


@pytest.mark.parametrize("seed", range(10))
def test_row_quantile_equals_a_full_sort(seed: int) -> None:
    for m, w in SIZES:
        x = _hostile(seed, m, w)
        before = x.copy()
        for q in (0.0, 0.1, 0.5, 0.75, 0.97, 0.99, 0.995, 0.999, 1.0):
            assert np.array_equal(sg.row_quantile(x, q), quantile_by_sort(x, q), equal_nan=True), (m, w, q)
        assert np.array_equal(x, before, equal_nan=True)  # the caller's rows are not reordered


@pytest.mark.parametrize("seed", range(10))
def test_row_ranks_at_upper_ranks_equal_a_full_sort(seed: int) -> None:
    """Upper ranks with ±inf kept as values (as nanmedian_rows counts them), one or two ranks."""
    for m, w in SIZES:
        x = _hostile(seed, m, w)
        n = (~np.isnan(x)).sum(axis=1)
        s = np.sort(x, axis=1)
        for frac in (0.9, 0.99, 0.999, 1.0):
            for two in (False, True):

                def ranks(c: int, frac: float = frac, two: bool = two) -> tuple[int, int]:
                    a = int(frac * (c - 1))
                    return a, min(a + 1, c - 1) if two else a

                first, second = sg.row_ranks(x, n, ranks)
                a = np.array([ranks(int(c))[0] if c else 0 for c in n])
                b = np.array([ranks(int(c))[1] if c else 0 for c in n])
                rows = np.arange(m)
                assert np.array_equal(first, np.where(n > 0, s[rows, a], np.nan), equal_nan=True), (m, w, frac)
                assert np.array_equal(second, np.where(n > 0, s[rows, b], np.nan), equal_nan=True), (m, w, frac)


@pytest.mark.parametrize("seed", range(6))
def test_medians_equal_numpys(seed: int) -> None:
    for m, w in SIZES:
        x = _hostile(seed, m, w)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(x, axis=1)
            assert np.array_equal(sg.nanmedian_rows(x), expected, equal_nan=True)
            assert np.array_equal(sg.nanmedian_rows(x.copy(), overwrite=True), expected, equal_nan=True)
            moved = np.repeat(x[:, :, None], 3, axis=2)  # meters × w × 3: medians along the w axis
            assert np.array_equal(
                sg.nanmedian_last(np.moveaxis(moved, 1, -1)), np.nanmedian(moved, axis=1), equal_nan=True
            )
    assert sg.row_quantile(np.zeros((0, 5)), 0.5).shape == (0,)
    assert sg.nanmedian_rows(np.zeros((0, 5))).shape == (0,)


@pytest.mark.parametrize("seed", range(10))
def test_values_above_the_median_give_the_same_top_repeat(seed: int) -> None:
    """_top_repeat of _above_median's rows is _top_repeat of np.where(x > median, x, NaN)."""
    for m, w in ((7, 1), (7, 2), (7, 3), (9, 40), (6, 2048)):
        x = _hostile(seed, m, w).round(1)
        if seed % 2:
            x = np.where(np.isinf(x), np.nan, x)  # tamper_marks' rows: finite or NaN
        with np.errstate(invalid="ignore"):
            plain = np.where(x > sg.nanmedian_rows(x)[:, None], x, np.nan)
        fast = sg._above_median(x)
        for got, want in zip(sg._top_repeat(fast), sg._top_repeat(plain), strict=True):
            assert np.array_equal(got, want, equal_nan=True), (m, w)


def _daily_shape_former(hourly: np.ndarray, weekday: np.ndarray, usual: np.ndarray) -> np.ndarray:
    """daily_stats' shape statistic as it was: the usual day laid out per day, then centred."""
    ok = np.isfinite(hourly).all(axis=2)
    x = np.where(ok[:, :, None], hourly, np.nan)
    daytype = np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))
    u = usual[:, daytype, :]
    u = u - u.mean(axis=2, keepdims=True)
    c = x - x.mean(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt((u**2).sum(axis=2) * (c**2).sum(axis=2))
        return np.where(ok & (den > 0), (u * c).sum(axis=2) / np.where(den > 0, den, 1.0), np.nan)


@pytest.mark.parametrize("seed", range(4))
def test_daily_stats_equal_their_former_form(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, d = 6, 40
    hourly = rng.exponential(size=(m, d, 24)).round(3)
    hourly[0, 3, 5] = np.nan  # an incomplete day
    hourly[1] = 0.0  # a meter recording nothing
    hourly[2, :, :] = 1.5  # a flat meter
    hourly[3, ::2] *= 1e-300  # tiny days
    hourly[4, 1::3] *= 1e60  # huge days
    weekday = np.arange(d) % 7
    daily = np.nansum(hourly, axis=2)
    usual = sg.usual_hour_profile(hourly, weekday)
    per_day = sg.daily_stats(hourly, daily, weekday, usual=usual)
    shape = list(sg.CHANGE_STATS).index("shape")
    assert np.array_equal(per_day[:, shape], _daily_shape_former(hourly, weekday, usual), equal_nan=True)
    ok = np.isfinite(hourly).all(axis=2)
    x = np.where(ok[:, :, None], hourly, np.nan)
    mean = x.mean(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.where(ok & (mean > 0), x.std(axis=2) / mean, np.nan)  # the former spread statistic
    assert np.array_equal(per_day[:, list(sg.CHANGE_STATS).index("spread")], spread, equal_nan=True)
    assert np.array_equal(per_day, sg.daily_stats(hourly, daily, weekday), equal_nan=True)


@pytest.mark.parametrize("seed", range(6))
def test_nanquantile_last_of_long_slices_equals_numpys(seed: int) -> None:
    """Slices long enough to be partitioned (a year of days per meter and hour) give numpy's figures."""
    for m, w in ((5, 127), (5, 128), (6, 365), (3, 2048)):
        x = _hostile(seed, m * 4, w).reshape(m, 4, w)
        moved = np.moveaxis(x, 1, 2)  # meters × w × 4: the slices along a moved axis, as tamper_marks passes them
        for q in (0.0, 0.25, 0.5, 0.75, 0.99, 1.0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # inf − inf, in numpy's and in ours
                expected = np.nanquantile(x, q, axis=-1)
                got = sg.nanquantile_last(x, q)
                got_moved = sg.nanquantile_last(np.moveaxis(moved, 1, -1), q)
            assert np.array_equal(got, expected, equal_nan=True), (m, w, q)
            assert np.array_equal(got_moved, expected, equal_nan=True), (m, w, q)
