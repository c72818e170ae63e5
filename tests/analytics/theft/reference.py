"""Plain reference forms the theft tests hold the vectorised signals to."""

from __future__ import annotations

import numpy as np


def quantile_by_sort(x: np.ndarray, q: float) -> np.ndarray:
    """The former row_quantile: ±inf as NaN, one full sort of the rows, linear interpolation."""
    s = np.sort(np.where(np.isfinite(x), x, np.nan), axis=1)
    n = np.isfinite(x).sum(axis=1)
    pos = q * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    v_lo = np.take_along_axis(s, lo[:, None], axis=1)[:, 0]
    v_hi = np.take_along_axis(s, hi[:, None], axis=1)[:, 0]
    return np.where(n > 0, v_lo + (v_hi - v_lo) * (pos - lo), np.nan)
