"""The appliance steps of a fall (:func:`analytics.theft.signals.steps_held`): a scaled register shrinks
its largest hourly rises with its level, a household that uses less keeps them. Hand-built households
with real-looking noise: a lognormal level per day and per hour, wandering peaks, and appliances of
fixed power switched on at random hours."""

from __future__ import annotations

from datetime import date

import numpy as np

from analytics.theft import model as md
from analytics.theft import signals as sg
from analytics.theft.data import TheftData
from analytics.theft.evidence import STEPS_HELD_DAMP
from analytics.theft.features import compute_features


def homes(m: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(background load, appliance load), each meters × days × 24 kWh; the meter records their sum."""
    rng = np.random.default_rng(seed)
    hours = np.arange(24)
    level = rng.lognormal(np.log(0.4), 0.4, m)
    power = rng.uniform(1.0, 2.5, m)  # the household's kettle / oven / shower, kW
    back = np.empty((m, d, 24))
    appl = np.empty((m, d, 24))
    for i in range(m):
        morning, evening = rng.uniform(6.5, 8.5), rng.uniform(17.5, 20.5)
        for j in range(d):
            shift = rng.normal(0, 1.0)
            shape = (
                0.4
                + np.exp(-0.5 * ((hours - morning - shift) / 1.2) ** 2)
                + 1.6 * np.exp(-0.5 * ((hours - evening - shift) / 1.8) ** 2)
            )
            back[i, j] = level[i] * rng.lognormal(0, 0.25) * shape / shape.mean() * rng.lognormal(0, 0.3, 24)
            # Switched on for 10–40 minutes in a few hours of the day: a fixed power, a varying time.
            appl[i, j] = (rng.random(24) < 0.08) * power[i] * rng.uniform(0.15, 0.7, 24)
    return back, appl


def test_a_scaled_register_shrinks_its_steps_with_its_level_a_household_using_less_keeps_them():
    d = 200
    back, appl = homes(12, d, seed=21)
    rec = back + appl
    rec[1, 140:] *= 0.5  # scaled: every hour recorded at half
    rec[2, 140:] = 0.5 * back[2, 140:] + appl[2, 140:]  # uses less, same appliances
    rec[3, 170:] *= 0.3  # scaled harder over the last 30 days only
    daily = rec.sum(axis=2)
    held = sg.steps_held(rec, daily, np.ones(d))
    assert held.shape == (12,) and np.isfinite(held).all()
    # The level fell in all three; only the household's steps held.
    assert abs(held[1]) < 0.2 and abs(held[3]) < 0.2
    assert held[2] > 0.35
    honest = np.delete(held, [1, 2, 3])
    assert np.abs(honest).max() < 0.3  # level and steps unchanged: both ratios ≈ 1
    # The same for a household whose days follow a season (windows of the same season).
    season = 1 + 0.3 * np.cos(2 * np.pi * np.arange(d) / 365)
    np.testing.assert_allclose(
        sg.steps_held(rec * season[None, :, None], daily * season, season)[1:4], held[1:4], atol=0.15
    )


def test_too_little_data_gives_nothing():
    d = 200
    back, appl = homes(4, d, seed=22)
    rec = back + appl
    rec[0, 175:] = np.nan  # five days left in the last 30
    daily = np.where(np.isfinite(rec).all(axis=2), rec.sum(axis=2), np.nan)
    held = sg.steps_held(rec, daily, np.ones(d))
    assert held[0] == 0.0 and (held[1:] != 0.0).all()
    assert not sg.steps_held(rec[:, :60], daily[:, :60], np.ones(60)).any()  # too short for two windows


def test_without_a_feeder_a_fall_whose_steps_held_counts_for_less_than_a_scaled_one():
    d = 200
    back, appl = homes(30, d, seed=23)
    rec = back + appl
    rec[4, 140:] *= 0.3  # scaled to 30 %
    rec[9, 140:] = 0.3 * back[9, 140:] + appl[9, 140:]  # uses a third, same appliances
    data = TheftData.blank([f"M{i:02d}" for i in range(30)], date(2026, 1, 5), rec.sum(axis=2))
    data.hourly = rec
    f = compute_features(data)
    held = f.col("steps_held")
    assert held[9] > 0.4 and abs(held[4]) < 0.15
    assert np.abs(np.delete(held, [4, 9])).max() < 0.3
    ev = md.evidence(f)
    assert ev.damp is not None
    assert ev.damp[9] <= 1.0 - 0.99 * STEPS_HELD_DAMP < ev.damp[4]
    rule = md.rule_score(ev)
    assert rule[4] > rule[9]
