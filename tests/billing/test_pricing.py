"""Pure billing logic, no database: blocks, lifeline, indigent, proration, TOU, demand, indexes, tariff file."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.components import COMPONENTS
from billing.pricing import Read, allocate, boundary_index, cycle_period, price, tou_period
from billing.tariffs import EXAMPLE, TariffError, load_tariffs, parse_tariffs

D = Decimal

HERE = Path(__file__).parent
BOOK = load_tariffs(HERE / "tariffs_test.toml")
START, END = cycle_period(date(2026, 3, 31))


def bill(code, consumption, indigent=False, start=START, end=END, **kw):
    segments = BOOK.segments(code, start, end)
    return price(segments, D(consumption), BOOK.rules, "m3", indigent, **kw)


def amounts(p):
    return {li.code: li.amount for li in p.lines}


def test_cycle_is_30_days_ending_on_the_period_end():
    assert cycle_period(date(2026, 3, 31)) == (date(2026, 3, 2), date(2026, 4, 1))
    assert (END - START).days == 30


@pytest.mark.parametrize(
    ("consumption", "lines", "subtotal", "tax", "total"),
    [
        # exactly the lifeline block: 6 × 0.50 + fixed 4.50; VAT 5.5 % of 7.50 = 0.4125 -> 0.41
        ("6.000", {"fixed": "4.50", "block1": "3.00"}, "7.50", "0.41", "7.91"),
        # one litre into block 2: 0.001 × 1.20 = 0.0012 -> 0.00
        ("6.001", {"fixed": "4.50", "block1": "3.00", "block2": "0.00"}, "7.50", "0.41", "7.91"),
        # at the lifeline limit (15) the social rate holds: 3.00 + 9 × 1.20
        ("15.000", {"fixed": "4.50", "block1": "3.00", "block2": "10.80"}, "18.30", "1.01", "19.31"),
        # above it the first block is billed at block 2's rate: 6 × 1.20 + 14 × 1.20
        ("20.000", {"fixed": "4.50", "block1": "7.20", "block2": "16.80"}, "28.50", "1.57", "30.07"),
        # into block 3: + 5 × 2.40; VAT 2.2275 -> 2.23 (half up)
        ("25.000", {"fixed": "4.50", "block1": "7.20", "block2": "16.80", "block3": "12.00"}, "40.50", "2.23", "42.73"),
        ("0.000", {"fixed": "4.50"}, "4.50", "0.25", "4.75"),
    ],
)
def test_block_boundaries(consumption, lines, subtotal, tax, total):
    p = bill("W", consumption)
    assert {k: v for k, v in amounts(p).items() if not k.startswith("tax")} == {k: D(v) for k, v in lines.items()}
    assert (p.subtotal, p.tax, p.total) == (D(subtotal), D(tax), D(total))


def test_indigent_gets_free_units_and_no_fixed_charge():
    p = bill("W", "10.000", indigent=True)
    # fixed 0; 6 × 0.50 + 4 × 1.20 = 7.80; the 6 free units were worth 3.00; VAT on 4.80 = 0.264
    assert amounts(p) == {
        "fixed": D("0.00"),
        "block1": D("3.00"),
        "block2": D("4.80"),
        "indigent": D("-3.00"),
        "tax:VAT": D("0.26"),
    }
    assert (p.subtotal, p.tax, p.total) == (D("4.80"), D("0.26"), D("5.06"))


def test_mid_cycle_tariff_change_prorates_fixed_charge_and_block_sizes_by_days():
    segments = BOOK.segments("W2", START, END)
    assert [(lo, hi) for _, lo, hi in segments] == [
        (date(2026, 3, 2), date(2026, 3, 12)),
        (date(2026, 3, 12), date(2026, 4, 1)),
    ]
    p = bill("W2", "10.000")
    # 10 days old tariff: 3.333 m3, blocks 2.000 / 6.667; fixed 1.50; 2 × 0.50 + 1.333 × 1.20 = 1.00 + 1.60
    # 20 days new tariff: 6.667 m3, blocks 4.000 / 13.333; fixed 4.00; 4 × 0.60 + 2.667 × 1.50 = 2.40 + 4.00
    got = [(li.code, li.quantity, li.amount) for li in p.lines]
    assert got == [
        ("fixed", D(10), D("1.50")),
        ("block1", D("2.000"), D("1.00")),
        ("block2", D("1.333"), D("1.60")),
        ("tax:VAT", D("4.10"), D("0.23")),
        ("fixed", D(20), D("4.00")),
        ("block1", D("4.000"), D("2.40")),
        ("block2", D("2.667"), D("4.00")),
        ("tax:VAT", D("10.40"), D("0.57")),
    ]
    assert (p.subtotal, p.tax, p.total) == (D("14.50"), D("0.80"), D("15.30"))


def test_time_of_use_and_demand():
    p = bill("ETOU", "897.250", tou=[{"peak": D("352.000"), "offpeak": D("545.250")}], max_demand=D("6.000"))
    assert amounts(p) == {
        "fixed": D("25.00"),
        "tou:peak": D("98.56"),
        "tou:offpeak": D("59.98"),
        "demand": D("39.00"),
        "tax:VAT": D("44.51"),
    }
    assert p.total == D("267.05")


def test_tou_periods_by_local_weekday_and_hour():
    t = next(t for t, _, _ in BOOK.segments("ETOU", START, END))
    assert tou_period(t, 1, 7) == "peak"
    assert tou_period(t, 1, 11) == "offpeak"
    assert tou_period(t, 5, 20) == "peak"
    assert tou_period(t, 6, 8) == "offpeak"


def test_allocate_keeps_the_total_exact():
    shares = allocate(D("10.000"), [10, 10, 10], 3)
    assert shares == [D("3.333"), D("3.333"), D("3.334")]
    assert sum(shares) == D("10.000")


def at(day, hour=0):
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def test_boundary_index_read_on_the_day_else_interpolated():
    on_day = Read(at(2, 10), 105.0, "estimated")
    idx = boundary_index(at(2), on_day, Read(at(1), 100.0, "actual"), None)
    assert (idx.value, idx.quality) == (D("105.000"), "estimated")
    idx = boundary_index(at(2), None, Read(at(1, 12), 100.0, "actual"), Read(at(3, 12), 104.0, "actual"))
    assert (idx.value, idx.quality) == (D("101.000"), "interpolated")
    assert boundary_index(at(2), None, Read(at(1), 1.0, "actual"), None) is None


def test_tariff_file_errors_name_the_file_the_field_and_the_problem():
    bad = """
