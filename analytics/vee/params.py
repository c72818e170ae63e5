"""The rule catalogue: codes, severities, reason codes, and parameters per commodity.

Every check in :mod:`analytics.vee.registers` and :mod:`analytics.vee.intervals` reports findings under
one of the codes below. ``severity`` decides what happens next:

- ``error``: the value is not usable as is and is queued for review. VEE substitutes an estimate
  when it can tell the read is wrong: implausible beyond the hard limit and explained by a
  correction, or contradicted by both neighbours. An unexplained drop below the previous read
  (``NEGATIVE`` without a suggestion) is held without a substitute: which side of it is wrong takes
  a person, and the raw read stays in the validated series, under review.
- ``warning``: the value stands (it still bills) but a person should look at it.
- ``info``: an annotation, not an alarm (a rollover or meter exchange that VEE corrected itself).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Severity(StrEnum):
    """What a finding means for the value."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class RuleCode(StrEnum):
    """The code a finding is reported under; the value is what the database and the dashboards store."""

    HILO_HIGH = "HILO_HIGH"
    HILO_LOW = "HILO_LOW"
    NEGATIVE = "NEGATIVE"
    OUTLIER = "OUTLIER"
    SCALE_JUMP = "SCALE_JUMP"
    DIGIT_ERROR = "DIGIT_ERROR"
    ZERO = "ZERO"
    FROZEN = "FROZEN"
    GAP = "GAP"
    INTERVAL_COUNT = "INTERVAL_COUNT"
    SPIKE = "SPIKE"
    DUPLICATE = "DUPLICATE"
    UNIT = "UNIT"
    MULTIPLIER = "MULTIPLIER"
    SUM_CHECK = "SUM_CHECK"
    CLOCK = "CLOCK"
    MOVE_IN = "MOVE_IN"
    ROLLOVER = "ROLLOVER"
    EXCHANGE = "EXCHANGE"
    RESET = "RESET"
    CATCH_UP = "CATCH_UP"


@dataclass(frozen=True, slots=True)
class Rule:
    """One validation rule: what the catalogue says about it.

    ``params`` names the :class:`RuleParams` fields the rule's check reads; ``methods`` are the
    NEM12 method codes (:data:`METHODS`) of the estimates written for what the rule finds (empty:
    the rule never causes an estimate). The check itself is one function in one of the tables
    :data:`analytics.vee.registers.REGISTER_CHECKS`, :data:`analytics.vee.intervals.INTERVAL_CHECKS`
    or :data:`analytics.vee.records.RECORD_CHECKS` (tests/analytics/vee/test_rule_table.py holds
    the catalogue and the tables to each other).
    """

    code: RuleCode
    severity: Severity
    reason: int  # NEM12-style reason code recorded on versions this rule causes
    title: str
    params: tuple[str, ...] = ()
    methods: tuple[int, ...] = ()


#: Parameters of the usage band every band-based register rule reads (see :class:`RuleParams`).
BAND = ("low_factor", "high_factor", "history_reads", "min_history", "min_daily_usage", "gross_factor")
#: Method codes of the substitute for a bad register read: linear between the good reads around it,
#: else the last good read + the history's daily usage.
SUBSTITUTE = (17, 25)

RULES: dict[RuleCode, Rule] = {
    r.code: r
    for r in (
        Rule(
            RuleCode.HILO_HIGH,
            Severity.WARNING,
            74,
            "usage above the high/low band from history",
            (*BAND, "hard_factor"),
            SUBSTITUTE,
        ),
        Rule(RuleCode.HILO_LOW, Severity.WARNING, 74, "usage below the high/low band from history", BAND),
        Rule(
            RuleCode.NEGATIVE,
            Severity.ERROR,
            18,
            "read below the previous read (negative consumption)",
            BAND,
            SUBSTITUTE,
        ),
        Rule(
            RuleCode.OUTLIER,
            Severity.ERROR,
            93,
            "isolated bad read: the reads around it agree with each other",
            (*BAND, "hard_factor"),
            SUBSTITUTE,
        ),
        Rule(
            RuleCode.SCALE_JUMP,
            Severity.ERROR,
            93,
            "value off by ×10/×100/×1000 (unit or scale mix-up)",
            (*BAND, "hard_factor"),
            SUBSTITUTE,
        ),
        Rule(
            RuleCode.DIGIT_ERROR,
            Severity.ERROR,
            75,
            "digit-entry error: extra, missing or transposed digit",
            (*BAND, "hard_factor", "typed", "soft_gain", "soft_fit"),
            SUBSTITUTE,
        ),
        Rule(
            RuleCode.ZERO,
            Severity.WARNING,
            68,
            "zero consumption while consumption is expected",
            (*BAND, "zero_intervals"),
        ),
        Rule(
            RuleCode.FROZEN,
            Severity.WARNING,
            68,
            "same non-zero register value for N reads while power flows",
            ("frozen_reads",),
        ),
        Rule(
            RuleCode.GAP,
            Severity.WARNING,
            76,
            "reads missing: interval since the previous read too long",
            ("gap_factor", "max_fill_reads", "max_interp_s"),
            (17, 15),
        ),
        Rule(RuleCode.INTERVAL_COUNT, Severity.WARNING, 76, "intervals found vs expected in a local day (DST aware)"),
        Rule(
            RuleCode.SPIKE,
            Severity.WARNING,
            74,
            "highest interval of the day far above the third highest",
            ("spike_ratio", "spike_neighbour_ratio", "spike_min"),
        ),
        Rule(RuleCode.DUPLICATE, Severity.WARNING, 93, "the same instant read twice (different values: conflict)"),
        Rule(RuleCode.UNIT, Severity.ERROR, 93, "unit of the read differs from the meter's unit"),
        Rule(
            RuleCode.MULTIPLIER,
            Severity.ERROR,
            93,
            "register delta and interval sum differ by the multiplier",
            ("sum_tolerance",),
        ),
        Rule(
            RuleCode.SUM_CHECK,
            Severity.WARNING,
            94,
            "Σ interval consumption differs from register delta × multiplier",
            ("sum_tolerance", "sum_abs_tolerance"),
        ),
        Rule(
            RuleCode.CLOCK,
            Severity.WARNING,
            76,
            "meter clock outside tolerance (clock adjusted / invalid event)",
            ("clock_tolerance_s",),
        ),
        Rule(
            RuleCode.MOVE_IN,
            Severity.WARNING,
            75,
            "move-in index differs from the move-out index by more than allowed",
            ("move_tolerance",),
        ),
        Rule(RuleCode.ROLLOVER, Severity.INFO, 0, "register rolled over at 10^digits or 2^bits: consumption corrected"),
        Rule(RuleCode.EXCHANGE, Severity.INFO, 0, "meter exchange recorded: consumption computed across it"),
        Rule(
            RuleCode.RESET,
            Severity.INFO,
            0,
            "index reset near zero (exchange without record): consumption from zero",
            (*BAND, "reset_fraction"),
        ),
        Rule(
            RuleCode.CATCH_UP, Severity.INFO, 0, "actual read below the utility's estimate before it: estimate revised"
        ),
    )
}


