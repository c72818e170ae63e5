"""Bills as people read them: currency on amounts, units on quantities, hold reasons in words, and a PDF.

The PDF is drawn with fpdf2 (pure Python, maintained, no system library or browser needed).

The bill comes from :meth:`dashboards.queries.Queries.bill` (the tables as billing wrote them); nothing
here recomputes an amount, it only shows what was billed.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fpdf import FPDF

#: What each hold code of billing/holds.py and billing/intervals.py means, said to a person.
HOLD_REASONS = {
    "no_read": "A meter read is missing",
    "vee_exceptions": "Validation exceptions are still open",
    "estimated": "Too much of the consumption is estimated",
    "negative": "The consumption comes out below zero",
    "intervals": "The tariff needs interval data that is missing",
    "band": "The consumption is outside what this account usually uses",
}
READ_QUALITY = {
    "actual": "actual read",
    "valid": "actual read",
    "estimated": "estimate",
    "edited": "edited by a person",
    "customer": "customer read",
    "manual": "read by hand",
    "substituted": "substitute",
}


def hold_reason(text: str) -> str:
    """A hold reason as billing wrote it ("band: consumption 12 outside 3–9 …") in words for a person."""
    code, _, rest = text.partition(":")
    label = HOLD_REASONS.get(code.strip())
    if label is None:
        return text.replace("_", " ")
    rest = rest.strip()
    if code.strip() == "band" and re.search(r"\bNone\b", rest):  # no band could be computed from earlier bills
        return f"{label} (no band: too few earlier bills to compare with)"
    return f"{label}: {rest}" if rest else label


def number(value: Any, places: int = 2) -> str:
    """A quantity with thousands separators and at most ``places`` decimals (no trailing zeros past the point)."""
    if value is None:
        return "—"
    text = f"{Decimal(str(value)):,.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value: Any, currency: str) -> str:
    """An amount with its currency, always two decimals: "1,234.50 EUR"."""
    if value is None:
        return "—"
    return f"{Decimal(str(value)):,.2f} {currency}"


def quantity(value: Any, unit: str, places: int = 3) -> str:
    """A quantity with its unit: "412.5 kWh" ("m3" is shown as m³)."""
    shown = {"m3": "m³", "m3/h": "m³/h"}.get(unit, unit)
    if unit == "day" and value is not None and Decimal(str(value)) != 1:
        shown = "days"
    return f"{number(value, places)} {shown}".strip()


def quality(text: str | None) -> str:
    """A read's quality in words."""
    return READ_QUALITY.get(text or "", (text or "unknown").replace("_", " "))


def when(value: Any) -> str:
    """A date or an instant, the way a bill prints it."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, date):
        return value.isoformat()
    return "—" if value is None else str(value)


def line_rows(bill: dict[str, Any]) -> list[dict[str, str]]:
    """The bill's lines as text: what, how much, at which rate, the amount (taxes are lines too)."""
    out = []
    for line in bill["lines"] or []:
        unit = line.get("unit") or ""
        is_tax = str(line.get("code", "")).startswith("tax:")
        rate = line.get("rate")
        out.append(
            {
                "description": line.get("description") or str(line.get("code", "")).replace("_", " "),
                "quantity": money(line.get("quantity"), bill["currency"])
                if is_tax
                else quantity(line.get("quantity"), unit),
                "rate": (
                    f"{number(Decimal(str(rate)) * 100, 2)} %"
                    if is_tax and rate is not None
                    else f"{number(rate, 6)} {bill['currency']}/{unit or 'unit'}"
                    if rate is not None
                    else "—"
                ),
                "amount": money(line.get("amount"), bill["currency"]),
            }
        )
    return out


