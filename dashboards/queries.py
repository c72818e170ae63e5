"""The dashboards' database access: the connection pools and the queries of most pages.

The accounts page's queries are in :mod:`dashboards.queries_accounts` and the field-work page's in
:mod:`dashboards.queries_field` (``Queries.accounts``, ``Queries.field``), over the same pools.

Reads go through the **reader** role, writes (a visit outcome, a review decision) through the
**editor** role and the owning package's own functions (``analytics.vee.review``,
``analytics.theft.store``), so they are audited the same way as from the command line.

Communication state of a meter is judged against the *fleet clock* (``as_of``): the newest instant
landed by ingest, capped at now. On a live system that is now; on a replayed or backfilled history it
is the end of the data, so the control room stays meaningful. A meter is **communicating** when its
newest main-register read (or its collector's last good poll) is at most :data:`LATE_AFTER` old,
**late** up to :data:`SILENT_AFTER`, **silent** beyond (or never seen in :data:`LOOKBACK`).
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import Connection

from dashboards.auth import UserState
from dashboards.queries_accounts import AccountQueries
from dashboards.queries_field import FieldQueries
from dashboards.tables import Column, TableSpec, fetch_page
from releve import db
from releve.model import MAIN_REGISTER  # the register each commodity is read from (the same as billing's)
from releve.settings import Settings

LATE_AFTER = timedelta(hours=2)
SILENT_AFTER = timedelta(hours=24)
#: A meter its collector polls is late as soon as this many polls in a row failed …
LATE_POLLS = 2
#: … and silent once they have been failing (no good poll) for this long.
SILENT_POLLING = timedelta(minutes=15)
#: A batch is live data (the ingest rate) when its oldest row is at most this old as it lands; backfills are not.
LIVE_WITHIN = timedelta(hours=6)
#: Live values shown per meter: channel code -> (column, scale to the shown unit).
LIVE_VALUES = {"1-0:32.7.0": ("voltage_v", 1.0), "1-0:31.7.0": ("current_a", 1.0), "1-0:1.7.0": ("power_kw", 0.001)}
LOOKBACK = timedelta(days=7)
#: Event kinds the control room calls alarms (tamper, fraud and water network damage).
ALARM_KINDS = (
    "terminal_cover_open", "magnetic_field", "meter_cover_open", "auth_failure", "reverse_energy",
    "current_without_voltage", "bypass", "reverse_flow", "leak", "burst", "cable_cut", "removal", "clock_invalid",
)  # fmt: skip
STATES = ("communicating", "late", "silent")

Row = dict[str, Any]


class Pool:
    """A few open connections per role, reused across requests (autocommit, UTC, SET ROLE done once)."""

    def __init__(self, url: str, role: str | None, size: int = 4) -> None:
        self.url, self.role = url, role
        self._free: queue.LifoQueue[Connection] = queue.LifoQueue(maxsize=size)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A healthy connection, returned to the pool afterwards (closed if it broke)."""
        try:
            conn = self._free.get_nowait()
            if conn.closed or conn.broken:
                conn = db.connect(self.url, role=self.role, autocommit=True)
        except queue.Empty:
            conn = db.connect(self.url, role=self.role, autocommit=True)
        ok = False
        try:
            yield conn
            ok = True
        finally:
            if ok and not conn.closed:
                try:
                    self._free.put_nowait(conn)
                except queue.Full:
                    conn.close()
            else:
                conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._free.get_nowait().close()
            except queue.Empty:
                return


