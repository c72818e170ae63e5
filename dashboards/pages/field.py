"""Field work: open work orders, service-level breaches and a map of where the open orders are."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html

from dashboards.components import (
    figure,
    in_words,
    kpi,
    lonlat_map,
    message_figure,
    page_count,
    paging_inputs,
    records,
    server_table,
    static_table,
)
from dashboards.queries import Queries

PAGE = "/field"
#: Map colours: what a dispatcher looks at first.
URGENCY = (
    ("overdue", "#c62828"),
    ("not assigned", "#f9a825"),
    ("assigned", "#1565c0"),
    ("awaiting meter command", "#6a1b9a"),
)


def layout(q: Queries, refresh_ms: int = 30_000) -> html.Div:
    """The page (callbacks fill it; refreshed every ``refresh_ms``)."""
    return html.Div(
        [
            html.H2("Field work"),
            dcc.Interval(id="fw-tick", interval=refresh_ms, n_intervals=0),
            dcc.Store(id="fw-changed", data=0),
            html.Div(id="fw-kpis", className="kpis"),
            html.Div(
                [
                    html.Div(dcc.Graph(id="fw-map", config={"displaylogo": False}), className="panel half"),
                    html.Div(dcc.Graph(id="fw-by-kind", config={"displaylogo": False}), className="panel half"),
                ],
                className="row",
            ),
            html.Div(
                [
                    html.H4("Service-level breaches"),
                    html.P(
                        "Fault reports not given to a crew within 5 minutes of being reported, "
                        "complaints recorded more "
                        "than 10 minutes after they were received, and open orders past their due "
                        "time (the same list as "
                        "'releve work sla').",
                        className="muted",
                    ),
                    html.Div(id="fw-breaches"),
                ],
                className="panel",
            ),
            html.Div(
                [
                    html.H4("Open work orders"),
                    html.P(
                        "Overdue first, then by priority (1 most urgent) and due time; sort and filter on the server. "
                        "Pick a row to give the order to a crew (the first assignment is its routing "
                        "time); complete or "
                        "cancel with 'releve work'.",
                        className="muted",
                    ),
                    server_table(
                        "fw-orders",
                        [
                            ("order", "order"),
                            ("kind", "kind"),
                            ("state", "state"),
                            ("priority", "priority"),
                            ("assignee", "assignee"),
                            ("reported", "reported (UTC)"),
                            ("due", "due (UTC)"),
                            ("late", "late"),
                            ("meter", "meter"),
                            ("account", "account"),
                            ("area", "area"),
                            ("command", "meter command"),
                            ("description", "what"),
                        ],
                        page_size=12,
                        row_selectable="single",
                        selected_rows=[],
                    ),
                    html.Div(
                        [
                            html.Label("Give the selected order to"),
                            dcc.Input(
                                id="fw-assignee", type="text", placeholder="crew or person", style={"width": "200px"}
                            ),
                            html.Button("Assign", id="fw-assign", n_clicks=0),
                        ],
                        className="form-row",
                    ),
                    html.Div(id="fw-assign-result"),
                ],
                className="panel",
            ),
        ]
    )


def urgency(row: dict[str, Any]) -> str:
    """Which map colour an open order gets."""
    if row["overdue"]:
        return "overdue"
    if row["status"] == "awaiting_command":
        return "awaiting meter command"
    return "assigned" if row["assignee"] else "not assigned"


def map_figure(points: list[dict[str, Any]]) -> go.Figure | dict[str, Any]:
    """Open orders at their service points, coloured by urgency."""
    if not points:
        return message_figure("no open order at a place with coordinates")
    groups = [(name, colour, [p for p in points if urgency(p) == name]) for name, colour in URGENCY]
    return lonlat_map(
        f"Open work orders ({len(points):,})",
        [g for g in groups if g[2]],
        height=360,
        text=lambda p: (
            f"#{p['id']} {p['kind']} · {p['place']}"
            + "".join(f" · {x}" for x in (p["meter"], p["account"]) if x)
            + (f" · {p['assignee']}" if p["assignee"] else "")
        ),
    )


def kind_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Open orders per kind, stacked by state."""
    if not rows:
        return message_figure("no open work order", height=360)
    fig = figure("Open work orders by kind and state", height=360)
    kinds = sorted({r["kind"] for r in rows})
    colours = {"open": "#f9a825", "assigned": "#1565c0", "awaiting meter command": "#6a1b9a"}
    for state in ("open", "assigned", "awaiting meter command"):
        counts = {r["kind"]: r["n"] for r in rows if r["state"] == state}
        if counts:
            fig.add_bar(name=state, x=kinds, y=[counts.get(k, 0) for k in kinds], marker_color=colours[state])
    fig.update_layout(barmode="stack", yaxis_title="orders")
    most = max(sum(r["n"] for r in rows if r["kind"] == k) for k in kinds)
    fig.update_yaxes(rangemode="tozero", tickformat=",d", dtick=1 if most <= 10 else None)  # whole orders only
    fig.update_xaxes(type="category")
    return fig


