"""The simulated clock of live mode: simulated time runs ``speed`` times faster than the wall clock.

``SimClock(start, speed=96)`` makes one simulated day pass in 15 wall minutes. A frozen clock
(``freeze(at)``) always answers the same instant, which is how tests compare what a Modbus master
reads with what the simulator says it shows.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta


class SimClock:
    """Simulated time: ``start + speed × (wall time elapsed since creation)``, or a frozen instant."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        """Start at ``start`` (timezone-aware) now, running ``speed`` simulated seconds per second."""
        if start.tzinfo is None:
            raise ValueError("the simulated clock needs a timezone-aware start")
        self.start = start
        self.speed = speed
        self._wall0 = time.monotonic()
        self._frozen: datetime | None = None

    def now(self) -> datetime:
        """Return the current simulated time."""
        if self._frozen is not None:
            return self._frozen
        return self.start + timedelta(seconds=(time.monotonic() - self._wall0) * self.speed)

    def freeze(self, at: datetime | None = None) -> datetime:
        """Stop the clock at ``at`` (default: now) and return that instant."""
        self._frozen = at if at is not None else self.now()
        return self._frozen

    def resume(self) -> None:
        """Run again from the frozen instant."""
        if self._frozen is not None:
            self.start = self._frozen
            self._wall0 = time.monotonic()
            self._frozen = None

    @property
    def frozen(self) -> bool:
        """Whether the clock is frozen."""
        return self._frozen is not None