def _rows(conn: Connection, query: str, params: dict[str, Any] | tuple[Any, ...] | None = None) -> list[Row]:
    cur = conn.execute(query.encode() if params is None else query, params)
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _scalar(conn: Connection, query: str, params: dict[str, Any] | tuple[Any, ...] | None = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


# ----------------------------------------------------------------------------------------- fleet status

_MAIN_CHANNEL = "CASE m.commodity WHEN 'electricity' THEN %(ch_e)s::smallint ELSE %(ch_w)s::smallint END"

#: The newest main-register read of a meter in the lookback, one index probe into ``reading``.
_PROBE = f"""
    SELECT r.ts FROM reading r
    WHERE r.meter_id = m.id AND r.channel_id = {_MAIN_CHANNEL}
      AND r.ts > %(asof)s::timestamptz - %(lookback)s::interval AND r.ts <= %(asof)s::timestamptz + interval '1 hour'
    ORDER BY r.ts DESC LIMIT 1"""

#: Per meter: area, collector, link, position, last seen and state, against the fleet clock.
_FLEET = """
SELECT m.id AS meter_id, m.serial, m.commodity, m.model, m.protocol,
       coalesce(a.code, fa.code, '—') AS area,
       coalesce(ch.collector, m.protocol) AS collector,
       coalesce(ch.link, regexp_replace(m.address->>'uri', '/[^/]*$', ''), m.address->>'topic', m.protocol) AS link,
       coalesce(sp.latitude, fa.latitude) AS latitude, coalesce(sp.longitude, fa.longitude) AS longitude,
       greatest(lr.ts, ch.last_good) AS last_seen,
       %(asof)s::timestamptz - greatest(lr.ts, ch.last_good) AS quiet,
       CASE WHEN greatest(lr.ts, ch.last_good) IS NULL
                 OR %(asof)s::timestamptz - greatest(lr.ts, ch.last_good) > %(silent)s::interval
                 OR (ch.consecutive_failures >= %(late_polls)s
                     AND now() - coalesce(ch.last_good, '-infinity') > %(silent_polling)s::interval) THEN 'silent'
            WHEN %(asof)s::timestamptz - greatest(lr.ts, ch.last_good) > %(late)s::interval
                 OR ch.consecutive_failures >= %(late_polls)s THEN 'late'
            ELSE 'communicating' END AS state
FROM meter m
{last_read}
{health}
LEFT JOIN installation i ON i.meter_id = m.id AND i.removed_at IS NULL
LEFT JOIN service_point sp ON sp.id = i.service_point_id
LEFT JOIN area a ON a.id = sp.area_id
LEFT JOIN area fa ON fa.feeder_meter_id = m.id
"""

#: Exact, for a few meters (a table page): the newest read probed, the collector's row looked up per meter.
FLEET_SQL = _FLEET.format(
    last_read=f"LEFT JOIN LATERAL ({_PROBE}) lr ON true",
    health="""LEFT JOIN LATERAL (
    SELECT c.collector, c.link, c.last_good, c.consecutive_failures FROM comm_health c WHERE c.serial = m.serial
    ORDER BY c.updated_at DESC LIMIT 1) ch ON true""",
)

#: For the whole fleet (the snapshot): a meter whose newest read in ``meter_last_read`` is recent enough to
#: make it communicating is not probed (its last seen may lag by the time since the daily refresh; its state
#: does not), the others are probed as in :data:`FLEET_SQL`; the collectors' rows are joined in one pass.
FLEET_SNAPSHOT_SQL = _FLEET.format(
    last_read=f"""LEFT JOIN meter_last_read s ON s.meter_id = m.id AND s.channel_id = {_MAIN_CHANNEL}
    AND s.ts > %(asof)s::timestamptz - %(late)s::interval AND s.ts <= %(asof)s::timestamptz + interval '1 hour'
LEFT JOIN LATERAL (SELECT coalesce(s.ts, ({_PROBE})) AS ts) lr ON true""",
    health="""LEFT JOIN (
    SELECT DISTINCT ON (c.serial) c.serial, c.collector, c.link, c.last_good, c.consecutive_failures
    FROM comm_health c ORDER BY c.serial, c.updated_at DESC) ch ON ch.serial = m.serial""",
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


@dataclass
class FleetSnapshot:
    """Every meter's state at one fleet clock, fetched once and shared by the control-room views."""

    as_of: datetime
    rows: list[Row]
    taken: float
    _by: dict[str, list[Row]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Meters per state."""
        out = dict.fromkeys(STATES, 0)
        out.update(Counter(r["state"] for r in self.rows))
        return out

    def by(self, key: str) -> list[Row]:
        """Meters per state for each value of ``key`` (``area`` or ``link``), worst first (computed once)."""
        if key not in self._by:
            if key == "link":
                tally = Counter((r["collector"], r["link"], r["state"]) for r in self.rows)
            else:
                tally = Counter((r[key], None, r["state"]) for r in self.rows)
            groups: dict[tuple[Any, Any], Row] = {}
            for (a, b, state), n in tally.items():
                row = groups.get((a, b))
                if row is None:
                    row = {"collector": a, "link": b} if key == "link" else {key: a}
                    row.update(dict.fromkeys(STATES, 0))
                    groups[(a, b)] = row
                row[state] = n
            out = list(groups.values())
            for row in out:
                row["meters"] = sum(row[s] for s in STATES)
            out.sort(key=lambda x: (-(x["silent"] + x["late"]) / max(1, x["meters"]), str(x.get(key, x.get("link")))))
            self._by[key] = out
        return self._by[key]


class Queries:
    """The dashboards' access to the database: a reader pool, an editor pool, and the queries."""

    def __init__(self, url: str, settings: Settings, snapshot_ttl: float = 10.0) -> None:
        self.url, self.settings = url, settings
        self.read = Pool(db.read_url(settings, url), db.reader_role(settings))  # the replica when one is set
        self.edit = Pool(url, db.editor_role(settings), size=2)
        self.accounts = AccountQueries(self.read)  # /accounts: arrears, credit-control queue, ledgers
        self.field = FieldQueries(self.read, self.edit)  # /field: work orders, breaches, the map; assignments
        self.snapshot_ttl = snapshot_ttl
        self._snapshot: FleetSnapshot | None = None
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._channels: dict[str, int] | None = None

    def close(self) -> None:
        """Close the pooled connections."""
        self.read.close()
        self.edit.close()

    # -------------------------------------------------------------------------------------- basics
    def channels(self) -> dict[str, int]:
        """Channel ids by code (cached: the lookup never changes while running)."""
        if self._channels is None:
            with self.read.connection() as conn:
                self._channels = {code: int(i) for i, code in conn.execute("SELECT id, code FROM channel")}
        return self._channels

    def replication(self) -> str:
        """Where the pages read, for the control room: "primary", or the replica and its lag."""
        with self.read.connection() as conn:
            return db.replica_status(conn).describe()

    def as_of(self, conn: Connection) -> datetime:
        """The fleet clock: the newest instant landed by recent batches, capped at now."""
        value = _scalar(
            conn,
            """SELECT least(now(), coalesce(max(max_ts), now()))
               FROM (SELECT max_ts FROM ingest_batch ORDER BY id DESC LIMIT 500) b""",
        )
        return value if isinstance(value, datetime) else datetime.now(UTC)

    def fleet_params(self, as_of: datetime) -> dict[str, Any]:
        """Parameters of :data:`FLEET_SQL`."""
        ch = self.channels()
        return {
            "asof": as_of, "late": LATE_AFTER, "silent": SILENT_AFTER, "lookback": LOOKBACK,
            "late_polls": LATE_POLLS, "silent_polling": SILENT_POLLING,
            "ch_e": ch.get(MAIN_REGISTER["electricity"], 0), "ch_w": ch.get(MAIN_REGISTER["water"], 0),
        }  # fmt: skip

    def _compute_snapshot(self) -> FleetSnapshot:
        with self.read.connection() as conn:
            as_of = self.as_of(conn)
            rows = _rows(
                conn,
                f"SELECT meter_id, serial, area, collector, link, latitude, longitude, last_seen, quiet, state "
                f"FROM ({FLEET_SNAPSHOT_SQL}) f",
                self.fleet_params(as_of),
            )
        snap = FleetSnapshot(as_of, rows, time.monotonic())
        snap.by("area")  # aggregated here, in the refreshing thread, not in a page view
        snap.by("link")
        return snap

    def _refresh_in_background(self) -> None:
        try:
            snap = self._compute_snapshot()
            with self._lock:
                self._snapshot = snap
        finally:
            self._refreshing.release()

    def warm_up(self) -> None:
        """Compute the fleet snapshot in a background thread (so the first page view finds it ready)."""
        if self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh_in_background, daemon=True, name="fleet-snapshot").start()

    def snapshot(self, fresh: bool = False) -> FleetSnapshot:
        """The fleet state, shared by the control-room views.

        Computed here the first time (or when ``fresh``) unless the warm-up begun at start is computing it
        (then its result is awaited); afterwards, once older than ``snapshot_ttl`` seconds, the current one
        is served while a background thread recomputes it.
        """
        with self._lock:
            snap = self._snapshot
        if snap is None and not fresh and self._refreshing.locked():
            with self._refreshing:  # the warm-up begun at start is computing it: wait for it, not compute it twice
                pass
            with self._lock:
                snap = self._snapshot
        if snap is not None and not fresh:
            if time.monotonic() - snap.taken >= self.snapshot_ttl:
                self.warm_up()
            return snap
        snap = self._compute_snapshot()
        with self._lock:
            self._snapshot = snap
        return snap

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
            ids, total = fetch_page(conn, REGISTRY_LIST, page, size, sort_by, filter_query)
            rows = _rows(conn, f"SELECT * FROM ({FLEET_SQL} WHERE m.id = ANY(%(ids)s)) f",
                         {**params, "ids": [r["meter_id"] for r in ids]})  # fmt: skip
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
            return int(_scalar(
                conn,
                """SELECT count(*) FROM meter_event WHERE kind = ANY(%s)
                   AND ts > %s::timestamptz - make_interval(hours => %s)
                   AND ts <= %s::timestamptz + interval '1 hour'""",
                (list(ALARM_KINDS), as_of, hours, as_of),
            ) or 0)  # fmt: skip

    def live_values(self, meter_ids: list[int], within: timedelta = timedelta(hours=1)) -> dict[int, Row]:
        """The newest voltage (V), current (A) and power (kW) of each meter, read in the last ``within``."""
        ch = self.channels()
        wanted = {ch[code]: (col, scale) for code, (col, scale) in LIVE_VALUES.items() if code in ch}
        if not meter_ids or not wanted:
            return {}
        with self.read.connection() as conn:
            rows = conn.execute(
                """SELECT DISTINCT ON (meter_id, channel_id) meter_id, channel_id, value, ts FROM reading
                   WHERE meter_id = ANY(%s) AND channel_id = ANY(%s) AND ts > now() - %s::interval
                   ORDER BY meter_id, channel_id, ts DESC""",
                (meter_ids, list(wanted), within),
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

    def update_alarm(self, serial: str, ts: datetime, kind: str, who: str, acknowledge: bool = False,
                     assignee: str | None = None, note: str | None = None) -> None:  # fmt: skip
        """Acknowledge an alarm and/or (re)assign it (editor role); acknowledging twice keeps the first."""
        if assignee is not None and not re.fullmatch(r"[A-Za-z0-9_.@ -]{0,64}", assignee):
            raise ValueError("an assignee is a login or a name: letters, digits, space, _ . @ - (64 at most)")
        with self.edit.connection() as conn:
            meter = _scalar(conn, "SELECT id FROM meter WHERE serial = %s", (serial,))
            exists = meter is not None and _scalar(
                conn, "SELECT 1 FROM meter_event WHERE meter_id = %s AND ts = %s AND kind = %s AND kind = ANY(%s)",
                (meter, ts, kind, list(ALARM_KINDS)))  # fmt: skip
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
                {"m": meter, "ts": ts, "kind": kind, "ack": acknowledge, "who": who, "assignee": assignee,
                 "note": note},
            )  # fmt: skip

    def open_exception_count(self) -> int:
        """Open VEE exceptions awaiting review (info annotations excluded)."""
        with self.read.connection() as conn:
            return int(_scalar(conn, "SELECT count(*) FROM vee_exception WHERE status = 'open' AND severity <> 'info'"))

    # ------------------------------------------------------------------------------------ meter page
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
            return [r[0] for r in conn.execute(
                "SELECT serial FROM meter WHERE serial LIKE %s ORDER BY serial LIMIT %s",
                (text.replace("%", "").replace("_", "") + "%", limit))]  # fmt: skip

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

    def currency(self) -> str:
        """The currency money is counted in (the one on most bills; empty before the first bill run)."""
        with self.read.connection() as conn:
            value = _scalar(conn, "SELECT currency FROM bill GROUP BY currency ORDER BY count(*) DESC LIMIT 1")
        return str(value or "")

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
            return _scalar(conn, "SELECT max(ts) FROM reading WHERE meter_id = %s", (meter_id,))

    def series(self, meter_id: int, channel: str, start: datetime, end: datetime) -> list[Row]:
        """The validated series of one channel with its raw value, quality and review state."""
        ch = self.channels().get(channel)
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT ts, value, raw_value, quality, quality_flag, method, reason, version, read_type, under_review
                   FROM validated_reading WHERE meter_id = %s AND channel_id = %s AND ts >= %s AND ts < %s
                   ORDER BY ts""",
                (meter_id, ch, start, end),
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
        return self._page(INDEX_HISTORY, page, size, sort_by, filter_query,
                          {"mid": meter_id, "ch": self.channels().get(channel)})  # fmt: skip

    # --------------------------------------------------------------------------------------- billing
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

    def review(self, action: str, exception_id: int, who: str, value: float | None = None, choice: int = 1,
               note: str = "") -> str:  # fmt: skip
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

    # ----------------------------------------------------------------------------------------- fraud
    def theft_runs(self, limit: int = 20) -> list[Row]:
        """The newest theft rankings."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT id, created_at, period_from, period_to, n_meters, n_candidates, n_labels, model
                   FROM theft_run ORDER BY id DESC LIMIT %s""",
                (limit,),
            )

    def candidates(self, run_id: int, page: int, size: int, sort_by: Any, filter_query: str | None,
                   area: str | None = None, commodity: str | None = None, signal: str | None = None,
                   min_value: float | None = None, hide_visited: bool = False) -> tuple[list[Row], int]:  # fmt: skip
        """Run ``run_id``'s ranked list, one page, with the filters of the page and of the table header."""
        return self._page(CANDIDATES, page, size, sort_by, filter_query, {
            "run": run_id, "area": area or None, "commodity": commodity or None, "signal": signal or None,
            "min_value": min_value, "hide": hide_visited})  # fmt: skip

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

    def route(self, run_id: int, top: int, area: str | None = None, commodity: str | None = None,
              signal: str | None = None) -> str:  # fmt: skip
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

    # ------------------------------------------------------------------------------------- helpers
    def _page(self, spec: TableSpec, page: int, size: int, sort_by: Any, filter_query: str | None,
              params: dict[str, Any] | None = None) -> tuple[list[Row], int]:  # fmt: skip
        with self.read.connection() as conn:
            return fetch_page(conn, spec, page, size, sort_by, filter_query, params)

    def check_login(self, username: str, password: str) -> UserState | None:
        """The user's roles and password stamp if the login is right."""
        from dashboards.auth import check_login

        with self.read.connection() as conn:
            return check_login(conn, username, password)

    def user_state(self, username: str) -> UserState | None:
        """The user's roles and password stamp now (None: deleted or disabled)."""
        from dashboards.auth import user_state

        with self.read.connection() as conn:
            return user_state(conn, username)

    def users(self) -> list[Row]:
        """Every dashboard login: roles, state, and whether its hash is still the old scrypt."""
        with self.read.connection() as conn:
            return _rows(
                conn,
                """SELECT username, roles, disabled,
                                         CASE WHEN password_hash LIKE 'scrypt$%%' THEN 'scrypt (set a new password)'
                                              ELSE 'argon2id' END AS hash, created_at, updated_at
                                  FROM dashboard_user ORDER BY username""",
                (),
            )


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