def read_rows(bill: dict[str, Any]) -> list[dict[str, str]]:
    """The reads the bill used: meter, from and to (index, when, quality), consumption."""
    return [
        {
            "meter": r["serial"],
            "from": f"{number(r['start_index'], 3)} on {when(r['start_at'])} ({quality(r['start_quality'])})",
            "to": f"{number(r['end_index'], 3)} on {when(r['end_at'])} ({quality(r['end_quality'])})",
            "consumption": quantity(r["consumption"], bill["unit"])
            + (f" (× {number(r['multiplier'], 3)})" if r["multiplier"] not in (None, 1, Decimal(1)) else ""),
        }
        for r in bill["reads"]
    ]


def tariff_text(bill: dict[str, Any]) -> str:
    """The tariff and, when it changed within the period, the versions applied."""
    versions = (bill["details"] or {}).get("tariff_versions") or []
    shown = [v.split(":")[0].replace("@", " from ") for v in versions]
    return bill["tariff_code"] + (f" ({'; '.join(shown)})" if len(shown) > 1 else "")


def _latin1(text: str) -> str:
    """fpdf2's core fonts are Latin-1: keep what they can print, spell out the rest."""
    text = text.replace("m³", "m3").replace("—", "-").replace("–", "-").replace("×", "x")
    return text.encode("latin-1", "replace").decode("latin-1")


def bill_pdf(bill: dict[str, Any]) -> bytes:
    """The bill as a one- or two-page A4 PDF: header, account, lines with taxes, totals, the reads used."""
    pdf = FPDF(format="A4")
    pdf.set_title(f"Bill {bill['id']}")
    pdf.set_author("Relevé")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _latin1(f"Bill {bill['id']}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    head = [
        ("Account", f"{bill['account']}" + (f" - {bill['customer']}" if bill.get("customer") else "")),
        ("Service point", " ".join(str(x) for x in (bill.get("service_point"), bill.get("street")) if x) or "-"),
        ("Period", f"{when(bill['period_start'])} to {when(bill['period_end'])} ({bill['days']} days)"),
        ("Issued", when(bill["issue_date"]) + (f", due {when(bill['due_date'])}" if bill.get("due_date") else "")),
        ("Tariff", tariff_text(bill)),
        ("Consumption", quantity(bill["consumption"], bill["unit"])),
        ("Status", bill["status"] + (f" ({bill['kind']})" if bill["kind"] != "regular" else "")),
    ]
    for label, value in head:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(40, 6, _latin1(label))
        pdf.set_font("Helvetica", "", 10)
        pdf.multi_cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    _table(pdf, "Charges", ["description", "quantity", "rate", "amount"], [80, 35, 40, 35], line_rows(bill))
    pdf.set_font("Helvetica", "", 10)
    for label, value in (("Subtotal", bill["subtotal"]), ("Taxes", bill["tax"]), ("Total", bill["total"])):
        pdf.set_font("Helvetica", "B" if label == "Total" else "", 10)
        pdf.cell(155, 6, label, align="R")
        pdf.cell(35, 6, _latin1(money(value, bill["currency"])), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    _table(pdf, "Reads used", ["meter", "from", "to", "consumption"], [25, 65, 65, 35], read_rows(bill))
    if bill["hold_reasons"]:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 8, "Held: not sent to the customer", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 10)
        for reason in bill["hold_reasons"]:
            pdf.multi_cell(0, 5, _latin1(f"- {hold_reason(reason)}"), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _table(pdf: FPDF, title: str, keys: list[str], widths: list[int], rows: list[dict[str, str]]) -> None:
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    if not rows:
        pdf.cell(0, 6, "none", new_x="LMARGIN", new_y="NEXT")
        return
    with pdf.table(
        col_widths=widths,
        text_align=["LEFT"] + ["RIGHT"] * (len(keys) - 1) if title == "Charges" else "LEFT",
        first_row_as_headings=True,
    ) as table:
        table.row([k.capitalize() for k in keys])
        for r in rows:
            table.row([_latin1(r[k]) for k in keys])
    pdf.ln(2)
