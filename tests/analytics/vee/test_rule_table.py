"""The rule catalogue (``RULES``) and the check tables agree: every code has its entry, its check and its doc row."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from analytics.vee.intervals import INTERVAL_CHECKS
from analytics.vee.params import BAND, METHODS, RULES, RuleCode, RuleParams
from analytics.vee.records import RECORD_CHECKS, check_clock, check_unit
from analytics.vee.registers import REGISTER_CHECKS

DOCS = Path(__file__).resolve().parents[3] / "docs" / "vee.md"
#: Codes reported by a step of the register pass rather than a check of its own, and the interval sum check.
REPORTED_BY = {
    RuleCode.HILO_LOW: "the HILO_HIGH check (registers._hilo: one band, two sides)",
    RuleCode.SCALE_JUMP: "the HILO/NEGATIVE/OUTLIER checks' diagnosis (registers._Ctx.diagnosis)",
    RuleCode.DUPLICATE: "registers.validate_registers (duplicates are set aside before the passes)",
    RuleCode.CATCH_UP: "registers._validate (after the passes, on the actual read after utility estimates)",
    RuleCode.SUM_CHECK: "intervals.sum_check",
    RuleCode.MULTIPLIER: "intervals.sum_check",
}


def test_every_code_has_a_catalogue_entry_a_check_and_a_row_in_the_docs():
    checked = [c for c, _ in REGISTER_CHECKS] + [c for c, _ in INTERVAL_CHECKS] + list(RECORD_CHECKS)
    assert set(RULES) == set(RuleCode)
    assert set(checked) | set(REPORTED_BY) == set(RuleCode), set(RuleCode) - set(checked) - set(REPORTED_BY)
    assert not set(checked) & set(REPORTED_BY)
    docs = DOCS.read_text(encoding="utf-8")
    for code in RuleCode:
        assert f"`{code}`" in docs, f"docs/vee.md has no row for {code}"


def test_a_rules_parameters_and_methods_exist():
    fields = {f.name for f in dataclasses.fields(RuleParams)}
    for rule in RULES.values():
        assert set(rule.params) <= fields, (rule.code, set(rule.params) - fields)
        assert set(rule.methods) <= set(METHODS), rule.code
    used = {p for r in RULES.values() for p in r.params}
    assert fields - used == set(), f"parameters no rule reads: {fields - used}"


def test_unit_converts_known_factors_and_flags_only_emitted_reads():
    value = np.array([1.0, 2000.0, 5.0, 3000.0])
    read_unit = np.array(["kWh", "Wh", "gal", "Wh"], dtype=object)
    meter_unit = np.array(["kWh"] * 4, dtype=object)
    converted, found = check_unit(value, read_unit, meter_unit, np.array([True, True, True, False]))
    assert converted.tolist() == [1.0, 2.0, 5.0, 3.0]
    assert [(f.row, f.rule, f.message, f.details["converted"]) for f in found] == [
        (1, "UNIT", "read in Wh, meter in kWh: converted to 2 kWh", 2.0),
        (2, "UNIT", "read in gal, meter in kWh: no known conversion", None),
    ]


def test_clock_flags_the_first_read_after_an_event_or_an_offset_beyond_the_tolerance():
    meter = np.array([1, 1, 1, 2, 2])
    t = np.array([10.0, 20.0, 30.0, 10.0, 20.0])
    value = np.array([100.0, 101.0, 102.0, 50.0, 51.0])
    emit = np.ones(5, bool)
    events = [
        (1, 15.0, "clock_adjusted", {"offset_s": -120}),
        (1, 25.0, "clock_adjusted", {"offset_s": 10}),
        (2, 5.0, "clock_invalid", None),
    ]
    found = check_clock(meter, t, value, emit, events, [(2, 12.0, 95.0)], 30.0)
    assert [(f.row, f.rule) for f in found] == [(1, "CLOCK"), (3, "CLOCK"), (4, "CLOCK")]
    assert "clock adjusted by -120 s (tolerance 30 s)" in found[0].message
    assert "meter clock 95 s off the collector's (tolerance 30 s)" in found[2].message


def rule_table() -> str:
    """The catalogue as the markdown table docs/vee.md carries (*The rule catalogue*)."""
    where = {c: f"`registers.{f.__name__}`" for c, f in REGISTER_CHECKS}
    where |= {c: f"`intervals.{f.__name__}`" for c, f in INTERVAL_CHECKS}
    where[RuleCode.ZERO] = "`registers._zero`, `intervals._zero_run`"
    where |= {c: f"`records.{f.__name__}`" for c, f in RECORD_CHECKS.items()}
    where |= {
        RuleCode.HILO_LOW: "`registers._hilo`",
        RuleCode.SCALE_JUMP: "diagnosis (`registers._Ctx.diagnosis`)",
        RuleCode.DUPLICATE: "`registers.validate_registers`",
        RuleCode.CATCH_UP: "`registers._validate`",
        RuleCode.SUM_CHECK: "`intervals.sum_check`",
        RuleCode.MULTIPLIER: "`intervals.sum_check`",
    }
    lines = ["| code | severity | reason | parameters | estimate methods | check |", "|---|---|---|---|---|---|"]
    for r in RULES.values():
        rest = [p for p in r.params if p not in BAND] if set(BAND) <= set(r.params) else list(r.params)
        params = ", ".join(["band"] * (len(rest) < len(r.params)) + [f"`{p}`" for p in rest]) or "—"
        methods = ", ".join(str(m) for m in r.methods) or "—"
        lines.append(f"| `{r.code}` | {r.severity} | {r.reason or '—'} | {params} | {methods} | {where[r.code]} |")
    return "\n".join(lines) + "\n"


def test_the_docs_carry_the_rule_table_as_the_catalogue_says():
    table = rule_table()
    assert table in DOCS.read_text(encoding="utf-8"), "docs/vee.md: replace the rule catalogue table with\n" + table
