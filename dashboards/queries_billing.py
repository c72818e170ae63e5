"""The billing page's queries: cycles and bill runs, held and issued bills, one bill, the VEE review queue.

A mixin of :class:`dashboards.queries.Queries` over the pools of :class:`dashboards.queries_base.BaseQueries`;
a review decision goes through ``analytics.vee.review`` on the editor role.
"""

from __future__ import annotations

from typing import Any

from dashboards.queries_base import BaseQueries, Row, _rows
from dashboards.tables import Column, TableSpec

ISSUED_BILLS = TableSpec(
    source="""bill b JOIN account a ON a.id = b.account_id LEFT JOIN customer cu ON cu.id = a.customer_id""",
    columns={
        "bill": Column("b.id", "number"),
        "account": Column("a.number"),
        "customer": Column("coalesce(cu.name, '')"),
        "cycle": Column("b.cycle"),
        "period_end": Column("b.period_end::text"),
        "issue_date": Column("b.issue_date::text"),
        "consumption": Column("b.consumption", "number"),
        "unit": Column("b.unit"),
        "total": Column("b.total", "number"),
        "currency": Column("b.currency"),
    },
    default_order="b.id DESC",
    where="b.status = 'issued' AND b.kind <> 'cancel'",
)

HELD_BILLS = TableSpec(
    source="""bill b JOIN account a ON a.id = b.account_id""",
    columns={
        "bill": Column("b.id", "number"),
        "account": Column("a.number"),
        "cycle": Column("b.cycle"),
        "period_end": Column("b.period_end::text"),
        "consumption": Column("b.consumption", "number"),
        "unit": Column("b.unit"),
        "total": Column("b.total", "number"),
        "currency": Column("b.currency"),
        "estimated": Column("round(100 * (b.details->>'estimated_share')::numeric, 1)", "number"),
        "reasons": Column("array_to_string(b.hold_reasons, ' | ')"),
    },
    default_order="b.period_end DESC, a.number",
    where="b.status = 'held'",
)

REVIEW_QUEUE = TableSpec(
    source="vee_exception e JOIN meter m ON m.id = e.meter_id JOIN channel c ON c.id = e.channel_id",
    columns={
        "id": Column("e.id", "number"),
        "serial": Column("m.serial"),
        "channel": Column("c.code"),
        "ts": Column("e.ts", "datetime"),
        "rule": Column("e.rule"),
        "severity": Column("e.severity"),
        "value": Column("round(e.value::numeric, 3)", "number"),
        "suggestions": Column("array_to_string(e.suggestions, ', ')"),
        "message": Column("e.message"),
    },
    default_order="CASE e.severity WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, m.serial, e.ts, e.id",
    where="e.status = 'open' AND e.severity <> 'info'",
)


