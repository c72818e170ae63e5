"""The control room's queries: the fleet's meter table, ingest rate, collector links, events and alarms.

A mixin of :class:`dashboards.queries.Queries` over the pools and fleet snapshot of
:class:`dashboards.queries_base.BaseQueries`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from dashboards.queries_base import FLEET_SQL, BaseQueries, Row, _rows, _scalar
from dashboards.tables import Column, TableSpec, fetch_page

#: A batch is live data (the ingest rate) when its oldest row is at most this old as it lands; backfills are not.
LIVE_WITHIN = timedelta(hours=6)
#: Live values shown per meter: channel code -> (column, scale to the shown unit).
LIVE_VALUES = {"1-0:32.7.0": ("voltage_v", 1.0), "1-0:31.7.0": ("current_a", 1.0), "1-0:1.7.0": ("power_kw", 0.001)}
#: Event kinds the control room calls alarms (tamper, fraud and water network damage).
ALARM_KINDS = (
    "terminal_cover_open",
    "magnetic_field",
    "meter_cover_open",
    "auth_failure",
    "reverse_energy",
    "current_without_voltage",
    "bypass",
    "reverse_flow",
    "leak",
    "burst",
    "cable_cut",
    "removal",
    "clock_invalid",
)

#: The registry part of :data:`FLEET_SQL` (no per-meter read probe): paging on it is cheap at any size.
REGISTRY_SQL = """
SELECT m.id AS meter_id, m.serial, m.commodity, m.model, coalesce(a.code, fa.code, '—') AS area
FROM meter m
LEFT JOIN installation i ON i.meter_id = m.id AND i.removed_at IS NULL
LEFT JOIN service_point sp ON sp.id = i.service_point_id
LEFT JOIN area a ON a.id = sp.area_id
LEFT JOIN area fa ON fa.feeder_meter_id = m.id
"""
REGISTRY_COLUMNS = {"serial", "commodity", "model", "area"}

REGISTRY_LIST = TableSpec(
    source=f"({REGISTRY_SQL}) f",
    columns={
        "meter_id": Column("f.meter_id", "number"),
        "serial": Column("f.serial"),
        "commodity": Column("f.commodity"),
        "model": Column("f.model"),
        "area": Column("f.area"),
    },
    default_order="f.serial",
)

METER_LIST = TableSpec(
    source=f"({FLEET_SQL}) f",
    columns={
        "serial": Column("f.serial"),
        "commodity": Column("f.commodity"),
        "model": Column("f.model"),
        "area": Column("f.area"),
        "collector": Column("f.collector"),
        "link": Column("f.link"),
        "state": Column("f.state"),
        "last_seen": Column("f.last_seen", "datetime"),
        "quiet": Column("f.quiet"),
        "meter_id": Column("f.meter_id", "number"),
    },
    default_order="f.serial",
)


class ControlRoomQueries(BaseQueries):
    """The control room's queries (the fleet state itself is :meth:`BaseQueries.snapshot`)."""

    def meter_page(self, page: int, size: int, sort_by: Any, filter_query: str | None) -> tuple[list[Row], int]:
        """The fleet's meters, one page (server-side filter and sort).

        When the filter and sort only touch registry columns, the page is cut on the registry alone and the
        state is computed for that page's meters only; otherwise every meter's state is computed in SQL.
        """
        snap = self.snapshot()
        used = set(re.findall(r"\{([^}]+)\}", filter_query or "")) | {s.get("column_id") for s in sort_by or []}
        params = self.fleet_params(snap.as_of)
        with self.read.connection() as conn:
            if not used <= REGISTRY_COLUMNS:
                return fetch_page(conn, METER_LIST, page, size, sort_by, filter_query, params)
            if not (filter_query or "").strip() and used <= {"serial"}:
                # The first view's page (no filter, by serial): cut on the serial's index and count the meters,
                # rather than join and sort the whole registry for one page of it.
                desc = any(s.get("direction") == "desc" for s in sort_by or [])
                size = max(1, min(int(size), 500))
                ids = _rows(
                    conn,
                    f"SELECT id AS meter_id FROM meter ORDER BY serial {'DESC' if desc else 'ASC'} LIMIT %s OFFSET %s",
                    (size, max(0, int(page)) * size),
                )
                total = int(_scalar(conn, "SELECT count(*) FROM meter"))
            else:
                ids, total = fetch_page(conn, REGISTRY_LIST, page, size, sort_by, filter_query)
            rows = _rows(
                conn,
                f"SELECT * FROM ({FLEET_SQL} WHERE m.id = ANY(%(ids)s)) f",
                {**params, "ids": [r["meter_id"] for r in ids]},
            )
        by_id = {r["meter_id"]: r for r in rows}
        cols = list(METER_LIST.columns)
        return [{c: by_id[r["meter_id"]][c] for c in cols} for r in ids], total

    # -------------------------------------------------------------------------------- control room
    def ingest_rate(self, hours: int = 24) -> list[Row]:
        """Rows landed per 10 minutes over the last ``hours`` hours (wall clock of ingest)."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT to_timestamp(floor(extract(epoch FROM received_at) / 600) * 600) AS at,
                          sum(n_inserted)::bigint AS inserted, sum(n_duplicates + n_conflicts)::bigint AS repeated,
                          sum(n_rejected)::bigint AS rejected, sum(n_events)::bigint AS events, count(*) AS batches
                   FROM ingest_batch WHERE received_at > now() - make_interval(hours => %s)
                     AND (min_ts IS NULL OR min_ts >= received_at - %s::interval)
                   GROUP BY 1 ORDER BY 1""",
                (hours, LIVE_WITHIN),
            )

    def ingest_summary(self) -> Row:
        """Rows per minute over the last hour, the last batch and the total spool backlog."""
        with self.read.connection() as conn:
            rows = _rows(
                conn,
                """SELECT (SELECT coalesce(sum(n_inserted), 0) / 60.0 FROM ingest_batch
                           WHERE received_at > now() - interval '1 hour'
                             AND (min_ts IS NULL OR min_ts >= received_at - %(live)s::interval)) AS rows_per_min,
                          (SELECT max(received_at) FROM ingest_batch) AS last_batch,
                          (SELECT coalesce(sum(spool_bytes), 0) FROM link_health) AS spool_bytes,
                          (SELECT count(*) FROM link_health WHERE connected IS false) AS links_down""",
                {"live": LIVE_WITHIN},
            )
        return rows[0]

    def links(self) -> list[Row]:
        """Collector links (gateways, serial lines, MQTT, spools): alarms first, then the biggest backlog."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT collector, link, kind, connected, meters, requests, failures,
                          coalesce(spool_bytes, 0) AS spool_bytes, updated_at, coalesce(alarm, '') AS alarm
                   FROM link_health
                   ORDER BY alarm IS NULL, spool_bytes DESC NULLS LAST, failures DESC, collector, link LIMIT 200""",
            )

    def recent_events(self, as_of: datetime, limit: int = 50, alarms_only: bool = False) -> list[Row]:
        """The newest meter events up to the fleet clock, alarms marked."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT e.ts, m.serial, e.kind, e.code,
                          CASE WHEN e.kind = ANY(%(alarms)s) THEN 'alarm' ELSE 'event' END AS level
                   FROM meter_event e JOIN meter m ON m.id = e.meter_id
                   WHERE e.ts <= %(asof)s::timestamptz + interval '1 hour'
                     AND (NOT %(only)s OR e.kind = ANY(%(alarms)s))
                   ORDER BY e.ts DESC LIMIT %(limit)s""",
                {"alarms": list(ALARM_KINDS), "asof": as_of, "only": alarms_only, "limit": limit},
            )

    def alarm_count(self, as_of: datetime, hours: int = 24) -> int:
        """Alarms in the ``hours`` before the fleet clock."""
        with self.read.connection() as conn:
            return int(
                _scalar(
                    conn,
                    """SELECT count(*) FROM meter_event WHERE kind = ANY(%s)
                   AND ts > %s::timestamptz - make_interval(hours => %s)
                   AND ts <= %s::timestamptz + interval '1 hour'""",
                    (list(ALARM_KINDS), as_of, hours, as_of),
                )
                or 0
            )

    def live_values(self, meter_ids: list[int], within: timedelta = timedelta(hours=1)) -> dict[int, Row]:
        """The newest voltage (V), current (A) and power (kW) of each meter, read in the last ``within``."""
        ch = self.channels()
        wanted = {ch[code]: (col, scale) for code, (col, scale) in LIVE_VALUES.items() if code in ch}
        if not meter_ids or not wanted:
            return {}
        with self.read.connection() as conn:
            rows = conn.execute(
                """SELECT DISTINCT ON (meter_id, channel_id) meter_id, channel_id, value, ts
                   FROM reading_between(now() - %s::interval, 'infinity')
                   WHERE meter_id = ANY(%s) AND channel_id = ANY(%s) AND ts > now() - %s::interval
                   ORDER BY meter_id, channel_id, ts DESC""",
                (within, meter_ids, list(wanted), within),
            ).fetchall()
        out: dict[int, Row] = {}
        for meter_id, channel_id, value, _ in rows:
            col, scale = wanted[channel_id]
            out.setdefault(meter_id, {})[col] = float(value) * scale
        return out

    def alarms(self, as_of: datetime, limit: int = 50, open_only: bool = False) -> list[Row]:
        """The newest meter alarms up to the fleet clock, with who acknowledged them and who is on them."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT e.ts, m.serial, e.kind, e.code, s.acknowledged_by, s.acknowledged_at, s.assignee, s.note
                   FROM meter_event e JOIN meter m ON m.id = e.meter_id
                   LEFT JOIN alarm_state s ON s.meter_id = e.meter_id AND s.ts = e.ts AND s.kind = e.kind
                   WHERE e.kind = ANY(%(alarms)s) AND e.ts <= %(asof)s::timestamptz + interval '1 hour'
                     AND (NOT %(open)s OR s.acknowledged_at IS NULL)
                   ORDER BY e.ts DESC, m.serial LIMIT %(limit)s""",
                {"alarms": list(ALARM_KINDS), "asof": as_of, "open": open_only, "limit": limit},
            )

    def update_alarm(
        self,
        serial: str,
        ts: datetime,
        kind: str,
        who: str,
        acknowledge: bool = False,
        assignee: str | None = None,
        note: str | None = None,
    ) -> None:
        """Acknowledge an alarm and/or (re)assign it (editor role); acknowledging twice keeps the first."""
        if assignee is not None and not re.fullmatch(r"[A-Za-z0-9_.@ -]{0,64}", assignee):
            raise ValueError("an assignee is a login or a name: letters, digits, space, _ . @ - (64 at most)")
        with self.edit.connection() as conn:
            meter = _scalar(conn, "SELECT id FROM meter WHERE serial = %s", (serial,))
            exists = meter is not None and _scalar(
                conn,
                "SELECT 1 FROM meter_event WHERE meter_id = %s AND ts = %s AND kind = %s AND kind = ANY(%s)",
                (meter, ts, kind, list(ALARM_KINDS)),
            )
            if not exists:
                raise ValueError(f"no {kind} alarm of meter {serial} at {ts:%Y-%m-%d %H:%M:%S}")
            conn.execute(
                """INSERT INTO alarm_state AS s (meter_id, ts, kind, acknowledged_by, acknowledged_at, assignee, note,
                                                 updated_by)
                   VALUES (%(m)s, %(ts)s, %(kind)s, CASE WHEN %(ack)s::boolean THEN %(who)s::text END,
                           CASE WHEN %(ack)s::boolean THEN now() END, nullif(%(assignee)s::text, ''),
                           coalesce(%(note)s::text, ''), %(who)s::text)
                   ON CONFLICT (meter_id, ts, kind) DO UPDATE SET
                       acknowledged_by = coalesce(s.acknowledged_by, EXCLUDED.acknowledged_by),
                       acknowledged_at = coalesce(s.acknowledged_at, EXCLUDED.acknowledged_at),
                       assignee = CASE WHEN %(assignee)s::text IS NULL THEN s.assignee
                                       ELSE nullif(%(assignee)s::text, '') END,
                       note = coalesce(%(note)s::text, s.note), updated_by = %(who)s::text, updated_at = now()""",
                {
                    "m": meter,
                    "ts": ts,
                    "kind": kind,
                    "ack": acknowledge,
                    "who": who,
                    "assignee": assignee,
                    "note": note,
                },
            )

    def open_exception_count(self) -> int:
        """Open VEE exceptions awaiting review (info annotations excluded)."""
        with self.read.connection() as conn:
            return int(_scalar(conn, "SELECT count(*) FROM vee_exception WHERE status = 'open' AND severity <> 'info'"))
