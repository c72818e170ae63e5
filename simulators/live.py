"""Live faults for a running fleet: what ``releve demo`` injects so the control room has something to act on.

The drawn faults of a fleet (:mod:`simulators.engine`) are history; a person watching the control room
needs things to happen *now*. :class:`LiveScenarios` starts one scenario every ``every_s`` seconds, in
turn, and ends each after ``lasts_s``:

- **gateway down**: one Modbus TCP gateway's server stops (connections refused), its meters go late;
- **silent line**: every meter of one RTU line stops answering (the line times out);
- **tamper**: a meter raises *terminal cover open* (an alarm, read over Modbus or published over MQTT);
- **voltage sag**: the meters of one transformer area show their voltage 15 % low.

It runs in the simulators' event loop (every call that touches servers is a coroutine) and only
changes :attr:`Simulation.live`, :meth:`Simulation.inject_event` and the front end's servers.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from releve.model import Commodity, EventKind
from simulators.engine import LiveFaults, Simulation
from simulators.modbus import ModbusFrontEnd

log = logging.getLogger("releve.simulators.live")

KINDS = ("gateway down", "silent line", "tamper", "voltage sag")
SAG_FACTOR = 0.85


@dataclass
class Active:
    """A scenario under way: what it is, on which meters, and when it ends."""

    kind: str
    target: str
    meters: list[int]
    ends: float  # monotonic seconds
    undo: Callable[[], object] | None = None


class LiveScenarios:
    """Injects one fault scenario at a time, in turn, into a running fleet."""

    def __init__(
        self,
        sim: Simulation,
        front: ModbusFrontEnd,
        every_s: float = 120.0,
        lasts_s: float = 600.0,
        seed: int = 0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.sim, self.front = sim, front
        self.every_s, self.lasts_s = every_s, lasts_s
        self.rng = random.Random(seed)
        self.say = say or log.info
        self.active: list[Active] = []
        self.turn = 0
        self.next_at: float | None = None

    async def tick(self, now: float, wall: datetime) -> None:
        """End what is over, start the next scenario when one is due (``now``: monotonic seconds)."""
        for scenario in [a for a in self.active if a.ends <= now]:
            await self.end(scenario)
        if self.next_at is None:
            self.next_at = now  # the first one right away
        if now >= self.next_at:
            self.next_at = now + self.every_s
            kind = KINDS[self.turn % len(KINDS)]
            self.turn += 1
            await self.start(kind, now, wall)

    async def start(self, kind: str, now: float, wall: datetime) -> Active | None:
        """Start one scenario of ``kind``; None when the fleet has nothing it could apply to."""
        busy = {m for a in self.active for m in a.meters}
        scenario: Active | None = None
        if kind == "gateway down":
            gateways = [
                g for g in self.front.gateways if g.server is not None and not busy & set(g.store.units.values())
            ]
            if gateways:
                gw = self.rng.choice(gateways)
                await self.front.take_down(gw)
                scenario = Active(
                    kind,
                    f"gateway {gw.host}:{gw.port}",
                    sorted(gw.store.units.values()),
                    now + self.lasts_s,
                    partial(self.front.bring_up, gw),
                )
        elif kind == "silent line":
            lines = [ln for ln in self.front.lines if not busy & set(ln.store.units.values())]
            if lines:
                line = self.rng.choice(lines)
                meters = sorted(line.store.units.values())
                self._down(set(meters), add=True)
                scenario = Active(
                    kind, f"RTU line {line.number}", meters, now + self.lasts_s, partial(self._down, set(meters), False)
                )
        elif kind == "tamper":
            candidates = [
                m.index
                for m in self.sim.meters
                if m.commodity is Commodity.ELECTRICITY and m.index not in busy and m.index not in self.sim.live.down
            ]
            if candidates:
                meter = self.rng.choice(candidates)
                self.sim.inject_event(meter, wall, EventKind.TERMINAL_COVER_OPEN)
                scenario = Active(kind, f"meter {self.sim.meters[meter].serial}", [meter], now)
        elif kind == "voltage sag":
            by_area: dict[str, list[int]] = {}
            for m in self.sim.meters:
                if m.commodity is Commodity.ELECTRICITY and m.index not in busy:
                    by_area.setdefault(str(m.area), []).append(m.index)
            if by_area:
                area = self.rng.choice(sorted(by_area))
                meters = by_area[area]
                self._sag(meters, SAG_FACTOR)
                scenario = Active(kind, f"area {area}", meters, now + self.lasts_s, partial(self._sag, meters, None))
        if scenario is None:
            return None
        self.say(f"live fault: {scenario.kind} on {scenario.target} ({len(scenario.meters)} meter(s))")
        if scenario.undo is not None:
            self.active.append(scenario)
        return scenario

    async def end(self, scenario: Active) -> None:
        """Undo a scenario (the gateway serves again, the line answers, the voltage is back)."""
        self.active.remove(scenario)
        if scenario.undo is not None:
            result = scenario.undo()
            if inspect.isawaitable(result):
                await result
        self.say(f"live fault over: {scenario.kind} on {scenario.target}")

    async def end_all(self) -> None:
        """Undo every scenario under way."""
        for scenario in list(self.active):
            await self.end(scenario)

    def _down(self, meters: set[int], add: bool) -> None:
        live = self.sim.live
        down = live.down | meters if add else live.down - meters
        self.sim.live = LiveFaults(frozenset(down), live.sag)

    def _sag(self, meters: list[int], factor: float | None) -> None:
        live = self.sim.live
        sag = dict(live.sag)
        for m in meters:
            if factor is None:
                sag.pop(m, None)
            else:
                sag[m] = factor
        self.sim.live = LiveFaults(live.down, sag)
