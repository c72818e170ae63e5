"""The interval balance's cheaper pieces give their former forms' results to the bit.

Each rewritten piece is checked against the form it replaced, kept here: ``np.add.at`` for the day
sums, ``np.take`` for the fitted hours' copy, ``dposv`` and fresh sub-matrices for the pivoting's
solves. Then the whole balance, with every piece put back to its former form, on hostile areas:
missing hours, a meter that records nothing, two meters that record the same (a rank-deficient
design, left to scipy), a thief.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import lapack

from analytics.theft import nnls as nn
from analytics.theft import signals as sg
from tests.analytics.theft.test_interval_signals import feeder_of, households


def _add_at_day_sums(values: np.ndarray, day: np.ndarray, hour: np.ndarray, n_days: int, h: int) -> np.ndarray:
    """The former form: every value added in column order into zeros."""
    out = np.zeros((values.shape[0], n_days))
    np.add.at(out, (np.arange(values.shape[0])[:, None], day[None, :]), values)
    return out


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(0, 6),
    days=st.integers(1, 30),
    keep=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**31 - 1),
    hostile=st.booleans(),
)
def test_day_sums_are_add_at_to_the_bit(rows: int, days: int, keep: float, seed: int, hostile: bool) -> None:
    rng = np.random.default_rng(seed)
    h = 24
    hours = np.flatnonzero(rng.random(days * h) < keep)  # in time order, with gaps
    values = rng.normal(size=(rows, hours.size)) * 10.0 ** rng.integers(-300, 300, size=(rows, hours.size))
    if hostile and values.size:
        pick = rng.integers(0, values.size, size=max(1, values.size // 5))
        values.flat[pick] = rng.choice([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e308, -1e308], size=pick.size)
    with np.errstate(invalid="ignore", over="ignore"):  # inf − inf and 1e308 + 1e308, on purpose
        got = sg._day_sums(values, hours // h, hours % h, days, h)
        ref = _add_at_day_sums(values, hours // h, hours % h, days, h)
    assert np.array_equal(got, ref, equal_nan=True)
    num = ~np.isnan(ref)  # (a NaN's sign bit is the adder's choice: inf − inf in a vector or not)
    assert np.array_equal(np.signbit(got[num]), np.signbit(ref[num]))  # not even a zero's sign differs


def _former_solve_on(gram: np.ndarray, c: np.ndarray, free: np.ndarray) -> np.ndarray:
    x = np.zeros(c.size)
    idx = np.flatnonzero(free)
    if idx.size:
        _, x[idx], info = lapack.dposv(gram[np.ix_(idx, idx)], c[idx])
        if info != 0:
            raise np.linalg.LinAlgError("not positive definite")
    return x


class FormerDesignNNLS(nn.DesignNNLS):
    """The solver as it was: ``dposv`` on a fresh sub-matrix each time, the design's columns copied each refinement."""

    def _pivoting(self, b: np.ndarray) -> np.ndarray | None:
        a, gram = self.design, self.gram
        c = a.T @ b
        n = c.size
        scale = float(np.abs(c).max()) if n else 0.0
        if scale == 0.0:
            return np.zeros(n)
        tol = nn.KKT_TOL * scale
        free = self.passive.copy()
        x = np.zeros(n)
        chances, fewest = 3, n + 1
        try:
            for _ in range(2 * n + 10):
                x = _former_solve_on(gram, c, free)
                y = gram @ x - c
                wrong = np.where(free, x < 0, y < -tol)
                count = int(wrong.sum())
                if count == 0:
                    break
                if count < fewest:
                    fewest, chances = count, 3
                elif chances > 0:
                    chances -= 1
                else:
                    last = int(np.flatnonzero(wrong)[-1])
                    wrong = np.zeros(n, dtype=bool)
                    wrong[last] = True
                free ^= wrong
            else:
                return None
            idx = np.flatnonzero(free)
            if idx.size:
                sub = a[:, idx]
                r = b - sub @ x[idx]
                x[idx] += np.linalg.solve(gram[np.ix_(idx, idx)], sub.T @ r)
        except np.linalg.LinAlgError:
            return None
        grad = a.T @ (b - a @ x)
        if (x[free] <= 0).any() or (grad[~free] > tol).any():
            return None
        return x


