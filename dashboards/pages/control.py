"""Control room: which meters talk, by area, collector and line; ingest, spool backlog, alarms, a map."""

from __future__ import annotations

import random
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html

from dashboards.components import (
    STATE_COLOURS,
    figure,
    fmt_bytes,
    kpi,
    message_figure,
    page_count,
    records,
    server_table,
    static_table,
)
from dashboards.queries import LATE_AFTER, SILENT_AFTER, STATES, FleetSnapshot, Queries

LINK_ROWS = 200  # the worst lines and gateways; the meter table below filters on any of them
MAP_POINTS = 5_000  # beyond this, the map shows every meter in trouble and a sample of the others


def layout(q: Queries, refresh_ms: int) -> html.Div:
    """The page, filled by :func:`register`'s callbacks on load and on every tick."""
    return html.Div([
        dcc.Interval(id="cr-tick", interval=refresh_ms, n_intervals=0),
        html.H2("Control room"),
        html.Div(id="cr-clock", className="muted"),
        html.Div(id="cr-kpis", className="kpis"),
        html.Div([
            html.Div(dcc.Graph(id="cr-by-area", config={"displaylogo": False}), className="panel half"),
            html.Div(dcc.Graph(id="cr-map", config={"displaylogo": False}), className="panel half"),
        ], className="row"),
        html.Div([
            html.Div([html.H4("By collector and line"), html.Div(id="cr-by-link")], className="panel half"),
            html.Div([html.H4("Collector links and spool backlog"), html.Div(id="cr-links")], className="panel half"),
        ], className="row"),
        html.Div([
            html.Div(dcc.Graph(id="cr-ingest", config={"displaylogo": False}), className="panel half"),
            html.Div([html.H4("Recent meter events and alarms"), html.Div(id="cr-events")], className="panel half"),
        ], className="row"),
        html.Div([
            html.H4("Meters"),
            html.P("Filter with the header row (e.g. state = silent, area contains T00); click a serial's row to "
                   "open the meter page.", className="muted"),
            server_table("cr-meters", [("serial", "serial"), ("commodity", "commodity"), ("model", "model"),
                                       ("area", "area"), ("collector", "collector"), ("link", "line / gateway"),
                                       ("state", "state"), ("last_seen", "last seen (UTC)")],
                         style_data_conditional=[
                             {"if": {"filter_query": f'{{state}} = "{s}"', "column_id": "state"},
                              "color": c, "fontWeight": "600"} for s, c in STATE_COLOURS.items()]),
            html.Div(id="cr-meter-link"),
        ], className="panel"),
    ])  # fmt: skip


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

    Built as a plain figure dictionary: plotly's validation of thousands of points costs more than the
    query behind them. SVG markers, not ``scattergl``: WebGL traces compile their shaders with
    ``new Function``, which the Content-Security-Policy forbids (no ``unsafe-eval``), and a browser
    without WebGL could not draw them either; :data:`MAP_POINTS` keeps SVG fast enough.
    """
    pts = [r for r in snap.rows if r["latitude"] is not None and r["longitude"] is not None]
    if not pts:
        return message_figure("no coordinates")
    note = ""
    if len(pts) > MAP_POINTS:
        bad = [r for r in pts if r["state"] != "communicating"]
        good = [r for r in pts if r["state"] == "communicating"]
        keep = max(0, MAP_POINTS - len(bad))
        pts = bad[:MAP_POINTS] + random.Random(0).sample(good, min(keep, len(good)))
        note = f" (sample of {len(pts):,})"
    layout = figure("Service points by state" + note).to_plotly_json()["layout"]
    layout["xaxis"] = {"title": {"text": "longitude"}, "showgrid": True}
    layout["yaxis"] = {"title": {"text": "latitude"}, "scaleanchor": "x", "scaleratio": 1.5}
    traces = []
    for s in STATES:
        sel = [r for r in pts if r["state"] == s]
        traces.append({
            "type": "scatter", "mode": "markers", "name": s,
            "x": [r["longitude"] for r in sel], "y": [r["latitude"] for r in sel],
            "marker": {"color": STATE_COLOURS[s], "size": 7 if len(pts) < 2000 else 4},
            "text": [f"{r['serial']} · {r['area']} · {r['link']}" for r in sel], "hoverinfo": "text"})  # fmt: skip
    return {"data": traces, "layout": layout}


def ingest_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Rows landed per 10 minutes."""
    if not rows:
        return message_figure("no batch landed in the last 24 h")
    fig = figure("Ingest: rows landed per 10 min (last 24 h)")
    fig.add_bar(x=[r["at"] for r in rows], y=[r["inserted"] for r in rows], name="inserted", marker_color="#1565c0")
    fig.add_bar(x=[r["at"] for r in rows], y=[r["repeated"] for r in rows], name="duplicates / conflicts",
                marker_color="#90a4ae")  # fmt: skip
    fig.add_bar(x=[r["at"] for r in rows], y=[r["rejected"] for r in rows], name="rejected", marker_color="#c62828")
    fig.update_layout(barmode="stack")
    return fig


