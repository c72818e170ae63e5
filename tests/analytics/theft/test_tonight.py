"""A list about tonight: ongoing losses before ended ones, reasons in words, units and currency."""

from __future__ import annotations

import csv
import re
from datetime import date
from pathlib import Path

import numpy as np

from analytics.theft.data import TheftData
from analytics.theft.ranking import (
    ENDED_DAYS,
    ENDED_DISCOUNT,
    ONGOING_DAYS,
    format_table,
    ongoing_factor,
    score,
    write_csv,
)
from tests.analytics.theft.fleet import build

DAYS = 240
#: Two thieves taking half of their load for the same 60 days' length: one stopped 120 days before
#: the end of the data, the other is still at it.
ENDED, ONGOING = "E01", "N01"


def two_thieves(seed: int = 5) -> TheftData:
    """40 households in two areas with daily feeder totals; the two thieves in the same area."""
    rng = np.random.default_rng(seed)
    serials = [ENDED, ONGOING] + [f"H{k:02d}" for k in range(38)]
    m = len(serials)
    level = 9.0 * rng.lognormal(0, 0.2, m)
    level[:2] = 9.0
    true = level[:, None] * rng.lognormal(0, 0.1, (m, DAYS))
    rec = true.copy()
    rec[0, 60:120] *= 0.5
    rec[1, DAYS - 60 :] *= 0.5
    data = TheftData.blank(serials, date(2026, 1, 5), rec)
    data.area = np.array(["A" if k % 2 == 0 or k < 2 else "B" for k in range(m)], dtype=object)
    data.customer_class = np.full(m, "residential", dtype=object)
    for area in "AB":
        rows = data.area == area
        data.feeders[area] = true[rows].sum(axis=0) * 1.04
    return data


def test_a_loss_still_going_on_ranks_above_one_that_stopped_months_ago():
    data = two_thieves()
    r = score(data)
    order = [data.serials[i] for i in r.order()]
    assert order[:2] == [ONGOING, ENDED]
    assert r.ended is not None
    k = {s: i for i, s in enumerate(data.serials)}
    assert r.ended[k[ONGOING]] == 0
    assert 110 <= r.ended[k[ENDED]] <= 125  # stopped on day 120 of 240 (the drop's run may trim a day or two)
    by = {c.meter: c for c in r.candidates(top=5)}
    assert not any("last showed" in t for t in by[ONGOING].reasons)
    gone = [t for t in by[ENDED].reasons if "last showed" in t]
    assert gone and gone[0].startswith("the loss last showed around 2026-0")
    assert "days before the end of the data: listed below losses still going on" in gone[0]
    assert by[ENDED].evidence["ended"]["days"] == r.ended[k[ENDED]]


def test_the_discount_ramps_from_two_weeks_to_three_months_and_keeps_a_strong_old_case_ahead():
    f = ongoing_factor(np.array([0, ONGOING_DAYS, (ONGOING_DAYS + ENDED_DAYS) // 2, ENDED_DAYS, 400]))
    assert f[0] == f[1] == 1.0
    assert 1.0 > f[2] > f[3]
    assert f[3] == f[4] == 1.0 - ENDED_DISCOUNT
    # A strong case that ended (risk 0.95) still outranks a weak ongoing one (0.6).
    assert 0.95 * f[4] > 0.6


def test_every_meter_still_at_it_on_the_hand_built_fleet_is_not_discounted():
    data, _ = build()
    r = score(data)
    k = {s: i for i, s in enumerate(data.serials)}
    assert r.ended is not None
    for still in ("A01", "A03", "B01", "B03"):  # thefts running to the last day
        assert r.ended[k[still]] == 0, still
    assert r.ended[k["A02"]] >= 25  # its register stopped on day 50 … 90 of 120


def test_reasons_read_right():
    data, _ = build()
    cands = score(data).candidates(top=len(data.serials))
    text = [t for c in cands for t in c.reasons]
    assert text
    for t in text:
        assert not re.search(r"\b1 days\b", t), t
        assert "_" not in t, t  # no component or feature names
        assert "deviations" not in t and "isolation-forest" not in t and "(VEE)" not in t, t
    # The direction of the area's loss is said as it went.
    b02 = " ".join(next(c for c in cands if c.meter == "B02").reasons)
    assert "unexplained loss rose" in b02


def test_units_and_currency_in_the_table_and_the_csv(tmp_path: Path):
    data, _ = build()
    data.commodity[data.serials.index("B12")] = "water"
    cands = score(data).candidates(top=len(data.serials))
    assert {c.unit_symbol for c in cands} == {"kWh"} | ({"m³"} if any(c.meter == "B12" for c in cands) else set())
    table = format_table(cands, "EUR")
    first = table.splitlines()[1]
    assert " EUR " in first and " kWh " in first
    write_csv(cands, tmp_path / "list.csv", "EUR")
    rows = list(csv.DictReader((tmp_path / "list.csv").open()))
    assert {r["currency"] for r in rows} == {"EUR"}
    units = {r["meter"]: r["unit"] for r in rows}
    assert units["A01"] == "kWh"
    if "B12" in units:
        assert units["B12"] == "m³"
