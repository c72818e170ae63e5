"""Validation, estimation and editing (VEE) of meter data.

Owns the rule catalogue (``params``), the vectorised register rules (``registers``), interval
rules and estimation methods (``intervals``, ``estimate``), the rules on a read's record (unit,
clock, move-in: ``records``), candidate corrections (``suggest``),
the incremental database run (``run``), the review queue and audit (``review``) and the CSV file
mode (``csvfile``). Raw readings are never changed: results are exceptions and new versions.
See docs/vee.md.
"""

from analytics.vee.params import RULES, RuleParams, Severity, params_for
from analytics.vee.registers import Estimate, Finding, RegisterResult, RegisterSeries, validate_registers

__all__ = [
    "RULES",
    "Estimate",
    "Finding",
    "RegisterResult",
    "RegisterSeries",
    "RuleParams",
    "Severity",
    "params_for",
    "validate_registers",
]
