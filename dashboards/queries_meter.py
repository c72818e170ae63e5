"""The meter page's queries: where a meter hangs, its reads, versions, exceptions, events and history.

A mixin of :class:`dashboards.queries.Queries` over the pools of :class:`dashboards.queries_base.BaseQueries`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dashboards.queries_base import BaseQueries, Row, _rows, _scalar
from dashboards.tables import Column, TableSpec, like_prefix

INDEX_HISTORY = TableSpec(
    source="""(SELECT v.ts, v.value AS index, v.value - lag(v.value) OVER (ORDER BY v.ts) AS usage,
                      CASE v.quality WHEN 'estimated' THEN 'system estimate' WHEN 'edited' THEN 'edited'
                           ELSE CASE v.read_type WHEN 'actual' THEN 'normal' WHEN 'customer' THEN 'customer read'
                                     ELSE coalesce(v.read_type, 'normal') END END AS read_type,
                      v.quality_flag, v.raw_value, v.under_review,
                      (SELECT string_agg(e.message, '; ' ORDER BY e.rule) FROM vee_exception e
                       WHERE e.meter_id = v.meter_id AND e.channel_id = v.channel_id AND e.ts = v.ts) AS message
               FROM validated_reading v WHERE v.meter_id = %(mid)s AND v.channel_id = %(ch)s) h""",
    columns={
        "ts": Column("h.ts", "datetime"),
        "usage": Column("round(h.usage::numeric, 3)", "number"),
        "message": Column("coalesce(h.message, '')"),
        "index": Column("round(h.index::numeric, 3)", "number"),
        "read_type": Column("h.read_type"),
        "flag": Column("h.quality_flag"),
    },
    default_order="h.ts DESC",
)


class MeterQueries(BaseQueries):
    """The meter page's queries."""

    def find_meter(self, serial: str) -> Row | None:
        """A meter with where it hangs now (service point, area, account, customer)."""
        with self.read.connection() as conn:
            rows = _rows(
                conn,
                """SELECT m.id, m.serial, m.commodity, m.model, m.unit, m.multiplier, m.protocol,
                          m.address->>'uri' AS address, m.import_only, m.prepaid, m.register_digits,
                          sp.code AS service_point, sp.customer_class, sp.address AS street,
                          coalesce(a.code, fa.code) AS area, fa.code AS feeds_area,
                          ac.number AS account, ac.billing_cycle, ac.tariff_code, cu.name AS customer
                   FROM meter m
                   LEFT JOIN installation i ON i.meter_id = m.id AND i.removed_at IS NULL
                   LEFT JOIN service_point sp ON sp.id = i.service_point_id
                   LEFT JOIN area a ON a.id = sp.area_id
                   LEFT JOIN area fa ON fa.feeder_meter_id = m.id
                   LEFT JOIN LATERAL (SELECT * FROM account x WHERE x.service_point_id = sp.id
                                      ORDER BY x.closed_on IS NULL DESC, x.opened_on DESC LIMIT 1) ac ON true
                   LEFT JOIN customer cu ON cu.id = ac.customer_id
                   WHERE m.serial = %s""",
                (serial,),
            )
        return rows[0] if rows else None

    def search_meters(self, text: str, limit: int = 20) -> list[str]:
        """Serials starting with ``text`` (for the meter picker)."""
        with self.read.connection() as conn:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT serial FROM meter WHERE serial LIKE %s ORDER BY serial LIMIT %s",
                    (like_prefix(text), limit),
                )
            ]

    def installations(self, meter_id: int) -> list[Row]:
        """The meter's installation history, newest first."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT i.installed_at, i.removed_at, sp.code AS service_point, i.install_index, i.removal_index,
                          i.reason
                   FROM installation i JOIN service_point sp ON sp.id = i.service_point_id
                   WHERE i.meter_id = %s ORDER BY i.installed_at DESC""",
                (meter_id,),
            )

    def comm_health(self, serial: str) -> list[Row]:
        """What the collectors report about this meter."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT collector, link, polls, good, failures, retries, consecutive_failures, last_good,
                          last_error, latency_ms, backoff_until, updated_at
                   FROM comm_health WHERE serial = %s ORDER BY updated_at DESC""",
                (serial,),
            )

    def daily_consumption(self, meter_id: int, channel: str, start: datetime, end: datetime) -> list[Row]:
        """Per day: the register's advance (last read of the day minus the day before's) from the daily aggregate."""
        ch = self.channels().get(channel)
        if ch is None:
            return []
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT day, consumption, n FROM (
                       SELECT day, n, last_value - lag(last_value) OVER (ORDER BY day) AS consumption
                       FROM daily_reading WHERE meter_id = %s AND channel_id = %s
                         AND day >= %s::timestamptz - interval '1 day' AND day < %s) d
                   WHERE consumption IS NOT NULL AND day >= %s ORDER BY day""",
                (meter_id, ch, start, end, start),
            )

    def theft_rank(self, serial: str) -> Row | None:
        """Where the meter stands in the newest theft run (None: not a candidate)."""
        with self.read.connection() as conn:
            rows = _rows(
                conn,
                """SELECT c.run_id, c.rank, r.n_candidates FROM theft_candidate c JOIN theft_run r ON r.id = c.run_id
                   WHERE c.serial = %s AND c.run_id = (SELECT max(id) FROM theft_run)""",
                (serial,),
            )
        return rows[0] if rows else None

    def last_reading(self, meter_id: int) -> datetime | None:
        """The newest read on any channel of the meter."""
        with self.read.connection() as conn:
            return _scalar(
                conn,
                """SELECT greatest((SELECT max(ts) FROM reading WHERE meter_id = %s),
                                 (SELECT max(ts_last) FROM reading_block WHERE meter_id = %s))""",
                (meter_id, meter_id),
            )

    def series(self, meter_id: int, channel: str, start: datetime, end: datetime) -> list[Row]:
        """The validated series of one channel with its raw value, quality and review state."""
        ch = self.channels().get(channel)
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT ts, value, raw_value, quality, quality_flag, method, reason, version, read_type, under_review
                   FROM validated_series(%s, %s, %s, %s) WHERE ts < %s
                   ORDER BY ts""",
                (meter_id, ch, start, end, end),
            )

    def exceptions_of(self, meter_id: int, start: datetime, end: datetime) -> list[Row]:
        """VEE exceptions on the meter in the window (every status)."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT e.id, c.code AS channel, e.ts, e.rule, e.severity, e.status, e.value, e.message
                   FROM vee_exception e JOIN channel c ON c.id = e.channel_id
                   WHERE e.meter_id = %s AND e.ts >= %s AND e.ts < %s ORDER BY e.ts""",
                (meter_id, start, end),
            )

    def versions_of(self, meter_id: int, start: datetime, end: datetime) -> list[Row]:
        """Estimates, edits and adjustments on the meter in the window."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT c.code AS channel, v.ts, v.version, v.kind, v.quality, v.method, v.reason, v.value,
                          v.replaced_value, v.created_by, v.created_at, v.comment
                   FROM reading_version v JOIN channel c ON c.id = v.channel_id
                   WHERE v.meter_id = %s AND v.ts >= %s AND v.ts < %s ORDER BY v.ts, v.version""",
                (meter_id, start, end),
            )

    def events_of(self, meter_id: int, start: datetime | None = None, end: datetime | None = None) -> list[Row]:
        """The meter's events (newest first)."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT ts, kind, code, details::text AS details FROM meter_event
                   WHERE meter_id = %s AND (%s::timestamptz IS NULL OR ts >= %s)
                     AND (%s::timestamptz IS NULL OR ts < %s)
                   ORDER BY ts DESC LIMIT 500""",
                (meter_id, start, start, end, end),
            )

    def index_history(
        self, meter_id: int, channel: str, page: int, size: int, sort_by: Any, filter_query: str | None
    ) -> tuple[list[Row], int]:
        """The register's history as the utility shows it: read at, usage, message, index, read type."""
        return self._page(
            INDEX_HISTORY, page, size, sort_by, filter_query, {"mid": meter_id, "ch": self.channels().get(channel)}
        )
