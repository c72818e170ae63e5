"""Server-side paging, sorting and filtering for ``dash_table.DataTable`` (``*_action='custom'``).

A :class:`TableSpec` whitelists the columns a table exposes: each column id maps to one SQL
expression and a type. The DataTable's ``filter_query`` (``{col} > 5 && {col} contains "x"``) and
``sort_by`` are translated into a WHERE clause and an ORDER BY over those expressions only, with
every value passed as a query parameter; anything else in the filter is ignored. Paging is
``LIMIT``/``OFFSET``; the total count comes from the same filtered query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from psycopg import Connection

#: Dash filter operators (and their word forms) → SQL.
_OPS = {
    "=": "=",
    "eq": "=",
    "!=": "<>",
    "ne": "<>",
    "<": "<",
    "lt": "<",
    "<=": "<=",
    "le": "<=",
    ">": ">",
    "gt": ">",
    ">=": ">=",
    "ge": ">=",
    "contains": "contains",
    "datestartswith": "startswith",
}
_TERM = re.compile(
    r"""^\s*\{(?P<col>[^}]+)\}\s+(?P<op>[si]?(?:contains|datestartswith|eq|ne|lt|le|gt|ge|[<>!=]=?))\s*
        (?P<val>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\S+)\s*$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Column:
    """One exposed column: its SQL expression and kind (``text``, ``number`` or ``datetime``)."""

    sql: str
    kind: str = "text"


@dataclass(frozen=True)
class TableSpec:
    """A table: ``source`` is a FROM clause (or a parenthesised subquery with an alias)."""

    source: str
    columns: dict[str, Column]
    default_order: str
    where: str = "true"  # a fixed condition (may use named parameters)
    extra: dict[str, Any] = field(default_factory=dict)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_prefix(text: str) -> str:
    """The LIKE pattern of a picker's search: what the user typed, wildcards (``%``, ``_``) dropped, as a prefix."""
    return text.replace("%", "").replace("_", "") + "%"


def filter_sql(spec: TableSpec, filter_query: str | None, params: dict[str, Any]) -> str:
    """The WHERE conditions for ``filter_query`` (parameters added to ``params``)."""
    conds: list[str] = []
    for k, term in enumerate((filter_query or "").split(" && ")):
        m = _TERM.match(term)
        if not m or m.group("col") not in spec.columns:
            continue
        col = spec.columns[m.group("col")]
        op_word = m.group("op")
        op = _OPS.get(op_word[1:] if op_word[0] in "si" and op_word[1:] in _OPS else op_word)
        if op is None:
            continue
        value = _unquote(m.group("val"))
        name = f"f{k}"
        if op == "contains":
            params[name] = f"%{_like_escape(value)}%"
            conds.append(f"({col.sql})::text ILIKE %({name})s")
        elif op == "startswith":
            params[name] = f"{_like_escape(value)}%"
            conds.append(f"({col.sql})::text LIKE %({name})s")
        elif col.kind == "number":
            try:
                params[name] = float(value)
            except ValueError:
                continue
            conds.append(f"({col.sql}) {op} %({name})s")
        elif col.kind == "datetime":
            params[name] = value
            conds.append(f"({col.sql}) {op} %({name})s::timestamptz")
        elif op == "=":
            params[name] = value
            conds.append(f"({col.sql})::text ILIKE %({name})s")  # text equality: case-insensitive
        else:
            params[name] = value
            conds.append(f"({col.sql})::text {op} %({name})s")
    return " AND ".join(conds) or "true"


def order_sql(spec: TableSpec, sort_by: list[dict[str, str]] | None) -> str:
    """ORDER BY over whitelisted columns only, then the default order."""
    parts = []
    for s in sort_by or []:
        col = spec.columns.get(s.get("column_id", ""))
        if col is not None:
            parts.append(f"{col.sql} {'DESC' if s.get('direction') == 'desc' else 'ASC'} NULLS LAST")
    parts.append(spec.default_order)
    return ", ".join(parts)


def fetch_page(
    conn: Connection,
    spec: TableSpec,
    page: int = 0,
    size: int = 25,
    sort_by: list[dict[str, str]] | None = None,
    filter_query: str | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of rows as dicts, and the number of rows matching the filter."""
    p: dict[str, Any] = {**spec.extra, **(params or {})}
    where = f"({spec.where}) AND {filter_sql(spec, filter_query, p)}"
    select = ", ".join(f'{c.sql} AS "{cid}"' for cid, c in spec.columns.items())
    size = max(1, min(int(size), 500))
    p["_limit"], p["_offset"] = size, max(0, int(page)) * size
    cur = conn.execute(
        f"SELECT {select}, count(*) OVER () AS _total FROM {spec.source} WHERE {where} "
        f"ORDER BY {order_sql(spec, sort_by)} LIMIT %(_limit)s OFFSET %(_offset)s",
        p,
    )
    names = [d.name for d in cur.description or []]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    total = int(rows[0].pop("_total")) if rows else 0
    for r in rows:
        r.pop("_total", None)
    if not rows and p["_offset"]:
        row = conn.execute(f"SELECT count(*) FROM {spec.source} WHERE {where}", p).fetchone()
        total = int(row[0]) if row else 0
    return rows, total
