"""Property-based tests (hypothesis) of billing invariants, on random series, through the real bill run.

- Consecutive bills add up: each bill starts the day after the previous one ends, at its end index,
  and the consumption of the bills sums to the last end index minus the first start index.
- A re-run changes nothing: no bill, determinant or freeze is written twice.
- Cancel + rebill nets to the corrected amount: after a VEE adjustment of a billed read, the
  original, its cancel and its rebill add up to what a twin account billed on the corrected series
  from the start is charged.

Plus the pure arithmetic: allocations add up exactly, a priced bill is the sum of its lines, an
interpolated index lies between its neighbours.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from billing.pricing import Read, allocate, boundary_index, price, q
from billing.run import run_bills

from .fleet import BOOK, Fleet

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 130  # 1 January - 10 May: every boundary of the periods below has reads on both sides
_ids = itertools.count()

DB_SETTINGS = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def series(draw):
    """A water meter's life: a start index, litres used per day, and the instants it was read."""
    base = draw(st.integers(0, 5_000_000))  # litres
    usage = draw(st.lists(st.integers(0, 3_000), min_size=DAYS, max_size=DAYS))
    # read at least every 35 days: the bill run looks 45 days around a boundary for an index
    days = sorted(draw(st.sets(st.integers(1, DAYS - 2), min_size=3, max_size=30)) | {0, 35, 70, 105, DAYS - 1})
    hours = draw(st.lists(st.integers(0, 23), min_size=len(days), max_size=len(days)))
    reads = []
    for d, h in zip(days, hours, strict=True):
        litres = base + sum(usage[:d]) + usage[d] * h // 24
        reads.append((DAY0 + timedelta(days=d, hours=h), litres))
    return reads


@st.composite
def period_ends(draw):
    """Two to four period ends, 25 to 40 days apart (month ends among them), all inside the series."""
    first = date(2026, 1, 31) + timedelta(days=draw(st.integers(0, 10)))
    ends = [first]
    for _ in range(draw(st.integers(1, 3))):
        ends.append(ends[-1] + timedelta(days=draw(st.integers(25, 40))))
    return [e for e in ends if e < date(2026, 5, 5)]


def _account(f: Fleet, reads: list[tuple[datetime, int]], cycle: str) -> str:
    n = next(_ids)
    f.simple(f"p{n}", cycle=cycle)
    f.reads(f"M-p{n}", [(t, litres / 1000) for t, litres in reads])
    return f"A-p{n}"


def _live(f: Fleet, number: str):
    return f.sql(
        """SELECT b.period_start, b.period_end, b.consumption, d.start_index, d.end_index, b.total
           FROM bill b JOIN account a ON a.id = b.account_id JOIN bill_determinant d ON d.bill_id = b.id
           WHERE a.number = %s AND b.status IN ('issued', 'held') AND b.kind <> 'cancel' ORDER BY b.period_end""",
        (number,),
    )


def _counts(f: Fleet):
    return f.sql(
        "SELECT (SELECT count(*) FROM bill), (SELECT count(*) FROM bill_determinant), "
        "(SELECT count(*) FROM reading_freeze)"
    )[0]


def _run_all(f: Fleet, cycle: str, ends: list[date]):
    return [run_bills(f.db.url, f.db.settings, BOOK, cycle, e, e + timedelta(days=2)) for e in ends]


@pytest.mark.db
@DB_SETTINGS
@given(reads=series(), ends=period_ends())
def test_consecutive_bills_add_up_and_a_rerun_changes_nothing(db, reads, ends):
    f = Fleet(db)
    cycle = f"C{next(_ids)}"
    number = _account(f, reads, cycle)
    _run_all(f, cycle, ends)
    bills = _live(f, number)
    assert len(bills) == len(ends)
    for prev, cur in itertools.pairwise(bills):
        assert cur[0] == prev[1] + timedelta(days=1)  # no gap, no overlap
        assert cur[3] == prev[4]  # starts at the previous bill's end index
    assert sum(b[2] for b in bills) == bills[-1][4] - bills[0][3]
    before = _counts(f)
    again = _run_all(f, cycle, ends)
    assert [s.unchanged for s in again] == [1] * len(ends)
    assert _counts(f) == before


