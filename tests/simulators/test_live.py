"""Live faults injected into a running fleet: the servers and the simulated values feel them at once."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import pytest

from releve.model import EventKind
from simulators.clock import SimClock
from simulators.engine import Simulation
from simulators.live import KINDS, SAG_FACTOR, LiveScenarios
from simulators.modbus import BackgroundModbus
from tests.simulators.conftest import small_fleet


def refuses(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


def test_each_scenario_in_turn_and_each_undone_when_it_ends():
    sim = Simulation(small_fleet())
    clock = SimClock(sim.start)
    at = sim.start + timedelta(days=3, hours=12)
    clock.freeze(at)
    said: list[str] = []
    background = BackgroundModbus(sim, clock)
    front = background.start()
    try:
        scenarios = LiveScenarios(sim, front, every_s=10, lasts_s=25, seed=1, say=said.append)

        def tick(t: float) -> None:
            asyncio.run_coroutine_threadsafe(scenarios.tick(t, at), background.loop).result(10)

        events_before = len(sim.events)
        tick(0)  # a gateway goes down: its port refuses connections
        gw = next(g for g in front.gateways if g.server is None)
        assert refuses(gw.host, gw.port)
        tick(10)  # a silent line: none of its meters answers
        line_meters = set(front.lines[0].store.units.values())
        assert line_meters <= sim.live.down
        assert not any(sim.available(m, at) for m in line_meters)
        tick(20)  # a tamper event, shown by the meter's event registers
        injected = sim.events[events_before:]
        assert [e.kind for e in injected] == [EventKind.TERMINAL_COVER_OPEN]
        _, last = sim.event_state(injected[0].meter, sim.step_of(at)[0])
        assert last is injected[0]
        assert sim.values_at(injected[0].meter, at)["last_event_code"] == injected[0].code
        tick(30)  # a voltage sag; the gateway's 25 s are over: it serves again
        assert not refuses(gw.host, gw.port)
        sagged = next(iter(sim.live.sag))
        low = sim.values_at(sagged, at)["1-0:32.7.0"]
        asyncio.run_coroutine_threadsafe(scenarios.end_all(), background.loop).result(10)  # the demo stops
        assert sim.live.down == frozenset() and sim.live.sag == {} and not scenarios.active
        assert low == pytest.approx(sim.values_at(sagged, at)["1-0:32.7.0"] * SAG_FACTOR)
        started = [s.split(" on ")[0].removeprefix("live fault: ") for s in said if s.startswith("live fault: ")]
        assert started[:4] == list(KINDS)
    finally:
        background.stop()
