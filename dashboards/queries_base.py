"""The dashboards' shared database access: the connection pools, the fleet clock and the fleet snapshot.

:class:`BaseQueries` holds what every page's queries use: a reader pool and an editor pool, the channel
lookup, the fleet clock and the cached fleet snapshot, paging a :class:`~dashboards.tables.TableSpec`,
and the login look-ups. The per-page query mixins (:mod:`dashboards.queries_control`,
:mod:`dashboards.queries_meter`, :mod:`dashboards.queries_billing`, :mod:`dashboards.queries_fraud`)
derive from it and :class:`dashboards.queries.Queries` combines them.

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
import random
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import Connection

from dashboards.auth import UserState
from dashboards.queries_accounts import AccountQueries
from dashboards.queries_field import FieldQueries
from dashboards.tables import TableSpec, fetch_page
from releve import db
from releve.model import MAIN_REGISTER  # the register each commodity is read from (the same as billing's)
from releve.settings import Settings

LATE_AFTER = timedelta(hours=2)
SILENT_AFTER = timedelta(hours=24)
#: A meter its collector polls is late as soon as this many polls in a row failed …
LATE_POLLS = 2
#: … and silent once they have been failing (no good poll) for this long.
SILENT_POLLING = timedelta(minutes=15)
LOOKBACK = timedelta(days=7)
STATES = ("communicating", "late", "silent")
#: The control room's map shows at most this many meters: every one in trouble, and a sample of the others.
MAP_POINTS = 5_000

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

#: The newest main-register read of a meter in the lookback: one index probe into ``reading``, one into
#: ``reading_block``.
_PROBE = f"""
    SELECT r.ts FROM series_before(m.id, {_MAIN_CHANNEL},
                                   %(asof)s::timestamptz + interval '1 hour 1 microsecond', 1) r
    WHERE r.ts > %(asof)s::timestamptz - %(lookback)s::interval"""

#: The line of a meter: its collector's link when one reports it, else its address without the unit (the part
#: after the last "/"; string functions, not a regular expression: at 100,000 meters that was ≈ 0.1 s).
_LINK = """coalesce(ch.link,
                CASE WHEN strpos(m.address->>'uri', '/') > 0
                     THEN left(m.address->>'uri', length(m.address->>'uri') - strpos(reverse(m.address->>'uri'), '/'))
                     ELSE m.address->>'uri' END,
                m.address->>'topic', m.protocol)"""

#: A meter's state from the instant it was last seen, its collector's failed polls in a row and last good poll.
_STATE = """CASE WHEN {seen} IS NULL OR %(asof)s::timestamptz - {seen} > %(silent)s::interval
                 OR ({fails} >= %(late_polls)s
                     AND now() - coalesce({last_good}, '-infinity') > %(silent_polling)s::interval) THEN 'silent'
            WHEN %(asof)s::timestamptz - {seen} > %(late)s::interval OR {fails} >= %(late_polls)s THEN 'late'
            ELSE 'communicating' END"""

#: Where a meter is: its installation's service point and that point's area (a feeder meter: its area).
_PLACE = """LEFT JOIN installation i ON i.meter_id = m.id AND i.removed_at IS NULL
LEFT JOIN service_point sp ON sp.id = i.service_point_id
LEFT JOIN area a ON a.id = sp.area_id
LEFT JOIN area fa ON fa.feeder_meter_id = m.id"""

#: The newest read as ``meter_last_read`` says it when that makes the meter communicating (``s.ts``), else NULL.
_SUMMARISED = f"""LEFT JOIN meter_last_read s ON s.meter_id = m.id AND s.channel_id = {_MAIN_CHANNEL}
    AND s.ts > %(asof)s::timestamptz - %(late)s::interval AND s.ts <= %(asof)s::timestamptz + interval '1 hour'"""

#: Each meter's collector row (the newest), for the whole fleet in one pass.
_HEALTH = """LEFT JOIN (
    SELECT DISTINCT ON (c.serial) c.serial, c.collector, c.link, c.last_good, c.consecutive_failures
    FROM comm_health c ORDER BY c.serial, c.updated_at DESC) ch ON ch.serial = m.serial"""

_FLEET_STATE = _STATE.format(
    seen="greatest(lr.ts, ch.last_good)", fails="ch.consecutive_failures", last_good="ch.last_good"
)

#: Per meter: area, collector, link, position, last seen and state, against the fleet clock.
_FLEET = """
SELECT m.id AS meter_id, m.serial, m.commodity, m.model, m.protocol,
       coalesce(a.code, fa.code, '—') AS area,
       coalesce(ch.collector, m.protocol) AS collector,
       {link} AS link,
       coalesce(sp.latitude, fa.latitude) AS latitude, coalesce(sp.longitude, fa.longitude) AS longitude,
       greatest(lr.ts, ch.last_good) AS last_seen,
       %(asof)s::timestamptz - greatest(lr.ts, ch.last_good) AS quiet,
       {state} AS state
