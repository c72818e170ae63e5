"""Interval rules (DST-aware counts, spikes, zero runs, sum check) and estimation methods (no database)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from analytics.vee import estimate
from analytics.vee.intervals import expected_intervals, local_days, sum_check
from analytics.vee.params import params_for

PARIS = ZoneInfo("Europe/Paris")


def stamps(start_local: datetime, end_local: datetime, step: int) -> np.ndarray:
    a, b = start_local.astimezone(UTC).timestamp(), end_local.astimezone(UTC).timestamp()
    return np.arange(a + step, b + 1, step)


@pytest.mark.parametrize(("day", "hours"), [(date(2024, 3, 31), 23), (date(2024, 10, 27), 25), (date(2024, 6, 1), 24)])
def test_expected_intervals_follow_dst_days(day, hours):
    assert expected_intervals(day, PARIS, 900) == hours * 4


def test_local_days_put_end_stamped_intervals_on_their_local_day():
    t = stamps(datetime(2024, 6, 1, tzinfo=PARIS), datetime(2024, 6, 2, tzinfo=PARIS), 3600)
    assert set(local_days(t, PARIS, 3600).astype(str)) == {"2024-06-01"}


def test_sum_check_spots_a_forgotten_multiplier():
    assert sum_check(100.0, 100.0, 1.0, 0.02)[0] is None
    assert sum_check(100.0, 100.0, 40.0, 0.02)[0] == "MULTIPLIER"
    assert sum_check(93.0, 100.0, 1.0, 0.02)[0] == "SUM_CHECK"


def test_linear_fill_short_gaps_flat_at_the_edges_and_not_long_gaps():
    v = np.array([np.nan, 1.0, np.nan, np.nan, 4.0, np.nan, np.nan, np.nan, np.nan, 9.0, np.nan])
    out, method = estimate.linear_fill(v, max_span=2)
    assert out[:5].tolist() == [1.0, 1.0, 2.0, 3.0, 4.0]
    assert np.isnan(out[5:9]).all()
    assert out[10] == 9.0
    assert method.tolist() == [17, 0, 17, 17, 0, 0, 0, 0, 0, 0, 17]


def test_like_days_follow_the_weekday_rules():
    days = [date(2024, 5, 1) + timedelta(days=i) for i in range(28)]
    monday = date(2024, 5, 27)
    assert estimate.like_days(monday, days, count=2) == [date(2024, 5, 20), date(2024, 5, 13)]
    wednesday = date(2024, 5, 29)
    assert estimate.like_days(wednesday, days, count=3) == [date(2024, 5, 28), date(2024, 5, 23), date(2024, 5, 22)]
    holiday = date(2024, 5, 30)
    assert all(d.weekday() == 6 for d in estimate.like_days(holiday, days, holidays={holiday}))


def test_interval_day_is_filled_from_like_days_then_scaled_to_the_register_delta():
    profile = {date(2024, 5, 20) - timedelta(days=7 * k): np.full(24, 1.0 + k) for k in range(3)}
    values = np.full(24, 2.0)
    values[4:12] = np.nan  # 8 hours: too long to interpolate
    out, method = estimate.fill_interval_day(values, date(2024, 5, 20), profile, max_span=2, register_delta=56.0)
    assert out.sum() == pytest.approx(56.0)
    assert set(method[4:12].tolist()) == {24} and set(method[:4].tolist()) == {0}
    assert out[4:12] == pytest.approx(np.full(8, 3.0))


def test_a_missing_day_is_filled_from_the_average_of_its_like_days():
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    import numpy as np

    from analytics.vee.intervals import validate_interval_series

    tz = ZoneInfo("UTC")
    start = datetime(2026, 3, 2, tzinfo=UTC).timestamp()  # a Monday
    t, v = [], []
    for day in range(21):  # three weeks; Monday 2026-03-16 goes missing entirely
        for slot in range(96):
            if day == 14:
                continue
            t.append(start + day * 86400 + (slot + 1) * 900)
            v.append(1.0 + day % 7 + slot / 100)  # each weekday its own level
    t, v = np.array(t), np.array(v)
    _, estimates = validate_interval_series(t, v, start + 14 * 86400, tz, 900, params_for("electricity"))
    filled = {round(e[0]): (e[1], e[2]) for e in estimates}
    monday = start + 14 * 86400
    assert len([k for k in filled if monday < k <= monday + 86400]) == 96
    value, method = filled[round(monday + 900)]
    assert method == 15  # average like day: the Mondays before
    assert value == pytest.approx(1.0 + 0 + 0 / 100)
