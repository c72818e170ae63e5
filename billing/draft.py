"""What a bill run computes and reports, shared by its steps.

The accounts, their meters' determinants, the draft bills, the notes and the run summary, with the small
helpers every step uses (UTC midnight, the step clock, the unit per commodity).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from billing.pricing import Index, Priced
from billing.tariffs import Tariff

log = logging.getLogger("billing.run")  # the bill run's step timings, under the run's name

#: Each commodity is billed from its main register (releve/model.py), time of use and demand from its intervals.
UNIT = {"electricity": "kWh", "water": "m3"}


class Clock:
    """Step timings for the debug log (where a bill run spends its time)."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def lap(self, what: str) -> None:
        """Log the time since the last lap."""
        now = datetime.now(UTC)
        log.debug("bill run: %s %.2f s", what, (now - self.t).total_seconds())
        self.t = now


def midnight(d: date) -> datetime:
    """UTC midnight at the start of day ``d``."""
    return datetime.combine(d, time(0), UTC)


@dataclass
class Account:
    """An account of the cycle, with what billing needs about it."""

    id: int
    number: str
    customer: str
    indigent: bool
    service_point_id: int
    commodity: str
    tariff_code: str
    prepaid: bool
    opened_on: date
    closed_on: date | None


@dataclass
class Installed:
    """One installation row overlapping the period."""

    meter_id: int
    serial: str
    installed_at: datetime
    removed_at: datetime | None
    install_index: float
    removal_index: float | None
    multiplier: Decimal


@dataclass
class Determinant:
    """What one meter contributes to a bill."""

    meter_id: int
    serial: str
    start_at: datetime
    end_at: datetime
    start: Index | None
    end: Index | None
    multiplier: Decimal
    key: int = 0
    consumption: Decimal | None = None
    tou: dict[str, Decimal] = field(default_factory=dict)
    max_demand: Decimal | None = None
    #: the previous issued bill's end index when it ended at this determinant's start on the same meter:
    #: the start follows it, so that consecutive bills add up to the index difference
    billed_start: Index | None = None

    @property
    def frozen_to(self) -> datetime:
        """The latest instant of the reads this determinant rests on."""
        reads = [r.ts for i in (self.start, self.end) if i is not None for r in i.reads]
        return max([self.end_at, *reads])


@dataclass
class Draft:
    """A bill being computed."""

    account: Account
    start: date
    end: date
    dets: list[Determinant]
    segments: list[tuple[Tariff, date, date]] = field(default_factory=list)
    holds: list[str] = field(default_factory=list)
    consumption: Decimal = Decimal(0)
    priced: Priced = field(default_factory=Priced)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (code, message)
    bill_id: int | None = None  # the bill written (or left unchanged) for it by this run

    @property
    def status(self) -> str:
        """Issued or held."""
        return "held" if self.holds else "issued"

    def fingerprint(self) -> str:
        """The billed values (days, determinants, lines) hashed: equal fingerprints mean an unchanged bill."""
        parts = [str((self.end - self.start).days)]
        parts += [
            f"{d.meter_id}:{d.start.value if d.start else None!s}:{d.end.value if d.end else None!s}:{d.consumption!s}"
            for d in self.dets
        ]  # !s: a Decimal's str() is what format() gives it, at a quarter of the cost
        parts += [f"{li.code}:{li.quantity!s}:{li.rate!s}:{li.amount!s}" for li in self.priced.lines]
        return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Note:
    """Why an account got no bill (``skipped``), or what its bill had to work around (``warning``)."""

    account_id: int
    account: str
    kind: str  # skipped | warning
    code: str
    message: str
    bill_id: int | None = None


@dataclass
class RunSummary:
    """What a bill run did."""

    run_id: int
    cycle: str
    period_start: date
    period_end: date
    accounts: int = 0
    issued: int = 0
    held: int = 0
    unchanged: int = 0
    rebilled: int = 0
    prescribed: int = 0
    prepaid: int = 0
    prepaid_flagged: int = 0
    prepaid_unchecked: int = 0
    notes: list[Note] = field(default_factory=list)
    hold_reasons: dict[str, int] = field(default_factory=dict)
    notices: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(account number, reason) of the accounts that got no bill."""
        return [(n.account, n.message) for n in self.notes if n.kind == "skipped"]

    @property
    def warnings(self) -> list[Note]:
        """Bills (or prepaid checks) that had to work around their data."""
        return [n for n in self.notes if n.kind == "warning"]

    def skip(self, a: Account, code: str, message: str) -> None:
        """Record that account ``a`` gets no bill, and why."""
        self.notes.append(Note(a.id, a.number, "skipped", code, f"{code}: {message}"))

    def text(self, limit: int = 20) -> str:
        """A human summary (at most ``limit`` skipped accounts and warnings each; all are in bill_run_note)."""
        out = [
            f"bill run {self.run_id}: cycle {self.cycle}, {self.period_start} – {self.period_end}",
            f"accounts {self.accounts}: issued {self.issued}, held {self.held}, unchanged {self.unchanged}, "
            f"rebilled {self.rebilled}, prescribed {self.prescribed}, prepaid checked {self.prepaid} "
            f"(flagged {self.prepaid_flagged}, unchecked {self.prepaid_unchecked}), skipped {len(self.skipped)}, "
            f"warnings {len(self.warnings)}",
        ]
        out += [f"  held: {k} × {v}" for k, v in sorted(self.hold_reasons.items())]
        for kind in ("skipped", "warning"):
            notes = [n for n in self.notes if n.kind == kind]
            out += [f"  {kind} {n.account}: {n.message}" for n in notes[:limit]]
            if len(notes) > limit:
                out.append(f"  … {len(notes) - limit} more {kind}: releve bill notes --run {self.run_id}")
        out += [f"  tenant notice for case {c}" for c in self.notices]
        out.append(f"{self.seconds:.1f} s")
        return "\n".join(out)
