"""Fraud unit: the ranked inspection list, the evidence, the energy balance, tonight's route and visit outcomes."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html

from dashboards.components import figure, message_figure, page_count, paging_inputs, records, server_table, static_table
from dashboards.queries import Queries

PAGE = "/fraud"
RESULTS = [
    ("fraud", "fraud found"),
    ("meter_fault", "meter fault"),
    ("nothing", "nothing found"),
    ("no_access", "no access"),
]


def layout(q: Queries, serial: str = "") -> html.Div:
    """The page (callbacks fill it); with ``serial`` (``/fraud/<serial>``), that meter's evidence is shown."""
    runs = q.theft_runs()
    if not runs:
        return html.Div(
            [html.H2("Fraud unit"), html.P("No theft ranking yet: run `releve theft rank`.", id="fr-no-run")]
        )
    run_opts = [
        {
            "label": f"run {r['id']} · {r['created_at']:%Y-%m-%d %H:%M} · {r['n_candidates']} candidates "
            f"· {r['model']}",
            "value": r["id"],
        }
        for r in runs
    ]
    facets = q.candidate_facets(runs[0]["id"])
    areas = [a["code"] for a in q.areas()]
    # The balance chart shows the area of the candidate in view: the one in the address, else the top one's.
    listed = q.candidate(runs[0]["id"], serial) if serial else None
    top, _ = q.candidates(runs[0]["id"], 0, 1, None, None)
    first_area = balance_area(listed["area"] if listed else None, areas) or balance_area(
        top[0]["area"] if top else None, areas
    )
    return html.Div(
        [
            html.H2("Fraud unit"),
            dcc.Store(id="fr-changed", data=0),
            html.Div(
                [
                    html.Label("Ranking"),
                    dcc.Dropdown(
                        id="fr-run", options=run_opts, value=runs[0]["id"], clearable=False, style={"width": "440px"}
                    ),
                    html.Label("Area"),
                    dcc.Dropdown(id="fr-area", options=facets["areas"] or [], style={"width": "130px"}),
                    html.Label("Commodity"),
                    dcc.Dropdown(id="fr-commodity", options=facets["commodities"] or [], style={"width": "130px"}),
                    html.Label("Signal"),
                    dcc.Dropdown(id="fr-signal", options=facets["signals"] or [], style={"width": "150px"}),
                    html.Label("Min. expected value"),
                    dcc.Input(id="fr-min-value", type="number", style={"width": "90px"}),
                    dcc.Checklist(id="fr-hide", options=[{"label": " hide visited", "value": "hide"}], value=[]),
                ],
                className="form-row",
            ),
            html.Div(id="fr-kpis", className="kpis"),
            html.Div(
                [
                    html.H4("Whom to visit: the run's ranked list"),
                    html.P(
                        "In the order the ranking chose (see its parameters); sort any column on the server, e.g. "
                        "expected value of the visit; filter with the header row.",
                        className="muted",
                    ),
                    server_table(
                        "fr-list",
                        [
                            ("rank", "rank"),
                            ("serial", "meter"),
                            ("area", "area"),
                            ("commodity", "commodity"),
                            ("signal", "main signal"),
                            ("risk", "risk"),
                            ("expected_value", "expected value"),
                            ("unbilled", "unbilled energy"),
                            ("reasons", "reasons"),
                            ("visited", "last visit"),
                        ],
                        page_size=10,
                        row_selectable="single",
                        selected_rows=[],
                        style_cell_conditional=[{"if": {"column_id": "reasons"}, "minWidth": "420px"}],
                    ),
                    html.Div(
                        [
                            html.Label("Tonight's route: top"),
                            dcc.Input(id="fr-top", type="number", value=20, min=1, max=500, style={"width": "70px"}),
                            html.Span("not yet visited candidates (filters above apply)", className="muted"),
                            html.Button("Download route CSV", id="fr-export", n_clicks=0),
                            dcc.Download(id="fr-download"),
                        ],
                        className="form-row",
                    ),
                ],
                className="panel",
            ),
            html.Div(
                [
                    html.Div(
                        [
                            html.H4("Evidence"),
                            html.Div(
                                id="fr-evidence",
                                children=evidence_view(q, runs[0]["id"], serial)
                                if serial
                                else html.P("Select a row to see why it is listed.", className="muted"),
                            ),
                        ],
                        className="panel half",
                    ),
                    html.Div(
                        [
                            html.H4("Record a visit outcome"),
                            html.Div(
                                [
                                    html.Label("Meter"),
                                    dcc.Input(
                                        id="fr-visit-serial",
                                        type="text",
                                        value=serial or None,
                                        style={"width": "120px"},
                                    ),
                                    html.Label("Campaign"),
                                    dcc.Input(
                                        id="fr-visit-campaign",
                                        type="text",
                                        value=f"night {date.today():%Y-%m-%d}",
                                        style={"width": "200px"},
                                    ),
                                ],
                                className="form-row",
                            ),
                            dcc.RadioItems(
                                id="fr-visit-result",
                                options=[{"label": f" {t}", "value": v} for v, t in RESULTS],
                                value=None,  # no default: an outcome is what the inspector saw, never assumed
                                inline=True,
                                style={"margin": "6px 0"},
                            ),
                            html.Div(
                                [
                                    html.Label("Note"),
                                    dcc.Input(id="fr-visit-note", type="text", style={"width": "360px"}),
                                    html.Button("Record outcome", id="fr-visit-save", n_clicks=0),
                                ],
                                className="form-row",
                            ),
                            html.Div(id="fr-visit-result-text"),
                            html.Div(id="fr-visits"),
                        ],
                        className="panel half",
                    ),
                ],
                className="row",
            ),
            html.Div(
                [
                    html.Div(
                        [
                            html.Label("Energy balance of area"),
                            dcc.Dropdown(
                                id="fr-balance-area",
                                options=areas,
                                value=first_area or (areas or [None])[0],
                                clearable=False,
                                style={"width": "160px"},
                            ),
                        ],
                        className="form-row",
                    ),
                    dcc.Graph(id="fr-balance", config={"displaylogo": False}),
                ],
                className="panel",
            ),
        ]
    )


