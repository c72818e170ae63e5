"""Signals run a block of meters at a time give the figures of one call over the fleet."""

from __future__ import annotations

import numpy as np

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
