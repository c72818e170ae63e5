"""What simulated meters were told to do: relay (or valve) state, clock settings, demand resets.

The simulation itself is a pure function of the seed and the instant; commands are the one thing
that changes it from outside. :class:`MeterControls` keeps them per meter, in simulated time:

- **Relay.** A disconnected meter stops consuming: from the instant its relay opens until it closes,
  its registers stop rising (the energy that would have flowed is subtracted, import and export
  alike), power, current and flow read 0, and its feeder or bulk meter no longer sees it either
  (so the energy balance of its area stays whole). Voltage is measured on the supply side and stays.
  Reconnecting resumes consumption from the frozen index.
- **Clock.** Writing the clock sets it: from then on the meter's clock is the written time plus the
  simulated time elapsed (plus its drift, when a clock-drift fault runs on).
- **Demand reset.** A counter of resets, as meters keep one.

Thread-safe: the Modbus servers and the MQTT front-end apply commands from their own threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class _Open:
    """One period with the relay open: when, and the meter's unswitched indexes at its ends."""

    since: datetime
    imp_at_open: float
    exp_at_open: float
    until: datetime | None = None
    imp_at_close: float = 0.0
    exp_at_close: float = 0.0


@dataclass
class _Meter:
    periods: list[_Open] = field(default_factory=list)
    clock_set_at: datetime | None = None
    clock_correction: float = 0.0  # seconds added to the meter's clock offset from clock_set_at on
    demand_resets: int = 0


class MeterControls:
    """Commands applied to simulated meters (see the module docstring)."""

    def __init__(self) -> None:
        """No meter has been told anything yet: every relay closed, every clock as simulated."""
        self._meters: dict[int, _Meter] = {}
        self._lock = threading.Lock()
        self.applied = 0  # commands applied (tests and logs)

    def _state(self, meter: int) -> _Meter:
        return self._meters.setdefault(meter, _Meter())

    def relay_closed(self, meter: int, ts: datetime) -> bool:
        """Whether the meter's relay is closed (supply connected) at ``ts``."""
        with self._lock:
            state = self._meters.get(meter)
            if state is None:
                return True
            return not any(p.since <= ts and (p.until is None or ts < p.until) for p in state.periods)

    def switch(self, meter: int, ts: datetime, closed: bool, unswitched: tuple[float, float]) -> bool:
        """Open or close the relay at ``ts``; ``unswitched``: the (import, export) index without switching.

        Returns False when it already was in that position (nothing changes).
        """
        with self._lock:
            state = self._state(meter)
            current = state.periods[-1] if state.periods and state.periods[-1].until is None else None
            if closed == (current is None):
                return False
            if current is not None:
                current.until = max(ts, current.since)
                current.imp_at_close, current.exp_at_close = unswitched
            else:
                state.periods.append(_Open(ts, *unswitched))
            self.applied += 1
            return True

    def lost(self, meter: int, ts: datetime, unswitched: tuple[float, float]) -> tuple[float, float]:
        """(import, export) the meter did not count up to ``ts`` because its relay was open."""
        with self._lock:
            state = self._meters.get(meter)
            if state is None:
                return 0.0, 0.0
            imp = exp = 0.0
            for p in state.periods:
                if ts <= p.since:
                    continue
                if p.until is not None and p.until <= ts:
                    imp += p.imp_at_close - p.imp_at_open
                    exp += p.exp_at_close - p.exp_at_open
                else:  # open at ts
                    imp += unswitched[0] - p.imp_at_open
                    exp += unswitched[1] - p.exp_at_open
            return max(imp, 0.0), max(exp, 0.0)

    def relay_periods(self, meter: int) -> list[tuple[datetime, datetime | None]]:
        """When the meter's relay was open: (opened, closed or None while still open)."""
        with self._lock:
            state = self._meters.get(meter)
            return [(p.since, p.until) for p in state.periods] if state is not None else []

    def has_relay_history(self, meter: int) -> bool:
        """Whether the meter's relay ever opened (a fast path for the unswitched majority)."""
        state = self._meters.get(meter)
        return state is not None and bool(state.periods)

    def set_clock(self, meter: int, ts: datetime, written_unix: float, offset_before: float) -> None:
        """The meter's clock was written at simulated ``ts`` with ``written_unix``.

        ``offset_before``: the meter's clock offset (meter − true, s) at ``ts`` before the write.
        """
        with self._lock:
            state = self._state(meter)
            true_unix = (ts - _EPOCH).total_seconds()
            state.clock_correction += written_unix - true_unix - offset_before
            state.clock_set_at = ts
            self.applied += 1

    def clock_correction(self, meter: int, ts: datetime) -> float:
        """Seconds to add to the simulated clock offset at ``ts`` (0 before any clock write)."""
        state = self._meters.get(meter)
        if state is None or state.clock_set_at is None or ts < state.clock_set_at:
            return 0.0
        return state.clock_correction

    def reset_demand(self, meter: int) -> int:
        """Reset maximum demand; return the number of resets so far."""
        with self._lock:
            state = self._state(meter)
            state.demand_resets += 1
            self.applied += 1
            return state.demand_resets

    def demand_resets(self, meter: int) -> int:
        """How many times the meter's maximum demand was reset."""
        state = self._meters.get(meter)
        return state.demand_resets if state is not None else 0
