"""Non-negative least squares for one design and several right-hand sides, exact and fast.

The interval balance (:func:`analytics.theft.signals.interval_balance`) solves, per window, the
same design (hours × the area's candidate regressors, about 672 × 120) three times over, each
round with a right-hand side that moved a little. :class:`DesignNNLS` builds the design's Gram
matrix ``AᵀA`` once (one BLAS call) and solves each round on the normal equations by block
principal pivoting (Júdice & Pires; Kim & Park, *Fast nonnegative matrix factorization*, 2011),
started from the previous round's set of positive coefficients: a handful of small solves
instead of scipy's Lawson–Hanson from scratch, which rebuilds its QR factors column by column.

The result is scipy's to rounding, not a different fit: with a design of full column rank the
solution of non-negative least squares is unique, so any exact algorithm finds it. The normal
equations square the design's condition number, so a solve is taken only where the Gram matrix
is well conditioned (:data:`MIN_RCOND`), its coefficients are refined once against the design
itself, and the Karush–Kuhn–Tucker conditions are checked on the result; anything else (a
rank-deficient or ill-conditioned design, no convergence, a failed check) is left to
:func:`scipy.optimize.nnls`, whose answer is then exactly the one it always gave.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack
from scipy.optimize import nnls

from releve.arrays import BoolArray, FloatArray, IntArray

#: Below this reciprocal condition number (LAPACK's estimate, of the Gram matrix with its columns
#: scaled to unit norm) the normal equations are left to scipy: 1e-8 is a design condition number
#: of about 1e4 (the interval balance's designs are about 1e3).
MIN_RCOND = 1e-8

#: A coefficient left at zero is optimal when the gradient does not point into it by more than
#: this, relative to the largest entry of ``Aᵀb`` (rounding in the gradient is about 1e-15 of it).
KKT_TOL = 1e-11


class DesignNNLS:
    """``argmin ‖A x − b‖₂, x ≥ 0`` for one design ``A`` and successive right-hand sides ``b``.

    Each :meth:`solve` starts from the set of positive coefficients the previous one found (the
    right-hand sides of successive rounds differ little), the first from ``passive`` (none by
    default). ``maxiter`` is passed on to scipy where it takes over.
    """

    def __init__(self, design: FloatArray, maxiter: int | None = None, passive: BoolArray | None = None) -> None:
        self.design = np.ascontiguousarray(design, dtype=float)
        self.maxiter = maxiter
        n = self.design.shape[1]
        self.gram = self.design.T @ self.design
        #: Where the first solve starts: a guess of the positive coefficients (any guess is exact).
        self.passive: BoolArray = np.zeros(n, dtype=bool) if passive is None else np.array(passive, dtype=bool)
        self.exact = _well_conditioned(self.gram)
        #: Solves that scipy made (for the tests and the curious).
        self.fallbacks = 0
        #: Per set of free variables met (``BoolArray.tobytes``): its indices, Gram matrix and Cholesky factor.
        self._factors: dict[bytes, tuple[IntArray, FloatArray, FloatArray | None]] = {}
        #: The design's columns of the last set the refinement used (its key, the columns).
        self._sub: tuple[bytes, FloatArray] | None = None

    def solve(self, rhs: FloatArray) -> FloatArray:
        """The non-negative least squares coefficients for ``rhs``."""
        b = np.asarray(rhs, dtype=float)
        x = self._pivoting(b) if self.exact else None
        if x is None:
            self.fallbacks += 1
            x, _ = nnls(self.design, b, maxiter=self.maxiter)
        self.passive = x > 0
        return x

    def _pivoting(self, b: FloatArray) -> FloatArray | None:
        """Block principal pivoting on the normal equations, then one refinement and the KKT check."""
        a, gram = self.design, self.gram
        c = a.T @ b
        n = c.size
        scale = float(np.abs(c).max()) if n else 0.0
        if scale == 0.0:
            return np.zeros(n)  # b ⟂ every column: 0 is optimal
        tol = KKT_TOL * scale
        free = self.passive.copy()
        x = np.zeros(n)
        # Júdice & Pires: exchange every infeasible variable at once while their number falls;
        # after three exchanges that did not make it fall, one at a time (the largest index):
        # that backup rule makes the method finite.
        chances, fewest = 3, n + 1
        try:
            for _ in range(2 * n + 10):
                x = self._solve_on(c, free)
                y = gram @ x - c  # the gradient; 0 on the free variables
                wrong = np.where(free, x < 0, y < -tol)
                count = int(np.count_nonzero(wrong))
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
            # One step of refinement against the design itself (the normal equations lose digits).
            key = free.tobytes()
            idx, sub_gram, _ = self._factors[key]
            if idx.size:
                if self._sub is None or self._sub[0] != key:
                    self._sub = (key, a[:, idx])  # the next round usually ends on the same set
                sub = self._sub[1]
                r = b - sub @ x[idx]
                x[idx] += np.linalg.solve(sub_gram, sub.T @ r)
        except np.linalg.LinAlgError:
            return None
        grad = a.T @ (b - a @ x)  # −gradient: ≤ 0 (within rounding) where a coefficient is 0
        if (x[free] <= 0).any() or (grad[~free] > tol).any():
            return None
        return x

    def _solve_on(self, c: FloatArray, free: BoolArray) -> FloatArray:
        """The unconstrained least squares coefficients on the ``free`` variables (0 elsewhere).

        LAPACK's ``dposv`` on the free variables' Gram matrix, to the bit: ``dposv`` is ``dpotrf``
        then ``dpotrs``, so a set's Cholesky factor is kept for the next time the pivoting (or
        the next round, which starts where this one ended) comes back to it.
        """
        key = free.tobytes()
        known = self._factors.get(key)
        if known is None:
            idx = np.flatnonzero(free)
            sub_gram = self.gram.take(idx, axis=0).take(idx, axis=1)  # gram[np.ix_(idx, idx)], in a third of its time
            factor = None
            if idx.size:
                factor, info = lapack.dpotrf(sub_gram, lower=0, clean=0)
                if info != 0:
                    raise np.linalg.LinAlgError("not positive definite")
            known = self._factors[key] = (idx, sub_gram, factor)
        idx, _, factor = known
        x = np.zeros(c.size)
        if idx.size:
            x[idx], info = lapack.dpotrs(factor, c[idx], lower=0)
            if info != 0:
                raise np.linalg.LinAlgError("dpotrs failed")
        return x


def _well_conditioned(gram: FloatArray) -> bool:
    """Whether the Gram matrix, its columns scaled to unit norm, is positive definite with rcond ≥ :data:`MIN_RCOND`."""
    diag = np.diag(gram)
    if gram.size == 0 or not (diag > 0).all() or not np.isfinite(gram).all():
        return False
    s = 1.0 / np.sqrt(diag)
    unit = gram * s[:, None]
    unit *= s[None, :]  # (gram · s) · s, as before, in one buffer
    factor, info = lapack.dpotrf(unit, lower=0, clean=1)
    if info != 0:
        return False
    rcond, info = lapack.dpocon(factor, float(np.abs(unit).sum(axis=0).max()))
    return info == 0 and rcond >= MIN_RCOND