UNITS = {"electricity": "kWh", "water": "m³"}


def balance_area(area: str | None, areas: list[str]) -> str | None:
    """The area whose energy balance to chart for a candidate of ``area`` (None: it has none the page knows)."""
    return area if area and area in areas else None


def _day(start: str, k: int) -> str:
    return (date.fromisoformat(start) + timedelta(days=k)).isoformat()


def evidence_view(q: Queries, run: int, serial: str) -> Any:
    """Why ``serial`` is on the list of ``run``: rank, reasons in words, the evidence chart, signal weights."""
    c = q.candidate(run, serial)
    if c is None:
        return html.P(f"Meter {serial} is not on the list of run {run}.", className="error", id="fr-not-listed")
    ev = c["evidence"] or {}
    comps = ev.get("components") or {}
    return html.Div(
        [
            html.Div(
                [
                    html.B(f"#{c['rank']} meter "),
                    dcc.Link(serial, href=f"/meter/{serial}"),
                    html.Span(
                        f" · area {c['area']} · {c['commodity']} · {c['customer_class']} · risk "
                        f"{c['risk']:.2f} · expected value {c['expected_value']:,.2f} {q.currency()} · unbilled "
                        f"{c['unbilled_energy']:,.1f} {UNITS.get(c['commodity'], '')}"
                    ),
                ],
                id="fr-evidence-head",
            ),
            html.Ul([html.Li(r) for r in c["reasons"]], className="reasons", id="fr-reasons"),
            dcc.Graph(figure=evidence_figure(ev), config={"displaylogo": False}),
            static_table(
                "fr-components",
                [{"signal": k.replace("_", " "), "weight": v} for k, v in comps.items() if v],
                [("signal", "signal"), ("weight", "contribution")],
                page_size=8,
            ),
        ]
    )


