"""The tariff components: one table entry per kind of charge a ``[[tariff]]`` can carry.

Each entry of :data:`COMPONENTS` says, for one kind (standing charge, energy blocks, time of use, demand,
taxes, …):

- ``params``: its keys in a ``[[tariff]]`` table of the tariff file — a pydantic model whose field names
  are the TOML keys and whose constraints are checked at load (``billing.tariffs.Tariff`` is assembled
  from these models, so a key no component declares is refused);
- ``used``: whether a tariff version carries it (e.g. a non-zero ``fixed_charge``);
- ``check``: the rules across its keys (raise ``ValueError`` with the key and the problem);
- ``lines``: how it prices one tariff segment of a bill (:class:`Segment`: the days, the consumption,
  the time-of-use split, the maximum demand, the customer's indigent status) given the segment's
  charges so far, as bill lines;
- ``codes``: the bill line codes it writes (``bill.lines[].code``), and ``doc``: what it charges.

Pricing (``billing.pricing.price``) applies the entries in table order to every tariff segment; the
order is the order of the bill's lines, and a component sees the charges of the entries above it (the
taxes come last). Adding a kind of charge is one entry here plus a test (tests/billing/test_pricing.py)
and its row in docs/billing.md (a test checks that every kind and key is documented).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from billing.money import Line, q


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs more than some components' pricing
class Segment:
    """What the components price: one tariff version's share of a bill.

    ``factor`` = ``days`` / ``cycle_days``: per-cycle amounts and block sizes are prorated by it.
    ``consumption`` is the segment's share of the register consumption (allocated by days), ``tou`` its
    consumption per time-of-use period (already scaled to the register), ``max_demand`` the bill's
    maximum demand in kW; ``suffix`` names the segment in line descriptions when a bill has several.
    """

    days: int
    cycle_days: int
    factor: Decimal
    consumption: Decimal
    indigent: bool
    unit: str
    suffix: str
    money_decimals: int
    quantity_decimals: int
    tou: dict[str, Decimal] | None = None
    max_demand: Decimal | None = None


P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class Component(Generic[P]):
    """One kind of tariff charge (see the module docstring)."""

    kind: str
    params: type[P]
    used: Callable[[P], bool]
    lines: Callable[[P, Segment, Decimal], list[Line]]
    codes: str
    doc: str
    check: Callable[[P], None] | None = None
    #: one of the energy charges: a tariff gives exactly one of them
    energy: bool = False
    #: priced from the interval series (time-of-use split, maximum demand): the bill run reads it
    needs_intervals: bool = False
    #: its lines are taxes: they add to the bill's tax, not to its subtotal (nor to later components' charges)
    tax: bool = False


# --------------------------------------------------------------------------------------------- parameters


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


class FixedKeys(_Strict):
    """``fixed_charge`` per cycle; indigent customers pay ``indigent.fixed_charge_factor`` of it."""

    fixed_charge: Decimal = Field(Decimal(0), ge=0)
    indigent: Indigent = Field(default_factory=Indigent)


class BlockKeys(_Strict):
    """``blocks`` (increasing block steps) and the ``lifeline_limit`` above which the lifeline rate is lost."""

    blocks: list[Block] = Field(default_factory=list)
    lifeline_limit: Decimal | None = Field(None, gt=0)


class FreeUnitKeys(BlockKeys):
    """``indigent.free_units``, valued at the ``blocks`` rates."""

    indigent: Indigent = Field(default_factory=Indigent)


class TouKeys(_Strict):
    """``tou``: the time-of-use periods; the last, without hours, takes the rest."""

    tou: list[TouPeriod] = Field(default_factory=list)

    def period_at(self, isodow: int, hour: int) -> str:
        """The period of a local ISO weekday and hour (the last period takes the rest)."""
        for p in self.tou:
            if p.hours and isodow in p.days and any(lo <= hour < hi for lo, hi in p.hours):
                return p.name
        return self.tou[-1].name


class DemandKeys(_Strict):
    """``demand_charge`` per kW of maximum demand per cycle."""

    demand_charge: Decimal = Field(Decimal(0), ge=0)


class MinimumKeys(_Strict):
    """``minimum_charge`` per cycle: the least the charges of a cycle come to, before tax."""

    minimum_charge: Decimal = Field(Decimal(0), ge=0)


class TaxKeys(_Strict):
    """``taxes``: each on the sum of the segment's charges."""

    taxes: list[Tax] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------- pricing


#: What pricing works out once per tariff version and segment shape rather than once per bill (block
#: bounds, line descriptions, the fixed charge's line): keyed by the parameters' ``id()`` (pydantic
#: models holding lists do not hash) and the segment's shape. Each entry holds the parameters it was
#: made from, so their ``id`` cannot pass to another object while it is kept. Bounded: cleared when
#: it holds too many.
_MADE: dict[tuple[Any, ...], tuple[BaseModel, Any]] = {}
_MADE_MAX = 4096


