"""Exact money arithmetic and the bill line: what the tariff components and the pricing share.

Every amount is a :class:`~decimal.Decimal` quantized explicitly with ROUND_HALF_UP. This module imports
nothing of the project, so the component table (``billing.components``), the tariff file
(``billing.tariffs``) and pricing (``billing.pricing``) all build on it without importing each other
in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

_QUANTA = {d: Decimal(1).scaleb(-d) for d in range(13)}


def quantum(decimals: int) -> Decimal:
    """10^-decimals as a Decimal (the rounding step)."""
    return _QUANTA[decimals] if decimals in _QUANTA else Decimal(1).scaleb(-decimals)


def q(value: Decimal, decimals: int) -> Decimal:
    """Round half up to ``decimals`` places."""
    step = _QUANTA.get(decimals)  # inlined quantum(): pricing rounds a million times a bill run
    return value.quantize(step if step is not None else quantum(decimals), rounding=ROUND_HALF_UP)


def allocate(total: Decimal, weights: list[int], decimals: int) -> list[Decimal]:
    """Split ``total`` in proportion to ``weights``; the last share takes the rounding remainder."""
    whole = sum(weights)
    if whole == 0:
        return [Decimal(0)] * len(weights)
    out = [q(total * w / whole, decimals) for w in weights[:-1]]
    out.append(total - sum(out, Decimal(0)))
    return out


@dataclass(frozen=True)
class Line:
    """One line of a bill."""

    code: str
    description: str
    quantity: Decimal
    unit: str
    rate: Decimal
    amount: Decimal
