"""Simulated meters honour commands: relay, clock, demand reset, over Modbus TCP and RTU (pymodbus clients)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import ModbusSerialClient, ModbusTcpClient

from releve.profiles import decode, load_profile
from simulators.clock import SimClock
from simulators.controls import MeterControls
from simulators.engine import Simulation
from simulators.modbus import BackgroundModbus

from .conftest import small_fleet


def fleet(model: str) -> Simulation:
    return Simulation(
        small_fleet(
            topology={"electricity_models": {model: 1.0}, "dmas": 0},
            mqtt={"electricity_share": 0.0},
            theft={"rate": 0.0},
            faults={"rate": 0.0},
        )
    )


def test_an_open_relay_freezes_the_index_zeroes_power_and_the_feeder_stops_seeing_it():
    sim = fleet("sdm630")
    customer = next(m for m in sim.meters if m.role == "customer")
    feeder = next(a.feeder for a in sim.areas if customer.index in a.customers)
    t0 = sim.start + timedelta(days=2, hours=18)
    before = sim.values_at(customer.index, t0)
    feeder_before = sim.values_at(feeder, t0)["1-0:1.8.0"]
    assert sim.set_relay(customer.index, t0, closed=False)
    assert not sim.set_relay(customer.index, t0, closed=False)  # already open
    t1 = t0 + timedelta(hours=3)
    during = sim.values_at(customer.index, t1)
    assert during["1-0:1.8.0"] == pytest.approx(before["1-0:1.8.0"])
    assert during["1-0:1.7.0"] == during["1-0:31.7.0"] == 0.0
    assert during["1-0:32.7.0"] > 200  # voltage is measured on the supply side
    unswitched = sim._unswitched(customer.index, t1)[0] - sim._unswitched(customer.index, t0)[0]
    assert unswitched > 0
    feeder_rise = sim.values_at(feeder, t1)["1-0:1.8.0"] - feeder_before
    fresh = fleet("sdm630")
    step = sim.step_of(t1)[0]
    drawn = float(sim.block(step // sim.block_steps).rec[customer.index, step % sim.block_steps]) * 1000 / sim.dt_h
    assert sim.values_at(feeder, t1)["1-0:1.7.0"] == pytest.approx(fresh.values_at(feeder, t1)["1-0:1.7.0"] - drawn)
    sim.set_relay(customer.index, t1, closed=True)
    t2 = t1 + timedelta(hours=2)
    after = sim.values_at(customer.index, t2)
    assert after["1-0:1.8.0"] > during["1-0:1.8.0"]
    assert after["1-0:1.8.0"] - during["1-0:1.8.0"] == pytest.approx(
        sim._unswitched(customer.index, t2)[0] - sim._unswitched(customer.index, t1)[0]
    )
    # The feeder rose by what the rest of its area used: the disconnected customer's energy is not in it.
    sim2 = fleet("sdm630")
    assert sim2.values_at(feeder, t1)["1-0:1.8.0"] - sim2.values_at(feeder, t0)["1-0:1.8.0"] == pytest.approx(
        feeder_rise + unswitched
    )


@pytest.fixture
def served():
    sims = {}
    for model in ("sdm630", "gen-counter16", "gen-int32cdab"):
        sim = fleet(model)
        clock = SimClock(sim.start + timedelta(days=3, hours=19))
        clock.freeze()
        sims[model] = (sim, clock, BackgroundModbus(sim, clock))
    for _, _, bg in sims.values():
        bg.start()
    yield sims
    for _, _, bg in sims.values():
        bg.stop()


def _customer_unit(store, sim):
    return next((u, m) for u, m in store.units.items() if sim.meters[m].role == "customer")


def test_sdm630_relay_over_tcp_function_06_and_its_read_back(served):
    sim, clock, bg = served["sdm630"]
    gw = bg.front.gateways[0]
    unit, meter = _customer_unit(gw.store, sim)
    with ModbusTcpClient("127.0.0.1", port=gw.port, timeout=3) as client:
        assert client.read_input_registers(505, count=1, device_id=unit).registers == [1]
        reply = client.write_register(600, 0, device_id=unit)
        assert not reply.isError() and reply.registers == [0]
        assert client.read_input_registers(505, count=1, device_id=unit).registers == [0]
        index = decode(
            load_profile("sdm630").entry("1-0:1.8.0"),
            client.read_input_registers(72, count=2, device_id=unit).registers,
        )
        clock.freeze(clock.now() + timedelta(hours=1))
        later = decode(
            load_profile("sdm630").entry("1-0:1.8.0"),
            client.read_input_registers(72, count=2, device_id=unit).registers,
        )
        power = decode(
            load_profile("sdm630").entry("1-0:1.7.0"),
            client.read_input_registers(52, count=2, device_id=unit).registers,
        )
        assert later == pytest.approx(index, abs=1e-3) and power == 0.0
        bad = client.write_register(600, 7, device_id=unit)
        assert bad.isError() and bad.exception_code == 3  # a value the relay does not take
        elsewhere = client.write_register(601, 0, device_id=unit)
        assert elsewhere.isError() and elsewhere.exception_code == 2
        client.write_register(600, 1, device_id=unit)
        assert client.read_input_registers(505, count=1, device_id=unit).registers == [1]
        assert client.read_input_registers(506, count=1, device_id=unit).registers == [0]
        client.write_register(61456, 0, device_id=unit)
        assert client.read_input_registers(506, count=1, device_id=unit).registers == [1]
    assert sim.relay_closed(meter, clock.now())


def test_gen_counter16_relay_is_a_coil_written_with_function_05(served):
    sim, clock, bg = served["gen-counter16"]
    gw = bg.front.gateways[0]
    unit, meter = _customer_unit(gw.store, sim)
    with ModbusTcpClient("127.0.0.1", port=gw.port, timeout=3) as client:
        assert client.read_coils(0, count=1, device_id=unit).bits[0] is True
        assert not client.write_coil(0, False, device_id=unit).isError()
        assert client.read_coils(0, count=1, device_id=unit).bits[0] is False
    assert not sim.relay_closed(meter, clock.now())


def test_gen_int32cdab_takes_function_16_only_and_sets_its_clock(served):
    sim, clock, bg = served["gen-int32cdab"]
    gw = bg.front.gateways[0]
    unit, meter = _customer_unit(gw.store, sim)
    clock_entry = load_profile("gen-int32cdab").entry("clock")
    with ModbusTcpClient("127.0.0.1", port=gw.port, timeout=3) as client:
        refused = client.write_register(300, 0, device_id=unit)
        assert refused.isError() and refused.exception_code == 1
        assert not client.write_registers(300, [0], device_id=unit).isError()
        assert client.read_holding_registers(301, count=1, device_id=unit).registers == [0]
        target = 1_900_000_000
        words = load_profile("gen-int32cdab").commands["clock_sync"].write.registers(target)
        assert not client.write_registers(205, words, device_id=unit).isError()
        read = client.read_holding_registers(205, count=2, device_id=unit).registers
        assert decode(clock_entry, read) == target
    clock.freeze(clock.now() + timedelta(seconds=90))
    assert sim.values_at(meter, clock.now())["clock"] == target + 90


def test_relay_over_rtu_on_a_pseudo_terminal(served):
    sim, clock, bg = served["sdm630"]
    line = bg.front.lines[0]
    unit, meter = next(iter(line.store.units.items()))
    client = ModbusSerialClient(line.path, baudrate=line.baudrate, timeout=2)
    assert client.connect()
    try:
        assert not client.write_register(600, 0, device_id=unit).isError()
        assert client.read_input_registers(505, count=1, device_id=unit).registers == [0]
    finally:
        client.close()
    assert not sim.relay_closed(meter, clock.now())


# -- property: whatever the switching, the index never moves while open and loses nothing else ------
_SIM = fleet("gen-int32cdab")


@given(
    st.lists(st.integers(min_value=1, max_value=6 * 3600), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=len(_SIM.meters) - 1),
)
@settings(max_examples=60, deadline=None)
def test_switching_freezes_the_index_exactly_while_open(gaps, meter):
    sim = _SIM
    sim.controls = MeterControls()  # a fresh set of commands for each example
    t0 = sim.start + timedelta(days=1, hours=5)
    times = [t0]
    for gap in gaps:
        times.append(times[-1] + timedelta(seconds=gap))
    for k, ts in enumerate(times[:-1]):
        sim.set_relay(meter, ts, closed=k % 2 == 1)  # open, close, open…
    end = times[-1] + timedelta(hours=1)
    samples = sorted({*times, end, *(a + (b - a) / 2 for a, b in itertools.pairwise(times))})
    shown = [sim.values_at(meter, ts)["1-0:1.8.0"] for ts in samples]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(shown))  # never backwards
    for a, b in itertools.pairwise(samples):
        if not sim.relay_closed(meter, a + (b - a) / 2):
            assert sim.values_at(meter, b)["1-0:1.8.0"] == pytest.approx(sim.values_at(meter, a)["1-0:1.8.0"])
    # What was counted = what flowed minus what flowed while open.
    switches = times[:-1]  # the relay opens at even switches and closes at odd ones
    periods = [(switches[k], switches[k + 1] if k + 1 < len(switches) else end) for k in range(0, len(switches), 2)]
    flowed = sim._unswitched(meter, end)[0] - sim._unswitched(meter, t0)[0]
    open_flow = sum(sim._unswitched(meter, b)[0] - sim._unswitched(meter, a)[0] for a, b in periods)
    counted = sim.values_at(meter, end)["1-0:1.8.0"] - sim.values_at(meter, t0)["1-0:1.8.0"]
    assert counted == pytest.approx(flowed - open_flow, abs=1e-9)
    assert sim.relay_closed(meter, end) == (len(switches) % 2 == 0)
