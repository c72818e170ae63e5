"""The bill run's faster paths against what they replace, and its collector pause.

- ``_lines_json`` writes the text ``json.dumps`` wrote for a dict per line, for any text and number;
- ``block_charges`` reads its block bounds and descriptions from a table made once per tariff
  version and segment shape: its lines equal those of the block-by-block computation it replaced,
  whichever tariffs are priced in between;
- a bill run pauses the garbage collector and gives it back, also when the run fails.
"""

from __future__ import annotations

import gc
import json
from datetime import date
from decimal import Decimal

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.components import Block, BlockKeys, Segment, block_charges
from billing.money import Line, q
from billing.run import run_bills
from billing.store import _lines_json
from billing.tariffs import EXAMPLE, load_tariffs
from releve.settings import Settings

amounts = st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-(10**9), max_value=10**9)
lines = st.lists(
    st.builds(Line, st.text(max_size=12), st.text(max_size=60), amounts, st.text(max_size=4), amounts, amounts),
    max_size=6,
)


@given(lines)
def test_lines_json_is_the_text_json_dumps_wrote(items: list[Line]) -> None:
    before = json.dumps(
        [
            {
                "code": li.code,
                "description": li.description,
                "quantity": str(li.quantity),
                "unit": li.unit,
                "rate": str(li.rate),
                "amount": str(li.amount),
            }
            for li in items
        ]
    )
    assert _lines_json(items) == before


def _block_charges_step_by_step(
    p: BlockKeys, s: Segment, quantity: Decimal, suffix: str, basis: Decimal | None = None
) -> list[Line]:
    """The block pricing as it was written before its table was made once (the reference)."""
    qd, md, factor, unit = s.quantity_decimals, s.money_decimals, s.factor, s.unit
    out: list[Line] = []
    rates = [b.rate for b in p.blocks]
    basis = quantity if basis is None else basis
    if p.lifeline_limit is not None and basis > q(p.lifeline_limit * factor, qd) and len(rates) > 1:
        rates[0] = rates[1]
    lower = Decimal(0)
    for i, block in enumerate(p.blocks):
        upper = q(block.up_to * factor, qd) if block.up_to is not None else None
        if quantity <= lower:
            break
        take = (min(quantity, upper) if upper is not None else quantity) - lower
        if take > 0:
            label = "lifeline block" if block.lifeline and rates[0] == block.rate else f"block {i + 1}"
            bounds = f"{lower}–{upper}" if upper is not None else f"above {lower}"
            out.append(
                Line(
                    f"block{i + 1}", f"{label} ({bounds} {unit}){suffix}", take, unit, rates[i], q(take * rates[i], md)
                )
            )
        if upper is None:
            break
        lower = upper
    return out


def _tariff(draw: st.DrawFn) -> BlockKeys:
    n = draw(st.integers(1, 4))
    ups = sorted(draw(st.sets(st.integers(1, 900), min_size=n - 1, max_size=n - 1)))
    rates = [Decimal(draw(st.integers(0, 400))) / 1000 for _ in range(n)]
    lifeline = draw(st.booleans())
    blocks = [
        Block(up_to=Decimal(u), rate=r, lifeline=lifeline and i == 0)
        for i, (u, r) in enumerate(zip(ups, rates[:-1], strict=True))
    ]
    blocks.append(Block(up_to=None, rate=rates[-1]))
    limit = Decimal(draw(st.integers(1, 1200))) if lifeline and draw(st.booleans()) else None
    return BlockKeys(blocks=blocks, lifeline_limit=limit)


@st.composite
def pricing_cases(draw: st.DrawFn) -> list[tuple[BlockKeys, Segment, Decimal, str, Decimal | None]]:
    tariffs = [_tariff(draw) for _ in range(draw(st.integers(1, 3)))]
    cases = []
    for _ in range(draw(st.integers(1, 8))):
        days = draw(st.integers(1, 31))
        s = Segment(
            days, 30, Decimal(days) / Decimal(30), Decimal(0), False, draw(st.sampled_from(["kWh", "m3"])), "", 2, 3
        )
        quantity = Decimal(draw(st.integers(0, 2_000_000))) / 1000
        basis = None if draw(st.booleans()) else Decimal(draw(st.integers(0, 2_000_000))) / 1000
        cases.append((draw(st.sampled_from(tariffs)), s, quantity, draw(st.sampled_from(["", " [E-RES]"])), basis))
    return cases


@settings(max_examples=200)
@given(pricing_cases())
def test_block_charges_from_their_table_equal_the_step_by_step_computation(
    cases: list[tuple[BlockKeys, Segment, Decimal, str, Decimal | None]],
) -> None:
    for p, s, quantity, suffix, basis in cases:  # several tariffs and segment shapes, interleaved
        assert block_charges(p, s, quantity, suffix, basis) == _block_charges_step_by_step(
            p, s, quantity, suffix, basis
        )


def test_a_bill_run_gives_the_garbage_collector_back_even_when_it_fails() -> None:
    assert gc.isenabled()
    url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    with pytest.raises(psycopg.OperationalError):
        run_bills(url, Settings(database={"url": url}), load_tariffs(EXAMPLE), "A", date(2026, 3, 31))
    assert gc.isenabled()
