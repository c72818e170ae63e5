"""What the pages say to people: durations in words, money with its currency, hold reasons and reads in words."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dashboards.bills import bill_pdf, hold_reason, line_rows, money, quantity, read_rows
from dashboards.components import ago, in_words
from dashboards.pages.control import link_state
from dashboards.pages.meter import where_read


@pytest.mark.parametrize(
    ("span", "words"),
    [
        (timedelta(seconds=1), "1 second"),
        (timedelta(seconds=45), "45 seconds"),
        (timedelta(minutes=12), "12 minutes"),
        (timedelta(hours=2), "2 hours"),
        (timedelta(hours=1, minutes=40), "2 hours"),
        (timedelta(hours=30), "30 hours"),
        (timedelta(days=3, hours=5), "3 days 5 hours"),
        (timedelta(days=12), "12 days"),
        (timedelta(days=1), "24 hours"),
        (None, "—"),
        (timedelta(seconds=-5), "0 seconds"),
    ],
)
def test_durations_read_as_a_person_says_them_never_as_python_prints_them(span, words):
    assert in_words(span) == words
    assert ":" not in in_words(span)


def test_ago_says_just_now_for_the_last_seconds():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert ago(now - timedelta(seconds=3), now) == "just now"
    assert ago(now - timedelta(minutes=5), now) == "5 minutes ago"
    assert ago(None) == "never"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "no_read: no actual read on meter 26000003 since 2026-02-01",
            "A meter read is missing: no actual read on meter 26000003 since 2026-02-01",
        ),
        (
            "vee_exceptions: 2 open on meter 7 (SPIKE)",
            "Validation exceptions are still open: 2 open on meter 7 (SPIKE)",
        ),
        (
            "band: consumption 12 outside None–None (0 bills)",
            "The consumption is outside what this account usually uses "
            "(no band: too few earlier bills to compare with)",
        ),
        ("something_new: as is", "something new: as is"),
    ],
)
def test_hold_reasons_are_words_not_codes(text, words):
    assert hold_reason(text) == words


def test_money_always_has_two_decimals_and_its_currency_and_quantities_their_unit():
    assert money(Decimal("1234.5"), "EUR") == "1,234.50 EUR"
    assert money("-0.004", "ZAR") == "-0.00 ZAR"
    assert quantity(Decimal("412.500"), "kWh") == "412.5 kWh"
    assert quantity(3, "m3") == "3 m³"


BILL = {
    "id": 42,
    "run_id": 1,
    "cycle": "A",
    "period_start": datetime(2026, 3, 1).date(),
    "period_end": datetime(2026, 3, 31).date(),
    "days": 31,
    "kind": "regular",
    "status": "issued",
    "hold_reasons": [],
    "tariff_code": "E-RES",
    "commodity": "electricity",
    "unit": "kWh",
    "consumption": Decimal("250.5"),
    "subtotal": Decimal("50.10"),
    "tax": Decimal("10.02"),
    "total": Decimal("60.12"),
    "currency": "EUR",
    "issue_date": datetime(2026, 4, 2).date(),
    "due_date": None,
    "account": "ACC-1",
    "customer": "Zoé Müller",
    "service_point": "SP-1",
    "street": "1 rue du Pré",
    "details": {"tariff_versions": ["E-RES@2026-01-01:0/31"]},
    "lines": [
        {
            "code": "block1",
            "description": "energy, first block",
            "quantity": "250.5",
            "unit": "kWh",
            "rate": "0.2",
            "amount": "50.10",
        },
        {
            "code": "tax:vat",
            "description": "VAT 20 %",
            "quantity": "50.10",
            "unit": "",
            "rate": "0.2",
            "amount": "10.02",
        },
    ],
    "reads": [
        {
            "serial": "26000003",
            "start_at": datetime(2026, 3, 1, tzinfo=UTC),
            "start_index": Decimal("1000"),
            "start_quality": "actual",
            "end_at": datetime(2026, 3, 31, tzinfo=UTC),
            "end_index": Decimal("1250.5"),
            "end_quality": "estimated",
            "multiplier": Decimal(1),
            "consumption": Decimal("250.5"),
        }
    ],
}


def test_a_bill_reads_in_words_and_its_pdf_is_a_pdf():
    lines = line_rows(BILL)
    assert lines[0] == {
        "description": "energy, first block",
        "quantity": "250.5 kWh",
        "rate": "0.2 EUR/kWh",
        "amount": "50.10 EUR",
    }
    assert lines[1]["rate"] == "20 %" and lines[1]["quantity"] == "50.10 EUR"
    reads = read_rows(BILL)[0]
    assert "(actual read)" in reads["from"] and "(estimate)" in reads["to"]
    pdf = bill_pdf(BILL)
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-64:]


@pytest.mark.parametrize(
    ("link", "words"),
    [
        ({"kind": "tcp", "connected": True}, "connected"),
        ({"kind": "tcp", "connected": False}, "not answering"),
        ({"kind": "rtu", "connected": None}, "not polled yet"),
        ({"kind": "mqtt", "connected": False}, "disconnected"),
        ({"kind": "spool", "connected": True}, "draining"),
    ],
)
def test_every_link_has_a_state_in_words(link, words):
    assert link_state(link) == words


def test_the_meter_header_names_how_it_is_read_without_placeholder_addresses():
    sim = {"protocol": "modbus-tcp", "address": "tcp://127.0.0.1:0/55"}
    assert where_read(sim, []) == "Modbus TCP, unit 55"
    assert (
        where_read(sim, [{"collector": "demo-collector", "link": "gw0"}])
        == "Modbus TCP via collector demo-collector, gw0, unit 55"
    )
    assert (
        where_read({"protocol": "modbus-tcp", "address": "tcp://10.0.0.5:502/3"}, []) == "Modbus TCP at 10.0.0.5:502/3"
    )
    assert where_read({"protocol": "import", "address": None}, []) == "imported files"
