"""Consumption shapes and the engine's physics, as pure logic (no servers)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from releve.model import Commodity
from simulators.consumption import COMMERCIAL, RESIDENTIAL, WATER, day_templates, season_factor
from simulators.engine import Simulation, digit_error

from .conftest import small_fleet


def test_templates_average_one_over_a_week_per_class():
    t = day_templates(96)
    weights = np.array([5, 1, 1]) / 7
    for cls in (RESIDENTIAL, COMMERCIAL, WATER):
        assert (t[cls].mean(axis=1) * weights).sum() == pytest.approx(1.0)


def test_residential_evening_peak_and_night_low():
    t = day_templates(24)[RESIDENTIAL, 0]
    assert t[19] > 2 * t[3]
    assert t.argmax() in (19, 20)


def test_commercial_works_business_hours_on_weekdays_only():
    t = day_templates(24)[COMMERCIAL]
    assert t[0, 12] > 3 * t[0, 3]
    assert t[2, 12] == pytest.approx(t[2, 3], rel=0.25)
    assert t[0, 12] > 2 * t[2, 12]


def test_water_has_a_night_minimum_close_to_zero():
    t = day_templates(24)[WATER, 0]
    assert t[2:5].max() < 0.1 * t.max()


def test_season_factor_peaks_in_winter():
    doy = np.array([15.0, 197.0])
    f = season_factor(doy, np.array(0.3), np.array(15.0))
    assert f[0] == pytest.approx(1.3)
    assert f[1] < 0.75


def test_same_seed_gives_same_readings_and_labels_and_another_seed_does_not():
    a, b, c = Simulation(small_fleet()), Simulation(small_fleet()), Simulation(small_fleet(seed=8))
    for number in range(3):
        np.testing.assert_array_equal(a.block(number).reported_imp, b.block(number).reported_imp)
        np.testing.assert_array_equal(a.block(number).voltage, b.block(number).voltage)
    assert a.labels() == b.labels()
    assert [m.serial for m in a.meters] == [m.serial for m in c.meters]
    assert not np.array_equal(a.block(0).true, c.block(0).true)


def test_live_instant_equals_backfill_whatever_block_is_computed_first():
    a, b = Simulation(small_fleet()), Simulation(small_fleet())
    ts = a.start + timedelta(days=15, hours=7, minutes=3)
    late_first = b.values_at(5, ts)
    assert len(list(a.blocks(16))) == 3
    assert a.values_at(5, ts) == late_first


def test_feeder_measures_customers_plus_load_dependent_losses():
    sim = Simulation(small_fleet(theft={"rate": 1.0}))
    blk = sim.block(1)
    for a, area in enumerate(sim.areas):
        customers_true = blk.true[area.customers].sum(axis=0)
        np.testing.assert_allclose(blk.true[area.feeder], customers_true + blk.losses[a])
        share = blk.losses[a] / customers_true
        assert share.min() >= 0.03 - 1e-9
        assert share.max() <= 0.08 + 1e-9
        heavy, light = customers_true.argmax(), customers_true.argmin()
        assert share[heavy] > share[light]


def test_instantaneous_values_are_consistent_with_the_energy_register():
    sim = Simulation(small_fleet(theft={"rate": 0.0}, faults={"rate": 0.0}))
    ts = sim.start + timedelta(days=2, hours=19, minutes=5)
    for meter in sim.meters:
        values = sim.values_at(meter.index, ts)
        nxt = sim.values_at(meter.index, ts + timedelta(minutes=5))
        if meter.commodity is Commodity.WATER:
            # flow (m3/h) x 5 minutes = volume added
            assert nxt["8-0:1.0.0"] - values["8-0:1.0.0"] == pytest.approx(values["8-0:2.7.0"] / 12, rel=1e-6)
            continue
        power_w = values["1-0:1.7.0"]
        assert nxt["1-0:1.8.0"] - values["1-0:1.8.0"] == pytest.approx(power_w / 1000 / 12, rel=1e-6)
        assert 205 < values["1-0:32.7.0"] < 240
        assert 49.9 < values["1-0:14.7.0"] < 50.1
        phases = meter.profile.phases
        codes = [("1-0:32.7.0", "1-0:31.7.0"), ("1-0:52.7.0", "1-0:51.7.0"), ("1-0:72.7.0", "1-0:71.7.0")]
        apparent = sum(values[v] * values[i] for v, i in codes[:phases])
        assert apparent * values["1-0:13.7.0"] == pytest.approx(power_w, rel=1e-9)


def test_digit_errors_follow_the_utility_example():
    assert digit_error(899, "extra_digit", 5) == 8995
    assert digit_error(899, "missing_digit", 0) == 99
    assert digit_error(1234, "transposed", 1) == 1324


def test_instant_readings_carry_every_obis_channel_of_the_profile():
    sim = Simulation(small_fleet())
    ts = sim.start + timedelta(days=1, hours=12)
    for meter in sim.meters:
        readings = sim.instant_readings(meter.index, ts)
        channels = {r.channel for r in readings}
        assert channels == {e.channel for e in meter.profile.registers if e.kind != "status"}
        assert all(r.meter == meter.serial and r.ts == ts for r in readings)