def breach_rows(breaches: list[Any]) -> list[dict[str, Any]]:
    """Breaches as table rows, in words."""
    return [
        {
            "what": f"{b.what} {b.id}",
            "target": b.target.replace("_", " "),
            "late": in_words(b.late_by),
            "detail": b.detail,
        }
        for b in breaches
    ]


def register(app: Dash, q: Queries) -> None:
    """The field page's callbacks (each checks the session's role)."""
    from dashboards.auth import require

    @app.callback(
        Output("fw-kpis", "children"),
        Output("fw-map", "figure"),
        Output("fw-by-kind", "figure"),
        Output("fw-breaches", "children"),
        Input("fw-tick", "n_intervals"),
        Input("fw-changed", "data"),
    )
    def overview(_: int, _changed: int) -> tuple[Any, ...]:
        require(PAGE)
        s = q.field.summary()
        breaches = q.field.breaches()
        kpis = [
            kpi("open work orders", f"{s['open']:,}", "kpi-open-orders"),
            kpi("not assigned", f"{s['unassigned']:,}", "kpi-unassigned", "warn" if s["unassigned"] else ""),
            kpi("past their due time", f"{s['overdue']:,}", "kpi-overdue-orders", "bad" if s["overdue"] else ""),
            kpi("awaiting a meter command", f"{s['awaiting_command']:,}", "kpi-awaiting-command"),
            kpi("service-level breaches", f"{len(breaches):,}", "kpi-breaches", "bad" if breaches else "good"),
        ]
        columns = [("what", "what"), ("target", "target"), ("late", "missed by"), ("detail", "detail")]
        table: Any = static_table("fw-breaches-table", breach_rows(breaches), columns, page_size=8)
        if not breaches:
            table = html.P(
                "No breach: every fault routed in time, every complaint recorded in time, no open order "
                "past its due time.",
                className="ok",
                id="fw-no-breach",
            )
        return kpis, map_figure(q.field.map_points()), kind_figure(q.field.by_kind()), table

    @app.callback(
        Output("fw-orders", "data"),
        Output("fw-orders", "page_count"),
        Output("fw-orders", "selected_rows"),
        *paging_inputs("fw-orders"),
        Input("fw-tick", "n_intervals"),
        Input("fw-changed", "data"),
    )
    def orders(page: int, size: int, sort_by: Any, filter_query: str, _: int, _changed: int) -> tuple[Any, ...]:
        require(PAGE)
        rows, total = q.field.open_orders(page or 0, size, sort_by, filter_query)
        return records(rows), page_count(total, size), []

    @app.callback(
        Output("fw-assign-result", "children"),
        Output("fw-changed", "data"),
        Input("fw-assign", "n_clicks"),
        State("fw-orders", "selected_rows"),
        State("fw-orders", "data"),
        State("fw-assignee", "value"),
        State("fw-changed", "data"),
        prevent_initial_call=True,
    )
    def give(
        _: int, selected: list[int], data: list[dict[str, Any]], assignee: str | None, changed: int
    ) -> tuple[Any, ...]:
        from billing.workorders import WorkOrderError

        who = require(PAGE)
        if not selected or not data or selected[0] >= len(data):
            return html.P("Pick an order first.", className="error", id="fw-assign-error"), changed
        if not (assignee or "").strip():
            return html.P("Say whom to give it to.", className="error", id="fw-assign-error"), changed
        order = int(data[selected[0]]["order"])
        try:
            q.field.assign(order, assignee or "", who)
        except (WorkOrderError, ValueError) as exc:
            return html.P(str(exc), className="error", id="fw-assign-error"), changed
        return html.P(f"Order {order} given to {(assignee or '').strip()}.", className="ok", id="fw-assign-ok"), (
            changed or 0
        ) + 1