def _former_well_conditioned(gram: np.ndarray) -> bool:
    diag = np.diag(gram)
    if gram.size == 0 or not (diag > 0).all() or not np.isfinite(gram).all():
        return False
    s = 1.0 / np.sqrt(diag)
    unit = gram * s[:, None] * s[None, :]
    factor, info = lapack.dpotrf(unit, lower=0, clean=1)
    if info != 0:
        return False
    rcond, info = lapack.dpocon(factor, float(np.abs(unit).sum(axis=0).max()))
    return info == 0 and rcond >= nn.MIN_RCOND


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(5, 120),
    cols=st.integers(1, 30),
    seed=st.integers(0, 2**31 - 1),
    collinear=st.booleans(),
    zero_col=st.booleans(),
)
def test_solver_is_its_former_form_round_after_round(
    rows: int, cols: int, seed: int, collinear: bool, zero_col: bool
) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(rows, cols)) * rng.lognormal(0, 2, cols)
    if collinear and cols >= 3:
        a[:, -1] = a[:, 0] + a[:, 1]
    if zero_col:
        a[:, rng.integers(cols)] = 0.0
    new, old = nn.DesignNNLS(a), FormerDesignNNLS(a)
    assert new.exact == old.exact == _former_well_conditioned(a.T @ a)
    b = rng.normal(size=rows) + rng.normal() * a[:, 0]
    for _ in range(4):  # warm starts: the cached factors are met again
        assert np.array_equal(new.solve(b), old.solve(b))
        assert new.fallbacks == old.fallbacks
        b = b + 0.05 * rng.normal(size=rows)


def _area(seed: int, m: int = 8, d: int = 63) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two areas of hostile households: missing hours, a silent meter, twin meters, a thief."""
    rng = np.random.default_rng(seed)
    true = households(2 * m, d, seed=seed)
    rec = true.copy()
    rec[1] *= 0.5  # a thief taking half
    rec[2] = 0.0  # a meter recording nothing (its regressors are zero columns)
    rec[m + 1] = rec[m]  # twin meters: collinear regressors, a rank-deficient design
    true[m + 1] = true[m]
    rec[rng.random(rec.shape) < 0.002] = np.nan  # missing hours (the balance drops them)
    rec[3, 10:12] = np.nan  # two whole days missing
    feeders = np.stack([feeder_of(true[:m], seed=seed)[0], feeder_of(true[m:], seed=seed + 1)[0]])
    feeders[0, 20, 5] = np.nan
    return feeders, rec, np.repeat([0, 1], m)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_balance_is_its_former_form_to_the_bit(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    feeders, rec, area_of = _area(seed)
    weekday = np.arange(rec.shape[1]) % 7
    got = sg.interval_balance(feeders, rec, area_of, weekday, window=21)
    monkeypatch.setattr(sg, "_day_sums", _add_at_day_sums)
    monkeypatch.setattr(sg, "MAX_RUNS", -1)  # np.take at every fitted hour
    monkeypatch.setattr(nn, "DesignNNLS", FormerDesignNNLS)
    ref = sg.interval_balance(feeders, rec, area_of, weekday, window=21)
    for name, value in vars(ref).items():
        assert np.array_equal(getattr(got, name), value, equal_nan=True), name
    assert (got.strength > 0).any()


def test_robust_var_with_its_median_given() -> None:
    x = np.random.default_rng(4).standard_cauchy(1001)
    assert sg.robust_var(x, sg.median_1d(x)) == sg.robust_var(x)
