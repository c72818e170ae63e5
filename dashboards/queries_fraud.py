"""The fraud unit's queries: theft runs, the ranked candidates, energy balance per area, routes and visits.

A mixin of :class:`dashboards.queries.Queries` over the pools of :class:`dashboards.queries_base.BaseQueries`;
a visit outcome goes through ``analytics.theft.store``.
"""

from __future__ import annotations

from typing import Any

from dashboards.queries_base import BaseQueries, Row, _rows
from dashboards.tables import Column, TableSpec
from releve.model import MAIN_REGISTER

CANDIDATES = TableSpec(
    source="""theft_candidate c
              LEFT JOIN LATERAL (SELECT i.result FROM theft_inspection i WHERE i.serial = c.serial
                                 ORDER BY i.visited_at DESC LIMIT 1) v ON true""",
    columns={
        "rank": Column("c.rank", "number"),
        "serial": Column("c.serial"),
        "area": Column("c.area"),
        "commodity": Column("c.commodity"),
        "signal": Column("c.signal"),
        "risk": Column("round(c.risk::numeric, 3)", "number"),
        "expected_value": Column("round(c.expected_value::numeric, 2)", "number"),
        "unbilled": Column("round(c.unbilled_energy::numeric, 1)", "number"),
        "reasons": Column(
            "(c.reasons->>0) || CASE WHEN jsonb_array_length(c.reasons) > 1 THEN ' (+'"
            " || (jsonb_array_length(c.reasons) - 1) || ' more)' ELSE '' END"
        ),
        "visited": Column("coalesce(v.result, '')"),
    },
    default_order="c.rank",
    where="""c.run_id = %(run)s AND (%(area)s::text IS NULL OR c.area = %(area)s)
             AND (%(commodity)s::text IS NULL OR c.commodity = %(commodity)s)
             AND (%(signal)s::text IS NULL OR c.signal = %(signal)s)
             AND (%(min_value)s::float8 IS NULL OR c.expected_value >= %(min_value)s)
             AND (NOT %(hide)s OR v.result IS NULL)""",
)