def evidence_figure(ev: dict[str, Any]) -> go.Figure:
    """Daily consumption recorded vs expected, the drop window and the events, from the stored evidence."""
    daily = ev.get("daily") or {}
    if not daily.get("recorded"):
        return message_figure("no daily series in the evidence", height=280)
    start = str(daily["from"])[:10]
    x = [_day(start, k) for k in range(len(daily["recorded"]))]
    keep = sum(1 for d in x if str(d)[:10] < date.today().isoformat())  # today is under way: not a day yet
    unit = {"m3": "m³"}.get(daily.get("unit", ""), daily.get("unit", ""))
    fig = figure(f"Daily consumption ({unit})" if unit else "Daily consumption", height=280)
    fig.add_scatter(x=x[:keep], y=daily["recorded"][:keep], name="recorded", mode="lines", line={"color": "#1565c0"})
    if daily.get("expected"):
        fig.add_scatter(
            x=x[:keep],
            y=daily["expected"][:keep],
            name="expected",
            mode="lines",
            line={"color": "#9e9e9e", "dash": "dash"},
        )
    fig.update_yaxes(title=f"{unit} per day" if unit else "per day", tickformat=",.1f", rangemode="tozero")
    drop = ev.get("drop")
    if drop:
        fig.add_vrect(
            x0=str(drop["start"])[:10],
            x1=str(drop["end"])[:10],
            fillcolor="#ef9a9a",
            opacity=0.3,
            line_width=0,
            annotation_text="drop",
            annotation_position="top left",
        )
    for e in ev.get("events") or []:
        fig.add_vline(x=str(e["ts"])[:10], line_color="#d81b60", line_dash="dot")
    return fig


def balance_figure(rows: list[dict[str, Any]], area: str) -> go.Figure:
    """Feeder vs the sum of customers, and the loss share against the technical baseline."""
    if not rows:
        return message_figure(f"no daily data for area {area}: the feeder or its customers have no register reads")
    fig = figure(f"Energy balance of {area}: feeder vs Σ customers", height=340)
    days = [r["day"] for r in rows]
    fig.add_scatter(
        x=days,
        y=[r["feeder"] for r in rows],
        name="feeder / bulk meter",
        mode="lines",
        line={"color": "#17324d", "width": 2},
    )
    fig.add_scatter(
        x=days,
        y=[r["customers"] for r in rows],
        name="Σ customer meters",
        mode="lines",
        line={"color": "#42a5f5", "width": 2},
    )
    loss = [None if not r["feeder"] else 100 * (r["feeder"] - (r["customers"] or 0)) / r["feeder"] for r in rows]
    fig.add_scatter(x=days, y=loss, name="loss %", mode="lines", yaxis="y2", line={"color": "#c62828"})
    fig.add_scatter(
        x=days,
        y=[float(r["technical_pct"] or 0) for r in rows],
        name="technical baseline %",
        mode="lines",
        yaxis="y2",
        line={"color": "#c62828", "dash": "dot"},
    )
    unit = "kWh" if rows[0].get("commodity") == "electricity" else "m³"
    fig.update_layout(
        yaxis={"title": f"{unit} per day", "tickformat": ",.0f", "rangemode": "tozero"},
        yaxis2={
            "title": "loss",
            "overlaying": "y",
            "side": "right",
            "showgrid": False,
            "ticksuffix": " %",
            "tickformat": ".0f",
            "nticks": 8,
        },
    )
    return fig


