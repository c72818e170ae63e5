"""Plausibility rules: what a meter can physically report, per profile register and per channel."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from collectors.plausibility import (
    FLOAT_NOISE,
    REBASELINE_AFTER,
    Guard,
    Limits,
    channel_limits,
    check_readings,
    judge_poll,
    raw_problem,
    register_limits,
)
from releve.model import Reading, Source
from releve.profiles import ORDERS_WIDE, ProfileError, decode, encode, load_profile, parse_profile, profile_names

T0 = datetime(2026, 3, 1, tzinfo=UTC)

#: What a loaded SDM630 shows (per channel), as a metering engineer would read it off the display.
SDM630_SHOWS = {
    "1-0:32.7.0": 231.4,
    "1-0:52.7.0": 229.8,
    "1-0:72.7.0": 232.6,
    "1-0:31.7.0": 12.37,
    "1-0:51.7.0": 8.91,
    "1-0:71.7.0": 10.42,
    "1-0:21.7.0": 2710.3,
    "1-0:41.7.0": 1950.6,
    "1-0:61.7.0": 2290.1,
    "1-0:1.7.0": 6951.0,
    "1-0:13.7.0": 0.93,
    "1-0:14.7.0": 50.02,
    "1-0:1.8.0": 18234.56,
    "1-0:2.8.0": 312.75,
    "1-0:15.8.0": 18547.31,
}


def check(profile_name: str, register: str, value: float, guard: Guard | None = None, ts: datetime = T0):
    profile = load_profile(profile_name)
    entry = next(e for e in profile.registers if e.name == register)
    problem = raw_problem(entry, value)
    if problem is not None:
        return problem
    guard = guard or Guard()
    return guard.check("M1", entry.channel, ts, value, register_limits(profile, entry), entry.channel_unit)


# -- range and sign ---------------------------------------------------------------------------------
def test_every_shipped_profile_bounds_every_value_register():
    for name in profile_names():
        profile = load_profile(name)
        for entry in profile.registers:
            if entry.kind == "status":
                continue
            limits = register_limits(profile, entry)
            assert limits.minimum is not None, (name, entry.name)
            if entry.kind == "cumulative":
                assert limits.max_rise_per_hour is not None, (name, entry.name)
                assert limits.maximum is not None or limits.wrap is not None, (name, entry.name)
            else:
                assert limits.maximum is not None, (name, entry.name)


def test_a_realistic_sdm630_passes_every_rule():
    profile = load_profile("sdm630")
    guard = Guard()
    for channel, value in SDM630_SHOWS.items():
        entry = profile.entry(channel)
        assert entry is not None
        shown = decode(entry, encode(entry, value))
        assert raw_problem(entry, shown) is None, channel
        assert guard.check("M1", channel, T0, shown, register_limits(profile, entry), entry.channel_unit) is None


@pytest.mark.parametrize(
    ("model", "register", "value", "rule", "words"),
    [
        ("sdm630", "voltage_l1", 520.0, "range", "above the highest possible 500 V"),
        ("sdm630", "frequency", 0.0, "range", "below the lowest possible 45 Hz"),
        ("sdm630", "frequency", 71.3, "range", "above the highest possible 65 Hz"),
        ("sdm120", "import_energy", -4.3e23, "sign", "is negative"),
        ("sdm120", "current", 2.4e14, "range", "above the highest possible 200 A"),
        ("sdm630", "power_factor", 1.8, "range", "above the highest possible 1"),
        ("sdm630", "import_energy", 1e8 + 1, "range", "above the highest possible 1e+08 kWh"),
        ("water-ultrasonic", "flow_rate", -450.0, "range", "below the lowest possible -200 m3/h"),
        ("sdm630", "voltage_l2", math.nan, "finite", "not a finite number"),
        ("sdm630", "total_power", -math.inf, "finite", "not a finite number"),
    ],
)
def test_values_outside_what_the_device_can_report_are_refused_with_the_rule(model, register, value, rule, words):
    problem = check(model, register, value)
    assert problem is not None and problem.rule == rule and words in problem.reason


def test_a_round_float_read_in_the_wrong_word_order_is_a_tiny_float_no_meter_reports():
    profile = load_profile("sdm120")
    voltage = profile.entry("1-0:32.7.0")
    assert voltage is not None
    words = encode(voltage, 230.0)  # 0x4366 0x0000
    garbled = decode(voltage.model_copy(update={"order": "CDAB"}), words)
    assert 0 < garbled < 1e-38
    problem = raw_problem(voltage, garbled)
    assert problem is not None and problem.rule == "tiny"
    assert raw_problem(voltage, 0.0) is None  # a dead phase reads exactly zero: plausible


def poll(profile_name: str, shows: dict[str, float], order: str | None = None, guard: Guard | None = None):
    """Judge one poll per poll class of a meter showing ``shows``, its words read in ``order``."""
    profile = load_profile(profile_name)
    accepted, refused = {}, {}
    for poll_class in {e.poll_class for e in profile.registers}:
        decoded = []
        for entry in profile.registers:
            if entry.poll_class == poll_class and entry.channel in shows:
                words = encode(entry, shows[entry.channel])
                read_as = entry.model_copy(update={"order": order}) if order and entry.count > 1 else entry
                decoded.append((entry, decode(read_as, words)))
        ok, bad = judge_poll(guard or Guard(), "M1", profile, T0, decoded)
        accepted.update({e.channel: v for e, v in ok.items()})
        refused.update({e.channel: p for e, p in bad.items()})
    return accepted, refused


def test_a_loaded_sdm630_read_in_its_own_order_is_accepted_whole():
    accepted, refused = poll("sdm630", SDM630_SHOWS)
    assert refused == {}
    assert accepted == pytest.approx(SDM630_SHOWS, rel=1e-6)


@pytest.mark.parametrize("wrong", [o for o in ORDERS_WIDE if o != "ABCD"])
def test_a_loaded_sdm630_read_in_any_wrong_order_yields_no_value(wrong):
    accepted, refused = poll("sdm630", SDM630_SHOWS, wrong)
    assert accepted == {}
    assert set(refused) == set(SDM630_SHOWS)
    # some garbled values fall inside their limits by chance: they go down with the impossible ones
    assert {p.rule for p in refused.values()} <= {"finite", "tiny", "sign", "range", "order"}


def test_one_impossible_value_casts_doubt_only_on_values_read_in_the_same_order():
    # water-ultrasonic: volumes DCBA, flow CDAB. A flow of 900 m3/h is impossible; the volumes stand.
    accepted, refused = poll("water-ultrasonic", {"8-0:1.0.0": 412.337, "8-0:2.0.0": 0.5, "8-0:2.7.0": 900.0})
    assert set(accepted) == {"8-0:1.0.0", "8-0:2.0.0"} and refused["8-0:2.7.0"].rule == "range"
    # sdm630: a voltage swell past 500 V takes the other ABCD floats of the same poll class with it
    accepted, refused = poll("sdm630", {**SDM630_SHOWS, "1-0:32.7.0": 512.0})
    assert refused["1-0:32.7.0"].rule == "range" and refused["1-0:31.7.0"].rule == "order"
    assert "voltage_l1, read in the same ABCD order" in refused["1-0:31.7.0"].reason
    assert set(accepted) == {"1-0:1.8.0", "1-0:2.8.0", "1-0:15.8.0"}  # the energy class is another poll


# -- cumulative registers: backwards, rate, rollover ------------------------------------------------
def test_an_index_that_rises_within_the_meters_power_is_accepted():
    guard = Guard()
    assert check("sdm120", "import_energy", 1000.0, guard) is None
    # 46 kWh per hour at most: 0.7 kWh in one minute is 42 kW, plausible.
    assert check("sdm120", "import_energy", 1000.7, guard, T0 + timedelta(minutes=1)) is None


def test_an_index_that_rises_faster_than_the_meter_allows_is_refused():
    guard = Guard()
    assert check("sdm120", "import_energy", 1000.0, guard) is None
    problem = check("sdm120", "import_energy", 1100.0, guard, T0 + timedelta(minutes=15))
    assert problem is not None and problem.rule == "rate"
    assert "46 kWh per hour" in problem.reason and "rose 100 kWh" in problem.reason


def test_an_index_that_steps_back_is_refused_and_the_reference_kept():
    guard = Guard()
    assert check("sdm630", "import_energy", 5000.0, guard) is None
    problem = check("sdm630", "import_energy", 4999.0, guard, T0 + timedelta(minutes=15))
    assert problem is not None and problem.rule == "backwards" and "last accepted 5000 kWh" in problem.reason
    assert check("sdm630", "import_energy", 5001.0, guard, T0 + timedelta(minutes=30)) is None


def test_float_noise_on_an_unchanged_index_is_not_a_step_back():
    guard = Guard()
    assert check("sdm630", "import_energy", 18234.56, guard) is None
    assert check("sdm630", "import_energy", 18234.56 - 0.001, guard, T0 + timedelta(minutes=1)) is None


def test_a_rolling_counter_may_wrap_but_not_step_back():
    guard = Guard()  # gen-counter16: 0.1 kWh counts, wraps at 6553.6 kWh, 46 kWh per hour at most
    assert check("gen-counter16", "energy_counter", 6553.0, guard) is None
    assert check("gen-counter16", "energy_counter", 0.4, guard, T0 + timedelta(minutes=15)) is None
    problem = check("gen-counter16", "energy_counter", 0.1, guard, T0 + timedelta(minutes=30))
    assert problem is not None and problem.rule == "backwards"
    problem = check("gen-counter16", "energy_counter", 3000.0, guard, T0 + timedelta(minutes=45))
    assert problem is not None and problem.rule == "rate"


def test_an_older_reading_is_range_checked_only():
    guard = Guard()
    assert check("sdm120", "import_energy", 1000.0, guard, T0 + timedelta(hours=1)) is None
    assert check("sdm120", "import_energy", 990.0, guard, T0) is None  # a redelivery from before
    assert check("sdm120", "import_energy", -1.0, guard, T0) is not None


def test_a_reset_index_is_taken_again_after_consistent_refusals():
    guard = Guard()
    assert check("sdm120", "import_energy", 9000.0, guard) is None
    results = [
        check("sdm120", "import_energy", 0.5 * k, guard, T0 + timedelta(minutes=15 * k))
        for k in range(1, REBASELINE_AFTER + 2)
    ]
    assert [r.rule if r else None for r in results] == ["backwards"] * (REBASELINE_AFTER - 1) + [None, None]
    assert guard.rebaselined == 1


def test_garbage_that_disagrees_with_itself_never_becomes_the_reference():
    guard = Guard()
    assert check("sdm120", "import_energy", 9000.0, guard) is None
    for k, value in enumerate([10.0, 5_000_000.0, 3.0, 4_000_000.0, 1.0, 2_000_000.0], start=1):
        assert check("sdm120", "import_energy", value, guard, T0 + timedelta(minutes=k)) is not None
    assert guard.rebaselined == 0


def test_rate_factor_lets_a_sped_up_simulator_through():
    fast = Guard(rate_factor=96)
    assert check("sdm120", "import_energy", 1000.0, fast) is None
    assert check("sdm120", "import_energy", 1100.0, fast, T0 + timedelta(minutes=15)) is None


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=65535),
    steps=st.lists(st.integers(min_value=0, max_value=110), min_size=1, max_size=40),
)
def test_a_16_bit_counter_accepted_through_any_number_of_wraps(start, steps):
    """Each 15-minute step adds at most 11 kWh (under 46 kWh/h): every wrapped value is accepted."""
    profile = load_profile("gen-counter16")
    entry = profile.entry("1-0:1.8.0")
    assert entry is not None
    limits = register_limits(profile, entry)
    guard = Guard()
    counts = start
    assert guard.check("M", entry.channel, T0, decode(entry, [counts]), limits, "kWh") is None
    for k, step in enumerate(steps, start=1):
        counts = (counts + step) % 65536
        value = decode(entry, [counts])
        assert guard.check("M", entry.channel, T0 + timedelta(minutes=15 * k), value, limits, "kWh") is None


@settings(max_examples=200, deadline=None)
@given(
    last=st.floats(min_value=100.0, max_value=1e6, allow_nan=False),
    drop=st.floats(min_value=0.01, max_value=99.0),
    minutes=st.integers(min_value=1, max_value=24 * 60),
)
def test_a_non_rolling_index_never_goes_back(last, drop, minutes):
    assume(drop > FLOAT_NOISE * last)  # less is float32 noise on an unchanged index
    limits = Limits(minimum=0.0, maximum=1e8, cumulative=True, max_rise_per_hour=46.0)
    guard = Guard()
    assert guard.check("M", "1-0:1.8.0", T0, last, limits, "kWh") is None
    problem = guard.check("M", "1-0:1.8.0", T0 + timedelta(minutes=minutes), last - drop, limits, "kWh")
    assert problem is not None and problem.rule == "backwards"


# -- per channel, when no profile is known ----------------------------------------------------------
def test_channels_alone_bound_what_physics_bounds():
    assert channel_limits("1-0:14.7.0") == Limits(45.0, 65.0)
    assert channel_limits("1-0:1.8.0").cumulative and channel_limits("1-0:1.8.0").minimum == 0.0
    assert channel_limits("1-0:31.7.0") == Limits()  # current: sign depends on the meter
    assert channel_limits("no-such-channel") == Limits()


# -- readings from MQTT: units normalised, limits applied -------------------------------------------
def reading(channel: str, value: float, unit: str, ts: datetime = T0, meter: str = "M1") -> Reading:
    return Reading(meter, channel, ts, value, unit, Source.MQTT)


def test_watt_hours_on_a_kilowatt_hour_channel_are_stored_as_kilowatt_hours():
    kept, problems = check_readings(Guard(), [reading("1-0:1.8.0", 7183079, "Wh"), reading("8-0:1.0.0", 412337, "l")])
    assert problems == []
    assert [(r.value, r.unit) for r in kept] == [(7183.079, "kWh"), (412.337, "m3")]


def test_a_unit_that_measures_something_else_is_refused_and_the_rest_kept():
    kept, problems = check_readings(Guard(), [reading("1-0:1.8.0", 12.0, "m3"), reading("1-0:32.7.0", 230.1, "V")])
    assert [(r.channel, r.value) for r in kept] == [("1-0:32.7.0", 230.1)]
    assert problems == ["M1 1-0:1.8.0: (unit) 'm3' (volume) cannot be converted to 'kWh' (active energy)"]


@pytest.mark.parametrize("unit", ["KWH", "kWh\x00", "k" * 5000, "🔋"])
def test_a_hostile_unit_string_is_refused_by_name(unit):
    kept, problems = check_readings(Guard(), [reading("1-0:1.8.0", 1.0, unit)])
    assert kept == [] and len(problems) == 1 and "unknown unit" in problems[0]


def test_a_named_profile_applies_its_register_limits_to_mqtt_values():
    profile = load_profile("sdm120")
    kept, problems = check_readings(Guard(), [reading("1-0:31.7.0", 250.0, "A")], profile)
    assert kept == [] and "(range) 250 A is above the highest possible 200 A" in problems[0]
    kept, problems = check_readings(Guard(), [reading("1-0:31.7.0", 250.0, "A")])  # no profile: no bound
    assert problems == [] and kept[0].value == 250.0


def test_limits_follow_the_unit_conversion():
    # The profile says 46 kWh per hour; a payload in Wh is converted first, then held to the same limit.
    profile = load_profile("sdm120")
    guard = Guard()
    assert check_readings(guard, [reading("1-0:1.8.0", 1_000_000, "Wh")], profile) == (
        [reading("1-0:1.8.0", 1000.0, "kWh")],
        [],
    )
    kept, problems = check_readings(guard, [reading("1-0:1.8.0", 1_100_000, "Wh", T0 + timedelta(minutes=15))], profile)
    assert kept == [] and "(rate)" in problems[0]


# -- profile validation -----------------------------------------------------------------------------
BASE = {"model": "x", "commodity": "electricity"}
REG = {
    "name": "v",
    "channel": "1-0:32.7.0",
    "function": 4,
    "address": 0,
    "data_type": "float32",
    "unit": "V",
    "kind": "instantaneous",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"minimum": 500, "maximum": 0}, "minimum 500 must be below maximum 0"),
        ({"max_rise_per_hour": 10}, "max_rise_per_hour applies to cumulative registers only"),
        ({"maximum": math.inf}, "maximum must be a finite number"),
        ({"unit": "m3"}, "'m3' (volume) cannot be converted to 'V' (voltage)"),
        ({"unit": "volts"}, "unknown unit 'volts'"),
        ({"kind": "status", "channel": "status", "unit": "", "maximum": 3}, "status registers take no minimum"),
        ({"kind": "cumulative", "channel": "1-0:1.8.0", "unit": "kWh", "minimum": -5}, "cannot be negative"),
        ({"kind": "cumulative", "channel": "1-0:1.8.0", "unit": "kWh", "max_rise_per_hour": 0}, "greater than 0"),
    ],
)
def test_bad_limits_in_a_profile_are_refused_at_load_naming_the_problem(change, message):
    with pytest.raises(ProfileError) as info:
        parse_profile({**BASE, "registers": [{**REG, **change}]}, "x.toml")
    assert message in str(info.value) and "x.toml" in str(info.value)


def test_a_profile_in_watt_hours_stores_kilowatt_hours_with_limits_converted():
    profile = parse_profile(
        {
            **BASE,
            "registers": [
                {
                    "name": "e",
                    "channel": "1-0:1.8.0",
                    "function": 3,
                    "address": 0,
                    "data_type": "uint32",
                    "unit": "Wh",
                    "kind": "cumulative",
                    "maximum": 5e9,
                    "max_rise_per_hour": 46000,
                }
            ],
        }
    )
    entry = profile.registers[0]
    assert entry.channel_unit == "kWh"
    limits = register_limits(profile, entry)
    assert (limits.maximum, limits.max_rise_per_hour, limits.resolution) == (5e6, 46.0, 0.001)


def test_a_poll_of_a_watt_hour_register_yields_kilowatt_hours():
    profile = parse_profile(
        {
            **BASE,
            "registers": [
                {
                    "name": "e",
                    "channel": "1-0:1.8.0",
                    "function": 3,
                    "address": 0,
                    "data_type": "uint32",
                    "order": "CDAB",
                    "unit": "Wh",
                    "kind": "cumulative",
                    "max_rise_per_hour": 46000,
                }
            ],
        }
    )
    entry = profile.registers[0]
    accepted, refused = judge_poll(Guard(), "M1", profile, T0, [(entry, decode(entry, [0x9AE7, 0x006D]))])
    assert refused == {} and accepted == {entry: 7183.079}


def test_the_rate_factor_is_a_validated_collector_setting():
    from collectors.config import CollectorConfig

    assert CollectorConfig.model_validate({"plausibility": {"rate_factor": 96}}).plausibility.rate_factor == 96
    with pytest.raises(ValueError, match="rate_factor"):
        CollectorConfig.model_validate({"plausibility": {"rate_factor": 0.5}})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_mqtt_values_are_refused_at_the_edge(value):
    kept, problems = check_readings(Guard(), [reading("1-0:1.8.0", value, "kWh"), reading("1-0:32.7.0", 231.0, "V")])
    assert [r.channel for r in kept] == ["1-0:32.7.0"]
    assert problems == [f"M1 1-0:1.8.0: (finite) {value!r} is not a finite number"]


@pytest.mark.parametrize("unit", [["kWh"], 5, None, {"u": "kWh"}])
def test_a_unit_that_is_not_text_is_refused_not_raised(unit):
    kept, problems = check_readings(Guard(), [Reading("M1", "1-0:1.8.0", T0, 1.0, unit, Source.MQTT)])
    if unit is None:  # no unit stated: the channel's
        assert problems == [] and kept[0].unit == "kWh"
    else:
        assert kept == [] and "is not a text" in problems[0]


def test_a_custom_decoders_naive_time_is_refused_not_taken_as_utc():
    naive = Reading("M1", "1-0:1.8.0", datetime(2026, 3, 1, 10, 0), 1.0, "kWh", Source.MQTT)
    kept, problems = check_readings(Guard(), [naive, reading("1-0:32.7.0", 231.0, "V")])
    assert [r.channel for r in kept] == ["1-0:32.7.0"]
    assert problems == ["M1 1-0:1.8.0: (time) datetime.datetime(2026, 3, 1, 10, 0) has no time zone"]


CASES = sorted((Path(__file__).parent / "plausibility_cases").glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_regression_series_are_judged_as_recorded(path):
    for case in json.loads(path.read_text())["cases"]:
        guard = Guard()
        got = []
        for minutes, value, _ in case["series"]:
            problem = check(case["model"], case["register"], value, guard, T0 + timedelta(minutes=minutes))
            got.append(problem.rule if problem else None)
        assert got == [rule for *_, rule in case["series"]], (path.name, case["register"])
