"""Candidate corrections for a bad register read: scale jumps and digit-entry errors.

Only run on the few reads a rule flagged, so plain Python is fine here. A candidate is kept only
when it falls inside the read band (previous read + acceptable usage), and candidates are ranked by
how simple the mistake is, then by closeness to the expected read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A corrected value and the mistake it would undo."""

    value: float
    kind: str  # "scale" or "digit"
    why: str
    cost: float = 1.0


SCALES = (10, 100, 1000)


def _digit_variants(digits: str) -> list[tuple[str, float, str]]:
    """Strings one typing mistake away from ``digits``: (string, cost, explanation)."""
    out: list[tuple[str, float, str]] = []
    n = len(digits)
    for p in range(n):
        out.append((digits[:p] + digits[p + 1 :], 1.0, f"extra digit '{digits[p]}' typed"))
    for k in (2, 3):
        if n > k:
            out.append((digits[:-k], 1.0, f"extra digits '{digits[-k:]}' typed at the end"))
    for p in range(n + 1):
        for d in "0123456789":
            out.append((digits[:p] + d + digits[p:], 1.0, f"digit '{d}' missing"))
    for p in range(n - 1):
        if digits[p] != digits[p + 1]:
            swapped = digits[:p] + digits[p + 1] + digits[p] + digits[p + 2 :]
            out.append((swapped, 1.0, f"digits '{digits[p]}{digits[p + 1]}' transposed"))
    return [(s, c, w) for s, c, w in out if s and not (len(s) > 1 and s[0] == "0")]


def suggest_corrections(
    value: float,
    read_lo: float,
    read_hi: float,
    expected: float,
    integral: bool = False,
    limit: int = 5,
) -> list[Suggestion]:
    """Corrections of ``value`` inside ``[read_lo, read_hi]``, simplest and closest first.

    ``integral``: the series holds whole numbers (typed-in indexes); non-integral candidates then
    rank after whole ones.
    """
    if not (math.isfinite(value) and math.isfinite(read_lo) and math.isfinite(read_hi)) or value < 0:
        return []
    found: dict[float, Suggestion] = {}

    def add(candidate: float, kind: str, why: str, cost: float) -> None:
        candidate = round(candidate, 9)
        if not read_lo <= candidate <= read_hi or candidate == value:
            return
        if integral and candidate != int(candidate):
            cost += 0.5
        old = found.get(candidate)
        if old is None or cost < old.cost:
            found[candidate] = Suggestion(candidate, kind, why, cost)

    for f in SCALES:
        add(value / f, "scale", f"÷{f} (scale jump)", 1.0)
        add(value * f, "scale", f"×{f} (scale jump)", 1.0)
    whole = int(value)
    frac = value - whole
    for text, cost, why in _digit_variants(str(whole)):
        add(int(text) + frac, "digit", why, cost)
    ranked = sorted(found.values(), key=lambda s: (s.cost, abs(s.value - expected)))
    return ranked[:limit]
