"""Meter page: the series with VEE flags, estimates, edits and events; the index history; health; installations."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html

from dashboards.components import (
    figure,
    message_figure,
    page_count,
    paging_inputs,
    records,
    server_table,
    static_table,
    table_or_note,
)
from dashboards.queries import Queries
from releve.model import INTERVAL_CHANNEL, MAIN_REGISTER

WINDOWS = {"7 days": 7, "30 days": 30, "90 days": 90, "1 year": 366}


def layout(q: Queries, serial: str) -> html.Div:
    """The page for ``serial`` (a picker when empty or unknown)."""
    picker = html.Div(
        [
            html.Label("Meter serial"),
            dcc.Input(
                id="mt-serial-input", value=serial, debounce=True, placeholder="e.g. 26000004", style={"width": "160px"}
            ),
            html.Label("Window"),
            dcc.Dropdown(
                id="mt-window", options=list(WINDOWS), value="30 days", clearable=False, style={"width": "140px"}
            ),
        ],
        className="form-row",
    )
    return html.Div(
        [
            html.H2(f"Meter {serial}" if serial else "Meter"),
            picker,
            dcc.Store(id="mt-serial", data=serial),
            html.Div(id="mt-body"),
            html.Div(
                [
                    html.H4("Index history"),
                    html.P(
                        "As the utility's own table: newest first; usage is the advance since the previous read; "
                        "the message is what VEE found; read type: normal, customer read, system estimate or edited.",
                        className="muted",
                    ),
                    server_table(
                        "mt-history",
                        [
                            ("ts", "read at (UTC)"),
                            ("usage", "usage"),
                            ("message", "message"),
                            ("index", "index"),
                            ("read_type", "read type"),
                            ("flag", "flag"),
                        ],
                    ),
                ],
                className="panel",
                id="mt-history-panel",
                style={"display": "block" if serial else "none"},
            ),
        ]
    )


def series_figure(
    info: dict[str, Any],
    reads: list[dict[str, Any]],
    exceptions: list[dict[str, Any]],
    versions: list[dict[str, Any]],
    events: list[dict[str, Any]],
    channel: str,
) -> go.Figure:
    """The register: validated value, raw where it differs, exceptions, estimates and edits, events."""
    if not reads:
        return message_figure(f"no {channel} reads in this window")
    fig = figure(f"Register {channel} ({info['unit']})", height=380)
    fig.add_scatter(
        x=[r["ts"] for r in reads],
        y=[r["value"] for r in reads],
        mode="lines",
        name="validated",
        line={"color": "#1565c0", "width": 1.5},
    )
    diff = [r for r in reads if r["raw_value"] is not None and r["version"] and r["raw_value"] != r["value"]]
    if diff:
        fig.add_scatter(
            x=[r["ts"] for r in diff],
            y=[r["raw_value"] for r in diff],
            mode="markers",
            name="raw (replaced)",
            marker={"symbol": "circle-open", "color": "#6d4c41", "size": 8},
        )
    value_at = {r["ts"]: r["value"] for r in reads}
    # Interval-vs-register checks are listed in the table below, not drawn on the register.
    mine = [
        e
        for e in exceptions
        if e["channel"] == channel
        and e["severity"] != "info"
        and e["rule"] not in ("SUM_CHECK", "MULTIPLIER", "INTERVAL_COUNT")
    ]
    if mine:
        fig.add_scatter(
            x=[e["ts"] for e in mine],
            y=[value_at.get(e["ts"], e["value"]) for e in mine],
            mode="markers",
            name="VEE exception",
            marker={
                "symbol": "x",
                "color": ["#c62828" if e["status"] == "open" else "#9e9e9e" for e in mine],
                "size": 9,
            },
            text=[f"{e['rule']} ({e['status']}): {e['message']}" for e in mine],
            hoverinfo="text+x",
        )
    for kind, colour, symbol in (
        ("estimate", "#ef6c00", "diamond"),
        ("edit", "#6a1b9a", "square"),
        ("suggestion", "#2e7d32", "triangle-up"),
        ("adjustment", "#00838f", "star"),
    ):
        sel = [v for v in versions if v["channel"] == channel and v["kind"] == kind]
        if sel:
            fig.add_scatter(
                x=[v["ts"] for v in sel],
                y=[v["value"] for v in sel],
                mode="markers",
                name=kind,
                marker={"symbol": symbol, "color": colour, "size": 9},
                text=[f"v{v['version']} {v['quality']} by {v['created_by']}: {v['comment']}" for v in sel],
                hoverinfo="text+x+y",
            )
    if events:
        lo = min(r["value"] for r in reads if r["value"] is not None)
        fig.add_scatter(
            x=[e["ts"] for e in events],
            y=[lo] * len(events),
            mode="markers",
            name="meter event",
            marker={"symbol": "line-ns-open", "color": "#d81b60", "size": 16, "line": {"width": 2}},
            text=[e["kind"] for e in events],
            hoverinfo="text+x",
        )
    return fig


def interval_figure(reads: list[dict[str, Any]], channel: str, unit: str) -> go.Figure:
    """Interval consumption, estimated intervals in orange."""
    if not reads:
        return message_figure(f"no {channel} intervals in this window", height=260)
    fig = figure(f"Intervals {channel} ({unit})", height=260)
    colours = [
        "#ef6c00" if r["quality"] == "estimated" else "#6a1b9a" if r["quality"] == "edited" else "#42a5f5"
        for r in reads
    ]
    fig.add_bar(x=[r["ts"] for r in reads], y=[r["value"] for r in reads], marker_color=colours, name="interval")
    fig.update_layout(bargap=0)
    return fig


def where_read(info: dict[str, Any], health: list[dict[str, Any]]) -> str:
    """How the meter is read, in words: the collector's link when one reports it, else its registered address.

    A registered address such as ``tcp://127.0.0.1:0/55`` (a simulator's port chosen at start) says nothing to a
    person: the unit id and the transport are kept, the placeholder host and port are not.
    """
    address = info.get("address") or ""
    unit = address.rstrip("/").rsplit("/", 1)[-1] if address.count("/") >= 3 else ""
    kind = {
        "modbus-tcp": "Modbus TCP",
        "modbus-rtu": "Modbus RTU",
        "mqtt": "MQTT",
        "manual": "read by hand",
        "import": "imported files",
    }.get(info["protocol"], str(info["protocol"]))
    if health:
        h = health[0]
        return f"{kind} via collector {h['collector']}, {h['link']}" + (f", unit {unit}" if unit.isdigit() else "")
    if address.startswith("tcp://") and ":0/" not in address:
        return f"{kind} at {address.removeprefix('tcp://')}"
    if address.startswith("rtu://"):
        return f"{kind} on {address.removeprefix('rtu://').replace('/', ', unit ')}"
    return kind + (f", unit {unit}" if unit.isdigit() else "")


def daily_figure(days: list[dict[str, Any]], unit: str) -> go.Figure:
    """Consumption per day (the register's advance); today, still under way, in a lighter colour."""
    if not days:
        return message_figure("no daily consumption in this window (the daily aggregate is empty)", height=260)
    today = datetime.now(days[-1]["day"].tzinfo).date()
    fig = figure(f"Daily consumption ({unit})", height=260)
    fig.add_bar(
        x=[d["day"].date() for d in days],
        y=[d["consumption"] for d in days],
        name="per day",
        marker_color=["#90caf9" if d["day"].date() >= today else "#1565c0" for d in days],
        hovertemplate="%{x}: %{y:,.2f} " + unit + "<extra></extra>",
    )
    fig.update_yaxes(title=unit, rangemode="tozero")
    fig.update_xaxes(title=None)
    if days[-1]["day"].date() >= today:
        fig.add_annotation(
            text="today so far",
            x=days[-1]["day"].date(),
            y=days[-1]["consumption"],
            showarrow=False,
            yshift=10,
            font={"size": 10},
        )
    return fig


def register(app: Dash, q: Queries) -> None:
    """The meter page's callbacks."""

    @app.callback(
        Output("url", "pathname"),
        Input("mt-serial-input", "value"),
        State("mt-serial", "data"),
        prevent_initial_call=True,
    )
    def pick(value: str | None, current: str | None) -> str:
        from dash.exceptions import PreventUpdate

        value = (value or "").strip()
        if not value or value == current:
            raise PreventUpdate
        return f"/meter/{value}"

    @app.callback(Output("mt-body", "children"), Input("mt-serial", "data"), Input("mt-window", "value"))
    def body(serial: str | None, window: str) -> Any:
        if not serial:
            examples = q.search_meters("", 10)
            return html.Div(
                [
                    html.P("Type a serial above, or open one of these:"),
                    html.Ul([html.Li(dcc.Link(s, href=f"/meter/{s}")) for s in examples]),
                ]
            )
        info = q.find_meter(serial)
        if info is None:
            near = q.search_meters(serial[:4], 10)
            return html.Div(
                [
                    html.P(f"No meter {serial}.", className="error", id="mt-unknown"),
                    html.Ul([html.Li(dcc.Link(s, href=f"/meter/{s}")) for s in near]),
                ]
            )
        last = q.last_reading(info["id"])
        end = (last or datetime.now().astimezone()) + timedelta(minutes=1)
        start = end - timedelta(days=WINDOWS.get(window, 30))
        reg = MAIN_REGISTER[info["commodity"]]
        ivl = INTERVAL_CHANNEL[info["commodity"]]
        reads = q.series(info["id"], reg, start, end)
        intervals = q.series(info["id"], ivl, start, end)
        exc = q.exceptions_of(info["id"], start, end)
        versions = q.versions_of(info["id"], start, end)
        events = q.events_of(info["id"], start, end)
        health = q.comm_health(serial)
        facts = [
            ("commodity", info["commodity"]),
            ("model", info["model"]),
            ("unit", info["unit"]),
            ("read by", where_read(info, health)),
            ("area", info["area"] or "—"),
            ("feeds area", info["feeds_area"] or "—"),
            ("service point", info["service_point"] or "—"),
            ("account", f"{info['account'] or '—'} (cycle {info['billing_cycle'] or '—'})"),
            ("customer", info["customer"] or "—"),
            ("last read", f"{last:%Y-%m-%d %H:%M} UTC" if last else "never"),
        ]
        open_exc = sum(1 for e in exc if e["status"] == "open" and e["severity"] != "info")
        rank = q.theft_rank(serial)
        theft = (
            html.Span(
                [
                    html.B("theft ranking: "),
                    dcc.Link(
                        f"#{rank['rank']} of {rank['n_candidates']} in run {rank['run_id']} — see the evidence",
                        href=f"/fraud/{serial}",
                        id="mt-theft-link",
                    ),
                ]
            )
            if rank
            else html.Span([html.B("theft ranking: "), "not on the newest inspection list"])
        )
        days = q.daily_consumption(info["id"], reg, start, end)
        return html.Div(
            [
                html.Div(
                    [*[html.Span([html.B(k + ": "), str(v)], style={"marginRight": "18px"}) for k, v in facts], theft],
                    className="panel",
                    id="mt-facts",
                ),
                html.Div(dcc.Graph(figure=daily_figure(days, info["unit"]), id="mt-daily"), className="panel"),
                html.Div(
                    [
                        html.Div(
                            dcc.Graph(figure=series_figure(info, reads, exc, versions, events, reg), id="mt-series"),
                            className="panel half",
                        ),
                        html.Div(
                            dcc.Graph(figure=interval_figure(intervals, ivl, info["unit"]), id="mt-intervals"),
                            className="panel half",
                        ),
                    ],
                    className="row",
                ),
                html.Div(
                    [
                        html.Div(
                            [
                                html.H4(
                                    [
                                        "VEE exceptions in the window: ",
                                        html.Span(str(open_exc), id="mt-open-exc"),
                                        " open",
                                    ]
                                ),
                                table_or_note(
                                    list(reversed(exc)),
                                    "No VEE exception in this window.",
                                    "mt-exceptions",
                                    [
                                        ("ts", "at"),
                                        ("channel", "channel"),
                                        ("rule", "rule"),
                                        ("severity", "severity"),
                                        ("status", "status"),
                                        ("message", "message"),
                                    ],
                                    page_size=6,
                                ),
                            ],
                            className="panel half",
                        ),
                        html.Div(
                            [
                                html.H4("Estimates and edits"),
                                table_or_note(
                                    list(reversed(versions)),
                                    "No estimate or edit in this window: every read stands as the meter gave it.",
                                    "mt-versions",
                                    [
                                        ("ts", "at"),
                                        ("channel", "channel"),
                                        ("version", "v"),
                                        ("kind", "kind"),
                                        ("quality", "flag"),
                                        ("value", "value"),
                                        ("replaced_value", "replaced"),
                                        ("created_by", "by"),
                                        ("comment", "why"),
                                    ],
                                    page_size=6,
                                ),
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
                                html.H4("Communication health"),
                                static_table(
                                    "mt-health",
                                    health,
                                    [
                                        ("collector", "collector"),
                                        ("link", "link"),
                                        ("polls", "polls"),
                                        ("good", "good"),
                                        ("failures", "failures"),
                                        ("consecutive_failures", "in a row"),
                                        ("last_good", "last good"),
                                        ("last_error", "last error"),
                                        ("latency_ms", "ms"),
                                    ],
                                    page_size=4,
                                )
                                if health
                                else html.P(
                                    "No collector reports this meter (imported or manual reads); last read "
                                    + (f"{last:%Y-%m-%d %H:%M} UTC." if last else "never."),
                                    className="muted",
                                ),
                            ],
                            className="panel third",
                        ),
                        html.Div(
                            [
                                html.H4("Installation history"),
                                table_or_note(
                                    [
                                        {
                                            **i,
                                            "removed_at": i["removed_at"] or "still installed",
                                            "removal_index": i["removal_index"]
                                            if i["removal_index"] is not None
                                            else "—",
                                            "reason": (i["reason"] or "—").replace("_", " "),
                                        }
                                        for i in q.installations(info["id"])
                                    ],
                                    "No installation recorded (the meter is not placed at a service point).",
                                    "mt-installations",
                                    [
                                        ("installed_at", "installed"),
                                        ("removed_at", "removed"),
                                        ("service_point", "service point"),
                                        ("install_index", "install index"),
                                        ("removal_index", "removal index"),
                                        ("reason", "reason"),
                                    ],
                                    page_size=5,
                                ),
                            ],
                            className="panel third",
                        ),
                        html.Div(
                            [
                                html.H4("Meter events"),
                                table_or_note(
                                    [
                                        {
                                            **e,
                                            "kind": e["kind"].replace("_", " "),
                                            "code": "—" if e["code"] is None else e["code"],
                                        }
                                        for e in q.events_of(info["id"])
                                    ],
                                    "The meter has reported no event.",
                                    "mt-events",
                                    [("ts", "at"), ("kind", "event"), ("code", "code")],
                                    page_size=5,
                                ),
                            ],
                            className="panel third",
                        ),
                    ],
                    className="row",
                ),
            ]
        )

    @app.callback(
        Output("mt-history", "data"),
        Output("mt-history", "page_count"),
        Input("mt-serial", "data"),
        *paging_inputs("mt-history"),
    )
    def history(serial: str | None, page: int, size: int, sort_by: Any, filter_query: str) -> tuple[Any, ...]:
        info = q.find_meter(serial) if serial else None
        if info is None:
            return [], 1
        rows, total = q.index_history(
            info["id"], MAIN_REGISTER[info["commodity"]], page or 0, size, sort_by, filter_query
        )
        return records(rows), page_count(total, size)
