"""The probe's verdict from registers already read (pure logic), and how it parses its target."""

from __future__ import annotations

import pytest

from collectors.modbus import RtuLine, TcpGateway
from collectors.probe import make_link, probe_registers, render
from releve.profiles import encode, load_profile


def words(model: str, shows: dict[str, float], order: str | None = None):
    """What a meter of ``model`` showing ``shows`` puts on the wire, in ``order`` (default: the profile's)."""
    profile = load_profile(model)
    out = {}
    for entry in profile.registers:
        if entry.channel in shows and entry.count > 1:
            wire = entry.model_copy(update={"order": order}) if order else entry
            out[entry] = encode(wire, shows[entry.channel])
    return profile, out


def test_a_float_meter_in_its_own_order_is_named_and_the_profile_left_alone():
    profile, raw = words("sdm120", {"1-0:32.7.0": 229.7, "1-0:31.7.0": 4.21, "1-0:14.7.0": 49.98, "1-0:1.8.0": 812.5})
    result = probe_registers(profile, raw)
    assert result.order == "ABCD" and result.found
    assert result.scores["ABCD"] == 4 and max(result.scores[o] for o in ("CDAB", "BADC", "DCBA")) < 4
    assert "set order" not in render(result)


@pytest.mark.parametrize("order", ["CDAB", "BADC", "DCBA"])
def test_each_wrong_order_is_found_and_the_fix_named(order):
    profile, raw = words(
        "sdm120", {"1-0:32.7.0": 229.7, "1-0:31.7.0": 4.21, "1-0:14.7.0": 49.98, "1-0:1.8.0": 812.5}, order
    )
    result = probe_registers(profile, raw)
    assert result.order == order
    assert f'set order = "{order}"' in render(result)


def test_integer_registers_that_fit_every_order_are_flagged_for_a_look_at_the_display():
    # water-ultrasonic: uint32 litre volumes (any order fits the range) and a CDAB float flow rate
    profile, raw = words("water-ultrasonic", {"8-0:1.0.0": 412.337, "8-0:2.0.0": 0.5, "8-0:2.7.0": 1.37}, "CDAB")
    result = probe_registers(profile, raw)
    assert result.order == "CDAB"
    assert "forward_volume, reverse_volume make sense in every order" in result.message


def test_mixed_orders_are_named_per_register():
    profile = load_profile("sdm120")
    voltage, frequency = profile.entry("1-0:32.7.0"), profile.entry("1-0:14.7.0")
    raw = {
        voltage: encode(voltage.model_copy(update={"order": "CDAB"}), 231.4),
        frequency: encode(frequency.model_copy(update={"order": "DCBA"}), 49.98),
    }
    result = probe_registers(profile, raw)
    assert result.order is None and result.mixed == {"voltage": "CDAB", "frequency": "DCBA"} and result.found


def test_all_zero_registers_are_ambiguous_not_a_verdict():
    profile = load_profile("sdm120")
    # zero reads the same in every order (a frequency of 0 Hz would be impossible: leave it out)
    raw = {e: [0, 0] for e in profile.registers if e.count == 2 and e.kind != "status" and e.name != "frequency"}
    result = probe_registers(profile, raw)
    assert not result.found and result.message.startswith(
        "ambiguous: every value makes sense in ABCD, CDAB, BADC, DCBA"
    )
    raw[profile.entry("1-0:14.7.0")] = [0, 0]
    assert probe_registers(profile, raw).message.startswith("no order makes sense of every value (best: ABCD, CDAB")


def test_unreadable_blocks_are_shown_and_judged_on_what_was_read():
    profile, raw = words("sdm120", {"1-0:32.7.0": 229.7, "1-0:31.7.0": 4.21})
    entry = profile.entry("1-0:1.8.0")
    raw[entry] = "function 4 address 72 count 4: Modbus exception 2 (illegal data address)"
    result = probe_registers(profile, raw)
    assert result.order == "ABCD" and result.read == 2
    assert "not read: function 4 address 72" in render(result)
    nothing = probe_registers(profile, {entry: "timed out"})
    assert not nothing.found and nothing.message == "no register could be read: nothing to judge"


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("10.0.0.5", "10.0.0.5", 502),
        ("gw.example:1502", "gw.example", 1502),
        ("[::1]:5020", "::1", 5020),
        ("[fe80::1]", "fe80::1", 502),
    ],
)
def test_tcp_targets(target, host, port):
    link = make_link(target, 1.0, 9600, "N", 1)
    assert isinstance(link, TcpGateway) and (link.host, link.port) == (host, port)


def test_a_path_is_a_serial_line():
    link = make_link("/dev/ttyUSB0", 1.0, 19200, "E", 1)
    assert isinstance(link, RtuLine) and link.port == "/dev/ttyUSB0" and link.baudrate == 19200


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("host:0", "port '0' is not a number in 1..65535"),
        ("host:-1", "port '-1'"),
        (":502", "no host"),
        ("[::1]:http", "port 'http'"),
        ("host:５０２", "port '５０２'"),
    ],
)
def test_bad_targets_are_refused_by_name(target, message):
    with pytest.raises(ValueError, match=message):
        make_link(target, 1.0, 9600, "N", 1)


def test_probe_over_an_rtu_line_on_a_pseudo_terminal():
    """Relevé's simulated RS-485 line (a pty): the probe reads through pyserial and names each meter's order."""
    from datetime import UTC, datetime

    from collectors.probe import probe
    from simulators.clock import SimClock
    from simulators.config import parse_fleet
    from simulators.engine import Simulation
    from simulators.modbus import BackgroundModbus

    sim = Simulation(
        parse_fleet(
            {
                "seed": 5,
                "horizon_days": 10,
                "start": "2026-03-01T00:00:00Z",
                "topology": {
                    "transformers": 1,
                    "customers_per_transformer": 3,
                    "dmas": 0,
                    "electricity_models": {"sdm120": 1.0},
                },
                "modbus": {"tcp_base_port": 0, "rtu_lines": 1, "devices_per_line": 4, "devices_per_gateway": 8},
                "mqtt": {"electricity_share": 0.0},
                "theft": {"rate": 0.0},
                "faults": {"rate": 0.0},
            },
            "probe fleet",
        )
    )
    clock = SimClock(datetime(2026, 3, 5, 12, 0, tzinfo=UTC))
    clock.freeze(datetime(2026, 3, 5, 12, 0, tzinfo=UTC))
    with BackgroundModbus(sim, clock) as front:
        line = front.lines[0]
        unit, index = sorted(line.store.units.items())[0]
        meter = sim.meters[index]
        result = probe(make_link(line.path, 1.0, line.baudrate, "N", 1), unit, meter.profile)
    assert meter.model in ("sdm120", "sdm630")
    assert result.order == "ABCD", render(result)
    assert result.read == sum(1 for e in meter.profile.registers if e.count > 1 and e.kind != "status")
