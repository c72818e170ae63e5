"""analytics.theft.nnls: scipy's non-negative least squares to rounding, on random and balance-like designs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls

from analytics.theft import signals as sg
from analytics.theft.nnls import DesignNNLS
from tests.analytics.theft.test_interval_signals import feeder_of, households


def _kkt(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> None:
    """x ≥ 0, the gradient 0 where x > 0 and pointing out of the bound where x = 0 (within rounding)."""
    grad = a.T @ (b - a @ x)
    tol = 1e-9 * max(float(np.abs(a.T @ b).max()), 1e-300)
    assert (x >= 0).all()
    assert (np.abs(grad[x > 0]) <= tol).all()
    assert (grad[x == 0] <= tol).all()


def _same(x: np.ndarray, ref: np.ndarray) -> None:
    assert np.array_equal(x > 0, ref > 0)
    assert np.abs(x - ref).max() <= 1e-10 * max(float(np.abs(ref).max()), 1e-300)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(20, 120),
    cols=st.integers(1, 15),
    seed=st.integers(0, 2**31 - 1),
    shift=st.floats(-1.0, 1.0),
)
def test_random_designs_give_scipys_solution_round_after_round(rows: int, cols: int, seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(rows, cols)) * rng.lognormal(0, 1, cols)
    solver = DesignNNLS(a)
    b = rng.normal(size=rows) + shift * a[:, 0]
    for _ in range(3):  # the same design, a right-hand side that moves: warm starts
        x = solver.solve(b)
        _kkt(a, b, x)
        _same(x, nnls(a, b)[0])
        b = b + 0.1 * rng.normal(size=rows)
    assert solver.fallbacks == 0


def test_balance_designs_give_scipys_solution() -> None:
    """Designs as the interval balance builds them (a window's regressors of an area's households)."""
    true = households(12, 56, seed=11)
    recorded = true.copy()
    recorded[3] *= 0.6
    feeder, _ = feeder_of(true, seed=12)
    weekday = np.arange(56) % 7
    g = np.concatenate([sg.meter_regressors(recorded, weekday), sg.clock_regressors(recorded)], axis=1)
    scale = float(feeder.mean())
    cand = (g / scale).reshape(-1, 56 * 24)
    resid = (feeder - recorded.sum(axis=0)).reshape(-1) / scale
    for w in range(2):
        hours = slice(w * 28 * 24, (w + 1) * 28 * 24)
        design = cand[:, hours].T
        design = np.ascontiguousarray(design[:, np.abs(design).sum(axis=0) > 0])
        solver = DesignNNLS(design, maxiter=30 * design.shape[1])
        b = resid[hours].copy()
        for _ in range(3):
            x = solver.solve(b)
            _kkt(design, b, x)
            _same(x, nnls(design, b, maxiter=30 * design.shape[1])[0])
            b = b - 0.01 * (b - b.mean())  # as the technical loss's fit moves it between rounds
        assert solver.fallbacks == 0


def test_a_rank_deficient_design_is_scipys_exactly() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(50, 4))
    a = np.column_stack([a, a[:, 0] + a[:, 1]])  # a column that is the sum of two others
    b = rng.normal(size=50) + a[:, 4]
    solver = DesignNNLS(a)
    assert not solver.exact
    assert np.array_equal(solver.solve(b), nnls(a, b)[0])
    assert solver.fallbacks == 1


def test_edge_cases() -> None:
    a = np.eye(3)
    solver = DesignNNLS(a)
    assert np.array_equal(solver.solve(np.array([-1.0, -2.0, -3.0])), np.zeros(3))
    assert np.allclose(solver.solve(np.array([1.0, -2.0, 3.0])), [1.0, 0.0, 3.0])
    assert np.array_equal(solver.solve(np.zeros(3)), np.zeros(3))