@dataclass(frozen=True, slots=True)
class RuleParams:
    """Parameters of the register and interval rules for one class of meters.

    The high/low band is ``expected usage × (low_factor, high_factor)`` where expected usage is the
    median per-day usage of the previous ``history_reads`` reads times the days elapsed, and never
    narrower than ``min_daily_usage`` per day at the top (so an idle meter is not flagged for a
    trickle).
    """

    low_factor: float = 0.1
    high_factor: float = 3.0
    history_reads: int = 10
    min_history: int = 3
    min_daily_usage: float = 0.5
    gross_factor: float = 8.0
    reset_fraction: float = 0.1
    frozen_reads: int = 3
    gap_factor: float = 1.5
    max_fill_reads: int = 31
    move_tolerance: float = 5.0
    clock_tolerance_s: float = 30.0
    sum_tolerance: float = 0.02
    sum_abs_tolerance: float = 0.01  # register resolution: rounding of both sides
    spike_ratio: float = 5.0
    spike_neighbour_ratio: float = 10.0  # an interval this many times its neighbours and the day's median
    spike_min: float = 0.5
    zero_intervals: int = 8
    max_interp_s: float = 4 * 3600.0
    #: Hard limit: usage above this × the expected usage (or any unexplained negative usage) makes a
    #: read implausible. Only an implausible read that a suggestion explains is replaced; plausible
    #: high use (a leak at 5× normal) is warned and held for review, never substituted.
    hard_factor: float = 10.0
    #: Indexes keyed in by a person (manual meters): digit mistakes are likely, and a transposition
    #: inside the usage band is looked for against the neighbours.
    typed: bool = False
    #: An in-band transposition is suggested (warning) when swapping two adjacent digits brings both
    #: this read's and the next read's usage this much closer to the expected usage (sum of
    #: |ln(usage / expected)|) and within ``soft_fit`` × expected of it.
    soft_gain: float = 0.8
    soft_fit: float = 1.5


#: Defaults per commodity; per meter class overrides go in :data:`CLASS_PARAMS`.
COMMODITY_PARAMS: dict[str, RuleParams] = {
    "electricity": RuleParams(min_daily_usage=0.5, spike_min=0.2),
    "water": RuleParams(min_daily_usage=0.1, spike_min=0.02, zero_intervals=24),
}

#: Overrides per (commodity, meter class), e.g. manually read meters have sparse history.
CLASS_PARAMS: dict[tuple[str, str], RuleParams] = {
    ("water", "manual"): replace(COMMODITY_PARAMS["water"], history_reads=6, gap_factor=3.0, min_history=1, typed=True),
    ("electricity", "manual"): replace(
        COMMODITY_PARAMS["electricity"], history_reads=6, gap_factor=3.0, min_history=1, typed=True
    ),
}


def params_for(commodity: str, meter_class: str = "") -> RuleParams:
    """The parameters for a commodity and (optionally) a meter class."""
    found = CLASS_PARAMS.get((commodity, meter_class))
    if found is not None:
        return found
    return COMMODITY_PARAMS.get(commodity, RuleParams())


#: NEM12-style method codes of estimates and edits (docs/vee.md, *Estimation*).
METHODS: dict[int, str] = {
    14: "like day",
    15: "average like day",
    17: "linear interpolation",
    19: "zero",
    24: "data scaling (scaled to the register delta)",
    25: "average daily load (history-based)",
    53: "revision (accepted suggestion)",
    55: "agreed value (edited by a person)",
}

#: NEM12 quality flags.
QUALITY_FLAGS: dict[str, str] = {
    "A": "actual",
    "E": "forward estimated",
    "F": "final substituted",
    "S": "substituted",
    "N": "null",
    "V": "variable",
}
