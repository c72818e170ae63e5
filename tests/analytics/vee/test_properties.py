"""Properties of the register rules on random index series (hypothesis): index arithmetic that must hold."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from analytics.vee.params import params_for
from analytics.vee.registers import READ_ESTIMATE, RegisterSeries, validate_registers
from analytics.vee.suggest import adjacent_swaps, suggest_corrections

DAY = 86400.0


def series(values, read_type=None, klass="manual"):
    n = len(values)
    return RegisterSeries(
        np.zeros(n, np.int64),
        np.arange(n) * DAY,
        np.asarray(values, float),
        np.array([np.inf]),
        np.zeros(1, np.int64),
        [params_for("electricity", klass)],
        read_type=None if read_type is None else np.asarray(read_type, np.int8),
    )


usages = st.lists(st.integers(15, 25), min_size=24, max_size=40)


@settings(max_examples=60, deadline=None)
@given(usages, st.integers(1000, 900_000), st.integers(10, 14), st.integers(1, 5), st.sampled_from([10, 1000, -10]))
@example(use=[15] * 9 + [21, 25, 25] + [15] * 12, start=1000, at=10, length=3, factor=10)  # usage rose under the run
@example(use=[15] * 24, start=1000, at=10, length=2, factor=10)  # the 2nd substitute of a run from the 1st
def test_a_run_of_scaled_reads_is_one_fault_every_read_flagged_and_substituted_between_good_reads(
    use, start, at, length, factor
):
    true = np.cumsum([start, *use]).astype(float)
    seen = true.copy()
    run = slice(at, at + length)
    seen[run] = true[run] * factor if factor > 0 else np.floor(true[run] / -factor)
    r = validate_registers(series(seen, klass=""))
    errors = {f.row for f in r.findings if f.severity == "error"}
    assert set(range(at, at + length)) <= errors
    assert not errors - set(range(at, at + length))  # the read that returns to normal is not blamed
    subs = {e.row: e.value for e in r.estimates if e.row is not None}
    assert set(subs) == set(range(at, at + length))
    for i, value in subs.items():  # from good reads only: between the good neighbours, near the truth
        assert true[at - 1] <= value <= true[at + length]
        # Daily usage spans at most max(use) - min(use) (≤ 10): an estimate from the good reads is off by
        # no more than that spread over the span between them.
        assert abs(value - true[i]) <= (max(use) - min(use)) * (length + 1)
    faults = {f.details.get("fault_start") for f in r.findings if f.row in subs}
    assert len(faults) == 1


@settings(max_examples=60, deadline=None)
@given(usages, st.integers(1000, 900_000), st.integers(10, 14), st.integers(1, 3), st.floats(0.2, 3.0))
def test_utility_estimates_never_blame_the_actual_read_that_catches_up(use, start, at, n_est, factor):
    true = np.cumsum([start, *use]).astype(float)
    seen = true.copy()
    step = float(np.median(use))
    rt = np.zeros(len(seen), np.int8)
    for k in range(n_est):
        seen[at + k] = round(true[at - 1] + factor * step * (k + 1))
        rt[at + k] = READ_ESTIMATE
    r = validate_registers(series(seen, rt))
    assert not [f for f in r.findings if f.severity != "info"]
    # consumption over the whole catch-up adds up to the true index difference
    catch = at + n_est
    assert np.nansum(r.consumption[at : catch + 1]) == true[catch] - true[at - 1]


@settings(max_examples=200, deadline=None)
@given(st.integers(10, 10**9), st.data())
def test_a_transposed_index_is_suggested_back_when_the_true_one_is_in_band(x, data):
    swaps = [y for y in adjacent_swaps(float(x)) if y != x]
    if not swaps:
        return
    y = data.draw(st.sampled_from(swaps))
    got = suggest_corrections(y, x - 5, x + 5, x, integral=True, limit=20, typed=True, previous=x - 10)
    assert x in [s.value for s in got]
    assert [s.cost for s in got] == sorted(s.cost for s in got)
    assert all(x - 5 <= s.value <= x + 5 for s in got)


def _plain_trailing_median(x, start, window):
    """Row by row: numpy's nanmedian of the previous window[i] rows of the series (the reference)."""
    med, count = np.full(len(x), np.nan), np.zeros(len(x), np.int64)
    for i in range(len(x)):
        past = x[max(start[i], i - int(window[i])) : i]
        past = past[~np.isnan(past)]
        count[i] = len(past)
        if len(past):
            med[i] = np.median(past)
    return med, count


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False), st.just(np.inf)), max_size=30),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(0, 12), min_size=1, max_size=6),
)
def test_the_trailing_median_is_numpys_median_of_each_rows_past_window_within_its_series(series_values, windows):
    """A series never lends its values to the next, NaNs are not counted, and the medians are numpy's to the bit."""
    from analytics.vee.registers import trailing_median

    x = np.array([np.nan if v is None else v for values in series_values for v in values], float)
    start = np.concatenate([np.full(len(v), sum(map(len, series_values[:k]))) for k, v in enumerate(series_values)])
    window = np.array([windows[k % len(windows)] for k in range(len(x))], np.int64)
    med, count = trailing_median(x, start.astype(np.int64), window)
    ref_med, ref_count = _plain_trailing_median(x, start, window)
    np.testing.assert_array_equal(count, ref_count)
    np.testing.assert_array_equal(med, ref_med)
