"""The tariff file: tariffs with effective dates, hold thresholds and billing rules, validated at load.

Money and quantities are :class:`decimal.Decimal` (TOML numbers are parsed straight to Decimal,
never through float). See ``billing/tariffs.example.toml`` and docs/billing.md for every key.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class TariffError(Exception):
    """A tariff file that cannot be used: names the file, the field and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Block(_Strict):
    """One step of an increasing block tariff: ``rate`` per unit up to ``up_to`` units (None: no limit)."""

    up_to: Decimal | None = Field(None, gt=0)
    rate: Decimal = Field(ge=0)
    lifeline: bool = False


class TouPeriod(_Strict):
    """A time-of-use period: local ``hours`` ranges [from, to) on ISO weekdays ``days`` (1 = Monday)."""

    name: str = Field(min_length=1)
    rate: Decimal = Field(ge=0)
    hours: list[tuple[int, int]] = Field(default_factory=list)
    days: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: list[tuple[int, int]]) -> list[tuple[int, int]]:
        for lo, hi in value:
            if not 0 <= lo < hi <= 24:
                raise ValueError(f"hour range [{lo}, {hi}) must satisfy 0 <= from < to <= 24")
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[int]) -> list[int]:
        if not value or any(d < 1 or d > 7 for d in value):
            raise ValueError("days are ISO weekdays 1 (Monday) to 7 (Sunday)")
        return value


class Tax(_Strict):
    """A tax on the sum of the charges."""

    name: str = Field(min_length=1)
    rate: Decimal = Field(ge=0, lt=1)


class Indigent(_Strict):
    """Support for customers on the indigent register: free units and a share of the fixed charge."""

    free_units: Decimal = Field(Decimal(0), ge=0)
    fixed_charge_factor: Decimal = Field(Decimal(1), ge=0, le=1)


class Tariff(_Strict):
    """One version of a tariff, in force from ``effective_from`` until the next version of its code."""

    code: str = Field(min_length=1)
    commodity: Literal["electricity", "water"]
    effective_from: date
    description: str = ""
    fixed_charge: Decimal = Field(Decimal(0), ge=0)
    blocks: list[Block] = Field(default_factory=list)
    lifeline_limit: Decimal | None = Field(None, gt=0)
    tou: list[TouPeriod] = Field(default_factory=list)
    demand_charge: Decimal = Field(Decimal(0), ge=0)
    indigent: Indigent = Field(default_factory=Indigent)
    taxes: list[Tax] = Field(default_factory=list)
    prepaid_price: Decimal | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _energy(self) -> Tariff:
        if bool(self.blocks) == bool(self.tou):
            raise ValueError("give exactly one of blocks or tou")
        previous = Decimal(0)
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            if block.up_to is None and not last:
                raise ValueError(f"blocks[{i}]: only the last block may have no up_to")
            if block.up_to is not None and block.up_to <= previous:
                raise ValueError(f"blocks[{i}].up_to: must be greater than the previous block's ({previous})")
            if block.lifeline and i != 0:
                raise ValueError(f"blocks[{i}].lifeline: only the first block can be the lifeline block")
            previous = block.up_to or previous
        if self.blocks and self.blocks[-1].up_to is not None:
            raise ValueError("blocks: the last block must have no up_to (it takes the rest)")
        if self.tou:
            rest = [p.name for p in self.tou if not p.hours]
            if len(rest) != 1 or self.tou[-1].hours:
                raise ValueError("tou: the last period, and only it, must have no hours (it takes the rest)")
            names = [p.name for p in self.tou]
            if len(set(names)) != len(names):
                raise ValueError("tou: period names must be unique")
        if self.lifeline_limit is not None and not (self.blocks and self.blocks[0].lifeline):
            raise ValueError("lifeline_limit needs a first block with lifeline = true")
        return self


class Holds(_Strict):
    """Data-quality gates: a bill is held for review when one fires."""

    max_estimated_share: Decimal = Field(Decimal("0.25"), ge=0, le=1)
    band_low: Decimal = Field(Decimal("0.3"), ge=0)
    band_high: Decimal = Field(Decimal("3"), gt=0)
    history_bills: int = Field(3, ge=1)
    max_days_without_read: int = Field(45, ge=1)
    open_exceptions: bool = True


