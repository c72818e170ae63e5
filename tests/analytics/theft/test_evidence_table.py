"""The evidence table is the one source of the weights, the --signal choices and the docs table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analytics.theft import evidence as table
from analytics.theft import model as md
from analytics.theft.features import FEATURES
from analytics.theft.ranking import explain, score
from releve.cli import build_parser
from tests.analytics.theft.fleet import build

DOC = (Path(__file__).parents[3] / "docs/theft.md").read_text()


def test_docs_component_table_is_generated_from_the_evidence_table():
    start = DOC.index("<!-- evidence components: generated -->\n") + len("<!-- evidence components: generated -->\n")
    end = DOC.index("<!-- end of evidence components -->")
    assert DOC[start:end] == table.markdown_table()


def test_weights_and_evidence_columns_follow_the_table():
    assert tuple(c.name for c in table.COMPONENTS) == md.EVIDENCE
    assert {c.name: c.weight for c in table.COMPONENTS} == md.WEIGHTS


def test_every_component_reads_features_that_exist():
    for c in table.COMPONENTS:
        assert c.reads and set(c.reads) <= set(FEATURES), c.name


def test_signal_filter_accepts_the_filterable_components_and_anomaly():
    parser = build_parser()
    for name in (*(c.name for c in table.COMPONENTS if c.cli_filter), "anomaly"):
        assert parser.parse_args(["theft", "list", "--run", "1", "--signal", name]).signal == name
    with pytest.raises(SystemExit):
        parser.parse_args(["theft", "list", "--run", "1", "--signal", "no-such-signal"])


def test_a_ramp_is_nothing_up_to_its_start_and_full_from_start_plus_span():
    ramp = table.Ramp(1.0, 6.0)
    assert list(ramp(np.array([0.0, 1.0, 4.0, 7.0, 30.0]))) == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert ramp.describe() == "from 1, fully at 7"
    assert table.Ramp(0.0, 0.4).describe() == "fully at 0.4"


def test_a_component_without_words_of_its_own_is_explained_by_its_table_entry(monkeypatch: pytest.MonkeyPatch):
    r = score(build()[0])
    new = table.Component(
        name="silent_peak",
        weight=0.2,
        reads=("silence_high",),
        ramp=table.Ramp(0.0, 10.0),
        explanation="silent on days its consumption should have been high",
    )
    monkeypatch.setitem(table.BY_NAME, new.name, new)
    monkeypatch.setitem(md.WEIGHTS, new.name, new.weight)
    i = int(np.argmax(r.features.col("silence_high")))
    column = new.ramp(r.features.col("silence_high"))
    r.evidence = md.Evidence((*r.evidence.names, new.name), np.column_stack([r.evidence.values, column]))
    reasons, _ = explain(r, i)
    assert (
        f"silent on days its consumption should have been high (silence high {r.features.col('silence_high')[i]:.2f})"
        in reasons
    )
