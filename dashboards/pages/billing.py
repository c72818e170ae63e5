"""Billing: cycle status, held bills and why, estimated share per cycle, and the VEE review queue."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html

from dashboards.bills import hold_reason, money, quantity
from dashboards.components import (
    figure,
    kpi,
    message_figure,
    page_count,
    paging_inputs,
    records,
    server_table,
    static_table,
)
from dashboards.queries import Queries

PAGE = "/billing"


def layout(q: Queries) -> html.Div:
    """The page (callbacks fill it)."""
    return html.Div(
        [
            html.H2("Billing"),
            dcc.Store(id="bl-changed", data=0),
            html.Div(id="bl-kpis", className="kpis"),
            html.Div(
                [
                    html.Div([html.H4("Cycles"), html.Div(id="bl-cycles")], className="panel half"),
                    html.Div(dcc.Graph(id="bl-share", config={"displaylogo": False}), className="panel half"),
                ],
                className="row",
            ),
            html.Div(
                [
                    html.H4("Issued bills"),
                    html.P(
                        "Newest first; the bill column opens the bill (lines, taxes, the reads used, PDF).",
                        className="muted",
                    ),
                    server_table(
                        "bl-issued",
                        [
                            ("open", "bill"),
                            ("account", "account"),
                            ("customer", "customer"),
                            ("cycle", "cycle"),
                            ("period_end", "period end"),
                            ("issue_date", "issued"),
                            ("consumption", "consumption"),
                            ("total", "total"),
                        ],
                        page_size=10,
                        markdown={"open"},
                    ),
                ],
                className="panel",
            ),
            html.Div(
                [
                    html.H4("Bills on hold and why"),
                    server_table(
                        "bl-held",
                        [
                            ("open", "bill"),
                            ("account", "account"),
                            ("cycle", "cycle"),
                            ("period_end", "period end"),
                            ("consumption", "consumption"),
                            ("total", "total"),
                            ("estimated", "estimated %"),
                            ("reasons", "hold reasons"),
                        ],
                        page_size=10,
                        markdown={"open"},
                    ),
                ],
                className="panel",
            ),
            html.Div(
                [
                    html.H4("Review queue: open VEE exceptions"),
                    html.P(
                        "Pick a row, then accept a suggestion, type an agreed value, or reject (the read stands). "
                        "Every decision is a new audited version; raw reads are never changed.",
                        className="muted",
                    ),
                    server_table(
                        "bl-queue",
                        [
                            ("id", "id"),
                            ("serial", "meter"),
                            ("channel", "channel"),
                            ("ts", "at (UTC)"),
                            ("rule", "rule"),
                            ("severity", "severity"),
                            ("value", "value"),
                            ("suggestions", "suggestions"),
                            ("message", "message"),
                        ],
                        page_size=10,
                        row_selectable="single",
                        selected_rows=[],
                    ),
                    html.Div(id="bl-decision"),
                    html.Div(
                        [
                            html.Label("Suggestion"),
                            dcc.Dropdown(id="bl-choice", options=[], style={"width": "180px"}),
                            html.Label("Agreed value"),
                            dcc.Input(id="bl-value", type="number", debounce=False),
                            html.Label("Note"),
                            dcc.Input(id="bl-note", type="text", style={"width": "240px"}),
                            html.Button("Accept suggestion", id="bl-accept", n_clicks=0),
                            html.Button("Edit to value", id="bl-edit", n_clicks=0, className="secondary"),
                            html.Button("Reject (read stands)", id="bl-reject", n_clicks=0, className="danger"),
                        ],
                        className="form-row",
                    ),
                    html.Div(id="bl-result"),
                ],
                className="panel",
            ),
        ]
    )


def share_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Share of estimated or edited reads behind the live bills, per cycle and period."""
    if not rows:
        return message_figure("no bill run yet")
    fig = figure("Estimated or edited share of billed reads, per cycle")
    for cycle in sorted({r["cycle"] for r in rows}):
        sel = [r for r in rows if r["cycle"] == cycle]
        fig.add_bar(
            name=f"cycle {cycle}",
            x=[str(r["period_end"]) for r in sel],
            y=[100 * float(r["share"] or 0) for r in sel],
            hovertemplate="%{y:.2f} % of the reads billed<extra></extra>",
        )
    fig.update_layout(barmode="group", yaxis_title="estimated or edited, % of billed reads")
    fig.update_yaxes(ticksuffix=" %", rangemode="tozero", tickformat=".1f")
    fig.update_xaxes(type="category", title=None)
    return fig


def bill_row(r: dict[str, Any]) -> dict[str, Any]:
    """A bill as a table row: a link to its page, money and consumption with their units, reasons in words."""
    out = {**r, "open": f"[{r['bill']}](/bill/{r['bill']})", "consumption": quantity(r["consumption"], r["unit"])}
    if "currency" in r:
        out["total"] = money(r["total"], r["currency"])
    if "reasons" in r:
        out["reasons"] = " · ".join(hold_reason(x) for x in (r["reasons"] or "").split(" | ") if x)
    if r.get("estimated") is not None:
        out["estimated"] = f"{float(r['estimated']):.1f} %"
    return out


