"""Small appliance steps for the level (:func:`analytics.theft.signals.small_steps`): a register scaled since
before the data shrinks its largest hourly rises with its level, an honest small household keeps steps of
normal size. Hand-built households with real-looking noise (the same as tests/analytics/theft/test_steps_held.py:
a lognormal level per day and per hour, wandering peaks, appliances of fixed power at random hours)."""

from __future__ import annotations

from datetime import date

import numpy as np

from analytics.theft import model as md
from analytics.theft import signals as sg
from analytics.theft.data import TheftData
from analytics.theft.features import compute_features
from tests.analytics.theft.test_steps_held import homes


def fleet(m: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(background, appliance load) of ``m`` households whose background level spreads over a factor 10.

    Their appliances are of similar power whatever the level (a kettle is a kettle): across the
    fleet the largest steps grow more slowly than the level.
    """
    back, appl = homes(m, d, seed=seed)
    spread = np.exp(np.random.default_rng(seed + 100).uniform(np.log(0.3), np.log(3.0), m))
    return back * spread[:, None, None], appl


def test_step_size_is_the_high_quantile_of_the_rises_within_days():
    hourly = np.zeros((2, 10, 24))
    hourly[0, :, 7] = 2.0  # a 2 kWh switch-on each morning, off the next hour
    hourly[1] = np.nan  # nothing recorded
    step = sg.step_size(hourly, quantile=0.99, min_rises=5)
    assert step[0] == 2.0 and np.isnan(step[1])
    assert np.isnan(sg.step_size(hourly[:, :2], min_rises=5)[0])  # two rises only


def test_theil_sen_follows_the_bulk_not_the_outliers():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 3, 400)
    y = 0.5 + 0.6 * x + rng.normal(0, 0.05, 400)
    y[:40] -= 2.0  # a tenth far below the line
    a, b = sg.theil_sen(x, y)
    assert abs(b - 0.6) < 0.05 and abs(a - 0.5) < 0.1
    a2, b2 = sg.theil_sen(x, y, max_pairs=5_000)  # sampled pairs: about the same line, the same twice
    assert abs(b2 - 0.6) < 0.06 and (a2, b2) == sg.theil_sen(x, y, max_pairs=5_000)


def test_a_scaled_register_has_small_steps_for_its_level_an_honest_small_household_does_not():
    d = 120
    back, appl = fleet(40, d, seed=31)
    rec = back + appl
    # Household 0, scaled to 35 % from the first day, against household 1, honestly small: its
    # background uses as little as the scaled one records, its appliances are the usual ones.
    rec[0] *= 0.35
    rec[1] = 0.35 * back[1] + appl[1]
    level = rec.sum(axis=2).mean(axis=1)
    z = sg.small_steps(sg.step_size(rec), level, np.zeros(40, dtype=np.int64))
    assert z.shape == (40,) and np.isfinite(z).all()
    assert z[0] > 1.5  # well below the fleet's steps for its level
    assert z[1] < 0.5  # an honest small household keeps its steps
    assert np.median(np.abs(z[2:])) < 1.0
    # The fleet's line: steps grow more slowly than the level (slope well below 1).
    _, b = sg.theil_sen(np.log(level[2:]), np.log(sg.step_size(rec[2:])))
    assert 0.0 < b < 0.8


def test_too_few_meters_or_rises_give_nothing():
    d = 60
    back, appl = fleet(10, d, seed=32)
    rec = back + appl
    level = rec.sum(axis=2).mean(axis=1)
    groups = np.zeros(10, dtype=np.int64)
    assert not sg.small_steps(sg.step_size(rec), level, groups).any()  # 10 meters: fewer than min_group
    step = sg.step_size(rec)
    step[3] = np.nan
    z = sg.small_steps(step, level, groups, min_group=5)
    assert z[3] == 0.0 and (z != 0.0).sum() >= 8


def test_without_a_feeder_the_component_lifts_a_scaled_household_not_an_honest_small_one():
    d = 120
    back, appl = fleet(60, d, seed=33)
    rec = back + appl
    # Household 8 is household 5 honestly smaller: its background at 30 %, the same appliances.
    # Household 5 is scaled to record as much (the same distance below the peers) from the first day.
    rec[8] = 0.3 * back[5] + appl[5]
    k = rec[8].sum() / rec[5].sum()
    assert 0.3 < k < 0.6
    rec[5] *= k
    data = TheftData.blank([f"M{i:02d}" for i in range(60)], date(2026, 1, 5), rec.sum(axis=2))
    data.hourly = rec
    f = compute_features(data)
    steps = f.col("small_steps")
    assert steps[5] > 1.5 and steps[8] < 0.5
    ev = md.evidence(f)
    assert ev.col("small_steps")[5] > 0.2 and ev.col("small_steps")[8] == 0.0
    # Both are as far below their peers; only the scaled one also has small steps.
    assert f.col("peer_low")[5] > 1.0
    assert abs(f.col("peer_low")[5] - f.col("peer_low")[8]) < 0.3
    # The component lifts the scaled one's score, and leaves the honest one's as it was.
    rule = md.rule_score(ev)
    without = md.Evidence(ev.names, ev.values.copy(), ev.ceiling, ev.damp)
    without.values[:, ev.names.index("small_steps")] = 0.0
    assert md.rule_score(without)[5] < rule[5] - 0.1
    assert md.rule_score(without)[8] == rule[8]
    # The list says why, in words an inspector reads, with the two figures behind it.
    from analytics.theft.ranking import explain, score

    reasons, evidence = explain(score(data), 5)
    said = next(r for r in reasons if r.startswith("its largest hourly steps are small for its level"))
    assert "far below its peers'" in said and "no feeder to confirm" in said
    assert evidence["small_steps"]["steps_z"] > 1.5 and evidence["small_steps"]["peer_z"] > 1.0
    # With a feeder the balance says more: the component is off.
    data.area = np.full(60, "A", dtype=object)
    data.feeders["A"] = rec.sum(axis=(0, 2))
    assert not md.evidence(compute_features(data)).col("small_steps").any()
