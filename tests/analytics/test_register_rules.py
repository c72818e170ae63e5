"""Register rules on numpy columns (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.vee.params import params_for
from analytics.vee.registers import RegisterSeries, validate_registers
from analytics.vee.suggest import suggest_corrections

from .faults import DAY, make_fleet, score


def one_series(values, modulus=np.inf, t=None, **ex):
    n = len(values)
    t = np.arange(n) * DAY if t is None else np.asarray(t, float)
    return RegisterSeries(np.zeros(n, np.int64), t, np.asarray(values, float), np.array([modulus]),
                          np.zeros(1, np.int64), [params_for("electricity")], **ex)  # fmt: skip


def rules_at(result):
    return sorted((f.row, f.rule) for f in result.findings)


def test_fleet_with_injected_index_faults_reaches_recall_and_precision_targets():
    fleet = make_fleet(meters=900, days=90, seed=3)
    ex = np.array(fleet.exchanges)
    batch = RegisterSeries(
        fleet.series, fleet.t, fleet.value, np.where(fleet.digits == 6, 1e6, 1e7).astype(float),
        np.zeros(fleet.meters, np.int64), [params_for("electricity")],
        ex_series=ex[:, 0].astype(np.int64), ex_t=ex[:, 1], ex_removal=ex[:, 2], ex_install=ex[:, 3],
    )  # fmt: skip
    result = validate_registers(batch)
    alarms = {(int(fleet.series[i]), float(fleet.t[i])) for i in result.flagged_rows()}
    recall, precision, missed, false = score(fleet, alarms)
    assert recall >= 0.95, missed
    assert precision >= 0.90, false[:10]


def test_isolated_scale_jump_blames_only_the_bad_read_and_suggests_the_true_value():
    values = [100.0 + 10 * i for i in range(15)]
    values[10] = 200_000.0  # 200 ×1000
    r = validate_registers(one_series(values))
    assert rules_at(r) == [(10, "HILO_HIGH"), (10, "SCALE_JUMP")]
    scale = next(f for f in r.findings if f.rule == "SCALE_JUMP")
    assert scale.suggestions[0].value == 200.0
    assert [(e.row, e.value, e.method) for e in r.estimates] == [(10, 200.0, 17)]
    assert r.consumption[10] == pytest.approx(10) and r.consumption[11] == pytest.approx(10)


def test_frozen_register_is_flagged_once_it_repeats_three_times_while_power_flows():
    values = [100.0 + 10 * i for i in range(12)] + [210.0] * 3 + [250.0 + 10 * i for i in range(5)]
    r = validate_registers(one_series(values))
    assert (13, "FROZEN") in rules_at(r)
    assert (12, "ZERO") in rules_at(r)


def test_recorded_exchange_gives_consumption_across_it_without_alarm():
    values = [5000.0 + 10 * i for i in range(12)] + [4.0 + 10 * i for i in range(6)]
    r = validate_registers(one_series(
        values, ex_series=np.array([0]), ex_t=np.array([11.5 * DAY]), ex_removal=np.array([5116.0]),
        ex_install=np.array([0.0]),
    ))  # fmt: skip
    assert rules_at(r) == [(12, "EXCHANGE")]
    assert r.consumption[12] == pytest.approx(6 + 4)


def test_unrecorded_reset_near_zero_counts_from_zero_and_a_bare_drop_is_negative():
    reset = validate_registers(one_series([5000.0 + 10 * i for i in range(12)] + [8.0, 18.0, 28.0]))
    assert rules_at(reset) == [(12, "RESET")]
    assert reset.consumption[12] == 8.0
    drop = validate_registers(one_series([5000.0 + 10 * i for i in range(12)] + [4000.0, 4010.0, 4020.0]))
    assert rules_at(drop) == [(12, "NEGATIVE")]


def test_rollover_at_two_to_the_sixteen_is_consumption():
    values = [65400.0 + 20 * i for i in range(10)]
    values = [v % 65536 for v in values]
    r = validate_registers(one_series(values, modulus=65536.0))
    assert [f.rule for f in r.findings] == ["ROLLOVER"]
    assert np.nanmax(r.consumption) == pytest.approx(20)


def test_gap_is_reported_and_filled_by_linear_interpolation():
    t = np.r_[np.arange(10), np.arange(14, 20)] * DAY
    values = 100.0 + 5 * t / DAY
    r = validate_registers(one_series(values, t=t))
    assert rules_at(r) == [(10, "GAP")]
    assert [(e.t / DAY, e.value, e.method) for e in r.estimates] == [(10, 150, 17), (11, 155, 17), (12, 160, 17),
                                                                      (13, 165, 17)]  # fmt: skip


def test_duplicate_instant_is_reported_and_does_not_disturb_the_rest():
    t = np.r_[np.arange(10), [9], np.arange(10, 14)] * DAY
    values = np.r_[100 + 5 * np.arange(10), [146], 150 + 5 * np.arange(4)]
    r = validate_registers(one_series(values, t=t))
    assert [(f.row, f.rule) for f in r.findings] == [(10, "DUPLICATE")]
    assert "conflict" in r.findings[0].message


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
