"""Scoring and the inspection list on the hand-built fleet and a small simulated one (no database)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from analytics.theft import model as md
from analytics.theft.ranking import INPUT_NAMES, geojson, score, write_csv, write_geojson
from bench.simdata import from_simulation
from simulators.config import parse_fleet
from simulators.engine import Simulation
from tests.analytics.theft.fleet import HONEST_FAULTY, THIEVES, build


def test_thieves_rank_above_honest_faulty_meters():
    data, _ = build()
    r = score(data)
    order = [data.serials[i] for i in r.order()]
    top = set(order[: len(THIEVES)])
    assert top == set(THIEVES)
    for serial in HONEST_FAULTY:
        assert order.index(serial) >= len(THIEVES)


def test_every_candidate_has_reasons_in_words_and_evidence():
    data, _ = build()
    cands = score(data).candidates(top=len(data.serials))
    assert len(cands) == len(data.serials)
    for c in cands:
        assert c.reasons and all(isinstance(t, str) and t for t in c.reasons)
        assert c.evidence["daily"]["recorded"]
        assert set(c.inputs) == set(INPUT_NAMES)
        json.dumps(c.evidence)  # stored as JSON
    by = {c.meter: c for c in cands}
    a01 = " ".join(by["A01"].reasons)
    assert "consumption fell 70 % on 2026-02-14" in a01
    assert "3 days after a terminal-cover-open event" in a01
    assert by["A01"].evidence["events"][0]["kind"] == "terminal_cover_open"
    assert "zero consumption for 40 consecutive days" in by["A02"].reasons[0]
    assert "export register" in " ".join(by["A03"].reasons)
    assert any("flattened" in t for t in by["B01"].reasons)
    assert any("reversed" in t for t in by["B03"].reasons)
    assert any("area B's unexplained loss rose" in t for t in by["B02"].reasons)
    assert by["B02"].evidence["balance"]["share_confirmed"] > 0.7
    assert any("confirms only" in t for t in by["A10"].reasons)  # the vacancy


def test_filters_order_and_route_exports(tmp_path: Path):
    data, _ = build()
    r = score(data)
    only_b = r.candidates(top=5, areas=["B"])
    assert only_b and all(c.area == "B" for c in only_b)
    profile = r.candidates(top=5, signal="profile")
    assert {c.meter for c in profile} == {"B03"}
    # B01's flattened days record one value every hour: the tamper mark is its strongest evidence.
    marks = r.candidates(top=5, signal="marks")
    assert {c.meter for c in marks} == {"B01"}
    assert any("every hour recorded the same value" in t for t in marks[0].reasons)
    by_value = r.candidates(top=3, by="value")
    assert by_value[0].expected_value >= by_value[1].expected_value >= by_value[2].expected_value
    cands = r.candidates(top=6)
    assert sorted(c.route_order or 0 for c in cands) == list(range(1, 7))
    write_csv(cands, tmp_path / "list.csv")
    rows = list(csv.DictReader((tmp_path / "list.csv").open()))
    assert [row["meter"] for row in rows] == [c.meter for c in cands]
    assert all(row["latitude"] and row["longitude"] and row["reasons"] for row in rows)
    write_geojson(cands, tmp_path / "list.geojson")
    gj = json.loads((tmp_path / "list.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 6
    assert gj["features"][0]["geometry"]["coordinates"] == [cands[0].longitude, cands[0].latitude]
    assert geojson(cands)["features"][0]["properties"]["reasons"] == cands[0].reasons


def test_expected_value_is_probability_times_energy_times_tariff():
    p = np.array([0.5, 1.0])
    e = np.array([100.0, 10.0])
    ev = md.expected_value(p, e, np.array(["electricity", "water"], dtype=object), {"electricity": 0.3})
    assert np.allclose(ev, [15.0, 20.0])


def test_supervised_feedback_changes_the_ranking():
    data, _ = build()
    first = score(data)
    x = first.inputs()
    y = np.array([1 if s in THIEVES else 0 for s in data.serials])
    second = score(data, training=(x, y))
    assert second.model is not None and second.model.n_labels == len(y)
    assert not np.allclose(first.risk, second.risk)
    # Labels that say "fraud" for thieves can only push them up relative to honest meters.
    thieves = np.isin(data.serials, list(THIEVES))
    assert second.risk[thieves].min() > second.risk[~thieves].max()


def test_too_few_labels_keep_the_unsupervised_ranking():
    data, _ = build()
    first = score(data)
    y = np.array([1, 0, 0])
    second = score(data, training=(first.inputs()[:3], y))
    assert second.model is None
    assert np.allclose(first.risk, second.risk)


def test_small_simulated_fleet_ranks_thieves_first():
    cfg = parse_fleet(
        {
            "seed": 11,
            "start": datetime(2026, 1, 1, tzinfo=UTC),
            "interval_minutes": 60,
            "horizon_days": 150,
            "topology": {"transformers": 8, "customers_per_transformer": 15, "dmas": 2, "customers_per_dma": 15},
            "theft": {"rate": 0.08, "min_days": 30, "max_days": 80},
            "faults": {"rate": 0.15, "min_days": 2, "max_days": 15},
        },
        "test",
    )
    data, truth = from_simulation(Simulation(cfg), 150)
    y = np.array([k != "" for k in truth.theft_kind])
    k = int(y.sum())
    assert k >= 5
    r = score(data)
    top = r.order()[:k]
    assert y[top].mean() >= 0.7
    assert all(c.reasons for c in r.candidates(k))


def test_first_frauds_train_a_positive_unlabelled_model_and_the_ranking_says_so():
    data, _ = build()
    first = score(data)
    assert "no inspection outcomes" in first.model_note() and first.model_name == "unsupervised"
    thieves = np.isin(data.serials, list(THIEVES))
    visited = np.flatnonzero(thieves)[:3]  # a first campaign that found three frauds and nothing else
    second = score(data, training=(first.inputs()[visited], np.ones(3, dtype=int)))
    assert second.model is not None and second.model.method == "pu"
    assert second.model_name == "blend+pu-logistic"
    assert "positive-unlabelled" in second.model_note() and "3 fraud" in second.model_note()
    assert second.supervised is not None and 0.0 <= second.supervised.min() <= second.supervised.max() <= 1.0
    # The uninspected thieves still rank above the honest meters with the model blended in.
    from sklearn.metrics import roc_auc_score

    rest = np.setdiff1d(np.arange(len(thieves)), visited)
    assert roc_auc_score(thieves[rest], second.risk[rest]) >= 0.9


def test_one_fraud_is_not_enough_and_the_note_says_why():
    data, _ = build()
    first = score(data)
    second = score(data, training=(first.inputs()[:2], np.array([1, 0])))
    assert second.model is None
    assert "2 outcomes recorded" in second.model_note() and "at least 2 fraud" in second.model_note()