def register(app: Dash, q: Queries) -> None:
    """The fraud page's callbacks (each checks the session's role)."""
    from dashboards.auth import require

    filters = [
        Input("fr-run", "value"),
        Input("fr-area", "value"),
        Input("fr-commodity", "value"),
        Input("fr-signal", "value"),
        Input("fr-min-value", "value"),
        Input("fr-hide", "value"),
    ]

    @app.callback(
        Output("fr-list", "data"),
        Output("fr-list", "page_count"),
        Output("fr-list", "selected_rows"),
        Output("fr-kpis", "children"),
        *paging_inputs("fr-list"),
        *filters,
        Input("fr-changed", "data"),
    )
    def listing(
        page: int,
        size: int,
        sort_by: Any,
        filter_query: str,
        run: int,
        area: str | None,
        commodity: str | None,
        signal: str | None,
        min_value: float | None,
        hide: list[str],
        _: int,
    ) -> tuple[Any, ...]:
        from dashboards.components import kpi

        require(PAGE)
        rows, total = q.candidates(
            run, page or 0, size, sort_by, filter_query, area, commodity, signal, min_value, "hide" in (hide or [])
        )
        facets = q.candidate_facets(run)
        cur = q.currency()
        kpis = [
            kpi("candidates on the list", f"{facets['n']:,}", "kpi-candidates"),
            kpi("matching the filters", f"{total:,}", "kpi-matching"),
            kpi("expected value of the whole list", f"{float(facets['value']):,.0f} {cur}".strip(), "kpi-value"),
        ]
        rows = [
            {
                **r,
                "expected_value": f"{float(r['expected_value']):,.2f} {cur}".strip(),
                "unbilled": f"{float(r['unbilled']):,.1f} {UNITS.get(r['commodity'], '')}".strip(),
                "signal": str(r["signal"] or "—").replace("_", " "),
            }
            for r in rows
        ]
        return records(rows), page_count(total, size), [], kpis

    @app.callback(
        Output("fr-evidence", "children"),
        Output("fr-visit-serial", "value"),
        Output("fr-balance-area", "value"),
        Input("fr-list", "selected_rows"),
        State("fr-list", "data"),
        State("fr-run", "value"),
        State("fr-balance-area", "options"),
        prevent_initial_call=True,
    )
    def evidence(selected: list[int], data: list[dict[str, Any]], run: int, areas: list[Any]) -> tuple[Any, ...]:
        from dash import no_update
        from dash.exceptions import PreventUpdate

        require(PAGE)
        if not selected or not data or selected[0] >= len(data):
            raise PreventUpdate
        row = data[selected[0]]
        # The balance chart follows the selected candidate: its area's feeder against its customers.
        codes = [a["value"] if isinstance(a, dict) else a for a in areas or []]
        area = balance_area(str(row.get("area") or ""), codes)
        return evidence_view(q, run, row["serial"]), row["serial"], area or no_update

    @app.callback(
        Output("fr-visit-result-text", "children"),
        Output("fr-changed", "data"),
        Input("fr-visit-save", "n_clicks"),
        State("fr-run", "value"),
        State("fr-visit-serial", "value"),
        State("fr-visit-result", "value"),
        State("fr-visit-campaign", "value"),
        State("fr-visit-note", "value"),
        State("fr-changed", "data"),
        prevent_initial_call=True,
    )
    def save_visit(
        _: int, run: int, serial: str | None, result: str, campaign: str | None, note: str | None, changed: int
    ) -> tuple[Any, ...]:
        from analytics.theft.store import StoreError

        who = require(PAGE)
        if not serial:
            return html.P("Select a candidate or type its meter serial.", className="error"), changed
        if not result:
            return html.P("Pick what the visit found.", className="error", id="fr-visit-error"), changed
        try:
            iid = q.record_visit(run, serial.strip(), result, who, campaign or "", note or "")
        except StoreError as exc:
            return html.P(str(exc), className="error", id="fr-visit-error"), changed
        return html.P(f"Inspection {iid} recorded: {serial} — {result}.", className="ok", id="fr-visit-ok"), (
            changed or 0
        ) + 1

    @app.callback(
        Output("fr-visits", "children"),
        Input("fr-visit-serial", "value"),
        Input("fr-changed", "data"),
        State("fr-run", "value"),
    )
    def visits(serial: str | None, _: int, run: int) -> Any:
        require(PAGE)
        c = q.candidate(run, serial.strip()) if serial else None
        if not c or not c["visits"]:
            return html.P("No visit recorded for this meter yet." if serial else "", className="muted")
        return static_table(
            "fr-visits-table",
            c["visits"],
            [("visited_at", "visited"), ("result", "result"), ("campaign", "campaign"), ("note", "note")],
            page_size=5,
        )

    @app.callback(
        Output("fr-download", "data"),
        Input("fr-export", "n_clicks"),
        State("fr-run", "value"),
        State("fr-top", "value"),
        State("fr-area", "value"),
        State("fr-commodity", "value"),
        State("fr-signal", "value"),
        prevent_initial_call=True,
    )
    def export(
        _: int, run: int, top: int | None, area: str | None, commodity: str | None, signal: str | None
    ) -> dict[str, Any]:
        require(PAGE)
        text = q.route(run, int(top or 20), area, commodity, signal)
        return {"content": text, "filename": f"route-{datetime.now():%Y-%m-%d}-run{run}.csv", "type": "text/csv"}

    @app.callback(Output("fr-balance", "figure"), Input("fr-balance-area", "value"))
    def balance(area: str | None) -> go.Figure:
        require(PAGE)
        if not area:
            return message_figure("no area")
        return balance_figure(q.energy_balance(area), area)
