"""Rules on what is recorded about a read rather than on its series' values: UNIT, CLOCK, MOVE_IN.

Each rule is one function here, listed in :data:`RECORD_CHECKS`, with its severity, reason and
parameters in :data:`analytics.vee.params.RULES`. They take plain columns and records (no database):
``analytics.vee.run`` loads the units, clock events and clock offsets; ``analytics.vee.csvfile``
gives the move-out and move-in reads of a file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from analytics.vee.params import RULES, RuleCode
from analytics.vee.registers import Finding, fmt

#: (unit the read came in, the meter's unit) → factor converting the read to the meter's unit.
UNIT_FACTORS = {("Wh", "kWh"): 1e-3, ("MWh", "kWh"): 1e3, ("L", "m3"): 1e-3, ("kWh", "Wh"): 1e3}


def check_unit(
    value: np.ndarray, read_unit: np.ndarray, meter_unit: np.ndarray, emit: np.ndarray
) -> tuple[np.ndarray, list[Finding]]:
    """UNIT: a read whose unit is not its meter's; known factors (:data:`UNIT_FACTORS`) are converted.

    ``read_unit`` and ``meter_unit`` hold a unit name per row. Returns the values in the meter's
    units (for the register rules that follow) and a finding per emitted row in another unit
    (``row`` indexes the columns; ``details.converted`` is the converted value, None when no factor
    is known and the read is left as is).
    """
    converted = value.copy()
    findings: list[Finding] = []
    rule = RULES[RuleCode.UNIT]
    for i in np.flatnonzero(read_unit != meter_unit):
        factor = UNIT_FACTORS.get((str(read_unit[i]), str(meter_unit[i])))
        if factor is not None:
            converted[i] = converted[i] * factor
        if emit[i]:
            msg = f"read in {read_unit[i]}, meter in {meter_unit[i]}"
            msg += f": converted to {fmt(converted[i])} {meter_unit[i]}" if factor else ": no known conversion"
            findings.append(
                Finding(
                    int(i),
                    rule.code,
                    rule.severity,
                    msg,
                    float(value[i]),
                    details={"converted": float(converted[i]) if factor else None},
                )
            )
    return converted, findings


def check_clock(
    meter: np.ndarray,
    t: np.ndarray,
    value: np.ndarray,
    emit: np.ndarray,
    events: Iterable[tuple[int, float, str, Any]],
    offsets: Iterable[tuple[int, float, float]],
    tolerance_s: float,
) -> list[Finding]:
    """CLOCK: the first emitted read of a meter at or after a clock event or an off clock.

    ``events`` are ``(meter, t, kind, details)`` with kind ``clock_invalid`` (always flagged) or
    ``clock_adjusted`` (flagged when ``details`` holds ``offset_s``, ``delta_s`` or ``shift_s``
    beyond ``tolerance_s``); ``offsets`` are ``(meter, t, seconds)``: the meter's clock minus the
    collector's when polled, already beyond the tolerance. ``meter``, ``t`` and ``value`` are the
    reads' columns; ``row`` of a finding indexes them.
    """
    out: list[Finding] = []
    rule = RULES[RuleCode.CLOCK]

    def first_read(m: int, at: float) -> int | None:
        rows = np.flatnonzero((meter == m) & (t >= at) & emit)
        return int(rows[np.argmin(t[rows])]) if len(rows) else None

    for m, at, kind, details in events:
        offset = None
        for k in ("offset_s", "delta_s", "shift_s"):
            if isinstance(details, dict) and k in details:
                offset = float(details[k])
        if kind == "clock_adjusted" and (offset is None or abs(offset) <= tolerance_s):
            continue
        i = first_read(m, float(at))
        if i is None:
            continue
        if kind == "clock_invalid":
            msg = "meter clock invalid (event) before this read"
        else:
            msg = f"meter clock adjusted by {fmt(offset or 0)} s (tolerance {fmt(tolerance_s)} s) before this read"
        out.append(Finding(i, rule.code, rule.severity, msg, float(value[i]), details={"event": kind}))
    for m, at, off in offsets:
        i = first_read(m, float(at))
        if i is None:
            continue
        msg = f"meter clock {fmt(off)} s off the collector's (tolerance {fmt(tolerance_s)} s) when polled"
        out.append(Finding(i, rule.code, rule.severity, msg, float(value[i]), details={"offset_s": off}))
    return out


def check_move_in(
    meter: Sequence[str], read_type: Sequence[str], index: Sequence[float], tolerance: float
) -> list[Finding]:
    """MOVE_IN: a move-in index more than ``tolerance`` from the previous occupant's move-out index.

    The reads are sorted by meter and time; a ``move_in`` read right after a ``move_out`` read of
    the same meter is compared with it (water: at most 5 m³ apart). ``row`` indexes the reads.
    """
    out = []
    rule = RULES[RuleCode.MOVE_IN]
    for i in range(1, len(meter)):
        if meter[i - 1] == meter[i] and read_type[i - 1] == "move_out" and read_type[i] == "move_in":
            before, after = index[i - 1], index[i]
            diff = after - before
            if abs(diff) > tolerance:
                msg = (
                    f"move-in index {fmt(after)} differs from move-out index {fmt(before)} by "
                    f"{fmt(diff)} (> {fmt(tolerance)}): open a case, ask for proof within 15 days"
                )
                out.append(
                    Finding(i, rule.code, rule.severity, msg, after, diff, suggestions=[], details={"move_out": before})
                )
    return out


#: The record rules, one function each (their inputs differ: see each function).
RECORD_CHECKS: dict[RuleCode, Callable[..., Any]] = {
    RuleCode.UNIT: check_unit,
    RuleCode.CLOCK: check_clock,
    RuleCode.MOVE_IN: check_move_in,
}
