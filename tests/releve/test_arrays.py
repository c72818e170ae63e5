"""``releve.arrays.sum_in_order``: the server's order of addition, to the bit."""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from releve.arrays import sum_in_order

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 30)), elements=finite | st.just(math.nan)))
def test_sum_in_order_adds_left_to_right_and_any_nan_makes_nan(values: np.ndarray) -> None:
    got = sum_in_order(values)
    for row, total in zip(values, got, strict=True):
        want = functools.reduce(operator.add, row.tolist())  # h0 + h1 + … as SQL's + chain adds them
        assert (math.isnan(total) and math.isnan(want)) or total == want
        assert math.isnan(total) == bool(np.isnan(row).any())


def test_sum_in_order_can_differ_from_numpys_pairwise_sum_in_the_last_bit() -> None:
    """Why it exists: numpy adds 24 values in eight interleaved partial sums, not one after the other."""
    rng = np.random.default_rng(7)
    values = rng.random((2000, 24))
    assert (sum_in_order(values) != values.sum(axis=1)).any()
    np.testing.assert_allclose(sum_in_order(values), values.sum(axis=1), rtol=1e-14)
