"""Accounts: arrears by ageing bucket, the credit-control queue, and each account's ledger (``/accounts/<number>``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, dcc, html

from dashboards.bills import money
from dashboards.components import (
    figure,
    kpi,
    message_figure,
    page_count,
    paging_inputs,
    records,
    server_table,
    table_or_note,
)
from dashboards.queries import Queries

PAGE = "/accounts"
#: Ageing buckets of ``billing.ledger`` in words (column of the position → label).
BUCKETS = {
    "age_current": "current (not yet due, or less than 30 days late)",
    "age_30": "30 to 59 days late",
    "age_60": "60 to 89 days late",
    "age_90": "90 days late or more",
}
BUCKET_SHORT = {"age_current": "current", "age_30": "30–59 days", "age_60": "60–89 days", "age_90": "90+ days"}
BUCKET_COLOURS = {"age_current": "#90a4ae", "age_30": "#f9a825", "age_60": "#ef6c00", "age_90": "#c62828"}
MONEY_COLUMNS = ("balance", "overdue", "age_current", "age_30", "age_60", "age_90", "deposit")


def currency(q: Queries) -> str:
    """The currency amounts are counted in: the credit-control file's, else the one on most bills."""
    return str(q.accounts.config().credit.currency or q.currency())


def layout(q: Queries, number: str = "") -> html.Div:
    """The arrears overview, or with ``number`` that account's ledger."""
    if number:
        return ledger_view(q, number)
    return html.Div(
        [
            html.H2("Accounts"),
            dcc.Store(id="ac-load", data=0),
            html.Div(
                [
                    html.Label("Open account"),
                    dcc.Input(
                        id="ac-number",
                        type="text",
                        debounce=True,
                        placeholder="account number",
                        style={"width": "180px"},
                    ),
                    html.Span(id="ac-number-link"),
                ],
                className="form-row",
            ),
            html.Div(id="ac-kpis", className="kpis"),
            html.Div(
                [
                    html.Div(dcc.Graph(id="ac-ageing", config={"displaylogo": False}), className="panel half"),
                    html.Div(
                        [
                            html.H4("How the figures are made"),
                            html.Ul(
                                [
                                    html.Li(
                                        "Payments and other credits settle the oldest debts first "
                                        "(by due date); a reversed entry "
                                        "and its reversal leave the ageing together."
                                    ),
                                    html.Li(
                                        "A debt is aged by the days past its due date, today: "
                                        "current (not yet due, or less than "
                                        "30 days late), 30–59, 60–89, 90 days or more."
                                    ),
                                    html.Li(
                                        "Owed: the sum of the balances that are positive. Prepaid "
                                        "vending is paid up front and "
                                        "never owed."
                                    ),
                                    html.Li(
                                        "The next step of a case comes from the credit-control file "
                                        "(steps per customer class): "
                                        "it is due once the oldest unpaid debt is late enough and "
                                        "the last step old enough. An open "
                                        "dispute or complaint, or an arrangement in force, holds it; "
                                        "an indigent customer is never "
                                        "disconnected."
                                    ),
                                ],
                                className="muted",
                            ),
                        ],
                        className="panel half",
                    ),
                ],
                className="row",
            ),
            html.Div(
                [
                    html.H4("Accounts in arrears"),
                    html.P(
                        "Debts past their due date, most overdue first; the account column opens its ledger. Sort and "
                        "filter on the server.",
                        className="muted",
                    ),
                    server_table(
                        "ac-arrears",
                        [
                            ("open", "account"),
                            ("customer", "customer"),
                            ("class", "class"),
                            ("balance", "balance"),
                            ("overdue", "overdue"),
                            *[(k, BUCKET_SHORT[k]) for k in BUCKETS],
                            ("oldest_due", "oldest due"),
                            ("deposit", "deposit held"),
                            ("case", "case"),
                            ("holds", "holds"),
                        ],
                        page_size=10,
                        markdown={"open"},
                    ),
                ],
                className="panel",
            ),
            html.Div(
                [
                    html.H4("Credit-control queue: open cases"),
                    html.P(
                        "Each case's last step, the next one and the day it becomes due (the next "
                        "credit-control run on or "
                        "after that day takes it), and what holds it.",
                        className="muted",
                    ),
                    server_table(
                        "ac-queue",
                        [
                            ("case", "case"),
                            ("open", "account"),
                            ("customer", "customer"),
                            ("opened", "opened"),
                            ("overdue", "overdue"),
                            ("oldest_due", "oldest due"),
                            ("last_step", "last step"),
                            ("next_step", "next step"),
                            ("next_due", "next step due"),
                            ("disconnected", "disconnected"),
                            ("holds", "holds"),
                        ],
                        page_size=10,
                        markdown={"open"},
                    ),
                ],
                className="panel",
            ),
        ]
    )