def register(app: Dash, q: Queries) -> None:
    """The billing page's callbacks (each checks the session's role)."""
    from dashboards.auth import require

    @app.callback(
        Output("bl-kpis", "children"),
        Output("bl-cycles", "children"),
        Output("bl-share", "figure"),
        Input("bl-changed", "data"),
    )
    def overview(_: int) -> tuple[Any, ...]:
        require(PAGE)
        cycles = q.cycles()
        held = sum(int(c["n_held"] or 0) for c in cycles)
        kpis = [
            kpi("cycles", str(len(cycles)), "kpi-cycles"),
            kpi("bills held (latest runs)", str(held), "kpi-held", "warn" if held else ""),
            kpi("open VEE exceptions", f"{q.open_exception_count():,}", "kpi-bl-open-exceptions"),
        ]
        table = static_table(
            "bl-cycles-table",
            cycles,
            [
                ("cycle", "cycle"),
                ("accounts", "accounts"),
                ("status", "status"),
                ("period_start", "from"),
                ("period_end", "to"),
                ("issue_date", "issue date"),
                ("n_issued", "bills issued"),
                ("n_held", "held"),
                ("n_prepaid", "prepaid"),
            ],
            page_size=8,
        )
        return kpis, table, share_figure(q.estimated_share())

    @app.callback(
        Output("bl-held", "data"),
        Output("bl-held", "page_count"),
        *paging_inputs("bl-held"),
        Input("bl-changed", "data"),
    )
    def held(page: int, size: int, sort_by: Any, filter_query: str, _: int) -> tuple[Any, ...]:
        require(PAGE)
        rows, total = q.held_bills(page or 0, size, sort_by, filter_query)
        return records([bill_row(r) for r in rows]), page_count(total, size)

    @app.callback(
        Output("bl-issued", "data"),
        Output("bl-issued", "page_count"),
        *paging_inputs("bl-issued"),
        Input("bl-changed", "data"),
    )
    def issued(page: int, size: int, sort_by: Any, filter_query: str, _: int) -> tuple[Any, ...]:
        require(PAGE)
        rows, total = q.issued_bills(page or 0, size, sort_by, filter_query)
        return records([bill_row(r) for r in rows]), page_count(total, size)

    @app.callback(
        Output("bl-queue", "data"),
        Output("bl-queue", "page_count"),
        Output("bl-queue", "selected_rows"),
        *paging_inputs("bl-queue"),
        Input("bl-changed", "data"),
    )
    def queue(page: int, size: int, sort_by: Any, filter_query: str, _: int) -> tuple[Any, ...]:
        require(PAGE)
        rows, total = q.review_queue(page or 0, size, sort_by, filter_query)
        return records(rows), page_count(total, size), []

    @app.callback(
        Output("bl-decision", "children"),
        Output("bl-choice", "options"),
        Output("bl-choice", "value"),
        Input("bl-queue", "selected_rows"),
        State("bl-queue", "data"),
    )
    def pick(selected: list[int], data: list[dict[str, Any]]) -> tuple[Any, ...]:
        require(PAGE)
        if not selected or not data or selected[0] >= len(data):
            return html.P("No exception selected.", className="muted"), [], None
        exc = q.exception(int(data[selected[0]]["id"]))
        if exc is None:
            return html.P("That exception is gone.", className="error"), [], None
        sugg = list(exc["suggestions"] or [])
        options = [{"label": f"{k}: {v:g}", "value": k} for k, v in enumerate(sugg, start=1)]
        text = html.Div(
            [
                html.B(f"Exception {exc['id']} — meter "),
                dcc.Link(exc["serial"], href=f"/meter/{exc['serial']}"),
                html.Span(
                    f" · {exc['channel']} at {exc['ts']:%Y-%m-%d %H:%M} UTC · {exc['rule']} ({exc['severity']}) · "
                    f"value {exc['value']}"
                    + (
                        f" · expected between {exc['read_lo']:g} and {exc['read_hi']:g}"
                        if exc["read_lo"] is not None and exc["read_hi"] is not None
                        else ""
                    )
                ),
                html.Div(exc["message"], className="muted"),
            ],
            id="bl-selected",
            title=f"exception {exc['id']}",
        )
        return text, options, (1 if sugg else None)

    @app.callback(
        Output("bl-result", "children"),
        Output("bl-changed", "data"),
        Input("bl-accept", "n_clicks"),
        Input("bl-edit", "n_clicks"),
        Input("bl-reject", "n_clicks"),
        State("bl-queue", "selected_rows"),
        State("bl-queue", "data"),
        State("bl-choice", "value"),
        State("bl-value", "value"),
        State("bl-note", "value"),
        State("bl-changed", "data"),
        prevent_initial_call=True,
    )
    def decide(
        _a: int,
        _e: int,
        _r: int,
        selected: list[int],
        data: list[dict[str, Any]],
        choice: int | None,
        value: float | None,
        note: str | None,
        changed: int,
    ) -> tuple[Any, ...]:
        from dash import ctx

        from analytics.vee.review import ReviewError

        who = require(PAGE)
        if not selected or not data or selected[0] >= len(data):
            return html.P("Select an exception first.", className="error"), changed
        action = {"bl-accept": "accept", "bl-edit": "edit", "bl-reject": "reject"}[str(ctx.triggered_id)]
        try:
            text = q.review(
                action,
                int(data[selected[0]]["id"]),
                f"dashboard:{who}",
                value=None if value is None else float(value),
                choice=int(choice or 1),
                note=note or "",
            )
        except ReviewError as exc:
            return html.P(str(exc), className="error", id="bl-result-text"), changed
        return html.P(text, className="ok", id="bl-result-text"), (changed or 0) + 1
