"""The [commands] section of device profiles: what each shipped model can do, and bad sections refused."""

from __future__ import annotations

import pytest

from releve.profiles import ProfileError, decode, load_profile, parse_profile, profile_names

BASE = {
    "model": "x",
    "commodity": "electricity",
    "registers": [
        {"name": "e", "channel": "1-0:1.8.0", "function": 4, "address": 0, "data_type": "uint32", "kind": "cumulative"}
    ],
}

#: What each shipped model is expected to support (a new profile must be added here on purpose).
SHIPPED = {
    "gen-counter16": {"disconnect", "reconnect"},
    "gen-int32cdab": {"disconnect", "reconnect", "clock_sync", "demand_reset"},
    "sdm120": {"disconnect", "reconnect", "demand_reset"},
    "sdm630": {"disconnect", "reconnect", "demand_reset"},
    "water-ultrasonic": {"disconnect", "reconnect"},
}


@pytest.mark.parametrize("name", profile_names())
def test_every_shipped_model_says_which_commands_it_takes(name):
    assert set(load_profile(name).commands) == SHIPPED[name]


@pytest.mark.parametrize("name", profile_names())
def test_disconnect_and_reconnect_read_back_the_same_relay_with_opposite_states(name):
    commands = load_profile(name).commands
    off, on = commands["disconnect"], commands["reconnect"]
    assert (off.confirm.function, off.confirm.address) == (on.confirm.function, on.confirm.address)
    assert (off.write.function, off.write.address) == (on.write.function, on.write.address)
    assert {off.confirm.expect, on.confirm.expect} == {0, 1}
    assert off.write.value != on.write.value


def test_clock_sync_writes_the_time_in_the_clock_register_encoding():
    profile = load_profile("gen-int32cdab")
    spec = profile.commands["clock_sync"]
    clock = profile.entry("clock")
    assert clock is not None and (spec.write.address, spec.confirm.address) == (clock.address, clock.address)
    words = spec.write.registers(1_764_480_000.7)
    assert words == [0xD400, 0x692B]  # 0x692BD400 word-swapped (CDAB)
    assert decode(clock, words) == 1_764_480_000
    assert decode(spec.confirm.entry, words) == 1_764_480_000


@pytest.mark.parametrize(
    ("commands", "message"),
    [
        (
            {
                "explode": {
                    "write": {"function": 6, "address": 1, "value": 1},
                    "confirm": {"function": 3, "address": 2, "expect": 1},
                }
            },
            "unknown command 'explode'",
        ),
        (
            {
                "disconnect": {
                    "write": {"function": 5, "address": 1, "value": 7},
                    "confirm": {"function": 1, "address": 1, "expect": 0},
                }
            },
            "value must be 0 or 1",
        ),
        (
            {
                "disconnect": {
                    "write": {"function": 6, "address": 1, "value": 70000},
                    "confirm": {"function": 3, "address": 2, "expect": 0},
                }
            },
            "integer 0..65535",
        ),
        (
            {
                "disconnect": {
                    "write": {"function": 16, "address": 1, "value": 3},
                    "confirm": {"function": 3, "address": 2, "expect": 0},
                }
            },
            "list of words",
        ),
        (
            {
                "clock_sync": {
                    "write": {"function": 6, "address": 1, "value": "clock"},
                    "confirm": {"function": 3, "address": 1, "expect": "clock"},
                }
            },
            "integer 0..65535",
        ),
        (
            {
                "disconnect": {
                    "write": {"function": 3, "address": 1, "value": 0},
                    "confirm": {"function": 3, "address": 2, "expect": 0},
                }
            },
            "commands.disconnect.write.function",
        ),
        (
            {
                "disconnect": {
                    "write": {"function": 6, "address": 1, "value": 0},
                    "confirm": {"function": 1, "address": 2, "expect": 5},
                }
            },
            "expect must be 0 or 1",
        ),
        (
            {
                "disconnect": {
                    "write": {"function": 6, "address": 1, "value": 0},
                    "confirm": {"function": 4, "address": 1, "expect": 0},
                }
            },
            "overlaps 'e'",
        ),
    ],
)
def test_a_bad_command_section_is_refused_with_the_field(commands, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile({**BASE, "commands": commands}, "x.toml")
