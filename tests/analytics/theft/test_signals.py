"""Each signal on small hand-built arrays (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.theft import signals as sg
from analytics.theft.features import compute_features
from tests.analytics.theft.fleet import DAYS, HONEST_FAULTY, THIEVES, build


def _flat(m: int, d: int, level: float = 10.0) -> np.ndarray:
    return np.full((m, d), level)


def test_clean_daily_spreads_a_communication_loss_catch_up():
    daily = _flat(1, 20)
    daily[0, 5:9] = np.nan
    daily[0, 9] = 50.0  # the register caught up the 4 silent days and its own
    c = sg.clean_daily(daily)
    assert np.allclose(c.values[0, 5:10], 10.0)
    assert c.catch_up[0, 5:10].all()
    assert c.silence_unrecovered[0] == 0
    assert c.silent_days[0] == 4


def test_clean_daily_frozen_register_is_a_fault_not_a_stop():
    frozen = _flat(2, 30)
    frozen[0, 10:15] = 0.0
    frozen[0, 15] = 60.0  # the register jumps back to the true index
    frozen[1, 10:15] = 0.0  # a stopped register never catches up
    c = sg.clean_daily(frozen)
    assert np.allclose(c.values[0], 10.0)
    assert c.frozen_days[0] == 5
    assert (c.values[1, 10:15] == 0).all()
    assert c.frozen_days[1] == 0


def test_clean_daily_rollover_exchange_and_scale_jump():
    daily = _flat(3, 30)
    daily[0, 12] = 10.0 - 6553.6  # a 16-bit counter of 0.1 kWh wrapped
    daily[1, 12] = -12345.0  # index reset by a meter exchange
    daily[2, 20:24] = 100.0  # ×10 scale jump
    c = sg.clean_daily(daily, wrap=np.array([6553.6, np.inf, np.inf]))
    assert c.values[0, 12] == pytest.approx(10.0)
    assert c.rollovers[0] == 1
    assert np.isnan(c.values[1, 12]) and c.index_faults[1] == 1
    assert np.isnan(c.values[2, 20:24]).all() and c.index_faults[2] == 4


def test_silence_without_catch_up_is_counted():
    daily = _flat(1, 20)
    daily[0, 5:9] = np.nan  # silent and the register did not move meanwhile
    c = sg.clean_daily(daily)
    assert c.silence_unrecovered[0] == 4


def test_sustained_drop_finds_the_change_point_depth_and_deficit():
    daily = _flat(3, 100)
    daily[0, 40:80] = 4.0  # −60 % for 40 days
    daily[1, 50:53] = 4.0  # three low days: not sustained
    season = np.ones_like(daily)
    drop = sg.sustained_drop(daily, season)
    assert abs(drop.start[0] - 40) <= 1 and abs(drop.end[0] - 80) <= 1
    assert drop.depth[0] == pytest.approx(0.6, abs=0.05)
    assert drop.deficit[0] == pytest.approx(40 * 6.0, rel=0.1)
    assert drop.end[1] - drop.start[1] <= 3
    assert drop.start[2] == -1 and drop.depth[2] == 0


def test_zero_while_energised_counts_reported_zero_days():
    daily = _flat(2, 60)
    daily[0, 20:35] = 0.0
    daily[1, 20:35] = np.nan  # silent, not zero
    drop = sg.sustained_drop(daily, np.ones_like(daily))
    assert drop.zero_days[0] == 15
    assert drop.zero_days[1] == 0


def test_seasonal_index_carries_the_season_not_the_level():
    season = 1 + 0.3 * np.sin(np.arange(60) / 10)
    daily = np.array([[5.0], [10.0], [20.0]]) * season[None, :]
    idx = sg.seasonal_index(daily, np.zeros(3, dtype=np.int64))
    rel = season / np.median(season)
    assert np.allclose(idx[0], rel, rtol=1e-6)


def _profiles(m: int, d: int) -> np.ndarray:
    shape = np.array([1, 1, 1, 1, 1, 2, 4, 6, 5, 3, 2, 2, 2, 2, 2, 3, 4, 6, 8, 9, 7, 5, 3, 2], dtype=float)
    rng = np.random.default_rng(0)
    return shape[None, None, :] * rng.lognormal(0, 0.1, (m, d, 24))


def test_profile_change_flattened_and_reversed():
    hourly = _profiles(3, 70)
    hourly[0, 30:] = hourly[0, 30:].mean(axis=1, keepdims=True)  # flat (h5)
    hourly[1, 40:60] = hourly[1, 40:60, ::-1]  # reversed (h6)
    p = sg.profile_change(hourly, np.arange(70) % 7)
    assert p.flattened[0] and abs(p.start[0] - 30) <= 3
    assert p.reversed[1] and abs(p.start[1] - 40) <= 3 and abs(p.end[1] - 60) <= 3
    assert p.score[0] > 0.5 and p.score[1] > 0.5
    assert p.score[2] == 0


def test_event_followed_by_drop_scores_more_than_an_event_alone():
    daily = _flat(2, 60)
    daily[0, 31:] = 3.0
    ratio = daily / 10.0
    drops, score = sg.event_drop(np.array([0, 1]), np.array([30, 30]), np.array([0.6, 0.6]), ratio)
    assert drops[0] == pytest.approx(0.7)
    assert drops[1] == 0
    assert score[0] == pytest.approx(0.72)
    assert score[1] == pytest.approx(0.3)


def test_reverse_energy_only_on_import_only_meters():
    imp = _flat(2, 10)
    exp = np.zeros((2, 10))
    exp[:, 5:] = 5.0
    share = sg.reverse_share(imp, exp, np.array([True, False]))
    assert share[0] == pytest.approx(25 / 125)
    assert share[1] == 0


def test_energy_balance_attributes_a_thief_not_a_vacancy():
    d = 120
    rng = np.random.default_rng(1)
    true = 10 * rng.lognormal(0, 0.03, (3, d))
    rec = true.copy()
    rec[0, 40:90] *= 0.4  # thief: feeder still delivers the true energy
    true[1, 20:50] *= 0.08  # vacancy: true and recorded fall together
    rec[1, 20:50] *= 0.08
    feeder = true.sum(axis=0) * 1.05
    bal = sg.energy_balance(feeder[None, :], rec.sum(axis=0)[None, :])
    assert bal.excess[0, 40:90].mean() == pytest.approx(6.0, rel=0.2)
    assert bal.excess[0, :40].mean() < 1.0
    drop = sg.sustained_drop(rec, np.ones_like(rec))
    gap = np.where(drop.low, np.maximum(drop.expected - rec, 0), 0)
    share = sg.balance_coincidence(gap, np.arange(3), np.zeros(3, dtype=np.int64), bal.residual)
    assert share[0] > 0.8
    assert share[1] < 0.2


def test_technical_loss_rising_with_load_is_not_excess():
    d = 200
    load = 1 + 0.4 * np.cos(np.arange(d) / d * 2 * np.pi)
    customers = 100 * load
    feeder = customers / (1 - (0.03 + 0.04 * load**2))
    bal = sg.energy_balance(feeder[None, :], customers[None, :])
    assert bal.score[0] < 0.005


def test_peer_outlier_and_silence_when_high():
    level = np.array([10, 11, 9, 10.5, 9.5, 3.0])
    z = sg.peer_outlier(level, np.zeros(6, dtype=np.int64))
    assert z[5] > 3 and z[:5].max() < 2
    values = _flat(1, 10)
    values[0, [1, 2, 8]] = np.nan
    season = np.array([[1, 2, 2, 1, 1, 1, 1, 1, 2, 1]], dtype=float)
    assert sg.silence_when_high(values, season)[0] == 3


def test_hand_built_fleet_features_separate_thieves_from_faulty_meters():
    data, _ = build()
    f = compute_features(data)
    idx = {s: i for i, s in enumerate(data.serials)}
    assert f.col("event_score")[idx["A01"]] > 0.5
    assert f.col("zero_run")[idx["A02"]] >= 35
    assert f.col("reverse_share")[idx["A03"]] > 0.3
    assert f.col("profile_flat")[idx["B01"]] == 1
    assert f.col("profile_reversed")[idx["B03"]] == 1
    assert f.col("balance_share")[idx["B02"]] > 0.7
    assert f.col("balance_share")[idx["A10"]] < 0.3  # vacancy: the feeder fell too
    assert f.col("frozen_days")[idx["A11"]] >= 5  # frozen register explained
    assert f.col("rollovers")[idx["B11"]] == 1
    assert f.col("catch_up_days")[idx["B10"]] >= 7  # comm loss caught up
    assert f.col("drop_days")[idx["B10"]] < 5
    assert set(THIEVES) | set(HONEST_FAULTY) <= set(idx)
    assert data.n_days == DAYS
