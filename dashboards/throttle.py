"""Login throttling: lock-out with back-off, per account and per client address.

Each key (an account name, an address) counts its failed logins; a failure more than ``window``
after the previous one starts the count again. From the ``limit``-th failure in a row the key is
locked for ``base`` seconds, doubling with each further failure up to ``cap``. While a key is locked
every login on it is refused without looking at the password (so guessing cannot go on, and a right
password does not tell). A successful login clears the account's count, not the address's: one
good account does not buy an address more guesses at others. Every lock is logged.

The state is in memory. ``releve dashboard`` serves from one process (waitress, threads), so every
request sees the same counts; a restart forgets them, which an attacker cannot cause from outside.
The number of keys kept is bounded (least recently failed are forgotten first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Policy:
    """When a key is locked and for how long."""

    limit: int = 5
    base: float = 30.0
    cap: float = 900.0
    window: float = 900.0

    def lock_for(self, failures: int) -> float:
        """Seconds of lock-out after ``failures`` failures in a row (0 below the limit)."""
        if failures < self.limit:
            return 0.0
        return float(min(self.cap, self.base * 2 ** min(failures - self.limit, 30)))


class LoginThrottle:
    """Failed-login counts and locks for accounts and addresses (thread-safe)."""

    def __init__(
        self,
        account: Policy | None = None,
        address: Policy | None = None,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policies = {"account": account or Policy(), "address": address or Policy(limit=20)}
        self.max_keys = max_keys
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def _keys(self, username: str, address: str) -> list[tuple[str, str]]:
        return [("account", username.strip().casefold()), ("address", address)]

    def locked(self, username: str, address: str) -> float:
        """Seconds until a login on this account from this address may be tried (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [e.locked_until - now for k in self._keys(username, address) if (e := self._entries.get(k))]
        return max([0.0, *waits])

    def failure(self, username: str, address: str) -> float:
        """Count a failed login; return the lock-out it starts (0: none)."""
        now = self.clock()
        longest = 0.0
        with self._lock:
            for key in self._keys(username, address):
                entry = self._entries.pop(key, None) or _Entry()
                if now - entry.last > self.policies[key[0]].window:
                    entry.failures = 0
                entry.failures += 1
                entry.last = now
                lock = self.policies[key[0]].lock_for(entry.failures)
                if lock:
                    entry.locked_until = now + lock
                    longest = max(longest, lock)
                    log.warning(
                        "login lock-out: %s %r locked for %.0f s after %d failed logins in a row "
                        "(last from %s, account %r)",
                        key[0],
                        key[1],
                        lock,
                        entry.failures,
                        address,
                        username,
                    )
                self._entries[key] = entry  # most recent last
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)
        return longest

    def success(self, username: str) -> None:
        """A right password: the account's count starts again."""
        with self._lock:
            self._entries.pop(("account", username.strip().casefold()), None)

    def state(self) -> list[dict[str, object]]:
        """Keys with failures or a lock (for the users page), most recent first."""
        now = self.clock()
        with self._lock:
            items = list(self._entries.items())
        return [
            {"kind": kind, "key": key, "failures": e.failures, "locked_for_s": max(0, round(e.locked_until - now))}
            for (kind, key), e in reversed(items)
        ]
