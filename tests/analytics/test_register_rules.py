"""Register rules on numpy columns (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.vee.params import params_for
from analytics.vee.registers import RegisterSeries, validate_registers
from analytics.vee.suggest import suggest_corrections

from .faults import make_fleet, score


def test_fleet_with_injected_index_faults_reaches_recall_and_precision_targets():
    fleet = make_fleet(meters=900, days=90, seed=3)
    ex = np.array(fleet.exchanges)
    batch = RegisterSeries(
        fleet.series,
        fleet.t,
        fleet.value,
        np.where(fleet.digits == 6, 1e6, 1e7).astype(float),
        np.zeros(fleet.meters, np.int64),
        [params_for("electricity")],
        ex_series=ex[:, 0].astype(np.int64),
        ex_t=ex[:, 1],
        ex_removal=ex[:, 2],
        ex_install=ex[:, 3],
    )
    result = validate_registers(batch)
    alarms = {(int(fleet.series[i]), float(fleet.t[i])) for i in result.flagged_rows()}
    recall, precision, missed, false = score(fleet, alarms)
    assert recall >= 0.95, missed
    assert precision >= 0.90, false[:10]


@pytest.mark.parametrize(
    ("typed", "true"),
    [(12845, 1245), (1245, 12435), (12354, 12345), (89954, 899), (1234500, 1234.5)],
    ids=["extra digit", "missing digit", "transposed", "extra digits at the end", "scale ÷1000"],
)
def test_digit_and_scale_suggestions_include_the_true_value(typed, true):
    found = suggest_corrections(typed, true - 20, true + 20, true - 3)
    assert true in [s.value for s in found]


@pytest.mark.parametrize("ragged", [False, True])
def test_series_median_matches_numpy_median_per_series(ragged):
    from analytics.vee.registers import _series_median

    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 400 if ragged else 12, 50)
    if ragged:
        lengths[0] = 20_000  # one very long series: the lexsort path
    s = np.repeat(np.arange(50), lengths)
    x = rng.normal(size=len(s))
    x[rng.random(len(s)) < 0.1] = np.nan
    first = np.r_[True, s[1:] != s[:-1]]
    got = _series_median(s, x, first)
    for k in range(50):
        vals = x[(s == k) & ~first]
        vals = vals[np.isfinite(vals)]
        assert np.isnan(got[k]) if not len(vals) else got[k] == pytest.approx(np.median(vals))
