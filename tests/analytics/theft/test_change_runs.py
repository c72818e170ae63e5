"""The season-adjusted relative drop and the flatter-run test on hand-built households with
real-looking noise (lognormal day-to-day level, wandering peaks, kettle spikes; see
:func:`households`)."""

from __future__ import annotations

import numpy as np

from analytics.theft import signals as sg
from tests.analytics.theft.test_interval_signals import households


def _spread_z(hourly: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    daily = hourly.sum(axis=2)
    per_day = sg.daily_stats(hourly, daily, np.arange(hourly.shape[1]) % 7)
    spread = per_day[:, list(sg.CHANGE_STATS).index("spread")]
    stat, w0, w1 = sg.segment_shift(sg.weekly_means(spread))
    return sg.fleet_z(stat), w0, w1


def test_relative_drop_reads_an_ongoing_loss_and_not_the_season():
    d = 196
    day = np.arange(d)
    season = 1 + 0.4 * np.cos(2 * np.pi * day / 365)  # winter first, early summer at the end
    rng = np.random.default_rng(3)
    values = 10 * season[None, :] * rng.lognormal(0, 0.25, (6, d))
    values[2, 150:] *= 0.5  # half stolen for the last 46 days
    values[4, 60:120] = np.nan  # a gap between the windows is not a drop
    rd = sg.relative_drop(values, np.broadcast_to(season, values.shape))
    assert 0.4 < rd[2] < 0.6
    assert np.abs(np.delete(rd, 2)).max() < 0.15
    # Without the seasonal index the same honest households would look 30–40 % down.
    naive = sg.relative_drop(values, np.ones_like(values))
    assert np.delete(naive, 2).min() > 0.25


def test_relative_drop_is_zero_without_enough_days_in_either_window():
    values = np.full((2, 120), 5.0)
    values[0, :40] = np.nan  # only 5 reference days
    values[1, -30:] = 0.0  # stopped: a full drop
    rd = sg.relative_drop(values, np.ones_like(values))
    assert rd[0] == 0.0 and rd[1] == 1.0
    assert sg.relative_drop(values[:, :60], np.ones((2, 60))).tolist() == [0.0, 0.0]


def test_flattened_weeks_stand_out_of_noisy_households_and_are_located():
    true = households(30, 168, seed=5)
    rec = true.copy()
    rec[7, 56:112] = rec[7, 56:112].mean(axis=1, keepdims=True)  # h5: every hour at the day's mean
    z, w0, w1 = _spread_z(rec)
    assert z[7] > 7  # fully counted by the evidence (robust z 3 → 7)
    honest = np.delete(z, 7)
    assert honest.max() < 4  # irregular honest days stay near the threshold (a quarter of the way at most)
    assert z[7] > 2 * honest.max()
    assert abs(int(w0[7]) - 8) <= 1 and abs(int(w1[7]) - 16) <= 1  # weeks 8–16 (days 56–112)


def test_a_flatter_share_of_the_mean_day_is_seen_but_a_lower_level_is_not():
    true = households(30, 168, seed=6)
    rec = true.copy()
    rng = np.random.default_rng(1)
    seg = rec[3, 84:]
    rec[3, 84:] = seg.mean(axis=1, keepdims=True) * rng.uniform(0.1, 0.8, seg.shape)  # h4, to the end
    rec[11, 84:] *= 0.4  # plain scaling: the spread of the day does not change
    z, _, _ = _spread_z(rec)
    assert z[3] > 3
    assert z[11] < 3


def test_segment_shift_locates_a_low_run_and_never_points_at_a_high_one():
    rng = np.random.default_rng(2)
    weekly = 1 + 0.05 * rng.standard_normal((2, 26))
    weekly[0, 10:16] += 1.0  # higher inside: not the theft direction
    weekly[1, 10:16] -= 1.0
    stat, w0, w1 = sg.segment_shift(weekly)
    assert stat[1] > 20 and (int(w0[1]), int(w1[1])) == (10, 16)
    # A high run makes the weeks around it the low ones: the run found lies outside it, and the
    # statistic is weaker than for the same step down (the fleet z then sets both against the fleet).
    assert int(w1[0]) <= 10 or int(w0[0]) >= 16
    assert stat[0] < 0.75 * stat[1]


def _segment_shift_one_run_at_a_time(weekly: np.ndarray, min_weeks: int = 3) -> tuple[list, list, list]:
    """The statistic of :func:`sg.segment_shift` per meter by a plain search over every run, kept
    when strictly stronger than the runs before it in (first week, end week) order."""
    m, w = weekly.shape
    dif = np.diff(weekly, axis=1)
    best, first, end = [], [], []
    for i in range(m):
        row, ok = weekly[i], np.isfinite(weekly[i])
        d = dif[i][np.isfinite(dif[i])]
        noise = (1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2) if d.size else 0.0) + 1e-3
        top, at = 0.0, (0, 0)
        for s in range(w):
            for e in range(s + min_weeks, w + 1):
                inside, outside = ok.copy(), ok.copy()
                inside[:s] = inside[e:] = False
                outside[s:e] = False
                n_in, n_out = inside.sum(), outside.sum()
                if (s, e) == (0, w) or n_in < min_weeks or n_out < 3:
                    continue
                t = (row[outside].mean() - row[inside].mean()) / noise * np.sqrt(n_in * n_out / ok.sum())
                if t > top + 1e-9 * abs(top):
                    top, at = t, (s, e)
        best.append(top)
        first.append(at[0])
        end.append(at[1])
    return best, first, end


