"""Signals run a block of meters at a time give the figures of one call over the fleet."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from analytics.theft import features as ft
from analytics.theft import signals as sg
from analytics.theft.data import register_advance


def _fleet(m: int = 50, d: int = 120, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.lognormal(2, 0.3, (m, d))
    values[rng.random((m, d)) < 0.05] = np.nan
    values[5, 40:90] *= 0.3  # a drop
    values[7] = np.nan  # a silent meter
    season = 1 + 0.2 * np.cos(np.arange(d) / 20)[None, :].repeat(m, axis=0)
    return values, season


def test_sustained_drop_by_blocks_equals_one_call() -> None:
    values, season = _fleet()
    whole = sg.sustained_drop(values, season)
    blocks = ft.by_rows(sg.sustained_drop, values, season, rows=7)
    for name in ("ratio", "expected", "level", "start", "end", "depth", "deficit", "zero_days", "low"):
        assert np.array_equal(getattr(whole, name), getattr(blocks, name), equal_nan=True), name
    assert blocks.start[5] >= 0


def test_clean_daily_by_blocks_equals_one_call() -> None:
    values, _ = _fleet()
    cumulative = np.abs(values)
    cumulative[3, 30:35] = np.nan  # a communication loss, caught up the day after
    cumulative[3, 35] = 60.0
    cumulative[9, 50] = -5.0  # a negative step
    one = sg.clean_daily(cumulative, np.full(len(values), 100.0))
    blocks = ft.by_rows(sg.clean_daily, cumulative, np.full(len(values), 100.0), rows=7)
    for name in (
        "values",
        "catch_up",
        "frozen_days",
        "index_faults",
        "rollovers",
        "silent_days",
        "silence_unrecovered",
    ):
        assert np.array_equal(getattr(one, name), getattr(blocks, name), equal_nan=True), name


def test_seasonal_index_by_blocks_equals_the_median_over_the_fleet() -> None:
    """Built a block of meters at a time, groups interleaved across blocks: numpy's per-day median of each group."""
    rng = np.random.default_rng(5)
    m, d = 2 * sg.ROWS + 77, 30
    values = rng.lognormal(2, 0.4, (m, d))
    values[rng.random((m, d)) < 0.05] = np.nan
    values[rng.random((m, d)) < 0.02] = 0.0
    values[:, 4] = np.nan  # a day nobody read
    groups = rng.integers(0, 3, m)
    groups[groups == 2] = 3  # group 2 without members
    med = sg.row_quantile(np.where(values > 0, values, np.nan), 0.5)
    rel = values / np.where(med > 0, med, np.nan)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.stack(
            [np.nanmedian(rel[groups == g], axis=0) if (groups == g).any() else np.ones(d) for g in range(4)]
        )
    want = np.where(np.isfinite(want) & (want > 0), want, 1.0)
    assert np.array_equal(sg.seasonal_index(values, groups), want)


@pytest.mark.parametrize("m", [1, 2, 7, 1_000, 1_001])
def test_group_median_equals_numpy_over_the_repeated_rows(m: int) -> None:
    rng = np.random.default_rng(m)
    table = np.round(rng.lognormal(0, 0.2, (4, 50)), 2)  # ties between groups' values
    table[1, 10:20] = table[0, 10:20]
    groups = rng.integers(0, 4, m)
    groups[groups == 3] = 2  # a group without members
    assert np.array_equal(ft.group_median(table, groups), np.nanmedian(table[groups], axis=0))


def test_zero_days_equal_the_definition_with_nan_to_num() -> None:
    values = np.array([[0.0, 0.0, 0.0, 0.0, np.nan, 1.0, -0.0, 0.0]])
    expected = np.array([[1.0, np.nan, np.inf, -np.inf, 1.0, 1.0, 2.0, 0.0]])
    want = np.isfinite(values) & (values <= 1e-9) & (np.nan_to_num(expected) > 0)
    assert np.array_equal(ft.zero_days(values, expected), want)
    assert ft.zero_days(values, expected).tolist() == [[True, False, True, False, False, False, True, False]]


def test_register_advance_by_blocks_equals_one_block() -> None:
    rng = np.random.default_rng(1)
    last = np.cumsum(rng.random((23, 40)), axis=1)
    last[rng.random(last.shape) < 0.2] = np.nan
    initial = rng.random(23)
    assert np.array_equal(register_advance(last, initial, rows=5), register_advance(last, initial), equal_nan=True)
    assert np.array_equal(register_advance(last, rows=1), register_advance(last, rows=1000), equal_nan=True)


def test_register_advance_by_hand() -> None:
    """A gap's catch-up goes to the next read; the first read is measured from ``initial``; a silent meter stays NaN."""
    nan = np.nan
    last = np.array([[10.0, 12.0, nan, 17.0], [nan, nan, nan, nan], [nan, 5.0, 5.5, nan]])
    expected = np.array([[nan, 2.0, nan, 5.0], [nan, nan, nan, nan], [nan, nan, 0.5, nan]])
    assert np.array_equal(register_advance(last), expected, equal_nan=True)
    expected[0, 0], expected[2, 1] = 1.0, 1.0
    assert np.array_equal(register_advance(last, np.array([9.0, 0.0, 4.0]), rows=2), expected, equal_nan=True)