[[tariff]]
code = "X"
commodity = "water"
effective_from = 2026-01-01
blocks = [{ up_to = 10, rate = 1 }, { up_to = 5, rate = 2 }, { rate = 3 }]
"""
    with pytest.raises(TariffError, match=r"t\.toml: tariff\[0\]: .*blocks\[1\]\.up_to: must be greater"):
        parse_tariffs(bad, "t.toml")
    with pytest.raises(TariffError, match=r"t\.toml: tariff\[0\]\.blocks\[0\]\.rate: .*greater than or equal to 0"):
        parse_tariffs(bad.replace("rate = 1 }", "rate = -1 }"), "t.toml")
    with pytest.raises(TariffError, match=r"t\.toml: holds\.max_estimated_shar: Extra inputs"):
        parse_tariffs("[holds]\nmax_estimated_shar = 0.2\n", "t.toml")
    with pytest.raises(TariffError, match="not valid TOML"):
        parse_tariffs("[[tariff]\n", "t.toml")
    with pytest.raises(TariffError, match="exactly one of blocks or tou"):
        parse_tariffs('[[tariff]]\ncode="X"\ncommodity="water"\neffective_from=2026-01-01\n', "t.toml")


def test_money_is_never_a_float():
    p = bill("W", "25.000")
    assert all(isinstance(v, D) for li in p.lines for v in (li.quantity, li.rate, li.amount))


def test_the_shipped_example_loads():
    book = load_tariffs(EXAMPLE)
    assert set(book.codes) == {"W-RES", "E-RES", "E-TOU"}
    assert book.rules.due_days == 10 and book.tenant_change.tolerance == 5 and book.tenant_change.proof_days == 15


def test_a_key_no_component_declares_is_refused_with_its_place():
    text = EXAMPLE.read_text(encoding="utf-8").replace("fixed_charge = 4.50", "fixed_charg = 4.50", 1)
    with pytest.raises(TariffError, match=r"t\.toml: tariff\[0\]\.fixed_charg: Extra inputs are not permitted"):
        parse_tariffs(text, "t.toml")


def test_a_version_carries_the_components_its_keys_set_in_table_order():
    kinds = {
        t.code: [c.kind for c, _ in t.charges] for t, _, _ in (BOOK.segments(c, START, END)[0] for c in BOOK.codes)
    }
    assert kinds["W"] == ["fixed_charge", "blocks", "free_units", "taxes"]
    assert kinds["E"] == ["fixed_charge", "blocks", "taxes"]
    assert kinds["ETOU"] == ["fixed_charge", "tou", "demand_charge", "taxes"]


def test_every_component_kind_and_key_is_documented():
    doc = (Path(__file__).parents[2] / "docs" / "billing.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| `")}
    example = EXAMPLE.read_text(encoding="utf-8")
    for c in COMPONENTS:
        assert f"`{c.kind}`" in rows, f"docs/billing.md: no row for the tariff component {c.kind}"
        for key in c.params.model_fields:
            assert key in example, f"billing/tariffs.example.toml: the key {key} of {c.kind} is not shown"


MINIMUM = """
[[tariff]]
code = "WMIN"
commodity = "water"
effective_from = 2026-01-01
fixed_charge = 4.50
minimum_charge = 12.00
blocks = [{ up_to = 6, rate = 0.50 }, { rate = 1.20 }]
indigent = { free_units = 6, fixed_charge_factor = 0 }
taxes = [{ name = "VAT", rate = 0.055 }]
"""


def test_minimum_charge_tops_the_charges_up_before_tax():
    book = parse_tariffs(MINIMUM, "min.toml")

    def bill_min(consumption, days=30, indigent=False):
        segments = book.segments("WMIN", START, START + timedelta(days=days))
        return price(segments, D(consumption), book.rules, "m3", indigent)

    # 6 m3: fixed 4.50 + 6 × 0.50 = 7.50, topped up by 4.50 to 12.00; VAT 5.5 % of 12.00 = 0.66
    p = bill_min("6.000")
    assert amounts(p) == {"fixed": D("4.50"), "block1": D("3.00"), "minimum": D("4.50"), "tax:VAT": D("0.66")}
    assert (p.subtotal, p.total) == (D("12.00"), D("12.66"))
    # 10 m3: 4.50 + 3.00 + 4 × 1.20 = 12.30, above the minimum: no line
    assert "minimum" not in amounts(bill_min("10.000"))
    # 15 days: the minimum is prorated to 6.00; fixed 2.25 + 2 × 0.50 = 3.25, topped up by 2.75
    p = bill_min("2.000", days=15)
    assert (amounts(p)["minimum"], p.subtotal) == (D("2.75"), D("6.00"))
    # an indigent customer keeps the support: fixed 0.00, 6 m3 free, nothing topped up
    p = bill_min("6.000", indigent=True)
    assert "minimum" not in amounts(p) and p.subtotal == D("0.00")
    with pytest.raises(TariffError, match=r"min\.toml: tariff\[0\]\.minimum_charge: .*greater than or equal to 0"):
        parse_tariffs(MINIMUM.replace("12.00", "-1"), "min.toml")
