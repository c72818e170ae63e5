"""VEE rule cases as data: one TOML file per case in ``rules/``, run by one parametrised test.

A case gives an input series and what the rules must find on it. Keys by ``kind``:

- ``register`` (:func:`analytics.vee.registers.validate_registers` on one series): ``values`` (numbers,
  or ``{from, step, count}`` runs), optional ``days`` (day of each read; default 0, 1, 2, …),
  ``commodity`` and ``meter_class``, ``modulus``, ``exchange = {day, removal, install}``,
  ``read_types`` (``actual``, ``customer`` or ``estimate`` per read).
  Expected: ``findings`` (every ``[row, rule]``, in row order) or ``findings_include``; optional
  ``estimates`` (``[row, value, method]``, or ``[day, value, method]`` for a filled gap),
  ``consumption`` (row → value), ``suggested`` (rule → its first suggestion), ``message`` (rule →
  text its message contains).
- ``interval`` (:func:`analytics.vee.intervals.validate_interval_series`, and the batch pass
  :func:`~analytics.vee.intervals.screen_intervals` with the case beside a clean series): ``tz``,
  ``interval_s``, ``start`` (local midnight), ``intervals`` (grid length), ``values`` (repeated
  to fill the grid), ``set`` (grid index → value), ``drop = {from, count}``, ``emit_from`` (grid
  index; default 0). Expected: ``findings`` (``[grid index, rule]``) and ``details`` (rule → details).
- ``file`` (file mode, :func:`analytics.vee.csvfile.check_reads` on ``csv``): ``findings``
  (``[meter, index, rule]``, info included), ``usage`` and ``message`` (rule → value / text).

Every estimate's method must be one its rule declares (``RULES[code].methods``).
"""

from __future__ import annotations

import io
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from analytics.vee.csvfile import READ_CODES, check_reads, read_csv
from analytics.vee.intervals import screen_intervals, validate_interval_series
from analytics.vee.params import RULES, RuleCode, params_for
from analytics.vee.registers import RegisterSeries, validate_registers

DAY = 86400.0
CASES = sorted((Path(__file__).parent / "rules").glob("*.toml"))


def _values(spec: list[Any]) -> list[float]:
    out: list[float] = []
    for part in spec:
        if isinstance(part, dict):
            out += [part["from"] + part.get("step", 0) * k for k in range(part["count"])]
        else:
            out.append(float(part))
    return out


def _register(case: dict[str, Any]) -> None:
    values = np.array(_values(case["values"]), float)
    n = len(values)
    t = np.asarray(case.get("days", range(n)), float) * DAY
    ex = case.get("exchange")
    extra = (
        {}
        if ex is None
        else {
            "ex_series": np.array([0]),
            "ex_t": np.array([ex["day"] * DAY]),
            "ex_removal": np.array([float(ex["removal"])]),
            "ex_install": np.array([float(ex["install"])]),
        }
    )
    params = params_for(case.get("commodity", "electricity"), case.get("meter_class", ""))
    batch = RegisterSeries(
        np.zeros(n, np.int64),
        t,
        values,
        np.array([float(case.get("modulus", np.inf))]),
        np.zeros(1, np.int64),
        [params],
        **extra,
    )
    if "read_types" in case:
        batch.read_type = np.array([READ_CODES[x] for x in case["read_types"]], np.int8)
    r = validate_registers(batch)
    found = [[f.row, str(f.rule)] for f in r.findings]
    if "findings" in case:
        assert sorted(found) == sorted(case["findings"]), found
    for item in case.get("findings_include", []):
        assert item in found, found
    if "estimates" in case:
        got = [[e.row if e.row is not None else e.t / DAY, e.value, e.method] for e in r.estimates]
        assert got == case["estimates"], got
    for row, value in case.get("consumption", {}).items():
        assert r.consumption[int(row)] == pytest.approx(value)
    for rule, value in case.get("suggested", {}).items():
        assert next(f for f in r.findings if f.rule == rule).suggestions[0].value == value
    for rule, text in case.get("message", {}).items():
        assert text in next(f for f in r.findings if f.rule == rule).message
    for e in r.estimates:  # the method is one the rule that caused the estimate declares
        causes = [RuleCode.GAP] if e.row is None else [f.rule for f in r.findings if f.row == e.row]
        assert any(e.method in RULES[c].methods for c in causes), (e, causes)


