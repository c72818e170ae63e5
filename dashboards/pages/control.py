"""Control room: which meters talk, by area, collector and line; ingest, spool backlog, alarms, a map."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html
from dash.dash_table.DataTable import DataTable

from dashboards.components import (
    STATE_COLOURS,
    ago,
    figure,
    fmt_bytes,
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
from dashboards.queries import (
    LATE_AFTER,
    LATE_POLLS,
    SILENT_AFTER,
    SILENT_POLLING,
    STATES,
    FleetSnapshot,
    Queries,
)

ALARM_COLUMNS: list[Any] = [
    {"id": "at", "name": "at (UTC)"},
    {"id": "meter", "name": "meter", "presentation": "markdown"},
    {"id": "alarm", "name": "alarm"},
    {"id": "status", "name": "status"},
    {"id": "assignee", "name": "assigned to"},
]
LINK_ROWS = 200  # the worst lines and gateways; the meter table below filters on any of them


def layout(q: Queries, refresh_ms: int) -> html.Div:
    """The page, filled by :func:`register`'s callbacks on load and on every tick."""
    return html.Div(
        [
            dcc.Interval(id="cr-tick", interval=refresh_ms, n_intervals=0),
            html.H2("Control room"),
            html.Div(id="cr-clock", className="muted"),
            html.Div(id="cr-kpis", className="kpis"),
            html.Div(
                [
                    html.Div(dcc.Graph(id="cr-by-area", config={"displaylogo": False}), className="panel half"),
                    html.Div(dcc.Graph(id="cr-map", config={"displaylogo": False}), className="panel half"),
                ],
                className="row",
            ),
            html.Div(
                [
                    html.Div([html.H4("By collector and line"), html.Div(id="cr-by-link")], className="panel half"),
                    html.Div(
                        [html.H4("Collector links and spool backlog"), html.Div(id="cr-links")], className="panel half"
                    ),
                ],
                className="row",
            ),
            html.Div(
                [
                    html.Div(dcc.Graph(id="cr-ingest", config={"displaylogo": False}), className="panel half"),
                    html.Div(
                        [
                            html.H4("Alarms"),
                            html.P(
                                "Select an alarm, then acknowledge it or assign it to someone. The meter column "
                                "opens the meter page.",
                                className="muted",
                            ),
                            dcc.Checklist(
                                id="cr-alarms-open", options=[{"label": " open alarms only", "value": "open"}], value=[]
                            ),
                            DataTable(
                                id="cr-alarms",
                                columns=ALARM_COLUMNS,
                                data=[],
                                page_size=8,
                                row_selectable="single",
                                selected_rows=[],
                                markdown_options={"link_target": "_self"},
                                style_table={"overflowX": "auto"},
                                style_cell={
                                    "textAlign": "left",
                                    "fontSize": "13px",
                                    "padding": "4px 8px",
                                    "whiteSpace": "normal",
                                    "height": "auto",
                                },
                                style_header={"fontWeight": "600", "backgroundColor": "#eef1f5"},
                                style_data_conditional=[
                                    {
                                        "if": {"filter_query": '{status} = "new"'},
                                        "color": "#c62828",
                                        "fontWeight": "600",
                                    }
                                ],
                            ),
                            html.Div(
                                [
                                    html.Button("Acknowledge", id="cr-alarm-ack", n_clicks=0),
                                    dcc.Input(
                                        id="cr-alarm-assignee",
                                        type="text",
                                        placeholder="assign to (login or name)",
                                        maxLength=64,
                                        debounce=True,
                                    ),
                                    html.Button("Assign", id="cr-alarm-assign", n_clicks=0),
                                ],
                                className="form-row",
                            ),
                            html.Div(id="cr-alarm-result"),
                            dcc.Store(id="cr-alarm-changed", data=0),
                        ],
                        className="panel half",
                    ),
                ],
                className="row",
            ),
            html.Div([html.H4("Recent meter events"), html.Div(id="cr-events")], className="panel"),
            html.Div(
                [
                    html.H4("Meters"),
                    html.P(
                        "Filter with the header row (e.g. state = silent, area contains T00); click a serial's row to "
                        "open the meter page.",
                        className="muted",
                    ),
                    server_table(
                        "cr-meters",
                        [
                            ("serial", "serial"),
                            ("commodity", "commodity"),
                            ("model", "model"),
                            ("area", "area"),
                            ("collector", "collector"),
                            ("link", "line / gateway"),
                            ("state", "state"),
                            ("quiet", "no read for"),
                            ("last_seen", "last seen (UTC)"),
                            ("voltage_v", "voltage (V)"),
                            ("current_a", "current (A)"),
                            ("power_kw", "power (kW)"),
                        ],
                        style_data_conditional=[
                            {
                                "if": {"filter_query": f'{{state}} = "{s}"', "column_id": "state"},
                                "color": c,
                                "fontWeight": "600",
                            }
                            for s, c in STATE_COLOURS.items()
                        ],
                    ),
                    html.Div(id="cr-meter-link"),
                ],
                className="panel",
            ),
        ]
    )