class BillingQueries(BaseQueries):
    """The billing page's (and the bill page's) queries."""

    def cycles(self) -> list[Row]:
        """Per billing cycle: accounts, and the latest bill run with its counts."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT c.cycle, c.accounts, r.id AS run_id, r.period_start, r.period_end, r.issue_date,
                          r.finished_at, r.n_accounts, r.n_issued, r.n_held, r.n_unchanged, r.n_rebilled,
                          r.n_prepaid, r.n_skipped,
                          CASE WHEN r.id IS NULL THEN 'never billed' WHEN r.finished_at IS NULL THEN 'running'
                               WHEN r.n_held > 0 THEN 'holds to review' ELSE 'complete' END AS status
                   FROM (SELECT billing_cycle AS cycle, count(*) AS accounts FROM account
                         WHERE closed_on IS NULL GROUP BY 1) c
                   LEFT JOIN LATERAL (SELECT * FROM bill_run b WHERE b.cycle = c.cycle ORDER BY b.id DESC LIMIT 1) r
                          ON true
                   ORDER BY c.cycle""",
            )

    def estimated_share(self) -> list[Row]:
        """Share of estimated or edited reads behind the live bills, per cycle and period."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT cycle, period_end, count(*) AS bills,
                          sum((details->>'estimated_share')::numeric * (details->>'reads')::numeric)
                            / nullif(sum((details->>'reads')::numeric), 0) AS share,
                          count(*) FILTER (WHERE status = 'held') AS held
                   FROM bill WHERE status IN ('issued', 'held') AND kind <> 'cancel' AND details ? 'reads'
                   GROUP BY cycle, period_end ORDER BY period_end, cycle""",
            )

    def held_bills(self, page: int, size: int, sort_by: Any, filter_query: str | None) -> tuple[list[Row], int]:
        """Bills on hold and why."""
        return self._page(HELD_BILLS, page, size, sort_by, filter_query)

    def issued_bills(self, page: int, size: int, sort_by: Any, filter_query: str | None) -> tuple[list[Row], int]:
        """Issued bills, newest first (the bill page opens each)."""
        return self._page(ISSUED_BILLS, page, size, sort_by, filter_query)

    def bill(self, bill_id: int) -> Row | None:
        """One bill: its account and customer, lines, the reads it used (with their quality) and its run."""
        with self.read.connection() as conn:
            rows = _rows(
                conn,
                """SELECT b.id, b.run_id, b.cycle, b.period_start, b.period_end, b.days, b.kind, b.status,
                          b.hold_reasons, b.replaces_bill_id, b.tariff_code, b.commodity, b.unit, b.consumption,
                          b.subtotal, b.tax, b.total, b.currency, b.issue_date, b.due_date, b.lines, b.details,
                          b.created_at, a.number AS account, cu.name AS customer, sp.code AS service_point,
                          sp.address AS street
                   FROM bill b JOIN account a ON a.id = b.account_id
                   LEFT JOIN customer cu ON cu.id = a.customer_id
                   LEFT JOIN service_point sp ON sp.id = a.service_point_id
                   WHERE b.id = %s""",
                (bill_id,),
            )
            if not rows:
                return None
            bill = rows[0]
            bill["reads"] = _rows(
                conn,
                """SELECT d.seq, m.serial, c.code AS channel, c.unit AS channel_unit, d.start_at, d.start_index,
                          d.start_quality, d.end_at, d.end_index, d.end_quality, d.multiplier, d.consumption,
                          d.max_demand
                   FROM bill_determinant d JOIN meter m ON m.id = d.meter_id JOIN channel c ON c.id = d.channel_id
                   WHERE d.bill_id = %s ORDER BY d.seq""",
                (bill_id,),
            )
        return bill

    def review_queue(self, page: int, size: int, sort_by: Any, filter_query: str | None) -> tuple[list[Row], int]:
        """Open VEE exceptions, worst first."""
        return self._page(REVIEW_QUEUE, page, size, sort_by, filter_query)

    def exception(self, exception_id: int) -> Row | None:
        """One exception with its meter and suggestions."""
        with self.read.connection() as conn:
            rows = _rows(
                conn,
                """SELECT e.id, m.serial, c.code AS channel, e.ts, e.rule, e.severity, e.status, e.value, e.usage,
                          e.read_lo, e.read_hi, e.suggestions, e.message, e.resolved_by, e.note
                   FROM vee_exception e JOIN meter m ON m.id = e.meter_id JOIN channel c ON c.id = e.channel_id
                   WHERE e.id = %s""",
                (exception_id,),
            )
        return rows[0] if rows else None

    def review(
        self, action: str, exception_id: int, who: str, value: float | None = None, choice: int = 1, note: str = ""
    ) -> str:
        """Accept, edit or reject an exception through ``analytics.vee.review`` (audited, editor role)."""
        from analytics.vee import review

        with self.edit.connection() as conn:
            if action == "accept":
                vid, kind = review.accept(conn, exception_id, who, choice=choice, note=note)
                return f"exception {exception_id} accepted: version {vid} ({kind})"
            if action == "edit":
                if value is None:
                    raise review.ReviewError("type the agreed value to edit")
                vid, kind = review.edit(conn, exception_id, value, who, note=note)
                return f"exception {exception_id} edited to {value}: version {vid} ({kind})"
            if action == "reject":
                rv = review.reject(conn, exception_id, who, note=note)
                return f"exception {exception_id} rejected" + (f": raw value reinstated (version {rv})" if rv else "")
        raise ValueError(f"unknown review action {action!r}")