def ageing_figure(summary: dict[str, Any], cur: str) -> go.Figure:
    """What is outstanding per ageing bucket, over every account."""
    if not any(Decimal(str(summary.get(k) or 0)) for k in BUCKETS):
        return message_figure("nothing outstanding")
    fig = figure(f"Outstanding by age ({cur})" if cur else "Outstanding by age")
    fig.add_bar(
        x=[BUCKET_SHORT[k] for k in BUCKETS],
        y=[float(summary[k] or 0) for k in BUCKETS],
        marker_color=[BUCKET_COLOURS[k] for k in BUCKETS],
        showlegend=False,
        text=[money(summary[k] or 0, cur) for k in BUCKETS],
        textposition="auto",
        hovertemplate="%{x}: %{text}<extra></extra>",
    )
    fig.update_yaxes(title=f"outstanding ({cur})" if cur else "outstanding", tickformat=",.0f", rangemode="tozero")
    fig.update_xaxes(type="category")
    return fig


def account_link(number: str) -> str:
    """A Markdown link to an account's ledger."""
    return f"[{number}](/accounts/{number})"


def money_row(r: dict[str, Any], cur: str) -> dict[str, Any]:
    """A row with its amounts as money and the account as a link."""
    out = {**r, **{k: money(r[k], cur) for k in MONEY_COLUMNS if k in r and r[k] is not None}}
    if "account" in r:
        out["open"] = account_link(r["account"])
    return out


