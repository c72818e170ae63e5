"""Small building blocks shared by the pages: KPI cards, server-side tables, figure defaults, formatting."""

from __future__ import annotations

import math
import warnings
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import plotly.graph_objects as go
from dash import Input, html
from dash.dash_table.DataTable import DataTable

# DataTable is what the server-side paging is built on; its planned move out of dash is not our concern here.
warnings.filterwarnings("ignore", message=r"\s*The dash_table.DataTable will be removed", category=DeprecationWarning)

STATE_COLOURS = {"communicating": "#2e7d32", "late": "#f9a825", "silent": "#c62828"}
PAGE_SIZE = 15


def cell(value: Any) -> Any:
    """A value as a DataTable cell: datetimes as ``YYYY-MM-DD HH:MM``, decimals as floats."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return ", ".join(str(cell(v)) for v in value)
    if isinstance(value, dict):
        return str(value)
    return value


def records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows made JSON-friendly for a DataTable."""
    return [{k: cell(v) for k, v in r.items()} for r in rows]


def kpi(label: str, value: Any, kpi_id: str, tone: str = "") -> html.Div:
    """A headline figure with its label (the value element has id ``kpi_id`` for tests)."""
    return html.Div(
        [html.Div(str(value), id=kpi_id, className="kpi-value"), html.Div(label, className="kpi-label")],
        className=f"kpi {tone}",
    )


def _house_style() -> dict[str, Any]:
    """The look every table shares: compact left-aligned cells that wrap, a grey header, horizontal scroll."""
    return {
        "style_table": {"overflowX": "auto"},
        "style_cell": {
            "textAlign": "left",
            "fontSize": "13px",
            "padding": "4px 8px",
            "maxWidth": "420px",
            "whiteSpace": "normal",
            "height": "auto",
        },
        "style_header": {"fontWeight": "600", "backgroundColor": "#eef1f5"},
    }


def server_table(
    table_id: str,
    columns: list[tuple[str, str]],
    page_size: int = PAGE_SIZE,
    markdown: set[str] | None = None,
    **kwargs: Any,
) -> DataTable:
    """A DataTable whose paging, sorting and filtering are done by the server (SQL).

    ``markdown``: columns whose cells are Markdown (links to a page: ``[text](/path)``).
    """
    cols: list[Any] = [
        {"name": name, "id": cid, **({"presentation": "markdown"} if cid in (markdown or ()) else {})}
        for cid, name in columns
    ]
    if markdown:
        kwargs.setdefault("markdown_options", {"link_target": "_self"})
    return DataTable(
        id=table_id,
        columns=cols,
        data=[],
        page_current=0,
        page_size=page_size,
        page_count=1,
        page_action="custom",
        sort_action="custom",
        sort_mode="single",
        sort_by=[],
        filter_action="custom",
        filter_query="",
        **_house_style(),
        **kwargs,
    )


def paging_inputs(table_id: str) -> tuple[Input, Input, Input, Input]:
    """What the callback of a :func:`server_table` queries with: the page, its size, the sort and the filter."""
    return (
        Input(table_id, "page_current"),
        Input(table_id, "page_size"),
        Input(table_id, "sort_by"),
        Input(table_id, "filter_query"),
    )


def static_table(
    table_id: str,
    rows: list[dict[str, Any]],
    columns: list[tuple[str, str]] | None = None,
    page_size: int = 10,
    **kwargs: Any,
) -> DataTable:
    """A small DataTable of rows already fetched (sorting in the browser)."""
    cols = columns or [(k, k) for k in (rows[0].keys() if rows else [])]
    data: Any = records(rows)
    return DataTable(
        id=table_id,
        columns=[{"name": name, "id": cid} for cid, name in cols],
        data=data,
        page_size=page_size,
        sort_action="native",
        **_house_style(),
        **kwargs,
    )


def page_count(total: int, size: int) -> int:
    """Pages for ``total`` rows."""
    return max(1, math.ceil(total / max(1, size)))


def figure(title: str = "", height: int = 320) -> go.Figure:
    """An empty figure with the house layout (white, compact, works offline)."""
    fig = go.Figure()
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=height,
        template="plotly_white",
        margin={"l": 50, "r": 20, "t": 40 if title else 10, "b": 40},
        legend={"orientation": "h", "y": -0.2},
        font={"size": 12},
    )
    return fig


def message_figure(text: str, height: int = 320) -> go.Figure:
    """A figure showing only a message (no data yet)."""
    fig = figure(height=height)
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def lonlat_map(
    title: str, groups: list[tuple[str, str, list[dict[str, Any]]]], height: int = 320, text: Any = None
) -> dict[str, Any]:
    """Points on plain lon/lat axes (no tiles: works offline), one trace per ``(name, colour, rows)``.

    Rows carry ``longitude``, ``latitude`` and, for the hover, ``text(row)``. Built as a plain figure
    dictionary (plotly's validation of thousands of points costs more than the query behind them), with
    SVG markers, not ``scattergl``: WebGL traces compile their shaders with ``new Function``, which the
    Content-Security-Policy forbids (no ``unsafe-eval``).
    """
    n = sum(len(rows) for _, _, rows in groups)
    layout = figure(title, height).to_plotly_json()["layout"]
    layout["xaxis"] = {"title": {"text": "longitude"}, "showgrid": True}
    layout["yaxis"] = {"title": {"text": "latitude"}, "scaleanchor": "x", "scaleratio": 1.5}
    traces = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": name,
            "x": [r["longitude"] for r in rows],
            "y": [r["latitude"] for r in rows],
            "marker": {"color": colour, "size": 7 if n < 2000 else 4},
            "text": [text(r) for r in rows] if text else None,
            "hoverinfo": "text" if text else "x+y",
        }
        for name, colour, rows in groups
    ]
    return {"data": traces, "layout": layout}


def fmt_bytes(n: float) -> str:
    """Bytes in human units."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GB"


def in_words(span: timedelta | float | None) -> str:
    """A duration as a person says it: "45 seconds", "12 minutes", "2 hours", "1 day 3 hours" (never "2:00:00")."""
    if span is None:
        return "—"
    seconds = span.total_seconds() if isinstance(span, timedelta) else float(span)
    seconds = max(0.0, seconds)

    def plural(n: int, word: str) -> str:
        return f"{n} {word}" if n == 1 else f"{n} {word}s"

    if seconds < 90:
        return plural(round(seconds), "second")
    minutes = round(seconds / 60)
    if minutes < 90:
        return plural(minutes, "minute")
    hours = round(seconds / 3600)
    if hours < 48:
        return plural(hours, "hour")
    days, rest = divmod(round(seconds / 3600), 24)
    return plural(days, "day") + (f" {plural(rest, 'hour')}" if rest and days < 7 else "")


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in words: "just now", "12 minutes ago" ("never" for None)."""
    if when is None:
        return "never"
    span = (now or datetime.now(when.tzinfo)) - when
    return "just now" if span.total_seconds() < 10 else f"{in_words(span)} ago"


def table_or_note(
    rows: list[dict[str, Any]], note: str, table_id: str, columns: list[tuple[str, str]], page_size: int
) -> Any:
    """The table, or a sentence saying there is nothing (not bare headers)."""
    if not rows:
        return html.P(note, className="muted", id=f"{table_id}-empty")
    return static_table(table_id, rows, columns, page_size=page_size)