def _interval(case: dict[str, Any]) -> None:
    tz, step = ZoneInfo(case["tz"]), int(case["interval_s"])
    start = datetime.fromisoformat(case["start"]).replace(tzinfo=tz).timestamp()
    n = int(case["intervals"])
    grid = start + step * np.arange(1, n + 1, dtype=float)
    values = np.resize(np.array(case["values"], float), n)
    for k, x in case.get("set", {}).items():
        values[int(k)] = x
    keep = np.ones(n, bool)
    if "drop" in case:
        keep[case["drop"]["from"] : case["drop"]["from"] + case["drop"]["count"]] = False
    t, v = grid[keep], values[keep]
    emit_from = float(grid[case.get("emit_from", 0)])
    params = params_for(case.get("commodity", "electricity"))
    findings, estimates = validate_interval_series(t, v, emit_from, tz, step, params)
    at = {float(x): k for k, x in enumerate(grid)}
    assert [[at[f.t], str(f.rule)] for f in findings] == case["findings"], [(at[f.t], f.rule) for f in findings]
    for rule, details in case.get("details", {}).items():
        assert next(f for f in findings if f.rule == rule).details == details
    for _, _, method in estimates:
        assert method in RULES[RuleCode.GAP].methods
    # The batch pass gives the same, with a clean series of another length beside the case.
    other = start + step * np.arange(1, 97, dtype=float)
    screen = screen_intervals(
        np.r_[other, t],
        np.r_[np.full(96, 0.25), v],
        np.array([0, 96, 96 + len(t)]),
        np.array([other[0], emit_from]),
        tz,
        step,
        params,
    )
    if screen.exact[1]:
        assert screen.findings[1] == findings


def _file(case: dict[str, Any]) -> None:
    reads, errors = read_csv(io.StringIO(case["csv"].lstrip()), "case.csv", ZoneInfo("UTC"))
    assert not errors
    found = check_reads(reads)
    assert [[e.read.meter, e.read.index, str(e.finding.rule)] for e in found] == case["findings"]
    for rule, value in case.get("usage", {}).items():
        assert next(e.finding for e in found if e.finding.rule == rule).usage == value
    for rule, text in case.get("message", {}).items():
        assert text in next(e.finding for e in found if e.finding.rule == rule).message


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_rule_case(path: Path) -> None:
    case = tomllib.loads(path.read_text(encoding="utf-8"))
    assert case.get("description"), f"{path.name}: say what the case shows in `description`"
    {"register": _register, "interval": _interval, "file": _file}[case["kind"]](case)


def test_every_rule_has_a_case_or_a_named_test() -> None:
    """A new rule comes with a case here (or a database test for the rules that need one)."""
    kinds = {str(c) for p in CASES for c in _rules_in(tomllib.loads(p.read_text(encoding="utf-8")))}
    elsewhere = {  # rules whose cases need the database or pairs of series
        "UNIT": "tests/analytics/vee/test_rule_table.py, tests/analytics/test_vee_db.py",
        "CLOCK": "tests/analytics/vee/test_rule_table.py, tests/analytics/test_vee_db.py",
        "SUM_CHECK": "tests/analytics/test_intervals_estimation.py",
        "MULTIPLIER": "tests/analytics/test_intervals_estimation.py",
    }
    missing = {str(c) for c in RuleCode} - kinds - set(elsewhere)
    assert not missing, f"no case in tests/analytics/vee/rules/ for {sorted(missing)}"


def _rules_in(case: dict[str, Any]) -> set[str]:
    items = case.get("findings", []) + case.get("findings_include", [])
    return {item[-1] for item in items}