def by_area_figure(snap: FleetSnapshot) -> go.Figure:
    """Stacked bars: meters per state in each area."""
    groups = sorted(snap.by("area"), key=lambda r: r["area"])
    if not groups:
        return message_figure("no meters registered")
    fig = figure("Communication state by area")
    for s in STATES:
        fig.add_bar(name=s, x=[g["area"] for g in groups], y=[g[s] for g in groups], marker_color=STATE_COLOURS[s])
    fig.update_layout(barmode="stack", yaxis_title="meters")
    return fig


def map_figure(snap: FleetSnapshot) -> go.Figure | dict[str, Any]:
    """Service points by state on plain lon/lat axes (no tiles: works offline).

    The snapshot holds at most ``MAP_POINTS`` points: every meter in trouble and a sample of the
    others when more have coordinates. Built as a plain figure dictionary: plotly's validation of
    thousands of points costs more than the query behind them. SVG markers, not ``scattergl``: WebGL
    traces compile their shaders with ``new Function``, which the Content-Security-Policy forbids (no
    ``unsafe-eval``), and a browser without WebGL could not draw them either; ``MAP_POINTS`` keeps
    SVG fast enough.
    """
    pts = snap.points
    if not pts:
        return message_figure("no coordinates")
    note = f" (sample of {len(pts):,} of {snap.placed:,})" if snap.placed > len(pts) else ""
    groups = [(s, STATE_COLOURS[s], [r for r in pts if r["state"] == s]) for s in STATES]
    return lonlat_map(
        "Service points by state" + note, groups, text=lambda r: f"{r['serial']} · {r['area']} · {r['link']}"
    )


def ingest_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Rows landed per 10 minutes."""
    if not rows:
        return message_figure("no batch landed in the last 24 h")
    fig = figure("Ingest: rows landed per 10 min (last 24 h)")
    fig.add_bar(x=[r["at"] for r in rows], y=[r["inserted"] for r in rows], name="inserted", marker_color="#1565c0")
    fig.add_bar(
        x=[r["at"] for r in rows],
        y=[r["repeated"] for r in rows],
        name="duplicates / conflicts",
        marker_color="#90a4ae",
    )
    fig.add_bar(x=[r["at"] for r in rows], y=[r["rejected"] for r in rows], name="rejected", marker_color="#c62828")
    fig.update_layout(barmode="stack")
    return fig


def link_state(link: dict[str, Any]) -> str:
    """A collector link's state in words: answering, not answering, or not polled yet."""
    if link["kind"] == "spool":
        return "draining" if link["connected"] else ("not draining" if link["connected"] is False else "idle")
    if link["connected"] is None:
        return "not polled yet"
    if link["kind"] == "mqtt":
        return "connected" if link["connected"] else "disconnected"
    return "connected" if link["connected"] else "not answering"


