"""Credit-control letters as a PDF for the mailing: one A4 page per letter of the mail channel.

``billing.credit.write_notices`` writes ``notices-<date>.pdf`` beside the CSV (the gateway's list)
and the TXT (the same letters as plain text) when the day has letters to post. Each page: the
customer and account as the window envelope shows them, the day, the step in words, the message
credit control wrote (the same text as the CSV), the amount overdue since the oldest due date and
the charge the step added. Drawn with fpdf2 like the bills (pure Python, no system library).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Protocol

from fpdf import FPDF


class Letter(Protocol):
    """What a page needs of a notice (``billing.credit.Notice``)."""

    account: str
    customer: str
    step: str
    overdue: Decimal
    oldest_due: date | None
    charge: Decimal
    message: str


CLOSING = (
    "If you have paid in the meantime, please ignore this letter. To agree a payment arrangement or to dispute "
    "the amount, contact our customer service: collection is put on hold while a dispute is open."
)


def _latin1(text: str) -> str:
    """fpdf2's core fonts are Latin-1: keep what they can print, spell out the rest."""
    text = text.replace("—", "-").replace("–", "-").replace("’", "'")
    return text.encode("latin-1", "replace").decode("latin-1")


def letters_pdf(letters: Sequence[Letter], on: date, currency: str = "") -> bytes:
    """The letters of day ``on`` as one PDF, a page each, in the order given."""
    cur = f" {currency}" if currency else ""
    pdf = FPDF(format="A4")
    pdf.set_title(f"Credit-control letters {on}")
    pdf.set_author("Relevé")
    pdf.set_auto_page_break(True, margin=20)
    for n in letters:
        pdf.add_page()
        pdf.set_font("Helvetica", "", 11)
        pdf.set_xy(110, 45)  # the address window of a DL envelope
        pdf.multi_cell(80, 6, _latin1(f"{n.customer}\nAccount {n.account}"), new_x="LMARGIN", new_y="NEXT")
        pdf.set_xy(pdf.l_margin, 80)
        pdf.cell(0, 6, _latin1(f"{on.isoformat()}"), align="R", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(6)
        pdf.set_font("Helvetica", "B", 13)
        pdf.cell(
            0,
            8,
            _latin1(f"{n.step.replace('_', ' ').capitalize()} - account {n.account}"),
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.ln(4)
        pdf.set_font("Helvetica", "", 11)
        pdf.multi_cell(0, 6, _latin1(n.message), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        facts = [
            ("Amount overdue", f"{n.overdue}{cur}"),
            ("Oldest unpaid bill due", n.oldest_due.isoformat() if n.oldest_due else "-"),
        ]
        if n.charge:
            facts.append(("Charge added to your account", f"{n.charge}{cur}"))
        for label, value in facts:
            pdf.set_font("Helvetica", "B", 11)
            pdf.cell(70, 7, _latin1(label))
            pdf.set_font("Helvetica", "", 11)
            pdf.cell(0, 7, _latin1(value), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(6)
        pdf.multi_cell(0, 6, _latin1(CLOSING), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
