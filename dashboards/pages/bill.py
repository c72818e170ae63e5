"""A bill as its customer would read it, and its PDF (``/bill/<id>.pdf``).

Account, period, tariff, lines with taxes, totals, the reads used and their quality, hold reasons in words.
"""

from __future__ import annotations

from dash import html

from dashboards.bills import hold_reason, line_rows, money, quantity, read_rows, tariff_text, when
from dashboards.components import static_table
from dashboards.queries import Queries


def layout(q: Queries, ident: str) -> html.Div:
    """The page for bill ``ident`` (rendered whole when opened: a bill does not change)."""
    if not ident.isdigit():
        return html.Div([html.H2("Bill"), html.P(f"'{ident}' is not a bill number.", id="bill-missing")])
    bill = q.bill(int(ident))
    if bill is None:
        return html.Div(
            [
                html.H2("Bill"),
                html.P(f"There is no bill {ident}.", id="bill-missing"),
                html.A("Back to billing", href="/billing"),
            ]
        )
    cur = bill["currency"]
    facts = [
        ("Account", f"{bill['account']}" + (f" — {bill['customer']}" if bill["customer"] else "")),
        ("Service point", " · ".join(str(x) for x in (bill["service_point"], bill["street"]) if x) or "—"),
        ("Period", f"{when(bill['period_start'])} to {when(bill['period_end'])} ({bill['days']} days)"),
        ("Issued", when(bill["issue_date"]) + (f", due {when(bill['due_date'])}" if bill["due_date"] else "")),
        ("Tariff", tariff_text(bill)),
        ("Consumption", quantity(bill["consumption"], bill["unit"])),
        ("Status", bill["status"] + (f" ({bill['kind']})" if bill["kind"] != "regular" else "")),
    ]
    holds = [html.Li(hold_reason(r)) for r in bill["hold_reasons"] or []]
    return html.Div(
        [
            html.H2(f"Bill {bill['id']}", id="bill-title"),
            html.A("Download PDF", href=f"/bill/{bill['id']}.pdf", id="bill-pdf", className="button"),
            html.Table([html.Tr([html.Th(k), html.Td(v)]) for k, v in facts], className="facts", id="bill-facts"),
            html.Div([html.H4("Held: not sent to the customer"), html.Ul(holds, id="bill-holds")], className="panel")
            if holds
            else "",
            html.Div(
                [
                    html.H4("Charges"),
                    static_table(
                        "bill-lines",
                        line_rows(bill),
                        [("description", "what"), ("quantity", "quantity"), ("rate", "rate"), ("amount", "amount")],
                        page_size=30,
                    ),
                    html.Table(
                        [
                            html.Tr([html.Th("Subtotal"), html.Td(money(bill["subtotal"], cur))]),
                            html.Tr([html.Th("Taxes"), html.Td(money(bill["tax"], cur))]),
                            html.Tr([html.Th("Total"), html.Td(html.B(money(bill["total"], cur)), id="bill-total")]),
                        ],
                        className="facts",
                    ),
                ],
                className="panel",
            ),
            html.Div(
                [
                    html.H4("Reads used"),
                    static_table(
                        "bill-reads",
                        read_rows(bill),
                        [
                            ("meter", "meter"),
                            ("from", "from (index, when, quality)"),
                            ("to", "to (index, when, quality)"),
                            ("consumption", "consumption"),
                        ],
                        page_size=10,
                    )
                    if bill["reads"]
                    else html.P("This bill used no meter read (a fixed charge only).", className="muted"),
                ],
                className="panel",
            ),
            html.A("Back to billing", href="/billing"),
        ]
    )