def _made(p: BaseModel, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """``make()``, once per (``p``, ``key``)."""
    k = (id(p), *key)
    hit = _MADE.get(k)
    if hit is not None and hit[0] is p:
        return hit[1]
    if len(_MADE) >= _MADE_MAX:
        _MADE.clear()
    value = make()
    _MADE[k] = (p, value)
    return value


def _fixed(p: FixedKeys, s: Segment, charges: Decimal) -> list[Line]:
    key = ("fixed", s.days, s.cycle_days, s.factor, s.indigent, s.suffix, s.money_decimals)
    return [_made(p, key, lambda: _fixed_line(p, s))]


def _fixed_line(p: FixedKeys, s: Segment) -> Line:
    fixed = p.fixed_charge * s.factor
    desc = f"fixed charge ({s.days}/{s.cycle_days} days){s.suffix}"
    if s.indigent and p.indigent.fixed_charge_factor != 1:
        fixed *= p.indigent.fixed_charge_factor
        desc += f" × {p.indigent.fixed_charge_factor} (indigent)"
    per_day = q(p.fixed_charge / s.cycle_days, 6)
    return Line("fixed", desc, Decimal(s.days), "day", per_day, q(fixed, s.money_decimals))


@dataclass(frozen=True, slots=True)
class _Step:
    """One block of a block table with its bounds prorated to a segment and its line descriptions."""

    code: str
    lower: Decimal
    upper: Decimal | None
    rate: Decimal
    desc: str
    lifeline_desc: str | None  # the first block's description while the lifeline rate holds


def _steps(p: BlockKeys, factor: Decimal, qd: int, unit: str, suffix: str) -> tuple[Decimal | None, list[_Step]]:
    """The lifeline limit and the blocks prorated by ``factor``, with their descriptions."""
    limit = q(p.lifeline_limit * factor, qd) if p.lifeline_limit is not None else None
    steps: list[_Step] = []
    lower = Decimal(0)
    for i, block in enumerate(p.blocks):
        upper = q(block.up_to * factor, qd) if block.up_to is not None else None
        bounds = f"{lower}–{upper}" if upper is not None else f"above {lower}"
        steps.append(
            _Step(
                f"block{i + 1}",
                lower,
                upper,
                block.rate,
                f"block {i + 1} ({bounds} {unit}){suffix}",
                f"lifeline block ({bounds} {unit}){suffix}" if block.lifeline else None,
            )
        )
        if upper is None:
            break
        lower = upper
    return limit, steps


def block_charges(p: BlockKeys, s: Segment, quantity: Decimal, suffix: str, basis: Decimal | None = None) -> list[Line]:
    """Increasing-block charges for ``quantity``, block sizes prorated by the segment's factor.

    ``basis`` (default ``quantity``) is the consumption that decides whether the lifeline rate holds.
    """
    qd, md, unit = s.quantity_decimals, s.money_decimals, s.unit
    limit, steps = _made(p, ("blocks", s.factor, qd, unit, suffix), lambda: _steps(p, s.factor, qd, unit, suffix))
    if not steps:
        return []
    basis = quantity if basis is None else basis
    # above the lifeline limit the social rate is lost: the first block is charged at the second's rate
    rate0 = steps[1].rate if limit is not None and basis > limit and len(steps) > 1 else steps[0].rate
    lines: list[Line] = []
    for i, st in enumerate(steps):
        if quantity <= st.lower:
            break
        take = (min(quantity, st.upper) if st.upper is not None else quantity) - st.lower
        if take > 0:
            rate = rate0 if i == 0 else st.rate
            desc = st.lifeline_desc if st.lifeline_desc is not None and rate0 == st.rate else st.desc
            lines.append(Line(st.code, desc, take, unit, rate, q(take * rate, md)))
    return lines


def _blocks(p: BlockKeys, s: Segment, charges: Decimal) -> list[Line]:
    return block_charges(p, s, s.consumption, s.suffix)


def _check_blocks(p: BlockKeys) -> None:
    previous = Decimal(0)
    for i, block in enumerate(p.blocks):
        last = i == len(p.blocks) - 1
        if block.up_to is None and not last:
            raise ValueError(f"blocks[{i}]: only the last block may have no up_to")
        if block.up_to is not None and block.up_to <= previous:
            raise ValueError(f"blocks[{i}].up_to: must be greater than the previous block's ({previous})")
        if block.lifeline and i != 0:
            raise ValueError(f"blocks[{i}].lifeline: only the first block can be the lifeline block")
        previous = block.up_to or previous
    if p.blocks and p.blocks[-1].up_to is not None:
        raise ValueError("blocks: the last block must have no up_to (it takes the rest)")
    if p.lifeline_limit is not None and not (p.blocks and p.blocks[0].lifeline):
        raise ValueError("lifeline_limit needs a first block with lifeline = true")


def _free_units(p: FreeUnitKeys, s: Segment, charges: Decimal) -> list[Line]:
    if not s.indigent:
        return []
    free = min(s.consumption, q(p.indigent.free_units * s.factor, s.quantity_decimals))
    valued = block_charges(p, s, free, "", s.consumption)
    value = sum((line.amount for line in valued), Decimal(0))
    if free <= 0:
        return []
    desc = f"indigent support: {free} {s.unit} free{s.suffix}"
    return [Line("indigent", desc, free, s.unit, -q(value / free, 6), -value)]


def _tou(p: TouKeys, s: Segment, charges: Decimal) -> list[Line]:
    if s.tou is None:
        raise ValueError("time-of-use tariff priced without time-of-use consumption")
    out = []
    for period in p.tou:
        qty = s.tou.get(period.name, Decimal(0))
        out.append(
            Line(
                f"tou:{period.name}",
                f"{period.name} energy{s.suffix}",
                qty,
                s.unit,
                period.rate,
                q(qty * period.rate, s.money_decimals),
            )
        )
    return out


def _check_tou(p: TouKeys) -> None:
    if not p.tou:
        return
    if len([x for x in p.tou if not x.hours]) != 1 or p.tou[-1].hours:
        raise ValueError("tou: the last period, and only it, must have no hours (it takes the rest)")
    names = [x.name for x in p.tou]
    if len(set(names)) != len(names):
        raise ValueError("tou: period names must be unique")


def _demand(p: DemandKeys, s: Segment, charges: Decimal) -> list[Line]:
    if s.max_demand is None:
        raise ValueError("demand charge priced without a maximum demand")
    desc = f"demand charge ({s.max_demand} kW, {s.days}/{s.cycle_days} days){s.suffix}"
    amount = q(s.max_demand * p.demand_charge * s.factor, s.money_decimals)
    return [Line("demand", desc, s.max_demand, "kW", p.demand_charge, amount)]


def _minimum(p: MinimumKeys, s: Segment, charges: Decimal) -> list[Line]:
    if s.indigent:
        return []  # the indigent support (free units, fixed charge share) is not taken back
    floor = q(p.minimum_charge * s.factor, s.money_decimals)
    if charges >= floor:
        return []
    top = floor - charges
    desc = f"minimum charge {floor} ({s.days}/{s.cycle_days} days): charges of {charges} topped up{s.suffix}"
    return [Line("minimum", desc, Decimal(1), "", top, top)]


def _taxes(p: TaxKeys, s: Segment, charges: Decimal) -> list[Line]:
    out = []
    for tax in p.taxes:
        desc = f"{tax.name} {(tax.rate * 100).normalize():f}%{s.suffix}"
        out.append(Line(f"tax:{tax.name}", desc, charges, "", tax.rate, q(charges * tax.rate, s.money_decimals)))
    return out


# --------------------------------------------------------------------------------------------- the table

FIXED = Component(
    kind="fixed_charge",
    params=FixedKeys,
    used=lambda p: bool(p.fixed_charge),
    lines=_fixed,
    codes="fixed",
    doc="standing charge per cycle, prorated by days; indigent customers pay `indigent.fixed_charge_factor` of it",
)
BLOCKS = Component(
    kind="blocks",
    params=BlockKeys,
    used=lambda p: bool(p.blocks),
    lines=_blocks,
    codes="block1, block2, …",
    doc="increasing blocks of the consumption, block sizes prorated by days; above `lifeline_limit` the "
    "lifeline (first) block is billed at the second block's rate",
    check=_check_blocks,
    energy=True,
)
FREE_UNITS = Component(
    kind="free_units",
    params=FreeUnitKeys,
    used=lambda p: bool(p.blocks) and bool(p.indigent.free_units),
    lines=_free_units,
    codes="indigent",
    doc="indigent customers: `indigent.free_units` (prorated) credited at the block rates they would have cost",
)
TOU = Component(
    kind="tou",
    params=TouKeys,
    used=lambda p: bool(p.tou),
    lines=_tou,
    codes="tou:<period>",
    doc="the consumption of each time-of-use period at its rate",
    check=_check_tou,
    energy=True,
    needs_intervals=True,
)
DEMAND = Component(
    kind="demand_charge",
    params=DemandKeys,
    used=lambda p: bool(p.demand_charge),
    lines=_demand,
    codes="demand",
    doc="maximum demand (kW, 15-minute intervals) × rate, prorated by days",
    needs_intervals=True,
)
MINIMUM = Component(
    kind="minimum_charge",
    params=MinimumKeys,
    used=lambda p: bool(p.minimum_charge),
    lines=_minimum,
    codes="minimum",
    doc="tops the segment's charges above it up to `minimum_charge` per cycle, prorated by days (not indigent)",
)
TAXES = Component(
    kind="taxes",
    params=TaxKeys,
    used=lambda p: bool(p.taxes),
    lines=_taxes,
    codes="tax:<name>",
    doc="each tax on the sum of the segment's charges above it",
    tax=True,
)

#: Every kind of tariff charge, in the order of a bill's lines (a component sees the charges above it).
COMPONENTS: tuple[Component[Any], ...] = (FIXED, BLOCKS, FREE_UNITS, TOU, DEMAND, MINIMUM, TAXES)
