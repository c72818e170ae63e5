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

    def currency(self) -> str:
        """The currency money is counted in (the one on most bills; empty before the first bill run)."""
        with self.read.connection() as conn:
            value = _scalar(conn, "SELECT currency FROM bill GROUP BY currency ORDER BY count(*) DESC LIMIT 1")
        return str(value or "")

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
