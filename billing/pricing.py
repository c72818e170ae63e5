"""Pure billing arithmetic: cycle periods, boundary indexes, proration and pricing (no database).

Every amount is a :class:`~decimal.Decimal` quantized explicitly with ROUND_HALF_UP: quantities
to ``quantity_decimals``, money to ``money_decimals`` per line; totals are sums of quantized lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from billing.tariffs import BillingRules, Tariff

_QUANTA = {d: Decimal(1).scaleb(-d) for d in range(13)}


def quantum(decimals: int) -> Decimal:
    """10^-decimals as a Decimal (the rounding step)."""
    return _QUANTA[decimals] if decimals in _QUANTA else Decimal(1).scaleb(-decimals)


def q(value: Decimal, decimals: int) -> Decimal:
    """Round half up to ``decimals`` places."""
    return value.quantize(quantum(decimals), rounding=ROUND_HALF_UP)


def to_decimal(value: float, decimals: int) -> Decimal:
    """A stored double (an index) as a Decimal, through its shortest repr, rounded to ``decimals``."""
    return q(Decimal(repr(float(value))), decimals)


def cycle_period(period_end: date, cycle_days: int = 30) -> tuple[date, date]:
    """Days [start, end) of the cycle ending on ``period_end`` (inclusive): ``cycle_days`` days."""
    return period_end - timedelta(days=cycle_days - 1), period_end + timedelta(days=1)


# --------------------------------------------------------------------------------------------- indexes


@dataclass(frozen=True)
class Read:
    """A validated read: instant, value and quality (actual, estimated, edited)."""

    ts: datetime
    value: float
    quality: str


@dataclass(frozen=True)
class Index:
    """The index at a boundary, how it was obtained, and the reads it rests on."""

    value: Decimal
    quality: str  # actual | estimated | edited | interpolated | install | removal | move-in | proof | move-out
    at: datetime
    reads: tuple[Read, ...] = ()


def boundary_index(
    at: datetime, on_day: Read | None, before: Read | None, after: Read | None, decimals: int = 3
) -> Index | None:
    """The index at boundary ``at``: the first read on the day starting at ``at``, else linear interpolation.

    ``before`` is the last read before ``at``, ``after`` the first read after the day. Without a
    read on the day and without reads on both sides there is no index (None).
    """
    if on_day is not None:
        return Index(to_decimal(on_day.value, decimals), on_day.quality, on_day.ts, (on_day,))
    if before is None or after is None:
        return None
    span = Decimal((after.ts - before.ts) // timedelta(microseconds=1))
    part = Decimal((at - before.ts) // timedelta(microseconds=1))
    lo = Decimal(repr(float(before.value)))
    hi = Decimal(repr(float(after.value)))
    value = q(lo + (hi - lo) * part / span, decimals)
    return Index(value, "interpolated", at, (before, after))


# --------------------------------------------------------------------------------------------- pricing


@dataclass(frozen=True)
class Line:
    """One line of a bill."""

    code: str
    description: str
    quantity: Decimal
    unit: str
    rate: Decimal
    amount: Decimal


@dataclass
class Priced:
    """The priced bill: its lines and totals."""

    lines: list[Line] = field(default_factory=list)
    subtotal: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    total: Decimal = Decimal(0)


def allocate(total: Decimal, weights: list[int], decimals: int) -> list[Decimal]:
    """Split ``total`` in proportion to ``weights``; the last share takes the rounding remainder."""
    whole = sum(weights)
    if whole == 0:
        return [Decimal(0)] * len(weights)
    out = [q(total * w / whole, decimals) for w in weights[:-1]]
    out.append(total - sum(out, Decimal(0)))
    return out


def _block_charges(
    tariff: Tariff,
    quantity: Decimal,
    factor: Decimal,
    rules: BillingRules,
    unit: str,
    suffix: str,
    basis: Decimal | None = None,
) -> list[Line]:
    """Increasing-block charges for ``quantity``, block sizes prorated by ``factor``.

    ``basis`` (default ``quantity``) is the consumption that decides whether the lifeline rate holds.
    """
    qd, md = rules.quantity_decimals, rules.money_decimals
    lines: list[Line] = []
    rates = [b.rate for b in tariff.blocks]
    basis = quantity if basis is None else basis
    if tariff.lifeline_limit is not None and basis > q(tariff.lifeline_limit * factor, qd) and len(rates) > 1:
        rates[0] = rates[1]  # above the lifeline limit the social rate is lost
    lower = Decimal(0)
    for i, block in enumerate(tariff.blocks):
        upper = q(block.up_to * factor, qd) if block.up_to is not None else None
        if quantity <= lower:
            break
        take = (min(quantity, upper) if upper is not None else quantity) - lower
        if take > 0:
            label = "lifeline block" if block.lifeline and rates[0] == block.rate else f"block {i + 1}"
            bounds = f"{lower}–{upper}" if upper is not None else f"above {lower}"
            desc = f"{label} ({bounds} {unit}){suffix}"
            lines.append(Line(f"block{i + 1}", desc, take, unit, rates[i], q(take * rates[i], md)))
        if upper is None:
            break
        lower = upper
    return lines


def price(
    segments: list[tuple[Tariff, date, date]],
    consumption: Decimal,
    rules: BillingRules,
    unit: str,
    indigent: bool = False,
    tou: list[dict[str, Decimal]] | None = None,
    max_demand: Decimal | None = None,
) -> Priced:
    """Price a bill over tariff ``segments`` (version, from, to).

    Fixed charge and block sizes are prorated by days (segment days / ``rules.cycle_days``);
    consumption is allocated to segments by days. ``tou`` gives, per segment, the consumption per
    time-of-use period (already scaled to the register consumption). Indigent customers get the
    tariff's free units (prorated) as a credit at the rates those units would have cost, and pay
    ``fixed_charge_factor`` of the fixed charge. Taxes apply per segment on its charges.
    """
    qd, md = rules.quantity_decimals, rules.money_decimals
    days = [(hi - lo).days for _, lo, hi in segments]
    shares = allocate(consumption, days, qd)
    many = len(segments) > 1
    out = Priced()
    for k, ((tariff, lo, hi), d, share) in enumerate(zip(segments, days, shares, strict=True)):
        factor = Decimal(d) / Decimal(rules.cycle_days)
        suffix = f" [{tariff.code} from {tariff.effective_from}, {lo}–{hi - timedelta(days=1)}]" if many else ""
        seg: list[Line] = []
        if tariff.fixed_charge:
            fixed = tariff.fixed_charge * factor
            desc = f"fixed charge ({d}/{rules.cycle_days} days){suffix}"
            if indigent and tariff.indigent.fixed_charge_factor != 1:
                fixed *= tariff.indigent.fixed_charge_factor
                desc += f" × {tariff.indigent.fixed_charge_factor} (indigent)"
            per_day = q(tariff.fixed_charge / rules.cycle_days, 6)
            seg.append(Line("fixed", desc, Decimal(d), "day", per_day, q(fixed, md)))
        if tariff.blocks:
            seg += _block_charges(tariff, share, factor, rules, unit, suffix)
            if indigent and tariff.indigent.free_units:
                free = min(share, q(tariff.indigent.free_units * factor, qd))
                valued = _block_charges(tariff, free, factor, rules, unit, "", share)
                value = sum((line.amount for line in valued), Decimal(0))
                if free > 0:
                    desc = f"indigent support: {free} {unit} free{suffix}"
                    seg.append(Line("indigent", desc, free, unit, -q(value / free, 6), -value))
        else:
            if tou is None:
                raise ValueError("time-of-use tariff priced without time-of-use consumption")
            buckets = tou[k]
            for period in tariff.tou:
                qty = buckets.get(period.name, Decimal(0))
                seg.append(Line(f"tou:{period.name}", f"{period.name} energy{suffix}", qty, unit, period.rate,
                                q(qty * period.rate, md)))  # fmt: skip
        if tariff.demand_charge:
            if max_demand is None:
                raise ValueError("demand charge priced without a maximum demand")
            desc = f"demand charge ({max_demand} kW, {d}/{rules.cycle_days} days){suffix}"
            amount = q(max_demand * tariff.demand_charge * factor, md)
            seg.append(Line("demand", desc, max_demand, "kW", tariff.demand_charge, amount))
        charges = sum((line.amount for line in seg), Decimal(0))
        for tax in tariff.taxes:
            amount = q(charges * tax.rate, md)
            desc = f"{tax.name} {(tax.rate * 100).normalize():f}%{suffix}"
            seg.append(Line(f"tax:{tax.name}", desc, charges, "", tax.rate, amount))
            out.tax += amount
        out.subtotal += charges
        out.lines += seg
    out.total = out.subtotal + out.tax
    return out


def needs_intervals(segments: list[tuple[Tariff, date, date]]) -> bool:
    """True when pricing needs interval data (time of use or demand)."""
    return any(t.tou or t.demand_charge for t, _, _ in segments)


def tou_period(tariff: Tariff, isodow: int, hour: int) -> str:
    """The TOU period of a local weekday and hour (the last period takes the rest)."""
    for p in tariff.tou:
        if p.hours and isodow in p.days and any(lo <= hour < hi for lo, hi in p.hours):
            return p.name
    return tariff.tou[-1].name