FROM meter m
{last_read}
{health}
{place}
"""

#: Exact, for a few meters (a table page): the newest read probed, the collector's row looked up per meter.
FLEET_SQL = _FLEET.format(
    link=_LINK,
    state=_FLEET_STATE,
    place=_PLACE,
    last_read=f"LEFT JOIN LATERAL ({_PROBE}) lr ON true",
    health="""LEFT JOIN LATERAL (
    SELECT c.collector, c.link, c.last_good, c.consecutive_failures FROM comm_health c WHERE c.serial = m.serial
    ORDER BY c.updated_at DESC LIMIT 1) ch ON true""",
)

#: For the whole fleet (the snapshot): a meter whose newest read in ``meter_last_read`` is recent enough to
#: make it communicating is not probed (its last seen may lag by the time since the daily refresh; its state
#: does not), the others are probed as in :data:`FLEET_SQL`; the collectors' rows are joined in one pass.
FLEET_SNAPSHOT_SQL = _FLEET.format(
    link=_LINK,
    state=_FLEET_STATE,
    place=_PLACE,
    last_read=f"""{_SUMMARISED}
LEFT JOIN LATERAL (SELECT coalesce(s.ts, ({_PROBE})) AS ts) lr ON true""",
    health=_HEALTH,
)

#: The fleet state aggregated in the database, for the control room: meters per state in each area, in each
#: collector and line, with and without coordinates, and the map's points (every meter in trouble that has
#: coordinates, and every ``every``-th communicating one by a hash of its id, about :data:`MAP_POINTS`). The
#: same meters and state as :data:`FLEET_SNAPSHOT_SQL`, but where each meter is (area, line from its address,
#: coordinates) is read from ``meter_topology`` (migration 0017: one row per meter, kept exact by triggers on
#: meter, installation, service_point and area) instead of joining the registry and parsing every address on
#: each view; only ``meter_last_read`` and the collectors' rows are joined to it. Each meter's last seen is
#: computed once (``OFFSET 0`` keeps the state's four uses of it from probing ``reading`` four times), meters
#: are grouped by area id (its code joined to the groups, not to every meter), and 100,000 meters come back
#: as a few thousand rows instead of 100,000.
FLEET_SUMMARY_SQL = f"""
WITH g AS MATERIALIZED (
  SELECT coalesce(ar.code, '—') AS area, y.* FROM (
    SELECT area_id, collector, link, placed, state, count(*) AS n, array_agg(serial) FILTER (WHERE pick) AS serials,
           array_agg(latitude) FILTER (WHERE pick) AS lats, array_agg(longitude) FILTER (WHERE pick) AS lons
    FROM (
        SELECT f.*, st.state, f.latitude IS NOT NULL AND f.longitude IS NOT NULL AS placed,
               f.latitude IS NOT NULL AND f.longitude IS NOT NULL
               AND (st.state <> 'communicating' OR (hashint4(f.meter_id) & 2147483647) %% e.every = 0) AS pick
        FROM (
            SELECT m.id AS meter_id, m.serial, m.area_id,
                   coalesce(ch.collector, m.protocol) AS collector, coalesce(ch.link, m.line) AS link,
                   m.latitude, m.longitude,
                   greatest(coalesce(s.ts, ({_PROBE})), ch.last_good) AS seen,
                   ch.consecutive_failures AS fails, ch.last_good
            FROM (SELECT t.meter_id AS id, t.* FROM meter_topology t) m
            {_SUMMARISED}
            {_HEALTH}
            OFFSET 0) f
        CROSS JOIN LATERAL (SELECT {_STATE.format(seen="f.seen", fails="f.fails", last_good="f.last_good")} AS state) st
        CROSS JOIN (SELECT greatest(1, ceil(count(*) / %(points)s::numeric))::int AS every FROM meter_topology) e
    ) x
    GROUP BY area_id, collector, link, placed, state) y
  LEFT JOIN area ar ON ar.id = y.area_id)