def test_segment_shift_finds_the_earliest_strongest_run_of_a_plain_search():
    rng = np.random.default_rng(5)
    weekly = 1 + 0.05 * rng.standard_normal((12, 30))
    weekly[rng.random(weekly.shape) < 0.1] = np.nan  # weeks without data
    weekly[:4, 8:14] -= 0.6
    weekly[4:6] = np.round(weekly[4:6], 1)  # ties between runs: the earliest is kept
    weekly[6, 20:] -= 0.5  # a run lasting to the end
    weekly[7] = np.nan  # no data: no run
    stat, w0, w1 = sg.segment_shift(weekly)
    best, first, end = _segment_shift_one_run_at_a_time(weekly)
    np.testing.assert_allclose(stat, best, rtol=1e-9, atol=1e-12)
    assert w0.tolist() == first and w1.tolist() == end
    assert stat[7] == 0 and (w0[7], w1[7]) == (0, 0)
    assert (w0[6], w1[6]) == (20, 30)
    assert all(a.size == 0 for a in sg.segment_shift(weekly[:0]))  # no meter, no error


def test_ranking_without_feeders_lists_flattened_and_falling_meters_and_says_why():
    from datetime import date

    from analytics.theft.data import TheftData
    from analytics.theft.ranking import score

    d = 168
    rec = households(30, d, seed=8, season=0.0)
    rec[5, 56:112] = rec[5, 56:112].mean(axis=1, keepdims=True)  # flattened for eight weeks, then over
    rec[21, 120:] *= 0.35  # scaled to the end: an ongoing loss
    data = TheftData.blank([f"M{i:02d}" for i in range(30)], date(2026, 1, 5), rec.sum(axis=2))
    data.hourly = rec
    r = score(data)
    top = {c.meter: c for c in r.candidates(2)}
    assert set(top) == {"M05", "M21"}
    assert any(t.startswith("flatter days than usual from 2026-03-02") for t in top["M05"].reasons)
    assert top["M05"].evidence["flat_run"]["z"] > 7
    assert any("below the first 45 of the period" in t for t in top["M21"].reasons)
    assert 0.5 < top["M21"].evidence["fell"]["relative_drop"] < 0.8
