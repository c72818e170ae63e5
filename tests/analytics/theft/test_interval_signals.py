"""The hourly balance, the fleet-calibrated change tests and the hourly cleaning on hand-built
households with real-looking noise: lognormal day-to-day level, a shape with morning and evening
peaks that wanders an hour either way, kettle-like spikes, and a technical loss on three phases."""

from __future__ import annotations

import numpy as np

from analytics.theft import signals as sg


def households(m: int, d: int, seed: int = 0, season: float = 0.25) -> np.ndarray:
    """Meters × days × 24 kWh: irregular, peaky, seasonal households."""
    rng = np.random.default_rng(seed)
    hours = np.arange(24)
    level = rng.lognormal(np.log(0.4), 0.4, m)
    out = np.empty((m, d, 24))
    day = np.arange(d)
    seas = 1 + season * np.cos(2 * np.pi * day / 365)
    for i in range(m):
        morning, evening = rng.uniform(6.5, 8.5), rng.uniform(17.5, 20.5)
        for j in range(d):
            shift = rng.normal(0, 1.0)
            shape = (
                0.4
                + np.exp(-0.5 * ((hours - morning - shift) / 1.2) ** 2)
                + 1.6 * np.exp(-0.5 * ((hours - evening - shift) / 1.8) ** 2)
            )
            x = level[i] * seas[j] * rng.lognormal(0, 0.25) * shape / shape.mean()
            x = x * rng.lognormal(0, 0.3, 24)
            kettle = rng.random(24) < 0.05
            out[i, j] = x + kettle * rng.uniform(0.5, 1.5, 24)
    return out