# ------------------------------------------------------------------------------------------ one account
def ledger_view(q: Queries, number: str) -> html.Div:
    """One account: who and where, balance and ageing, credit control, holds, its movements and work orders."""
    acc = q.accounts.account(number)
    if acc is None:
        return html.Div(
            [
                html.H2(f"Account {number}"),
                html.P("There is no such account.", className="error", id="ac-missing"),
                html.A("All accounts", href=PAGE),
            ]
        )
    cur = currency(q)
    pos = acc["position"]
    facts = [
        ("Customer", acc["customer"] + (f" · {acc['phone']}" if acc["phone"] else "")),
        ("Service point", " · ".join(str(x) for x in (acc["service_point"], acc["street"]) if x)),
        (
            "Supply",
            f"{acc['commodity']}, class {acc['customer_class']}"
            + (f", meter {acc['meter']}" if acc["meter"] else ", no meter"),
        ),
        (
            "Billing",
            f"cycle {acc['billing_cycle']}, tariff {acc['tariff_code']}" + (", prepaid" if acc["prepaid"] else ""),
        ),
        ("Open", f"since {acc['opened_on']}" + (f", closed {acc['closed_on']}" if acc["closed_on"] else "")),
        ("Indigent register", "yes: free basic units, never disconnected" if acc["indigent"] else "no"),
    ]
    kpis = [
        kpi("balance", money(pos.balance, cur), "kpi-balance", "bad" if pos.overdue > 0 else "good"),
        kpi("overdue", money(pos.overdue, cur), "kpi-account-overdue", "warn" if pos.overdue > 0 else ""),
        kpi("oldest debt due", str(pos.oldest_due or "—"), "kpi-oldest-due"),
        kpi("deposit held", money(pos.deposit, cur), "kpi-deposit"),
        kpi("net of the deposit", money(pos.net, cur), "kpi-net"),
    ]
    if pos.litigation:
        kpis.append(kpi("with litigation", money(pos.litigation, cur), "kpi-litigation", "bad"))
    ages = [
        kpi(BUCKETS[k], money(pos.ageing[b], cur), f"kpi-{k.replace('_', '-')}", "warn" if pos.ageing[b] else "")
        for k, b in zip(BUCKETS, ("current", "30", "60", "90+"), strict=True)
    ]
    case = acc["case"][0] if acc["case"] else None
    holds = [
        f"{d['kind']} {d['id']} open since {d['received_at']:%Y-%m-%d}"
        for d in acc["disputes"]
        if d["status"] == "open"
    ]
    holds += [
        f"arrangement {r['id']} in force ({r['instalments']})" for r in acc["arrangements"] if r["status"] == "active"
    ]
    if acc["indigent"]:
        holds.append("indigent register: never disconnected")
    case_text = "No open credit-control case."
    if case:
        case_text = f"Case {case['id']} open since {case['opened_on']}: {case['last_step']} step(s) taken" + (
            ", supply disconnected" if case["disconnected"] else ""
        )
    actions = [
        {
            **a,
            "action": a["action"].replace("_", " "),
            "overdue": money(a["overdue"], cur),
            "work_order_id": a["work_order_id"] or "",
        }
        for a in acc["actions"]
    ]
    disputes = [
        {**d, "amount": "" if d["amount"] is None else money(d["amount"], cur), "resolution": d["resolution"] or ""}
        for d in acc["disputes"]
    ]
    plans = [{**r, "total": money(r["total"], cur), "instalments": r["instalments"] or ""} for r in acc["arrangements"]]
    orders = [
        {
            **w,
            "kind": w["kind"].replace("_", " "),
            "status": w["status"].replace("_", " "),
            "assignee": w["assignee"] or "",
            "outcome": (w["outcome"] or "").replace("_", " "),
            "completed_at": w["completed_at"] or "",
        }
        for w in acc["orders"]
    ]
    return html.Div(
        [
            html.H2(f"Account {acc['number']}", id="ac-title"),
            html.A("All accounts", href=PAGE),
            dcc.Store(id="ac-account-id", data=acc["id"]),
            html.Table([html.Tr([html.Th(k), html.Td(v)]) for k, v in facts], className="facts", id="ac-facts"),
            html.Div(kpis, className="kpis"),
            html.Div(
                [html.H4(f"Ageing of what is owed on {pos.as_of}"), html.Div(ages, className="kpis")], className="panel"
            ),
            html.Div(
                [
                    html.Div(
                        [
                            html.H4("Credit control"),
                            html.P(case_text, id="ac-case"),
                            html.P("Holds: " + ("; ".join(holds) if holds else "none"), id="ac-holds"),
                            table_or_note(
                                actions,
                                "No credit-control step yet.",
                                "ac-actions",
                                [
                                    ("action_date", "day"),
                                    ("step", "step"),
                                    ("action", "action"),
                                    ("channel", "channel"),
                                    ("overdue", "overdue then"),
                                    ("work_order_id", "work order"),
                                    ("message", "message"),
                                ],
                                page_size=6,
                            ),
                        ],
                        className="panel half",
                    ),
                    html.Div(
                        [
                            html.H4("Disputes and complaints"),
                            table_or_note(
                                disputes,
                                "No dispute or complaint.",
                                "ac-disputes",
                                [
                                    ("id", "id"),
                                    ("kind", "kind"),
                                    ("status", "status"),
                                    ("received_at", "received"),
                                    ("description", "about"),
                                    ("amount", "amount"),
                                    ("resolution", "resolution"),
                                ],
                                page_size=4,
                            ),
                            html.H4("Payment arrangements"),
                            table_or_note(
                                plans,
                                "No payment arrangement.",
                                "ac-arrangements",
                                [
                                    ("id", "id"),
                                    ("created_on", "agreed"),
                                    ("total", "total"),
                                    ("status", "status"),
                                    ("instalments", "instalments (due: amount)"),
                                    ("reason", "why closed"),
                                ],
                                page_size=4,
                            ),
                        ],
                        className="panel half",
                    ),
                ],
                className="row",
            ),
            html.Div(
                [
                    html.H4("Ledger"),
                    html.P(
                        (
                            "Every movement, newest first: bills, payments, deposits, adjustments, refunds, "
                            "penalties, charges and reversals (entries are never changed; a mistake is undone by a "
                            "reversal), and prepaid vending (paid up front, never owed). Balance: the running balance "
                            f"of what is owed, in {cur}."
                        ).replace(", in .", "."),
                        className="muted",
                    ),
                    server_table(
                        "ac-entries",
                        [
                            ("date", "date"),
                            ("kind", "movement"),
                            ("book", "book"),
                            ("reference", "reference"),
                            ("note", "note"),
                            ("due", "due"),
                            ("amount", "amount"),
                            ("units", "units"),
                            ("balance", "balance"),
                        ],
                        page_size=12,
                    ),
                ],
                className="panel",
            ),
            html.Div(
                [
                    html.H4("Work orders"),
                    table_or_note(
                        orders,
                        "No work order.",
                        "ac-orders",
                        [
                            ("id", "order"),
                            ("kind", "kind"),
                            ("status", "state"),
                            ("assignee", "assignee"),
                            ("due_at", "due"),
                            ("completed_at", "done"),
                            ("outcome", "outcome"),
                            ("description", "what"),
                        ],
                        page_size=6,
                    ),
                ],
                className="panel",
            ),
        ]
    )


