"""Candidate corrections for a bad register read: scale jumps and digit-entry errors, ranked by likelihood.

Only run on the few reads a rule flagged, so plain Python is fine here. A candidate is kept only
when it falls inside the read band (previous read + acceptable usage). Candidates are ranked by a
likelihood score: the prior of the mistake that would explain the read (digit and scale errors do
not happen equally often, and not equally on typed-in and remotely read indexes) times how well the
corrected usage fits the expected usage (a log-ratio penalty). A value that two mistakes explain
keeps the likelier explanation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A corrected value and the mistake it would undo; ``cost`` is −log(likelihood), lower is likelier."""

    value: float
    kind: str  # "scale" or "digit"
    why: str
    cost: float = 1.0


SCALES = (10, 100, 1000)

#: Prior probability of each mistake, for typed-in reads (a person keys the index: manual meters and
#: customer reads) and for remotely read registers (no keyboard: unit/scale mix-ups dominate).
PRIORS: dict[str, dict[str, float]] = {
    "typed": {
        "transposed": 0.30,
        "extra": 0.25,
        "missing": 0.20,
        "extra_end": 0.10,
        "scale10": 0.05,
        "scale100": 0.01,
        "scale1000": 0.02,
    },
    "remote": {
        "transposed": 0.002,
        "extra": 0.002,
        "missing": 0.002,
        "extra_end": 0.002,
        "scale10": 0.30,
        "scale100": 0.05,
        "scale1000": 0.30,
    },
}
#: Weight of the usage fit (|ln(corrected usage / expected usage)|) against the prior.
FIT_WEIGHT = 1.0
#: Extra cost of a non-whole candidate on a series of whole numbers (typed-in indexes are whole).
FRACTION_COST = 1.0


def _digit_variants(digits: str) -> list[tuple[str, str, str]]:
    """Strings one typing mistake away from ``digits``: (string, mistake, explanation)."""
    out: list[tuple[str, str, str]] = []
    n = len(digits)
    for p in range(n):
        out.append((digits[:p] + digits[p + 1 :], "extra", f"extra digit '{digits[p]}' typed"))
    for k in (2, 3):
        if n > k:
            out.append((digits[:-k], "extra_end", f"extra digits '{digits[-k:]}' typed at the end"))
    for p in range(n + 1):
        for d in "0123456789":
            out.append((digits[:p] + d + digits[p:], "missing", f"digit '{d}' missing"))
    for p in range(n - 1):
        if digits[p] != digits[p + 1]:
            swapped = digits[:p] + digits[p + 1] + digits[p] + digits[p + 2 :]
            out.append((swapped, "transposed", f"digits '{digits[p]}{digits[p + 1]}' transposed"))
    return [(s, m, w) for s, m, w in out if s and not (len(s) > 1 and s[0] == "0")]


def adjacent_swaps(value: float) -> list[float]:
    """Every value one adjacent-digit transposition away from the whole part of ``value``."""
    if not math.isfinite(value) or value < 0:
        return []
    frac = value - int(value)
    return [int(s) + frac for s, m, _ in _digit_variants(str(int(value))) if m == "transposed"]


def suggest_corrections(
    value: float,
    read_lo: float,
    read_hi: float,
    expected: float,
    integral: bool = False,
    limit: int = 5,
    typed: bool = True,
    previous: float | None = None,
) -> list[Suggestion]:
    """Corrections of ``value`` inside ``[read_lo, read_hi]``, likeliest first.

    ``expected`` is the expected read (previous read + expected usage) and ``previous`` the previous
    read: the fit is judged on usage (candidate − previous vs expected − previous); without
    ``previous`` on the distance to ``expected``. ``typed``: the read was keyed in by a person
    (digit mistakes likely) rather than read remotely (scale mix-ups likely). ``integral``: the
    series holds whole numbers; non-whole candidates then cost more.
    """
    if not (math.isfinite(value) and math.isfinite(read_lo) and math.isfinite(read_hi)) or value < 0:
        return []
    priors = PRIORS["typed" if typed else "remote"]
    found: dict[float, Suggestion] = {}
    base = previous if previous is not None and math.isfinite(previous) else None
    exp_usage = expected - base if base is not None else None
    span = max(read_hi - read_lo, 1e-9)

    def fit(candidate: float) -> float:
        if base is not None and exp_usage is not None and exp_usage > 0:
            eps = 0.05 * exp_usage
            return abs(math.log((max(candidate - base, 0.0) + eps) / (exp_usage + eps)))
        return abs(candidate - expected) / span

    def add(candidate: float, mistake: str, kind: str, why: str) -> None:
        candidate = round(candidate, 9)
        if not read_lo <= candidate <= read_hi or candidate == value:
            return
        cost = -math.log(priors[mistake]) + FIT_WEIGHT * fit(candidate)
        if integral and candidate != int(candidate):
            cost += FRACTION_COST
        old = found.get(candidate)
        if old is None or cost < old.cost:
            found[candidate] = Suggestion(candidate, kind, why, round(cost, 6))

    for f in SCALES:
        add(value / f, f"scale{f}", "scale", f"÷{f} (scale jump)")
        add(value * f, f"scale{f}", "scale", f"×{f} (scale jump)")
    whole = int(value)
    frac = value - whole
    for text, mistake, why in _digit_variants(str(whole)):
        add(int(text) + frac, mistake, "digit", why)
    ranked = sorted(found.values(), key=lambda s: (s.cost, abs(s.value - expected)))
    return ranked[:limit]