def feeder_of(true: np.ndarray, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Σ households + no-load loss + I²R on three phases (±8 % noise); returns (feeder, loss)."""
    rng = np.random.default_rng(seed)
    m = true.shape[0]
    total = true.sum(axis=0)
    phase = np.arange(m) % 3
    i2r = sum(true[phase == p].sum(axis=0) ** 2 for p in range(3))
    loss = (0.01 * total.mean() + 0.03 / total.mean() * 3 * i2r) * rng.normal(1, 0.08, total.shape)
    return total + loss, loss


def _balance(recorded: np.ndarray, feeder: np.ndarray) -> sg.IntervalBalance:
    weekday = np.arange(recorded.shape[1]) % 7
    return sg.interval_balance(feeder[None], recorded, np.zeros(recorded.shape[0], dtype=np.int64), weekday)


def test_interval_balance_puts_a_theft_running_since_the_first_day_on_its_meter():
    true = households(12, 112)
    recorded = true.copy()
    recorded[3] *= 0.5  # half of it never recorded, from the first hour: no change point at all
    feeder, _ = feeder_of(true)
    ib = _balance(recorded, feeder)
    honest = np.delete(np.arange(12), 3)
    assert ib.share[3] > 0.4  # its own recorded energy goes missing (part of it hides in the I²R fit)
    assert ib.share[honest].max() < 0.15
    assert ib.strength[3] > 10 * ib.strength[honest].max()
    assert ib.windows[3] == 4 and ib.first_day[3] == 0
    assert sg.REGRESSORS[ib.kind[3]] in ("scaled", "shortfall")


def test_interval_balance_technical_loss_is_not_theft():
    true = households(15, 84, seed=3)
    feeder, loss = feeder_of(true, seed=4)
    ib = _balance(true, feeder)
    assert ib.share.max() < 0.12
    daily_loss = loss.sum(axis=1)
    assert np.nanmean(np.abs(ib.technical[0] - daily_loss)) < 0.25 * daily_loss.mean()


def test_interval_balance_sees_reversed_and_flattened_days_that_keep_the_daily_total():
    true = households(12, 112, seed=5)
    recorded = true.copy()
    recorded[2, 28:] = true[2, 28:, ::-1]
    recorded[7, 28:] = true[7, 28:].mean(axis=1, keepdims=True)
    assert np.allclose(recorded.sum(axis=2), true.sum(axis=2))
    feeder, _ = feeder_of(true, seed=6)
    ib = _balance(recorded, feeder)
    honest = np.setdiff1d(np.arange(12), [2, 7])
    assert min(ib.share[2], ib.share[7]) > 1.5 * ib.share[honest].max()
    after = np.abs(ib.attributed[2, 28:]).mean()
    before = np.abs(ib.attributed[2, :28]).mean()
    assert after > 3 * before


def test_interval_balance_vacancy_and_new_appliance_are_not_theft():
    true = households(12, 112, seed=7)
    true[4, 40:80] = 0.05  # away: the feeder delivered less too
    true[5, 50:, 1:6] += 1.2  # night storage heater from day 50: the feeder delivered it
    true[6] *= 0.6  # a thief takes 40 %
    recorded = true.copy()
    true[6] /= 0.6
    feeder, _ = feeder_of(true, seed=8)
    ib = _balance(recorded, feeder)
    assert ib.share[6] > 0.35  # 0.67 of its recorded energy is missing; part hides in the I²R fit
    assert max(ib.share[4], ib.share[5]) < 0.15


def test_meter_regressors_mark_zeroed_and_clipped_hours():
    true = households(3, 56, seed=9)
    rec = true.copy()
    cap = np.quantile(true[1], 0.7)
    rec[1] = np.minimum(true[1], cap)
    rec[2] = np.where(true[2] < np.quantile(true[2], 0.5), 0.0, true[2])
    g = sg.meter_regressors(rec, np.arange(56) % 7)
    zeroed, clipped = sg.REGRESSORS.index("zeroed"), sg.REGRESSORS.index("clipped")
    assert (g[2, zeroed] > 0).mean() > 0.4 and (g[0, zeroed] > 0).mean() == 0
    assert (g[1, clipped] > 0).mean() > 0.2 and (g[0, clipped] > 0).mean() < 0.01


def test_clean_hourly_drops_spikes_and_counts_them():
    h = households(2, 28, seed=10)
    h[0, 5, 12] = 40 * np.nanquantile(h[0], 0.995)
    out, n = sg.clean_hourly(h)
    assert np.isnan(out[0, 5, 12]) and n[0] == 1 and n[1] == 0
    assert np.isfinite(out[1]).all()


def test_recent_change_stands_out_of_the_fleet_not_of_a_steady_household():
    d = 365  # a year: the last month is set against the same season at the start
    h = households(40, d, seed=11, season=0.3)
    h[0, d - 60 :] *= 0.5  # ongoing theft: half of the load
    h[1, d - 60 :] = h[1, d - 60 :].mean(axis=1, keepdims=True)  # ongoing: flattened days
    h[2] = h[2] * (1 + 0.5 * np.cos(2 * np.pi * np.arange(d) / 365))[:, None]  # electric heating: stronger season
    daily = h.sum(axis=2)
    season = np.nanmedian(daily / np.nanmedian(daily, axis=1, keepdims=True), axis=0)
    per_day = sg.daily_stats(h, daily, np.arange(d) % 7)
    _, z = sg.recent_change(per_day, season)
    level, spread = list(sg.CHANGE_STATS).index("level"), list(sg.CHANGE_STATS).index("spread")
    assert z[0, level] > 4 and z[0, level] == z[:, level].max()
    assert z[1, spread] > 4 and z[1, spread] == z[:, spread].max()
    assert z[2].max() < 4  # the season moves the heating home more, but it is the same season both times
    assert np.median(np.abs(z[3:, level])) < 1.5


def test_ranking_with_hourly_feeders_lists_the_thief_first_and_says_why():
    from datetime import date

    from analytics.theft.data import TheftData
    from analytics.theft.ranking import score

    d = 112
    true = np.concatenate([households(12, d, seed=20), households(12, d, seed=21)])
    recorded = true.copy()
    recorded[3] *= 0.5  # area A, from the first day
    recorded[17, 56:] = np.where(true[17, 56:] < np.quantile(true[17], 0.6), 0.0, true[17, 56:])  # area B
    true[20, 30:70] = 0.03  # area B: a vacancy, the feeder delivered less too
    recorded[20] = true[20]
    data = TheftData.blank([f"M{i:02d}" for i in range(24)], date(2026, 1, 5), recorded.sum(axis=2))
    data.hourly = recorded
    data.area = np.array(["A"] * 12 + ["B"] * 12, dtype=object)
    for k, code in enumerate("AB"):
        feeder, _ = feeder_of(true[12 * k : 12 * (k + 1)], seed=22 + k)
        data.feeders[code] = feeder.sum(axis=1)
        data.feeders_hourly[code] = feeder
    r = score(data)
    top = [c.meter for c in r.candidates(2)]
    assert set(top) == {"M03", "M17"}
    first = r.candidates(1)[0]
    assert first.signal == "balance"
    assert "hourly feeder balance puts" in first.reasons[0] and "kWh of unexplained loss" in first.reasons[0]
    assert first.evidence["interval_balance"]["area"] in ("A", "B")
    assert r.risk[20] < r.risk[[3, 17]].min()


def test_clock_regressors_are_what_a_shifted_clock_leaves():
    x = np.arange(1.0, 49.0).reshape(1, 2, 24) ** 1.5
    g = sg.clock_regressors(x)
    flat = x.reshape(-1)
    assert g.shape == (1, len(sg.HONEST_REGRESSORS), 48)
    assert np.allclose(g[0, 0, :-1], flat[1:] - flat[:-1]) and g[0, 0, -1] == 0
    assert np.allclose(g[0, 1, 1:], flat[:-1] - flat[1:]) and g[0, 1, 0] == 0
    x[0, 1, 5] = np.nan  # a missing hour leaves its neighbours' terms at 0, never NaN
    assert np.isfinite(sg.clock_regressors(x)).all()


def test_interval_balance_a_clock_an_hour_late_is_not_theft():
    true = households(12, 112, seed=11)
    recorded = true.copy()
    # Meter 4's clock runs an hour late from day 30: every value is stamped an hour after it was drawn.
    shifted = np.roll(true[4].reshape(-1), 1).reshape(112, 24)
    recorded[4, 30:] = shifted[30:]
    recorded[9] *= 0.6  # a thief in the same area, for scale
    feeder, _ = feeder_of(true, seed=12)
    ib = _balance(recorded, feeder)
    honest = np.delete(np.arange(12), 9)
    assert ib.share[9] > 0.3
    assert ib.share[4] < 0.1 and ib.share[4] <= 2 * np.median(ib.share[honest]) + 0.02


def test_short_day_regressor_follows_an_on_off_theft_in_the_days_own_shape():
    true = households(2, 84, seed=13)
    rec = true.copy()
    on = (np.arange(84) // 7) % 2 == 1  # every other week 70 % is taken
    rec[1, on] *= 0.3
    g = sg.meter_regressors(rec, np.arange(84) % 7)
    short, shortfall = sg.REGRESSORS.index("short_day"), sg.REGRESSORS.index("shortfall")
    missing = (true[1] - rec[1]).reshape(-1)
    corr = {j: np.corrcoef(missing, g[1, j])[0, 1] for j in (short, shortfall)}
    assert corr[short] > 0.8 and corr[short] > corr[shortfall] + 0.1
    off_weeks = np.repeat(~on, 24)
    # On the weeks nothing is taken it stays small: the normal day is the upper quartile of the month.
    assert g[1, short, off_weeks].sum() < 0.25 * g[1, short, ~off_weeks].sum()


def test_interval_balance_finds_an_on_off_thief_among_others():
    true = households(15, 112, seed=14)
    recorded = true.copy()
    on = (np.arange(112) // 7) % 2 == 1
    recorded[2, on] *= 0.3  # on/off weeks
    recorded[8, 56:] *= 0.5  # a second thief in the area, from day 56
    feeder, _ = feeder_of(true, seed=15)
    ib = _balance(recorded, feeder)
    honest = np.setdiff1d(np.arange(15), [2, 8])
    assert min(ib.share[2], ib.share[8]) > 2 * ib.share[honest].max()
    assert ib.strength[2] > 5 * ib.strength[honest].max()


def test_a_day_flattened_since_the_first_day_is_compared_with_the_neighbours_shape():
    true = households(12, 112, seed=16)
    recorded = true.copy()
    recorded[5] = np.broadcast_to(true[5].mean(axis=1, keepdims=True), true[5].shape)  # from the first hour
    g = sg.meter_regressors(recorded, np.arange(112) % 7)
    reshaped = sg.REGRESSORS.index("reshaped")
    # Its own usual profile is flat: it borrows the others', so the regressor follows what went missing.
    missing = (true[5] - recorded[5]).reshape(-1)
    assert np.abs(g[5, reshaped]).sum() > 0
    assert np.corrcoef(missing, g[5, reshaped])[0, 1] > 0.3
    # An honest meter keeps its own profile.
    own = sg.usual_hour_profile(recorded[:1], np.arange(112) % 7)
    x0 = np.nan_to_num(recorded[0])
    expected = (
        x0.sum(axis=1)[:, None] * own[0][np.where(np.arange(112) % 7 == 5, 1, np.where(np.arange(112) % 7 == 6, 2, 0))]
        - x0
    )
    assert np.allclose(g[0, reshaped], expected.reshape(-1))
    feeder, _ = feeder_of(true, seed=17)
    ib = _balance(recorded, feeder)
    honest = np.delete(np.arange(12), 5)
    assert ib.strength[5] > 3 * ib.strength[honest].max()
    assert ib.share[5] > ib.share[honest].max()


def test_nanquantile_last_is_numpys_nanquantile_to_the_bit():
    """The loop-free quantile gives np.nanquantile's figures exactly: the interval balance's
    normal day (the upper quartile of four weeks of day totals, gaps included) must not move."""
    import warnings

    rng = np.random.default_rng(19)
    day_totals = households(30, 120, seed=19).sum(axis=2)
    day_totals[rng.random(day_totals.shape) < 0.2] = np.nan  # incomplete days
    day_totals[3] = np.nan  # a meter with no complete day
    day_totals[4, 10:] = np.nan  # one that stopped early
    pad = np.pad(day_totals, ((0, 0), (14, 13)), constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(pad, 28, axis=1)
    for q in (0.75, 0.5, 0.1, 0.995, 1 / 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanquantile(windows, q, axis=2)
        assert np.array_equal(sg.nanquantile_last(windows, q), expected, equal_nan=True)


def test_nanmedian_last_is_numpys_nanmedian_to_the_bit():
    """The usual hour profile's median of each hour's share over the days, gaps included."""
    import warnings

    rng = np.random.default_rng(20)
    h = households(20, 90, seed=20)
    share = h / h.sum(axis=2, keepdims=True)
    share[rng.random(share.shape) < 0.2] = np.nan
    share[2] = np.nan  # a meter with no complete day
    share[5, :, 7] = np.nan  # an hour never seen
    for x in (share, share[:, :1], share[:, :2]):  # odd and even counts, one day, two
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(x, axis=1)
        assert np.array_equal(sg.nanmedian_last(np.moveaxis(x, 1, -1)), expected, equal_nan=True)
