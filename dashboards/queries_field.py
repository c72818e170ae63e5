"""The field-work page's queries: open work orders, service-level breaches, where the open orders are.

Read through the reader role; giving an order to a crew goes through the editor role and
``billing.workorders.assign`` (the order's event trail records who, as ``dashboard:<user>``).
Breaches are ``billing.workorders.sla`` itself (fault reports not routed within 5 minutes,
complaints recorded later than 10 minutes after they were received, open orders past their due
time), so the page and ``releve work sla`` never disagree.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from dashboards.tables import Column, TableSpec, fetch_page

Row = dict[str, Any]

#: A work order's state in words.
STATUS_SQL = """CASE w.status WHEN 'awaiting_command' THEN 'awaiting meter command' ELSE w.status END"""

OPEN_ORDERS = TableSpec(
    source="""work_order w LEFT JOIN account a ON a.id = w.account_id LEFT JOIN meter m ON m.id = w.meter_id
              LEFT JOIN service_point sp ON sp.id = w.service_point_id LEFT JOIN area ar ON ar.id = sp.area_id
              LEFT JOIN meter_command c ON c.id = w.command_id""",
    columns={
        "order": Column("w.id", "number"),
        "kind": Column("replace(w.kind, '_', ' ')"),
        "state": Column(STATUS_SQL),
        "priority": Column("w.priority", "number"),
        "assignee": Column("coalesce(w.assignee, 'not assigned')"),
        "reported": Column("w.reported_at", "datetime"),
        "due": Column("w.due_at", "datetime"),
        "late": Column("CASE WHEN w.due_at < %(now)s THEN 'overdue' ELSE '' END"),
        "meter": Column("coalesce(m.serial, '')"),
        "account": Column("coalesce(a.number, '')"),
        "area": Column("coalesce(ar.code, '')"),
        "command": Column("coalesce(c.id || ' ' || c.state, '')"),
        "description": Column("w.description"),
    },
    default_order="w.due_at < %(now)s DESC, w.priority, w.due_at, w.route_order NULLS LAST, w.id",
    where="w.status IN ('open', 'assigned', 'awaiting_command')",
)


class FieldQueries:
    """Reads for ``/field`` over the dashboards' reader pool."""

    def __init__(self, read: Any, edit: Any) -> None:
        self.read, self.edit = read, edit

    def assign(self, order: int, assignee: str, who: str) -> None:
        """Give an open order to a crew or person (``billing.workorders.assign``: the first one is its routing time)."""
        from billing.workorders import assign

        if not re.fullmatch(r"[A-Za-z0-9_.@ -]{1,64}", assignee.strip()):
            raise ValueError("an assignee is a crew or a person: letters, digits, space, _ . @ - (64 at most)")
        with self.edit.connection() as conn, conn.transaction():
            assign(conn, order, assignee.strip(), by=f"dashboard:{who}")

    def summary(self, now: datetime | None = None) -> Row:
        """Open orders: in all, not assigned, past their due time, waiting for a meter command."""
        with self.read.connection() as conn:
            cur = conn.execute(
                """SELECT count(*) AS open, count(*) FILTER (WHERE assignee IS NULL) AS unassigned,
                          count(*) FILTER (WHERE due_at < %(now)s) AS overdue,
                          count(*) FILTER (WHERE status = 'awaiting_command') AS awaiting_command,
                          count(*) FILTER (WHERE kind = 'inspection') AS inspections
                   FROM work_order WHERE status IN ('open', 'assigned', 'awaiting_command')""",
                {"now": now or datetime.now(UTC)},
            )
            names = [d.name for d in cur.description or []]
            return dict(zip(names, cur.fetchone() or (), strict=True))

    def by_kind(self) -> list[Row]:
        """Open orders per kind and state (for the bar chart)."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                f"""SELECT replace(w.kind, '_', ' ') AS kind, {STATUS_SQL} AS state, count(*) AS n
                                   FROM work_order w WHERE w.status IN ('open', 'assigned', 'awaiting_command')
                                   GROUP BY 1, 2 ORDER BY 1, 2""",
                {},
            )

    def open_orders(
        self, page: int, size: int, sort_by: Any, filter_query: str | None, now: datetime | None = None
    ) -> tuple[list[Row], int]:
        """Open orders, overdue first, then by priority and due time (server-side page)."""
        with self.read.connection() as conn:
            return fetch_page(conn, OPEN_ORDERS, page, size, sort_by, filter_query, {"now": now or datetime.now(UTC)})

    def breaches(self, now: datetime | None = None) -> list[Any]:
        """``billing.workorders.sla`` on ``now``: routing, complaint-recording and due-time breaches."""
        from billing.workorders import sla

        with self.read.connection() as conn:
            return sla(conn, now or datetime.now(UTC))

    def map_points(self, now: datetime | None = None, limit: int = 5_000) -> list[Row]:
        """Open orders at their service point's coordinates (the most urgent first, at most ``limit``)."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT w.id, replace(w.kind, '_', ' ') AS kind, w.status, w.due_at < %(now)s AS overdue,
                          w.assignee, sp.latitude, sp.longitude, coalesce(m.serial, '') AS meter,
                          coalesce(a.number, '') AS account, coalesce(sp.address, sp.code) AS place
                   FROM work_order w JOIN service_point sp ON sp.id = w.service_point_id
                   LEFT JOIN meter m ON m.id = w.meter_id LEFT JOIN account a ON a.id = w.account_id
                   WHERE w.status IN ('open', 'assigned', 'awaiting_command')
                     AND sp.latitude IS NOT NULL AND sp.longitude IS NOT NULL
                   ORDER BY w.due_at < %(now)s DESC, w.priority, w.due_at, w.id LIMIT %(limit)s""",
                {"now": now or datetime.now(UTC), "limit": limit},
            )


def _rows(conn: Any, query: str, params: dict[str, Any]) -> list[Row]:
    cur = conn.execute(query, params)
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
