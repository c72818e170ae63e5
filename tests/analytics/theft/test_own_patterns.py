"""Own-series patterns for ranking without a feeder (on/off weeks, reversed weeks, a vacancy's flat
days at the base load), on hand-built households with real-looking noise (lognormal day-to-day
level, wandering peaks, kettle spikes; see :func:`households`)."""

from __future__ import annotations

from datetime import date

import numpy as np

from analytics.theft import model as md
from analytics.theft import signals as sg
from analytics.theft.data import TheftData
from analytics.theft.evidence import COMPONENTS
from analytics.theft.features import compute_features
from tests.analytics.theft.test_interval_signals import households


def test_on_off_weeks_stand_out_of_a_week_away_and_a_switched_off_fortnight():
    d = 168
    rec = households(30, d, seed=11, season=0.0)
    on = (np.arange(d - 56) // 7) % 2 == 0
    rec[4, 56:] = np.where(on[:, None], rec[4, 56:] * 0.3, rec[4, 56:])  # every other week 30 % recorded
    rec[9, 70:77] *= 0.1  # a week away
    rec[13, 100:114] = 0.0  # two weeks switched off: left to the zero and drop signals
    daily = rec.sum(axis=2)
    stat, first, end = sg.weekly_alternation(daily, np.ones_like(daily))
    assert 0.8 < stat[4] < 1.6  # about |log 0.3| = 1.2: counted fully (0.5 → 0.9)
    honest = np.delete(stat, 4)
    assert honest.max() < 0.35  # the week away scores a fraction of its depth; wandering weeks ≈ 0.1
    assert stat[9] == honest.max()
    assert stat[13] < 0.2
    assert abs(int(first[4]) - 56) <= 3 and int(end[4]) >= d - 7


def test_on_off_weeks_against_the_season_and_with_missing_days():
    d = 196
    day = np.arange(d)
    season = 1 + 0.4 * np.cos(2 * np.pi * day / 365)
    daily = households(12, d, seed=12, season=0.4).sum(axis=2)
    daily[2, 98:] = np.where(((day[98:] - 98) // 7) % 2 == 1, daily[2, 98:] * 0.5, daily[2, 98:])
    daily[5, ::9] = np.nan  # scattered missing days
    stat, _, _ = sg.weekly_alternation(daily, np.broadcast_to(season, daily.shape))
    assert 0.45 < stat[2] < 1.0  # |log 0.5| = 0.69
    assert np.delete(stat, 2).max() < 0.3
    short = sg.weekly_alternation(daily[:, :60], np.ones((12, 60)))[0]
    assert not short.any()  # too few weeks for a six-week run and the weeks outside it


def test_reversed_weeks_are_found_and_a_night_appliance_is_not_them():
    d = 168
    rec = households(30, d, seed=11, season=0.0)
    rec[6, 126:] = rec[6, 126:, ::-1]  # the last six weeks recorded backwards
    rec[17, 126:, 1:6] += 2.0  # a car charging at 2 kW from 01:00: the load moves to the night, by adding
    marked = sg.reversed_weeks(rec)
    assert marked.shape == (30, 24) and set(np.unique(marked)) <= {0.0, 1.0}
    weeks, first, end, _ = sg.longest_true_span(marked > 0)
    assert weeks[6] == 6 and first[6] == 18 and end[6] == 24  # exactly the last six weeks
    assert np.delete(weeks, 6).max() <= 1  # a household's odd week, the charging's night block: no run
    # Without the sorted-hours condition the night block reads as the day reversed, week after week.
    loose = sg.reversed_weeks(rec, same_hours=99.0)
    assert np.nansum(marked[17]) == 0 and sg.longest_true_span(loose > 0)[0][17] == 6
    # A week is judged on its complete days; a week without one is not judged.
    rec[3, 70:77] = np.nan
    rec[3, 80, 2] = np.nan
    again = sg.reversed_weeks(rec)
    assert np.isnan(again[3, 10]) and again[3, 11] == 0.0
    # A meter installed in the ninth week: its own first six weeks are its reference.
    late = rec.copy()
    late[6, :56] = np.nan
    assert sg.longest_true_span(sg.reversed_weeks(late) > 0)[0][6] == 6
    # Too short for the earliest six weeks and three more: nothing is judged.
    assert not sg.reversed_weeks(rec[:, :60]).any()


def _data(rec: np.ndarray) -> TheftData:
    data = TheftData.blank([f"M{i:02d}" for i in range(rec.shape[0])], date(2026, 1, 5), rec.sum(axis=2))
    data.hourly = rec
    return data


def test_flat_days_at_the_base_load_are_a_vacancy_and_count_against_the_drop():
    d = 168
    rng = np.random.default_rng(4)
    rec = households(30, d, seed=9, season=0.0)
    base = np.quantile(rec[3], 0.1)
    rec[3, 84:140] = base * rng.uniform(0.8, 1.2, (56, 24))  # vacant for eight weeks: fridge and standby
    rec[8, 84:140] = rec[8, 84:140].mean(axis=1, keepdims=True)  # flattened to the day's mean
    f = compute_features(_data(rec))
    level = f.col("flat_level")
    assert 0.7 < level[3] < 1.2
    assert level[8] > 2.0
    ev = md.evidence(f)
    flat = ev.col("flat_run")
    assert flat[8] == 1.0 and flat[3] < 0.25  # the flatter run stands near the base load: barely counted
    assert f.col("spread_run_z")[3] > 7  # the vacancy is a flatter run all the same …
    assert ev.damp is not None and ev.damp[3] < 0.3 and ev.damp[8] == 1.0  # … that takes its drop down
    rule = md.rule_score(ev)
    assert rule[8] > rule[3]


def test_a_pattern_lifts_a_fall_above_the_plain_falls_and_stays_below_a_full_mark_without_a_feeder():
    names = tuple(c.name for c in COMPONENTS)
    values = np.zeros((3, len(names)))
    for n in ("drop", "change", "fell", "profile"):
        values[:2, names.index(n)] = 1.0  # every own-series component at its fullest
    values[1, names.index("on_off")] = 1.0
    values[2, names.index("marks")] = 1.0
    ceiling = np.full(3, md.NO_FEEDER_CEILING)
    rule = md.rule_score(md.Evidence(names, values, ceiling, np.ones(3)))
    assert rule[2] > rule[1] > rule[0]
    # With a feeder (no ceiling) the pattern is one more component of the noisy-OR.
    alone = np.zeros((1, len(names)))
    alone[0, names.index("on_off")] = 1.0
    plain = md.rule_score(md.Evidence(names, alone, None))
    assert abs(plain[0] - md.WEIGHTS["on_off"]) < 1e-12


def test_ranking_without_a_feeder_names_the_on_off_weeks_and_the_reversed_days():
    from analytics.theft.ranking import score

    d = 168
    rec = households(30, d, seed=11, season=0.0)
    on = (np.arange(d - 56) // 7) % 2 == 0
    rec[4, 56:] = np.where(on[:, None], rec[4, 56:] * 0.3, rec[4, 56:])
    rec[6, 126:] = rec[6, 126:, ::-1]
    top = {c.meter: c for c in score(_data(rec)).candidates(2)}
    assert set(top) == {"M04", "M06"}
    assert top["M04"].signal == "on_off" and top["M06"].signal == "reversed"
    assert top["M04"].reasons[0].startswith("consumption alternates week by week from 2026-03-0")
    assert "(the low weeks about 3" in top["M04"].reasons[0]
    assert top["M06"].reasons[0].startswith("days shaped like its usual day reversed in time from 2026-05-")
    assert top["M04"].evidence["on_off"]["log_ratio"] > 0.8