class TenantChange(_Strict):
    """Water change of occupant: tolerated index difference and days to bring proof."""

    tolerance: Decimal = Field(Decimal(5), ge=0)
    proof_days: int = Field(15, ge=1)


class Prepaid(_Strict):
    """Prepaid check: consumption beyond vended credit by more than ``tolerance`` units is flagged."""

    tolerance: Decimal = Field(Decimal(1), ge=0)


class BillingRules(_Strict):
    """Cycle length, payment term, rounding, time zone and prescription (no rebill of older periods)."""

    cycle_days: int = Field(30, ge=1)
    due_days: int = Field(10, ge=0)
    currency: str = "EUR"
    money_decimals: int = Field(2, ge=0, le=6)
    quantity_decimals: int = Field(3, ge=0, le=6)
    timezone: str = "UTC"
    prescription_years: int = Field(2, ge=1)


class TariffFile(_Strict):
    """The whole file."""

    billing: BillingRules = Field(default_factory=BillingRules)
    holds: Holds = Field(default_factory=Holds)
    tenant_change: TenantChange = Field(default_factory=TenantChange)
    prepaid: Prepaid = Field(default_factory=Prepaid)
    tariff: list[Tariff] = Field(default_factory=list)

    @model_validator(mode="after")
    def _versions(self) -> TariffFile:
        seen: dict[tuple[str, date], int] = {}
        commodity: dict[str, str] = {}
        for i, t in enumerate(self.tariff):
            if (t.code, t.effective_from) in seen:
                raise ValueError(f"tariff[{i}]: {t.code} has two versions from {t.effective_from}")
            seen[(t.code, t.effective_from)] = i
            if commodity.setdefault(t.code, t.commodity) != t.commodity:
                raise ValueError(f"tariff[{i}]: {t.code} changes commodity between versions")
        return self


class TariffBook:
    """A loaded tariff file: rules, thresholds and tariff versions by code."""

    def __init__(self, data: TariffFile, path: str = "<tariffs>", sha256: str = "") -> None:
        """Index the versions of each tariff code by effective date."""
        self.data = data
        self.path = path
        self.sha256 = sha256
        self.rules = data.billing
        self.holds = data.holds
        self.tenant_change = data.tenant_change
        self.prepaid = data.prepaid
        self._versions: dict[str, list[Tariff]] = {}
        for t in sorted(data.tariff, key=lambda t: (t.code, t.effective_from)):
            self._versions.setdefault(t.code, []).append(t)

    @property
    def codes(self) -> list[str]:
        """Known tariff codes."""
        return sorted(self._versions)

    def segments(self, code: str, start: date, end: date) -> list[tuple[Tariff, date, date]]:
        """The versions of ``code`` in force over days [start, end), each with its own [from, to)."""
        versions = self._versions.get(code)
        if not versions:
            raise KeyError(f"unknown tariff code {code!r}")
        out: list[tuple[Tariff, date, date]] = []
        for i, t in enumerate(versions):
            lo = max(start, t.effective_from)
            hi = min(end, versions[i + 1].effective_from) if i + 1 < len(versions) else end
            if lo < hi:
                out.append((t, lo, hi))
        if not out or out[0][1] != start:
            raise KeyError(f"tariff {code!r} has no version in force on {start}")
        return out


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def parse_tariffs(text: str, path: str = "<tariffs>") -> TariffBook:
    """Parse and validate a tariff file's text; raise :class:`TariffError` naming file, field, problem."""
    try:
        raw = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise TariffError(f"{path}: not valid TOML: {exc}") from exc
    try:
        data = TariffFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_loc(tuple(e['loc']))}: {e['msg']}" for e in exc.errors())
        raise TariffError(f"{path}: {problems}") from exc
    return TariffBook(data, path, hashlib.sha256(text.encode()).hexdigest())


def load_tariffs(path: str | Path) -> TariffBook:
    """Load and validate a tariff file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TariffError(f"{p}: cannot read: {exc.strerror}") from exc
    return parse_tariffs(text, str(p))


EXAMPLE = Path(__file__).with_name("tariffs.example.toml")
