"""The labelled corpus through file mode (``releve vee check``): recall, precision, never a leak substituted."""

from __future__ import annotations

import csv
import itertools
from datetime import datetime

import pytest

from releve.cli import main

from .corpus import NOT_SUBSTITUTED, Finding, Key, baseline_findings, case_files, load, score


def check_case(path, tmp_path) -> dict[Key, list[Finding]]:
    """Run ``releve vee check`` on one case file; findings by (meter, instant)."""
    out = tmp_path / f"{path.stem}.out.csv"
    assert main(["vee", "check", str(path), "-o", str(out)]) == 0
    found: dict[Key, list[Finding]] = {}
    with out.open(newline="") as f:
        for row in csv.DictReader(f):
            key = (row["meter"], datetime.fromisoformat(row["read_at"]))
            sugg = tuple(float(x) for x in row["suggestions"].split(";") if x)
            found.setdefault(key, []).append(
                Finding(
                    row["rule"],
                    row["severity"],
                    sugg,
                    float(row["usage_lo"]) if row["usage_lo"] else None,
                    float(row["usage_hi"]) if row["usage_hi"] else None,
                )
            )
    return found


@pytest.fixture(scope="module")
def file_mode(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    reads, found = [], {}
    for path in case_files():
        reads += load(path)
        found |= check_case(path, tmp)
    return reads, found


def test_corpus_has_at_least_100_labelled_sequences_of_every_kind():
    files = case_files()
    assert len(files) >= 100
    kinds = {r.expect for p in files for r in load(p)}
    assert {
        "scale",
        "digit",
        "negative",
        "frozen",
        "gap",
        "leak",
        "vacancy",
        "rollover",
        "exchange",
        "estimate",
    } <= kinds
    families = {p.stem.rsplit("_", 1)[0] for p in files}
    assert {
        "clean",
        "scale_run",
        "transposition_band",
        "transposition_out",
        "dropped_digit",
        "extra_digit",
        "estimate_actual",
        "utility",
    } <= families


def test_file_mode_reaches_recall_097_and_precision_095_on_the_corpus(file_mode):
    reads, found = file_mode
    s = score(reads, found)
    base = score(reads, baseline_findings(reads))  # the utility's plain high/low band, same corpus
    print(f"Relevé:   {s.summary()}\nbaseline: {base.summary()}")
    assert s.recall >= base.recall and s.precision >= base.precision
    assert s.recall >= 0.97, s.missed
    assert s.precision >= 0.95, s.false
    assert s.truth_suggested >= 0.85 * s.corrections  # a dropped last digit leaves ten candidates


def test_leak_and_vacancy_are_warned_never_errors(file_mode):
    reads, found = file_mode
    for r in reads:
        if r.expect in NOT_SUBSTITUTED:
            assert all(f.severity != "error" for f in found.get((r.meter, r.at), [])), (r.case, r.at)
    leaks = [r for r in reads if r.expect == "leak"]
    warned = [r for r in leaks if any(f.severity == "warning" for f in found.get((r.meter, r.at), []))]
    assert len(warned) >= len(leaks) * 0.9


def test_every_read_of_a_persistent_scale_error_is_flagged_as_one_fault(file_mode):
    reads, found = file_mode
    run = [r for r in reads if r.case == "scale_run_issue14" and r.expect == "scale"]
    assert len(run) == 5
    for r in run:
        rules = {f.rule: f for f in found[(r.meter, r.at)]}
        assert rules["SCALE_JUMP"].severity == "error" and rules["SCALE_JUMP"].suggestions[0] == r.truth


def test_in_band_transpositions_of_issue_14_are_caught_with_the_true_index_suggested(file_mode):
    reads, found = file_mode
    for case, typed, truth in (
        ("transposition_band_19414", 19144, 19414),
        ("transposition_band_46352", 46532, 46352),
        ("transposition_band_26565", 26556, 26565),
    ):
        r = next(x for x in reads if x.case == case and x.index == typed)
        digit = next(f for f in found[(r.meter, r.at)] if f.rule == "DIGIT_ERROR")
        assert digit.suggestions[0] == truth, (case, digit)
    # the read after the transposition is not blamed
    after = {
        (r.meter, r.at)
        for a, r in itertools.pairwise(reads)
        if a.case == r.case and a.expect == "digit" and a.case.startswith("transposition_band")
    }
    assert not [k for k in after if any(f.severity != "info" for f in found.get(k, []))]


def test_utility_example_89954_flagged_899_first_and_band_holds_17(file_mode):
    reads, found = file_mode
    r = next(x for x in reads if x.case == "utility_89954" and x.index == 89954)
    fs = {f.rule: f for f in found[(r.meter, r.at)]}
    assert fs["DIGIT_ERROR"].suggestions[0] == 899 and fs["DIGIT_ERROR"].severity == "error"
    hilo = fs["HILO_HIGH"]
    assert hilo.usage_lo is not None and hilo.usage_hi is not None and hilo.usage_lo <= 17 <= hilo.usage_hi
    others = [k for k in found if k[0] == "utility_89954" and k != (r.meter, r.at)]
    assert not [k for k in others if any(f.severity != "info" for f in found[k])]
