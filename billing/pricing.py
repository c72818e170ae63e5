"""Pure billing arithmetic: cycle periods, boundary indexes, proration and pricing (no database).

Every amount is a :class:`~decimal.Decimal` quantized explicitly with ROUND_HALF_UP: quantities
to ``quantity_decimals``, money to ``money_decimals`` per line; totals are sums of quantized lines.
What a tariff charges is the component table (``billing.components``): pricing applies its entries to
every tariff segment of the bill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from billing.components import TOU, Segment
from billing.money import Line, allocate, q
from billing.tariffs import BillingRules, Tariff


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


@dataclass
class Priced:
    """The priced bill: its lines and totals."""

    lines: list[Line] = field(default_factory=list)
    subtotal: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    total: Decimal = Decimal(0)


def price(
    segments: list[tuple[Tariff, date, date]],
    consumption: Decimal,
    rules: BillingRules,
    unit: str,
    indigent: bool = False,
    tou: list[dict[str, Decimal]] | None = None,
    max_demand: Decimal | None = None,
) -> Priced:
    """Price a bill over tariff ``segments`` (version, from, to): every component of each version, in table order.

    Consumption is allocated to segments by days; per-cycle amounts and block sizes are prorated by
    days (segment days / ``rules.cycle_days``). ``tou`` gives, per segment, the consumption per
    time-of-use period (already scaled to the register consumption). Each component sees the segment's
    charges above it; tax components add to the tax, the others to the subtotal.
    """
    qd, md = rules.quantity_decimals, rules.money_decimals
    days = [(hi - lo).days for _, lo, hi in segments]
    shares = allocate(consumption, days, qd)
    many = len(segments) > 1
    out = Priced()
    for k, ((tariff, lo, hi), d, share) in enumerate(zip(segments, days, shares, strict=True)):
        suffix = f" [{tariff.code} from {tariff.effective_from}, {lo}–{hi - timedelta(days=1)}]" if many else ""
        seg = Segment(
            d,
            rules.cycle_days,
            Decimal(d) / Decimal(rules.cycle_days),
            share,
            indigent,
            unit,
            suffix,
            md,
            qd,
            None if tou is None else tou[k],
            max_demand,
        )
        charges = Decimal(0)
        for c, params in tariff.charges:
            lines = c.lines(params, seg, charges)
            for line in lines:
                if c.tax:
                    out.tax += line.amount
                else:
                    charges += line.amount
            out.lines += lines
        out.subtotal += charges
    out.total = out.subtotal + out.tax
    return out


def needs_intervals(segments: list[tuple[Tariff, date, date]]) -> bool:
    """True when pricing needs interval data (a component priced from intervals: time of use, demand)."""
    for t, _, _ in segments:
        for c, _ in t.charges:
            if c.needs_intervals:
                return True
    return False


def tou_period(tariff: Tariff, isodow: int, hour: int) -> str:
    """The TOU period of a local weekday and hour (the last period takes the rest)."""
    return tariff.part(TOU).period_at(isodow, hour)