@pytest.mark.db
@DB_SETTINGS
@given(reads=series(), ends=period_ends(), which=st.integers(0, 1_000), delta=st.integers(-2_000, 5_000))
def test_cancel_and_rebill_net_to_the_corrected_amount(db, reads, ends, which, delta):
    f = Fleet(db)
    cycle = f"C{next(_ids)}"
    # a read inside the billed span gets corrected; the twin has the corrected value from the start
    inside = [i for i, (t, _) in enumerate(reads) if ends[0] - timedelta(days=29) <= t.date() <= ends[-1]]
    if not inside or delta == 0:
        event("no read to correct")
        return
    k = inside[which % len(inside)]
    t, litres = reads[k]
    corrected = max(litres + delta, 0)
    twin_reads = [*reads[:k], (t, corrected), *reads[k + 1 :]]
    a = _account(f, reads, cycle)
    b = _account(f, twin_reads, cycle)
    _run_all(f, cycle, ends)
    f.version(f"M-{a[2:]}", t, corrected / 1000, kind="adjustment", quality="S", replaced=litres / 1000)
    rebilled = sum(s.rebilled for s in _run_all(f, cycle, ends))
    event("rebills: " + ("none" if rebilled == 0 else "one" if rebilled == 1 else "several"))
    for e in ends:
        net = f.one(
            """SELECT sum(b.total) FROM bill b JOIN account a ON a.id = b.account_id
               WHERE a.number = %s AND b.period_end = %s AND b.status <> 'superseded'""",
            (a, e),
        )
        twin = f.one(
            """SELECT b.total FROM bill b JOIN account a ON a.id = b.account_id
               WHERE a.number = %s AND b.period_end = %s AND b.status IN ('issued', 'held') AND b.kind <> 'cancel'""",
            (b, e),
        )
        assert net == twin, f"period ending {e}"
    assert [r[2:5] for r in _live(f, a)] == [r[2:5] for r in _live(f, b)]


# --------------------------------------------------------------------------------------------- pure


@given(total=st.decimals(-10_000, 10_000, places=3), weights=st.lists(st.integers(0, 10**9), min_size=1, max_size=8))
def test_allocation_adds_up_exactly(total, weights):
    shares = allocate(total, weights, 3)
    assert len(shares) == len(weights)
    if sum(weights):
        assert sum(shares, Decimal(0)) == total
        assert all(s == q(s, 3) for s in shares[:-1])


@given(
    consumption=st.decimals(0, 500, places=3),
    indigent=st.booleans(),
    tariff=st.sampled_from(["W", "W2", "E"]),
    days=st.integers(1, 45),
)
def test_a_priced_bill_is_the_sum_of_its_rounded_lines(consumption, indigent, tariff, days):
    start = date(2026, 3, 1)
    segments = BOOK.segments(tariff, start, start + timedelta(days=days))
    p = price(segments, consumption, BOOK.rules, "m3", indigent)
    charges = [li.amount for li in p.lines if not li.code.startswith("tax:")]
    taxes = [li.amount for li in p.lines if li.code.startswith("tax:")]
    assert p.subtotal == sum(charges, Decimal(0)) and p.tax == sum(taxes, Decimal(0))
    assert p.total == p.subtotal + p.tax
    assert all(li.amount == q(li.amount, 2) for li in p.lines)
    blocks = sum((li.quantity for li in p.lines if li.code.startswith("block")), Decimal(0))
    assert blocks == q(consumption, 3)  # every unit billed once, across segments and blocks


@given(lo=st.integers(0, 10**7), used=st.integers(0, 10**6), span_h=st.integers(25, 24 * 60), at_h=st.integers(1, 24))
def test_an_interpolated_index_lies_between_its_neighbours(lo, used, span_h, at_h):
    before = Read(DAY0, lo / 1000, "actual")
    after = Read(DAY0 + timedelta(hours=span_h), (lo + used) / 1000, "actual")
    at = DAY0 + timedelta(hours=min(at_h, span_h - 24))
    idx = boundary_index(at, None, before, after)
    assert idx is not None and idx.quality == "interpolated"
    assert Decimal(lo) / 1000 <= idx.value <= Decimal(lo + used) / 1000