SELECT CASE WHEN grouping(area) = 0 THEN 'area' WHEN grouping(link) = 0 THEN 'link' ELSE 'placed' END AS kind,
       area, collector, link, placed, state, NULL AS serial, NULL::float8 AS latitude, NULL::float8 AS longitude,
       sum(n)::bigint AS meters
FROM g GROUP BY GROUPING SETS ((area, state), (collector, link, state), (placed, state))
UNION ALL
SELECT 'point', g.area, g.collector, g.link, g.placed, g.state, p.serial, p.latitude, p.longitude, 1
FROM g CROSS JOIN LATERAL unnest(g.serials, g.lats, g.lons) AS p (serial, latitude, longitude)
WHERE g.serials IS NOT NULL
"""


def _tally(
    groups: dict[tuple[Any, ...], Row], names: tuple[str, ...], key: tuple[Any, ...], state: str, n: int
) -> None:
    row = groups.get(key)
    if row is None:
        row = groups[key] = {**dict(zip(names, key, strict=True)), **dict.fromkeys(STATES, 0)}
    row[state] += n


def _worst_first(groups: dict[tuple[Any, ...], Row], name: str) -> list[Row]:
    """Groups with their meter count, the largest share of late and silent meters first, then by name."""
    out = list(groups.values())
    for row in out:
        row["meters"] = sum(row[s] for s in STATES)
    out.sort(key=lambda x: (-(x["silent"] + x["late"]) / max(1, x["meters"]), str(x[name]), str(x.get("collector"))))
    return out


def _map_points(points: list[Row]) -> list[Row]:
    """At most :data:`MAP_POINTS`: the meters in trouble first, then communicating ones."""
    bad = [p for p in points if p["state"] != "communicating"][:MAP_POINTS]
    good = [p for p in points if p["state"] == "communicating"][: MAP_POINTS - len(bad)]
    return bad + good


@dataclass
class FleetSnapshot:
    """The fleet's state at one fleet clock, aggregated, computed once and shared by the control-room views.

    Meters per state in each area (:meth:`by` ``"area"``) and in each collector and line (``"link"``),
    the meters with coordinates (``placed``) and the map's points: every meter in trouble that has
    coordinates and a sample of the communicating ones, :data:`MAP_POINTS` at most (all of them when
    fewer have coordinates). Built from :data:`FLEET_SUMMARY_SQL` (:meth:`from_summary`: the database
    aggregates) or from every meter's row (:meth:`from_rows`: the reference the tests compare it with).
    """

    as_of: datetime
    taken: float
    areas: list[Row]
    links: list[Row]
    placed: int
    points: list[Row]

    def counts(self) -> dict[str, int]:
        """Meters per state."""
        out = dict.fromkeys(STATES, 0)
        for row in self.areas:
            for s in STATES:
                out[s] += row[s]
        return out

    @property
    def meters(self) -> int:
        """Meters in the fleet."""
        return sum(row["meters"] for row in self.areas)

    def by(self, key: str) -> list[Row]:
        """Meters per state for each value of ``key`` (``area`` or ``link``), worst first."""
        if key == "area":
            return self.areas
        if key == "link":
            return self.links
        raise ValueError(f"the fleet state is grouped by area or link, not {key!r}")

    @classmethod
    def from_summary(cls, as_of: datetime, rows: list[Row], taken: float) -> FleetSnapshot:
        """From the rows of :data:`FLEET_SUMMARY_SQL`."""
        areas: dict[tuple[Any, ...], Row] = {}
        links: dict[tuple[Any, ...], Row] = {}
        placed = 0
        points: list[Row] = []
        for r in rows:
            kind, state, n = r["kind"], r["state"], int(r["meters"])
            if kind == "area":
                _tally(areas, ("area",), (r["area"],), state, n)
            elif kind == "link":
                _tally(links, ("collector", "link"), (r["collector"], r["link"]), state, n)
            elif kind == "placed":
                placed += n if r["placed"] else 0
            else:
                points.append({k: r[k] for k in ("serial", "area", "link", "state", "latitude", "longitude")})
        points.sort(key=lambda p: zlib.crc32(p["serial"].encode()))  # a stable order that is not the serials'
        return cls(as_of, taken, _worst_first(areas, "area"), _worst_first(links, "link"), placed, _map_points(points))

    @classmethod
    def from_rows(cls, as_of: datetime, rows: list[Row], taken: float) -> FleetSnapshot:
        """From every meter's row of :data:`FLEET_SNAPSHOT_SQL`, aggregated in Python.

        The map's communicating meters are drawn at random, not by the hash :data:`FLEET_SUMMARY_SQL` uses.
        """
        areas: dict[tuple[Any, ...], Row] = {}
        links: dict[tuple[Any, ...], Row] = {}
        for r in rows:
            _tally(areas, ("area",), (r["area"],), r["state"], 1)
            _tally(links, ("collector", "link"), (r["collector"], r["link"]), r["state"], 1)
        pts = [r for r in rows if r["latitude"] is not None and r["longitude"] is not None]
        bad = [r for r in pts if r["state"] != "communicating"]
        good = [r for r in pts if r["state"] == "communicating"]
        if len(pts) > MAP_POINTS:
            good = random.Random(0).sample(good, min(max(0, MAP_POINTS - len(bad)), len(good)))
        keys = ("serial", "area", "link", "state", "latitude", "longitude")
        points = sorted(({k: r[k] for k in keys} for r in bad + good), key=lambda p: p["serial"])
        return cls(
            as_of, taken, _worst_first(areas, "area"), _worst_first(links, "link"), len(pts), _map_points(points)
        )


class BaseQueries:
    """The pools, the fleet clock and snapshot, and the helpers the per-page query mixins share."""

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
            "asof": as_of,
            "late": LATE_AFTER,
            "silent": SILENT_AFTER,
            "lookback": LOOKBACK,
            "late_polls": LATE_POLLS,
            "silent_polling": SILENT_POLLING,
            "ch_e": ch.get(MAIN_REGISTER["electricity"], 0),
            "ch_w": ch.get(MAIN_REGISTER["water"], 0),
        }

    def fleet_rows(self, as_of: datetime | None = None) -> tuple[datetime, list[Row]]:
        """Every meter's row of :data:`FLEET_SNAPSHOT_SQL` (state, area, line, position, last seen) at the fleet clock.

        What the control room fetched and aggregated in Python before the database aggregated it.
        """
        with self.read.connection() as conn:
            as_of = as_of or self.as_of(conn)
            rows = _rows(
                conn,
                f"SELECT meter_id, serial, area, collector, link, latitude, longitude, last_seen, quiet, state "
                f"FROM ({FLEET_SNAPSHOT_SQL}) f",
                self.fleet_params(as_of),
            )
        return as_of, rows

    def fleet_summary(self, as_of: datetime | None = None) -> FleetSnapshot:
        """The fleet state aggregated in the database (:data:`FLEET_SUMMARY_SQL`) at the fleet clock."""
        with self.read.connection() as conn:
            as_of = as_of or self.as_of(conn)
            with conn.transaction():  # enough memory to group 100,000 meters in a hash table, not by sorting them
                conn.execute("SET LOCAL work_mem = '64MB'")
                rows = _rows(conn, FLEET_SUMMARY_SQL, {**self.fleet_params(as_of), "points": MAP_POINTS})
        return FleetSnapshot.from_summary(as_of, rows, time.monotonic())

    def _compute_snapshot(self) -> FleetSnapshot:
        return self.fleet_summary()

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

    def currency(self) -> str:
        """The currency money is counted in (the one on most bills; empty before the first bill run)."""
        with self.read.connection() as conn:
            value = _scalar(conn, "SELECT currency FROM bill GROUP BY currency ORDER BY count(*) DESC LIMIT 1")
        return str(value or "")

    # ------------------------------------------------------------------------------------- helpers
    def _page(
        self,
        spec: TableSpec,
        page: int,
        size: int,
        sort_by: Any,
        filter_query: str | None,
        params: dict[str, Any] | None = None,
    ) -> tuple[list[Row], int]:
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