def register(app: Dash, q: Queries) -> None:
    """The control room's callbacks."""

    @app.callback(
        Output("cr-clock", "children"), Output("cr-kpis", "children"), Output("cr-by-area", "figure"),
        Output("cr-map", "figure"), Output("cr-by-link", "children"), Output("cr-links", "children"),
        Output("cr-ingest", "figure"), Output("cr-events", "children"),
        Input("cr-tick", "n_intervals"),
    )  # fmt: skip
    def refresh(_: int) -> tuple[Any, ...]:
        snap = q.snapshot()
        counts = snap.counts()
        ingest = q.ingest_summary()
        alarms = q.alarm_count(snap.as_of)
        open_exc = q.open_exception_count()
        clock = (
            f"Fleet clock {snap.as_of:%Y-%m-%d %H:%M} UTC (newest data landed, capped at now) · late after "
            f"{LATE_AFTER}, silent after {SILENT_AFTER} without a read · last batch "
            f"{ingest['last_batch']:%Y-%m-%d %H:%M} UTC"
            if ingest["last_batch"]
            else "no batch landed yet"
        ) + f" · reading from the {q.replication()}"
        kpis = [
            kpi("meters", f"{len(snap.rows):,}", "kpi-meters"),
            kpi("communicating", f"{counts['communicating']:,}", "kpi-communicating", "good"),
            kpi("late", f"{counts['late']:,}", "kpi-late", "warn"),
            kpi("silent", f"{counts['silent']:,}", "kpi-silent", "bad"),
            kpi("alarms, last 24 h", f"{alarms:,}", "kpi-alarms", "bad" if alarms else ""),
            kpi("rows / min (last hour)", f"{float(ingest['rows_per_min']):,.0f}", "kpi-ingest"),
            kpi("spool backlog", fmt_bytes(float(ingest["spool_bytes"])), "kpi-spool",
                "warn" if ingest["spool_bytes"] else ""),
            kpi("open VEE exceptions", f"{open_exc:,}", "kpi-open-exceptions"),
        ]  # fmt: skip
        by_link = static_table("cr-by-link-table", snap.by("link")[:LINK_ROWS], [
            ("collector", "collector"), ("link", "line / gateway"), ("meters", "meters"),
            ("communicating", "communicating"), ("late", "late"), ("silent", "silent")], page_size=8)  # fmt: skip
        links = q.links()
        links_view: Any = (
            static_table(
                "cr-links-table",
                [{**r, "spool": fmt_bytes(float(r["spool_bytes"]))} for r in links],
                [
                    ("collector", "collector"),
                    ("link", "link"),
                    ("kind", "kind"),
                    ("connected", "connected"),
                    ("meters", "meters"),
                    ("failures", "failures"),
                    ("spool", "spool backlog"),
                    ("updated_at", "updated"),
                    ("alarm", "alarm"),
                ],
                page_size=8,
                style_data_conditional=[
                    {"if": {"filter_query": '{alarm} != ""'}, "color": "#c62828", "fontWeight": "600"}],
            )
            if links
            else html.P("No collector has reported yet (link_health is empty).", className="muted")
        )
        events = q.recent_events(snap.as_of, limit=50)
        ev_view = static_table("cr-events-table", events, [
            ("ts", "at (UTC)"), ("serial", "meter"), ("kind", "event"), ("code", "DLMS code"), ("level", "level")],
            page_size=8, style_data_conditional=[
                {"if": {"filter_query": '{level} = "alarm"'}, "color": "#c62828", "fontWeight": "600"}])  # fmt: skip
        return (clock, kpis, by_area_figure(snap), map_figure(snap), by_link, links_view,
                ingest_figure(q.ingest_rate()), ev_view)  # fmt: skip

    @app.callback(
        Output("cr-meters", "data"), Output("cr-meters", "page_count"),
        Input("cr-meters", "page_current"), Input("cr-meters", "page_size"), Input("cr-meters", "sort_by"),
        Input("cr-meters", "filter_query"), Input("cr-tick", "n_intervals"),
    )  # fmt: skip
    def meters(page: int, size: int, sort_by: list[dict[str, str]], filter_query: str, _: int) -> tuple[Any, ...]:
        rows, total = q.meter_page(page or 0, size, sort_by, filter_query)
        return records(rows), page_count(total, size)

    @app.callback(Output("cr-meter-link", "children"), Input("cr-meters", "active_cell"),
                  State("cr-meters", "data"))  # fmt: skip
    def open_meter(active: dict[str, Any] | None, data: list[dict[str, Any]]) -> Any:
        if not active or not data or active.get("row", 0) >= len(data):
            return ""
        serial = data[active["row"]]["serial"]
        return dcc.Link(f"Open meter {serial} →", href=f"/meter/{serial}", id="cr-open-meter")
