"""Modbus front-ends against real clients: Debian's mbpoll (libmodbus) and pymodbus, TCP and RTU on a pty."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import timedelta

import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient

from releve.profiles import decode
from simulators.clock import SimClock
from simulators.engine import Simulation
from simulators.modbus import BackgroundModbus, FleetDatastore

from .conftest import small_fleet

needs_mbpoll = pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll is not installed (apt install mbpoll)")


def mbpoll(*args: str) -> dict[int, float]:
    """Run mbpoll once; return {1-based reference: value}."""
    out = subprocess.run(["mbpoll", "-1", "-o", "2", *args], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    return {int(ref): float(value) for ref, value in re.findall(r"^\[(\d+)\]:\s+(\S+)", out.stdout, re.M)}


@pytest.fixture(scope="module")
def sdm_fleet():
    """Servers for a fleet of SDM630s, clock frozen on a winter evening."""
    sim = Simulation(
        small_fleet(topology={"electricity_models": {"sdm630": 1.0}, "dmas": 0}, mqtt={"electricity_share": 0.0})
    )
    clock = SimClock(sim.start)
    clock.freeze(sim.start + timedelta(days=3, hours=19, minutes=7, seconds=30))
    with BackgroundModbus(sim, clock) as front:
        yield sim, clock, front


SDM_REFS = {
    1: "1-0:32.7.0",
    3: "1-0:52.7.0",
    5: "1-0:72.7.0",
    7: "1-0:31.7.0",
    9: "1-0:51.7.0",
    11: "1-0:71.7.0",
    13: "1-0:21.7.0",
    15: "1-0:41.7.0",
    17: "1-0:61.7.0",
    53: "1-0:1.7.0",
    71: "1-0:14.7.0",
    73: "1-0:1.8.0",
    75: "1-0:2.8.0",
    343: "1-0:15.8.0",
}


def assert_sdm_values(read: dict[int, float], expected: dict[str, float]) -> None:
    for ref, channel in SDM_REFS.items():
        # mbpoll prints 6 significant digits of the float32
        assert read[ref] == pytest.approx(expected[channel], rel=2e-5, abs=1e-6), channel


def read_sdm(*where: str) -> dict[int, float]:
    read = mbpoll(*where, "-t", "3:float", "-B", "-r", "1", "-c", "9")
    read |= mbpoll(*where, "-t", "3:float", "-B", "-r", "53", "-c", "1")
    read |= mbpoll(*where, "-t", "3:float", "-B", "-r", "71", "-c", "3")
    read |= mbpoll(*where, "-t", "3:float", "-B", "-r", "343", "-c", "1")
    return read


@needs_mbpoll
def test_mbpoll_reads_the_sdm630_over_tcp_as_the_simulator_reports_it(sdm_fleet):
    sim, clock, front = sdm_fleet
    gateway = front.gateways[0]
    unit, meter = next(iter(gateway.store.units.items()))
    read = read_sdm("-m", "tcp", "-p", str(gateway.port), "-a", str(unit), "127.0.0.1")
    expected = sim.values_at(meter, clock.now())
    assert_sdm_values(read, expected)
    assert 200 < read[1] < 250
    # Serial Number Hi at holding register 42 and Lo at 44 (references 43 and 45), 16 bits each.
    serial = mbpoll(
        "-m", "tcp", "-p", str(gateway.port), "-a", str(unit), "-t", "4", "-r", "43", "-c", "3", "127.0.0.1"
    )
    assert serial[43] * 65536 + serial[45] == int(sim.meters[meter].serial)


@needs_mbpoll
def test_mbpoll_reads_the_sdm630_over_rtu_on_a_pseudo_terminal(sdm_fleet):
    sim, clock, front = sdm_fleet
    line = front.lines[0]
    assert line.store.units, "the RTU line serves meters"
    for unit, meter in line.store.units.items():
        read = read_sdm("-m", "rtu", "-b", "9600", "-P", "none", "-a", str(unit), line.path)
        assert_sdm_values(read, sim.values_at(meter, clock.now()))


@needs_mbpoll
def test_a_unit_nobody_serves_on_the_rtu_line_stays_silent(sdm_fleet):
    _, _, front = sdm_fleet
    out = subprocess.run(
        [
            "mbpoll",
            "-1",
            "-o",
            "0.3",
            "-m",
            "rtu",
            "-b",
            "9600",
            "-P",
            "none",
            "-a",
            "200",
            "-t",
            "3:float",
            "-r",
            "1",
            "-c",
            "2",
            front.lines[0].path,
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "timed out" in (out.stdout + out.stderr).lower()


def test_every_profile_decodes_over_tcp_to_the_simulated_values():
    sim = Simulation(
        small_fleet(
            theft={"rate": 0.0},
            faults={"rate": 0.0},
            mqtt={"electricity_share": 0.0},
            topology={"customers_per_transformer": 12},
        )
    )
    clock = SimClock(sim.start)
    now = clock.freeze(sim.start + timedelta(days=5, hours=8, minutes=20))
    models_seen = set()
    with BackgroundModbus(sim, clock) as front:
        for gateway in front.gateways:
            client = ModbusTcpClient(gateway.host, port=gateway.port, timeout=3)
            assert client.connect()
            for unit, m in gateway.store.units.items():
                spec = sim.meters[m]
                expected = sim.values_at(m, now)
                for entry in spec.profile.registers:
                    read = client.read_input_registers if entry.function == 4 else client.read_holding_registers
                    rr = read(entry.address, count=entry.count, device_id=unit)
                    assert not rr.isError(), rr
                    got = decode(entry, rr.registers)
                    want = expected[entry.channel]
                    if entry.wrap:
                        want %= entry.wrap
                    if entry.data_type.value.startswith("float"):
                        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), (spec.model, entry.name)
                    else:
                        assert abs(got - want) <= abs(entry.scale) / 2 + 1e-9, (spec.model, entry.name, got, want)
                assert spec.profile.serial is not None
                words = []
                for address in spec.profile.serial.addresses:
                    count = 2 if spec.profile.serial.data_type.value == "uint32" else 1
                    rr = client.read_holding_registers(address, count=count, device_id=unit)
                    words.append(rr.registers)
                assert spec.profile.decode_serial(words) == int(spec.serial)
                models_seen.add(spec.model)
            client.close()
    assert models_seen == {"sdm630", "sdm120", "gen-int32cdab", "gen-counter16", "water-ultrasonic"}


def test_communication_loss_and_response_delay_are_felt_by_a_client():
    sim = Simulation(
        small_fleet(
            faults={"rate": 1.0, "kinds": {"comm_loss": 1.0}},
            theft={"rate": 0.0},
            modbus={"response_delay_ms": 150.0},
            mqtt={"electricity_share": 0.0},
        )
    )
    serial_to_meter = {m.serial: m for m in sim.meters}
    lost_by_transport = {}
    for label in sim.labels():
        meter = serial_to_meter[label.meter]
        if label.kind == "comm_loss" and meter.transport in ("tcp", "rtu"):
            lost_by_transport.setdefault(meter.transport, (meter, label))
    assert set(lost_by_transport) == {"tcp", "rtu"}
    clock = SimClock(sim.start)
    with BackgroundModbus(sim, clock) as front:
        for transport, (meter, label) in lost_by_transport.items():
            now = clock.freeze(label.start + (label.end - label.start) / 2)
            assert not sim.available(meter.index, now)
            if transport == "tcp":
                gateway = front.gateways[meter.gateway]
                client = ModbusTcpClient(gateway.host, port=gateway.port, timeout=2, retries=0)
                assert client.connect()
                answering = next(
                    m
                    for m in sim.meters
                    if m.transport == "tcp" and m.gateway == meter.gateway and sim.available(m.index, now)
                )
                t0 = time.perf_counter()
                assert not client.read_input_registers(0, count=2, device_id=answering.unit_id).isError()
                assert time.perf_counter() - t0 >= 0.15, "every device answers after response_delay_ms"
                answer = client.read_input_registers(0, count=2, device_id=meter.unit_id)
                assert answer.isError()
                assert answer.exception_code == 0x0B  # gateway target device failed to respond
                client.close()
            else:
                line = front.lines[meter.line]
                client = ModbusSerialClient(line.path, baudrate=9600, timeout=0.5, retries=0)
                assert client.connect()
                answering = next(u for u, m in line.store.units.items() if sim.available(m, now))
                assert not client.read_input_registers(0, count=2, device_id=answering).isError()
                t0 = time.perf_counter()
                with pytest.raises(Exception, match=r"(?i)no response|timed? ?out"):
                    client.read_input_registers(0, count=2, device_id=meter.unit_id)
                assert time.perf_counter() - t0 >= 0.4
                client.close()


def test_tamper_events_can_be_read_from_the_event_registers():
    sim = Simulation(
        small_fleet(
            theft={"rate": 1.0, "kinds": {"tamper_drop": 1.0}}, faults={"rate": 0.0}, mqtt={"electricity_share": 0.0}
        )
    )
    serial_to_meter = {m.serial: m for m in sim.meters}
    label = next(lb for lb in sim.labels() if lb.kind == "tamper_drop" and serial_to_meter[lb.meter].transport == "tcp")
    meter = serial_to_meter[label.meter]
    profile = meter.profile
    clock = SimClock(sim.start)
    with BackgroundModbus(sim, clock) as front:
        gateway = front.gateways[meter.gateway]
        client = ModbusTcpClient(gateway.host, port=gateway.port, timeout=3)
        assert client.connect()

        def read(channel: str) -> float:
            entry = profile.entry(channel)
            fn = client.read_input_registers if entry.function == 4 else client.read_holding_registers
            return decode(entry, fn(entry.address, count=entry.count, device_id=meter.unit_id).registers)

        clock.freeze(label.start - timedelta(minutes=5))
        assert read("event_counter") == 0
        assert read("status") == 0
        clock.freeze(label.start + timedelta(minutes=1))
        trigger = label.params["event"]
        assert read("event_counter") == 1
        assert read("last_event_code") == {"terminal_cover_open": 40, "magnetic_field": 42}[trigger]
        assert read("status") == 1 << profile.status_bits[trigger]
        if profile.entry("last_event_ts") is not None:
            assert read("last_event_ts") == label.start.timestamp()
        client.close()


def test_unmapped_registers_answer_illegal_data_address(sdm_fleet):
    sim, _, front = sdm_fleet
    gateway = front.gateways[0]
    unit, meter = next(iter(gateway.store.units.items()))
    client = ModbusTcpClient(gateway.host, port=gateway.port, timeout=3)
    assert client.connect()
    try:
        for read, address, count in (
            (client.read_input_registers, 600, 2),  # beyond the input map
            (client.read_input_registers, 500, 10),  # runs off its end
            (client.read_holding_registers, 0, 2),
        ):  # no holding register 0 on an SDM630
            rr = read(address, count=count, device_id=unit)
            assert rr.isError() and rr.exception_code == 2, (address, count, rr)
        reserved = client.read_input_registers(54, count=2, device_id=unit)  # a gap inside the map
        assert not reserved.isError() and reserved.registers == [0, 0]
        hi, _, lo = client.read_holding_registers(42, count=3, device_id=unit).registers
        assert hi * 65536 + lo == int(sim.meters[meter].serial)  # Serial Number Hi (42) and Lo (44)
    finally:
        client.close()


def test_every_read_the_collector_plans_is_inside_the_register_map():
    from collectors.plan import plan_reads
    from releve.profiles import profile_names

    sim = Simulation(small_fleet())
    first = {}
    for m in sim.meters:
        first.setdefault(m.model, m)
    assert set(first) == set(profile_names())
    store = FleetDatastore(sim, SimClock(sim.start), {u: m.index for u, m in enumerate(first.values(), start=1)})
    for meter in first.values():
        by_class: dict[str, list] = {}
        for entry in meter.profile.registers:
            by_class.setdefault(entry.poll_class, []).append(entry)
        for max_filler in (0, 16, 120):
            for entries in by_class.values():
                for block in plan_reads(entries, max_filler=max_filler):
                    assert store.mapped(meter.index, block.function, block.address, block.count), (meter.model, block)


@pytest.mark.parametrize("serialise", [True, False])
def test_a_serialising_gateway_answers_one_request_at_a_time(serialise):
    import asyncio

    from pymodbus.client import AsyncModbusTcpClient

    sim = Simulation(
        small_fleet(
            modbus={"response_delay_ms": 50.0, "serialise_gateways": serialise, "rtu_lines": 0},
            faults={"rate": 0.0},
            mqtt={"electricity_share": 0.0},
        )
    )
    clock = SimClock(sim.start)
    with BackgroundModbus(sim, clock) as front:
        gateway = front.gateways[0]
        units = sorted(gateway.store.units)[:4]

        async def four_at_once() -> None:
            clients = [AsyncModbusTcpClient(gateway.host, port=gateway.port, timeout=5) for _ in units]
            for c in clients:
                assert await c.connect()
            replies = await asyncio.gather(
                *(c.read_holding_registers(0, count=1, device_id=u) for c, u in zip(clients, units, strict=True))
            )
            for c in clients:
                c.close()
            assert len(replies) == 4

        asyncio.run(four_at_once())
        assert gateway.store.max_in_flight == (1 if serialise else 4)