def register(app: Dash, q: Queries) -> None:
    """The accounts pages' callbacks (each checks the session's role)."""
    from dashboards.auth import require

    @app.callback(Output("ac-kpis", "children"), Output("ac-ageing", "figure"), Input("ac-load", "data"))
    def overview(_: int) -> tuple[Any, ...]:
        require(PAGE)
        s = q.accounts.arrears_summary()
        cur = currency(q)
        kpis = [
            kpi("accounts in arrears", f"{s['accounts']:,}", "kpi-arrears-accounts", "warn" if s["accounts"] else ""),
            kpi("owed (positive balances)", money(s["owed"], cur), "kpi-owed"),
            kpi("overdue", money(s["overdue"], cur), "kpi-overdue", "warn" if s["overdue"] else ""),
            kpi("90 days late or more", money(s["age_90"], cur), "kpi-age-90", "bad" if s["age_90"] else ""),
            kpi("open credit-control cases", f"{s['open_cases']:,}", "kpi-open-cases"),
            kpi("accounts on hold (dispute, arrangement)", f"{s['on_hold']:,}", "kpi-on-hold"),
            kpi("deposits held", money(s["deposits"], cur), "kpi-deposits"),
        ]
        return kpis, ageing_figure(s, cur)

    @app.callback(Output("ac-number-link", "children"), Input("ac-number", "value"), prevent_initial_call=True)
    def find(text: str | None) -> Any:
        require(PAGE)
        text = (text or "").strip()
        if not text:
            return ""
        found = q.accounts.find_accounts(text, 8)
        if not found:
            return html.Span(f"No account starts with {text}.", className="error")
        return [dcc.Link(f"Open {n}", href=f"/accounts/{n}", style={"marginRight": "10px"}) for n in found]

    @app.callback(
        Output("ac-arrears", "data"),
        Output("ac-arrears", "page_count"),
        *paging_inputs("ac-arrears"),
    )
    def arrears(page: int, size: int, sort_by: Any, filter_query: str) -> tuple[Any, ...]:
        require(PAGE)
        rows, total = q.accounts.arrears(page or 0, size, sort_by, filter_query)
        cur = currency(q)
        return records([money_row(r, cur) for r in rows]), page_count(total, size)

    @app.callback(
        Output("ac-queue", "data"),
        Output("ac-queue", "page_count"),
        *paging_inputs("ac-queue"),
    )
    def queue(page: int, size: int, sort_by: Any, filter_query: str) -> tuple[Any, ...]:
        require(PAGE)
        rows, total = q.accounts.credit_queue(page or 0, size, sort_by, filter_query)
        cur = currency(q)
        return records(
            [{**money_row(r, cur), "oldest_due": r["oldest_due"] or "", "next_due": r["next_due"] or ""} for r in rows]
        ), page_count(total, size)

    @app.callback(
        Output("ac-entries", "data"),
        Output("ac-entries", "page_count"),
        *paging_inputs("ac-entries"),
        Input("ac-account-id", "data"),
    )
    def entries(page: int, size: int, sort_by: Any, filter_query: str, account_id: int) -> tuple[Any, ...]:
        require(PAGE)
        rows, total = q.accounts.entries(int(account_id), page or 0, size, sort_by, filter_query)
        cur = currency(q)
        out = [
            {
                **r,
                "amount": money(r["amount"], cur) if r["amount"] is not None else "",
                "balance": money(r["balance"], cur) if r["balance"] is not None else "",
                "units": "" if r["units"] is None else r["units"],
            }
            for r in rows
        ]
        return records(out), page_count(total, size)