def alarm_rows(alarms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alarms as table rows: a link to the meter, the alarm in words, its status and who is on it."""
    now = datetime.now(UTC)
    out = []
    for a in alarms:
        if a["acknowledged_at"] is not None:
            status = f"acknowledged by {a['acknowledged_by']} {ago(a['acknowledged_at'], now)}"
        else:
            status = "new"
        out.append(
            {
                "at": a["ts"].strftime("%Y-%m-%d %H:%M:%S"),
                "meter": f"[{a['serial']}](/meter/{a['serial']})",
                "alarm": a["kind"].replace("_", " "),
                "status": status,
                "assignee": a["assignee"] or "nobody",
                "serial": a["serial"],
                "key_ts": a["ts"].isoformat(),
                "key_kind": a["kind"],
            }
        )
    return out


def register(app: Dash, q: Queries) -> None:
    """The control room's callbacks."""

    @app.callback(
        Output("cr-clock", "children"),
        Output("cr-kpis", "children"),
        Output("cr-by-area", "figure"),
        Output("cr-map", "figure"),
        Output("cr-by-link", "children"),
        Output("cr-links", "children"),
        Output("cr-ingest", "figure"),
        Output("cr-events", "children"),
        Input("cr-tick", "n_intervals"),
    )
    def refresh(_: int) -> tuple[Any, ...]:
        snap = q.snapshot()
        counts = snap.counts()
        ingest = q.ingest_summary()
        alarms = q.alarm_count(snap.as_of)
        open_exc = q.open_exception_count()
        clock = (
            f"Fleet clock {snap.as_of:%Y-%m-%d %H:%M} UTC (newest data landed, capped at now) · a meter is late "
            f"after {in_words(LATE_AFTER)} without a read or {LATE_POLLS} failed polls in a row, silent after "
            f"{in_words(SILENT_AFTER)} without a read or {in_words(SILENT_POLLING)} of failed polls · last batch "
            f"{ingest['last_batch']:%Y-%m-%d %H:%M} UTC ({ago(ingest['last_batch'])})"
            if ingest["last_batch"]
            else "No batch has landed yet: the database is still being prepared."
        ) + f" · reading from the {q.replication()}"
        kpis = [
            kpi("meters", f"{snap.meters:,}", "kpi-meters"),
            kpi("communicating", f"{counts['communicating']:,}", "kpi-communicating", "good"),
            kpi("late", f"{counts['late']:,}", "kpi-late", "warn"),
            kpi("silent", f"{counts['silent']:,}", "kpi-silent", "bad"),
            kpi("alarms, last 24 h", f"{alarms:,}", "kpi-alarms", "bad" if alarms else ""),
            kpi("live rows / min (last hour)", f"{float(ingest['rows_per_min']):,.0f}", "kpi-ingest"),
            kpi(
                "spool backlog",
                fmt_bytes(float(ingest["spool_bytes"])),
                "kpi-spool",
                "warn" if ingest["spool_bytes"] else "",
            ),
            kpi("open VEE exceptions", f"{open_exc:,}", "kpi-open-exceptions"),
        ]
        by_link = static_table(
            "cr-by-link-table",
            snap.by("link")[:LINK_ROWS],
            [
                ("collector", "collector"),
                ("link", "line / gateway"),
                ("meters", "meters"),
                ("communicating", "communicating"),
                ("late", "late"),
                ("silent", "silent"),
            ],
            page_size=8,
        )
        links = q.links()
        links_view: Any = (
            static_table(
                "cr-links-table",
                [
                    {
                        **r,
                        "spool": fmt_bytes(float(r["spool_bytes"])),
                        "connected": link_state(r),
                        "updated_at": ago(r["updated_at"]),
                    }
                    for r in links
                ],
                [
                    ("collector", "collector"),
                    ("link", "link"),
                    ("kind", "kind"),
                    ("connected", "state"),
                    ("meters", "meters"),
                    ("failures", "failures"),
                    ("spool", "spool backlog"),
                    ("updated_at", "updated"),
                    ("alarm", "alarm"),
                ],
                page_size=8,
                style_data_conditional=[
                    {"if": {"filter_query": '{alarm} != ""'}, "color": "#c62828", "fontWeight": "600"}
                ],
            )
            if links
            else html.P("No collector has reported yet.", className="muted")
        )
        events = [
            {**e, "code": "" if e["code"] is None else e["code"], "kind": e["kind"].replace("_", " ")}
            for e in q.recent_events(snap.as_of, limit=50)
        ]
        ev_view = static_table(
            "cr-events-table",
            events,
            [("ts", "at (UTC)"), ("serial", "meter"), ("kind", "event"), ("code", "event code"), ("level", "level")],
            page_size=8,
            style_data_conditional=[
                {"if": {"filter_query": '{level} = "alarm"'}, "color": "#c62828", "fontWeight": "600"}
            ],
        )
        return (
            clock,
            kpis,
            by_area_figure(snap),
            map_figure(snap),
            by_link,
            links_view,
            ingest_figure(q.ingest_rate()),
            ev_view,
        )

    @app.callback(
        Output("cr-meters", "data"),
        Output("cr-meters", "page_count"),
        *paging_inputs("cr-meters"),
        Input("cr-tick", "n_intervals"),
    )
    def meters(page: int, size: int, sort_by: list[dict[str, str]], filter_query: str, _: int) -> tuple[Any, ...]:
        rows, total = q.meter_page(page or 0, size, sort_by, filter_query)
        live = q.live_values([r["meter_id"] for r in rows])
        out = []
        for r in rows:
            values = live.get(r["meter_id"], {})
            quiet = r["quiet"]
            out.append(
                {
                    **r,
                    "quiet": "never read"
                    if quiet is None
                    else "under a minute"
                    if quiet.total_seconds() < 60
                    else in_words(quiet),
                    "last_seen": r["last_seen"] or "never",
                    **{
                        k: round(values[k], 1 if k != "power_kw" else 3) if k in values else "—"
                        for k in ("voltage_v", "current_a", "power_kw")
                    },
                }
            )
        return records(out), page_count(total, size)

    @app.callback(
        Output("cr-alarms", "data"),
        Input("cr-tick", "n_intervals"),
        Input("cr-alarms-open", "value"),
        Input("cr-alarm-changed", "data"),
    )
    def alarms(_: int, open_only: list[str], __: int) -> list[dict[str, Any]]:
        snap = q.snapshot()
        return alarm_rows(q.alarms(snap.as_of, limit=100, open_only=bool(open_only)))

    @app.callback(
        Output("cr-alarm-result", "children"),
        Output("cr-alarm-changed", "data"),
        Input("cr-alarm-ack", "n_clicks"),
        Input("cr-alarm-assign", "n_clicks"),
        State("cr-alarms", "selected_rows"),
        State("cr-alarms", "data"),
        State("cr-alarm-assignee", "value"),
        State("cr-alarm-changed", "data"),
        prevent_initial_call=True,
    )
    def act_on_alarm(
        _: int,
        __: int,
        selected: list[int] | None,
        data: list[dict[str, Any]] | None,
        assignee: str | None,
        changed: int,
    ) -> tuple[Any, int]:
        from dash import ctx

        from dashboards.auth import require

        who = require("/")
        if not selected or not data or selected[0] >= len(data):
            return html.P("Select an alarm first (the round button on its row).", className="error"), changed
        row = data[selected[0]]
        ts = datetime.fromisoformat(row["key_ts"])
        acknowledge = ctx.triggered_id == "cr-alarm-ack"
        try:
            q.update_alarm(
                row["serial"],
                ts,
                row["key_kind"],
                who,
                acknowledge=acknowledge,
                assignee=None if acknowledge else (assignee or "").strip(),
            )
        except ValueError as exc:
            return html.P(str(exc), className="error", id="cr-alarm-error"), changed
        what = (
            "acknowledged"
            if acknowledge
            else (f"assigned to {assignee.strip()}" if assignee and assignee.strip() else "unassigned")
        )
        return html.P(f"Alarm {row['alarm']} on meter {row['serial']}: {what}.", className="ok", id="cr-alarm-ok"), (
            changed or 0
        ) + 1

    @app.callback(Output("cr-meter-link", "children"), Input("cr-meters", "active_cell"), State("cr-meters", "data"))
    def open_meter(active: dict[str, Any] | None, data: list[dict[str, Any]]) -> Any:
        if not active or not data or active.get("row", 0) >= len(data):
            return ""
        serial = data[active["row"]]["serial"]
        return dcc.Link(f"Open meter {serial} →", href=f"/meter/{serial}", id="cr-open-meter")
