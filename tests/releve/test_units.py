"""Unit facts: conversions within a quantity, refusals across quantities, hostile unit strings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from releve.catalogue import UNITS as CATALOGUE_UNITS
from releve.model import CHANNELS, UNITS, UnitError, convert, unit_factor, unit_of


def test_energy_and_volume_convert_exactly_as_a_metering_engineer_writes_them():
    assert convert(7183079, "Wh", "kWh") == 7183.079
    assert convert(412337, "L", "m3") == 412.337
    assert convert(412337, "l", "m3") == 412.337  # lower-case litre, as payloads spell it
    assert convert(1.5, "MWh", "kWh") == 1500.0
    assert convert(2.5, "kW", "W") == 2500.0
    assert convert(95, "%", "1") == 0.95
    assert convert(120, "L/h", "m3/h") == 0.12


def test_same_unit_is_returned_untouched_even_when_not_finite():
    assert convert(1e308, "kWh", "kWh") == 1e308
    assert math.isnan(convert(math.nan, "V", "V"))


@pytest.mark.parametrize(
    ("source", "target"), [("Wh", "m3"), ("kWh", "kW"), ("V", "A"), ("m3/h", "m3"), ("kvarh", "kWh")]
)
def test_units_of_different_quantities_are_refused_with_both_named(source, target):
    with pytest.raises(UnitError) as info:
        convert(1.0, source, target)
    assert repr(source) in str(info.value) and repr(target) in str(info.value)


@pytest.mark.parametrize(
    "hostile", ["", " kWh", "kWh ", "KWH", "mWh", "k\x00Wh", "kWh\n", "W h", "1e3", "🔋", "k" * 10_000]
)
def test_unknown_or_mangled_unit_strings_are_refused_not_guessed(hostile):
    with pytest.raises(UnitError, match="unknown unit"):
        unit_of(hostile)


def test_every_channel_and_catalogue_unit_is_a_known_unit():
    for channel in CHANNELS.values():
        unit_of(channel.unit)
    for code in CATALOGUE_UNITS:
        unit_of(code)


@given(
    st.sampled_from(sorted(UNITS)).flatmap(
        lambda a: st.tuples(st.just(a), st.sampled_from([u for u in UNITS if UNITS[u].quantity == UNITS[a].quantity]))
    ),
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
)
def test_a_conversion_there_and_back_returns_the_value(units, value):
    source, target = units
    back = convert(convert(value, source, target), target, source)
    assert back == pytest.approx(value, rel=1e-12, abs=1e-300)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_integer_watt_hours_become_the_kilowatt_hours_a_person_would_write(wh):
    # 7183079 Wh is 7183.079 kWh, not 7183.079000000001: the conversion divides by 1000.
    assert convert(wh, "Wh", "kWh") == float(f"{wh / 1000:.3f}")
    assert unit_factor("Wh", "kWh") == pytest.approx(0.001)