class FraudQueries(BaseQueries):
    """The fraud page's queries."""

    def theft_runs(self, limit: int = 20) -> list[Row]:
        """The newest theft rankings."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT id, created_at, period_from, period_to, n_meters, n_candidates, n_labels, model
                   FROM theft_run ORDER BY id DESC LIMIT %s""",
                (limit,),
            )

    def candidates(
        self,
        run_id: int,
        page: int,
        size: int,
        sort_by: Any,
        filter_query: str | None,
        area: str | None = None,
        commodity: str | None = None,
        signal: str | None = None,
        min_value: float | None = None,
        hide_visited: bool = False,
    ) -> tuple[list[Row], int]:
        """Run ``run_id``'s ranked list, one page, with the filters of the page and of the table header."""
        return self._page(
            CANDIDATES,
            page,
            size,
            sort_by,
            filter_query,
            {
                "run": run_id,
                "area": area or None,
                "commodity": commodity or None,
                "signal": signal or None,
                "min_value": min_value,
                "hide": hide_visited,
            },
        )

    def candidate_facets(self, run_id: int) -> Row:
        """Areas, commodities and signals present on a run's list (for the filters)."""
        with self.read.connection() as conn:
            rows = _rows(
                conn,
                """SELECT array_agg(DISTINCT area ORDER BY area) AS areas,
                          array_agg(DISTINCT commodity ORDER BY commodity) AS commodities,
                          array_agg(DISTINCT signal ORDER BY signal) AS signals,
                          count(*) AS n, coalesce(sum(expected_value), 0) AS value
                   FROM theft_candidate WHERE run_id = %s""",
                (run_id,),
            )
        return rows[0]

    def candidate(self, run_id: int, serial: str) -> Row | None:
        """One candidate with its reasons, evidence and the visits recorded for the meter."""
        with self.read.connection() as conn:
            rows = _rows(
                conn,
                """SELECT c.rank, c.serial, c.area, c.commodity, c.customer_class, c.risk, c.expected_value,
                          c.unbilled_energy, c.signal, c.reasons, c.evidence
                   FROM theft_candidate c WHERE c.run_id = %s AND c.serial = %s""",
                (run_id, serial),
            )
            if not rows:
                return None
            rows[0]["visits"] = _rows(
                conn,
                """SELECT id, run_id, campaign, result, visited_at, recorded_by, note FROM theft_inspection
                   WHERE serial = %s ORDER BY visited_at DESC""",
                (serial,),
            )
        return rows[0]

    def areas(self) -> list[Row]:
        """Areas with their feeder or bulk meter."""
        with self.read.connection() as conn:
            return _rows(conn, "SELECT id, code, kind, commodity, technical_loss_pct FROM area ORDER BY code")

    def energy_balance(self, area_code: str, days: int = 60) -> list[Row]:
        """Per day: the feeder (bulk) meter, the sum of customer meters and the loss share, for one area."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """WITH a AS (SELECT id, feeder_meter_id, technical_loss_pct, commodity FROM area
                              WHERE code = %(code)s),
                        ch AS (SELECT c.id FROM channel c, a
                               WHERE c.code = CASE a.commodity WHEN 'electricity' THEN %(electricity)s
                                                               ELSE %(water)s END),
                        cust AS (SELECT DISTINCT i.meter_id FROM installation i
                                 JOIN service_point sp ON sp.id = i.service_point_id, a
                                 WHERE sp.area_id = a.id AND i.meter_id IS DISTINCT FROM a.feeder_meter_id),
                        d AS (SELECT dr.meter_id, dr.day, dr.last_value - lag(dr.last_value)
                                     OVER (PARTITION BY dr.meter_id ORDER BY dr.day) AS consumption
                              FROM daily_reading dr, ch, a
                              WHERE dr.channel_id = ch.id
                                AND (dr.meter_id = a.feeder_meter_id OR dr.meter_id IN (SELECT meter_id FROM cust))
                                AND dr.day > (SELECT max(day) FROM daily_reading x, ch
                                              WHERE x.meter_id = a.feeder_meter_id AND x.channel_id = ch.id)
                                             - make_interval(days => %(days)s + 1))
                   SELECT d.day,
                          sum(d.consumption) FILTER (WHERE d.meter_id = a.feeder_meter_id) AS feeder,
                          sum(d.consumption) FILTER (WHERE d.meter_id <> a.feeder_meter_id) AS customers,
                          count(*) FILTER (WHERE d.meter_id <> a.feeder_meter_id) AS customer_meters,
                          max(a.technical_loss_pct) AS technical_pct, max(a.commodity) AS commodity
                   FROM d, a WHERE d.consumption IS NOT NULL AND d.day < date_trunc('day', now())
                   GROUP BY d.day ORDER BY d.day""",
                {"code": area_code, "days": days, **MAIN_REGISTER},
            )

    def route(
        self, run_id: int, top: int, area: str | None = None, commodity: str | None = None, signal: str | None = None
    ) -> str:
        """Tonight's route as CSV: the top ``top`` not-yet-visited candidates (filters applied), in route order."""
        import tempfile
        from pathlib import Path

        from analytics.theft import store
        from analytics.theft.ranking import route_order, write_csv

        cands = store.load_candidates(self.settings, self.url, run_id)
        with self.read.connection() as conn:
            visited = {r[0] for r in conn.execute("SELECT DISTINCT serial FROM theft_inspection")}
        cands = [
            c
            for c in cands
            if c.meter not in visited
            and (not area or c.area == area)
            and (not commodity or c.commodity == commodity)
            and (not signal or c.signal == signal)
        ][:top]
        route_order(cands)
        cands.sort(key=lambda c: (c.route_order is None, c.route_order or 0, c.rank))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "route.csv"
            write_csv(cands, path)
            return path.read_text()

    def record_visit(self, run_id: int, serial: str, result: str, who: str, campaign: str = "", note: str = "") -> int:
        """Record a visit outcome through ``analytics.theft.store`` (editor role); return the inspection id."""
        from analytics.theft import store

        text = f"[dashboard:{who}] {note}".strip()
        return store.record_outcome(self.settings, self.url, run_id, serial, result, campaign=campaign, note=text)
