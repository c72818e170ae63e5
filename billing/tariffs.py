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
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model, model_validator

from billing.components import COMPONENTS, Component

P = TypeVar("P", bound=BaseModel)
#: The components a tariff version carries, each with its parameters.
Charges = tuple[tuple[Component[Any], BaseModel], ...]


class TariffError(Exception):
    """A tariff file that cannot be used: names the file, the field and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TariffBase(_Strict):
    """The keys every tariff version has; the keys of its charges come from the component table.

    ``Tariff`` is this model plus the parameter keys of every entry of :data:`billing.components.COMPONENTS`
    (a key two components read, such as ``indigent``, is declared alike in both). A component's
    parameters are read with :meth:`part`.
    """

    code: str = Field(min_length=1)
    commodity: Literal["electricity", "water"]
    effective_from: date
    description: str = ""
    prepaid_price: Decimal | None = Field(None, gt=0)
    _parts: dict[str, BaseModel] = PrivateAttr(default_factory=dict)
    _charges: Charges = PrivateAttr(default=())

    @model_validator(mode="after")
    def _components(self) -> TariffBase:
        parts = {
            c.kind: c.params.model_construct(**{k: getattr(self, k) for k in c.params.model_fields}) for c in COMPONENTS
        }  # the fields are validated already
        self._parts = parts
        self._charges = tuple((c, parts[c.kind]) for c in COMPONENTS if c.used(parts[c.kind]))
        energy = [c for c in COMPONENTS if c.energy]
        if len([c for c in energy if self.uses(c)]) != 1:
            raise ValueError(f"give exactly one of {' or '.join(c.kind for c in energy)}")
        for c in COMPONENTS:
            if c.check is not None:
                c.check(self.part(c))
        return self

    # Read through __pydantic_private__: pricing calls these for every bill, and a private attribute read
    # through pydantic's __getattr__ costs more than the pricing itself.

    def part(self, component: Component[P]) -> P:
        """The parameters of ``component`` in this version (its defaults when the file does not set them)."""
        private = self.__pydantic_private__
        assert private is not None
        return cast(P, private["_parts"][component.kind])

    def uses(self, component: Component[Any]) -> bool:
        """True when this version carries ``component`` (e.g. a non-zero ``fixed_charge``)."""
        return component.used(self.part(component))

    @property
    def charges(self) -> Charges:
        """The components this version carries, each with its parameters, in table (bill line) order."""
        private = self.__pydantic_private__
        assert private is not None
        return cast(Charges, private["_charges"])  # (a type alias: no subscript built per call)


def _component_fields() -> dict[str, Any]:
    """The parameter keys of every component, once each: (annotation, field) for ``create_model``."""
    fields: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for c in COMPONENTS:
        for key, info in c.params.model_fields.items():
            if key in TariffBase.model_fields:
                raise TypeError(f"component {c.kind}: key {key!r} is a key of every tariff")
            if key in fields:
                seen = fields[key][1]
                if (seen.annotation, seen.get_default(call_default_factory=True)) != (
                    info.annotation,
                    info.get_default(call_default_factory=True),
                ):
                    raise TypeError(f"components {owner[key]} and {c.kind} declare key {key!r} differently")
                continue
            fields[key], owner[key] = (info.annotation, info), c.kind
    return fields


if TYPE_CHECKING:  # the type checker sees the common keys; component keys are read typed, with part()
    Tariff = TariffBase
else:
    #: One version of a tariff, in force from ``effective_from`` until the next version of its code.
    Tariff = create_model("Tariff", __base__=TariffBase, __module__=__name__, **_component_fields())


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
