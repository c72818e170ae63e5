"""The batch writer: one transaction per batch, binary ``COPY``, an idempotent merge.

What happens to a batch, in order:

1. Its key (a UUID) is recorded in ``ingest_batch``; a key seen before means the batch already
   landed (a spool replayed after a crash) and it is skipped whole.
2. Rows that cannot be accepted — unknown meter, channel or unit, NaN or infinite value,
   timestamp before ``ingest.earliest`` or too far in the future — go to ``rejected_input`` with the
   reason; the rest of the batch carries on.
3. Rows are sorted by (meter, channel, instant). Exact duplicates inside the batch are dropped;
   a second, *different* value for the same key is kept aside in ``reading_conflict``.
4. Fast path: the rows are copied straight into ``reading``. Its primary key is the duplicate
   check, so fresh data pays nothing more. If any row already exists (late or redelivered data),
   the copy is rolled back to a savepoint and the slow path runs: copy into a temporary staging
   table, insert what is new, count what is identical, and keep what differs as a conflict.
5. Events are inserted once per (meter, instant, kind); counts are written back to the batch row.

All of it commits together or not at all, so a failed batch can simply be retried.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from psycopg import Connection, errors

from ingest.frame import READ_TYPES, READING_COPY_COLUMNS, ReadingFrame, encode_reading_copy
from releve import db
from releve.model import DLMS_EVENT_CODES, MeterEvent, Reading, Rejected, Source
from releve.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """What became of one batch."""

    batch_key: uuid.UUID
    batch_id: int | None
    rows: int
    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    events: int = 0
    replayed: bool = False


class _Lookup:
    """Name → id maps for meters, channels, units, sources and read types, filled on demand."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.meters: dict[str, int] = {}
        self.channels: dict[str, int] = dict(conn.execute("SELECT code, id FROM channel").fetchall())
        self.units: dict[str, int] = dict(conn.execute("SELECT code, id FROM unit").fetchall())
        self.sources: dict[str, int] = dict(conn.execute("SELECT name, id FROM reading_source").fetchall())
        self.read_types: dict[str, int] = dict(conn.execute("SELECT name, id FROM read_type").fetchall())

    def meter_ids(self, serials: Sequence[str]) -> np.ndarray:
        """Database ids of ``serials`` (-1 where unknown)."""
        missing = [s for s in serials if s not in self.meters]
        if missing:
            rows = self.conn.execute("SELECT serial, id FROM meter WHERE serial = ANY(%s)", (missing,)).fetchall()
            self.meters.update(rows)
        return np.array([self.meters.get(s, -1) for s in serials], dtype=np.int32)

    @staticmethod
    def ids(names: Sequence[str], table: dict[str, int]) -> np.ndarray:
        return np.array([table.get(n, -1) for n in names], dtype=np.int32)


class BatchWriter:
    """Writes batches of readings and events over one connection, as the ingest (writer) role."""

    def __init__(self, url: str, settings: Settings, origin: str = "ingest", conn: Connection | None = None) -> None:
        """Open a connection as the writer role; or, with ``conn``, write inside the caller's transaction.

        A borrowed connection is neither committed nor closed here: each batch is then a savepoint of
        the caller's transaction (``ingest load`` lands a whole directory or nothing), and the caller
        has switched it to the writer role.
        """
        self.settings = settings
        self.origin = origin
        self._own = conn is None
        self.conn = db.connect(url, role=db.writer_role(settings)) if conn is None else conn
        self.lookup = _Lookup(self.conn)
        if self._own:
            self.conn.commit()
        self._months: set[tuple[int, int]] = set()
        self._staging_ready = False
        self.earliest = np.datetime64(settings.ingest.earliest, "us")

    def close(self) -> None:
        """Close the connection (a borrowed one stays open)."""
        if self._own:
            self.conn.close()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ------------------------------------------------------------------------------
    def write(
        self,
        readings: Sequence[Reading] | ReadingFrame = (),
        events: Sequence[MeterEvent] = (),
        rejected: Sequence[Rejected] = (),
        batch_key: uuid.UUID | None = None,
    ) -> BatchResult:
        """Land one batch; return what became of it. Raises only on database failure (retry it)."""
        frame = readings if isinstance(readings, ReadingFrame) else ReadingFrame.from_readings(readings)
        key = batch_key or uuid.uuid4()
        now = datetime.now(UTC)
        try:
            with self.conn.transaction():
                return self._write(frame, events, rejected, key, now)
        except psycopg.OperationalError:
            self._staging_ready = False
            raise

    # -- the steps -------------------------------------------------------------------------------
    def _write(
        self,
        frame: ReadingFrame,
        events: Sequence[MeterEvent],
        rejected: Sequence[Rejected],
        key: uuid.UUID,
        now: datetime,
    ) -> BatchResult:
        row = self.conn.execute(
            """INSERT INTO ingest_batch (batch_key, origin, n_rows) VALUES (%s, %s, %s)
               ON CONFLICT (batch_key) DO NOTHING RETURNING id""",
            (key, self.origin, len(frame)),
        ).fetchone()
        if row is None:
            log.info("batch %s already landed; skipped", key)
            return BatchResult(key, None, len(frame), replayed=True)
        batch_id = int(row[0])

        dead: list[tuple[str, str, str, str]] = []  # rows refused here; ``rejected`` came refused
        cols = self._resolve(frame, now, dead)
        inserted = duplicates = conflicts = 0
        if cols is not None:
            inserted, duplicates, conflicts = self._merge(cols, frame.source, now, batch_id)
        n_events = self._write_events(events, batch_id, dead)
        if dead or rejected:
            self._write_dead(rejected, dead, key)
        self.conn.execute(
            """UPDATE ingest_batch SET n_inserted = %s, n_duplicates = %s, n_conflicts = %s,
                      n_rejected = %s, n_events = %s, min_ts = %s, max_ts = %s WHERE id = %s""",
            (inserted, duplicates, conflicts, len(dead) + len(rejected), n_events,
             cols.min_ts if cols else None, cols.max_ts if cols else None, batch_id),
        )  # fmt: skip
        result = BatchResult(key, batch_id, len(frame), inserted, duplicates, conflicts, len(dead) + len(rejected),
                             n_events)
        log.debug("batch landed", extra={"batch": str(key), **result.__dict__})
        return result

    def _resolve(
        self, frame: ReadingFrame, now: datetime, dead: list[tuple[str, str, str, str]]
    ) -> _Columns | None:
        """Map names to ids and split off invalid rows (appended to ``dead`` with their reason)."""
        if len(frame) == 0:
            return None
        lk = self.lookup
        meter_id = lk.meter_ids(frame.meters)[frame.meter_idx]
        channel_id = lk.ids(frame.channels, lk.channels)[frame.channel_idx]
        unit_id = lk.ids(frame.units, lk.units)[frame.unit_idx]
        latest = np.datetime64(now.replace(tzinfo=None), "us") + np.timedelta64(
            int(self.settings.ingest.max_future_seconds * 1e6), "us"
        )
        checks = (
            (meter_id < 0, lambda i: f"unknown meter {frame.meters[frame.meter_idx[i]]!r}"),
            (channel_id < 0, lambda i: f"unknown channel {frame.channels[frame.channel_idx[i]]!r}"),
            (unit_id < 0, lambda i: f"unknown unit {frame.units[frame.unit_idx[i]]!r}"),
            (~np.isfinite(frame.value), lambda i: f"value is {frame.value[i]} (not a finite number)"),
            (frame.ts < self.earliest, lambda i: f"timestamp {frame.ts[i]}Z is before {self.earliest}"),
            (frame.ts > latest, lambda i: f"timestamp {frame.ts[i]}Z is in the future (now {now:%Y-%m-%dT%H:%M:%S}Z)"),
        )  # fmt: skip
        bad = np.zeros(len(frame), bool)
        for mask, reason in checks:
            fresh = mask & ~bad
            for i in np.flatnonzero(fresh):
                payload = json.dumps(frame.row(int(i)))
                dead.append((frame.source.value, self.origin, reason(int(i)), payload))
            bad |= mask
        good = ~bad
        if not good.any():
            return None
        rt_ids = lk.ids([rt.value for rt in READ_TYPES], lk.read_types)
        return _Columns(
            meter_id=meter_id[good],
            channel_id=channel_id[good].astype(np.int16),
            ts=frame.ts[good],
            value=frame.value[good],
            unit_id=unit_id[good].astype(np.int16),
            read_type_id=rt_ids[frame.read_type_idx[good]].astype(np.int16),
            quality=frame.quality[good],
        )

    def _merge(self, cols: _Columns, source: Source, now: datetime, batch_id: int) -> tuple[int, int, int]:
        """Insert new rows; return (inserted, duplicates, conflicts)."""
        cols.sort()
        same_key = cols.same_key_as_previous()
        same_value = same_key & np.concatenate(([False], cols.value[1:] == cols.value[:-1]))
        in_batch_conflict = same_key & ~same_value
        duplicates = int(same_value.sum())
        source_id = self.lookup.sources[source.value]
        conflicts = 0
        if in_batch_conflict.any():
            first = np.flatnonzero(in_batch_conflict)
            conflicts += self._record_conflicts(cols, first, cols.first_value_of_key(first), source_id, batch_id)
        keep = ~same_key
        rows = cols.take(keep)
        self._ensure_partitions(rows.min_ts, rows.max_ts)
        payload = rows.encode(source_id, now, batch_id)
        try:
            with self.conn.transaction(), self.conn.cursor().copy(
                f"COPY reading ({READING_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(payload)
            return len(rows.value), duplicates, conflicts
        except errors.UniqueViolation:
            pass  # some rows exist already: late or redelivered data, take the careful path
        inserted, dup2, conf2 = self._merge_existing(payload, source_id, batch_id)
        return inserted, duplicates + dup2, conflicts + conf2

    def _merge_existing(self, payload: bytes, source_id: int, batch_id: int) -> tuple[int, int, int]:
        if not self._staging_ready:
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS reading_stage (LIKE reading INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            self._staging_ready = True
        with self.conn.cursor().copy(
            f"COPY reading_stage ({READING_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(payload)
        staged = self.conn.execute("SELECT count(*) FROM reading_stage").fetchone()
        cur = self.conn.execute(
            "INSERT INTO reading SELECT * FROM reading_stage ON CONFLICT (meter_id, channel_id, ts) DO NOTHING"
        )
        inserted = cur.rowcount
        cur = self.conn.execute(
            """INSERT INTO reading_conflict (meter_id, channel_id, ts, stored_value, new_value, unit_id,
                                             source_id, read_type_id, quality, batch_id)
               SELECT s.meter_id, s.channel_id, s.ts, r.value, s.value, s.unit_id, s.source_id,
                      s.read_type_id, s.quality, s.batch_id
               FROM reading_stage s JOIN reading r USING (meter_id, channel_id, ts)
               WHERE r.batch_id <> s.batch_id AND r.value IS DISTINCT FROM s.value"""
        )
        conflicts = cur.rowcount
        total = int(staged[0]) if staged else 0
        self.conn.execute("TRUNCATE reading_stage")
        return inserted, total - inserted - conflicts, conflicts

    def _record_conflicts(
        self, cols: _Columns, rows: np.ndarray, stored: np.ndarray, source_id: int, batch_id: int
    ) -> int:
        params = [
            (int(cols.meter_id[i]), int(cols.channel_id[i]), cols.ts[i].item().replace(tzinfo=UTC),
             float(s), float(cols.value[i]), int(cols.unit_id[i]), source_id, int(cols.read_type_id[i]),
             int(cols.quality[i]), batch_id)
            for i, s in zip(rows, stored, strict=True)
        ]  # fmt: skip
        with self.conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO reading_conflict (meter_id, channel_id, ts, stored_value, new_value, unit_id,
                                                 source_id, read_type_id, quality, batch_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                params,
            )
        return len(params)

    def _ensure_partitions(self, lo: datetime, hi: datetime) -> None:
        months = _months_between(lo, hi)
        if months <= self._months:
            return
        self.conn.execute("SELECT ensure_reading_partitions(%s, %s)", (lo, hi))
        self._months |= months

    def _write_events(
        self, events: Sequence[MeterEvent], batch_id: int, dead: list[tuple[str, str, str, str]]
    ) -> int:
        if not events:
            return 0
        ids = self.lookup.meter_ids([e.meter for e in events])
        rows = []
        for event, meter_id in zip(events, ids, strict=True):
            if meter_id < 0 or event.ts.tzinfo is None:
                reason = f"unknown meter {event.meter!r}" if meter_id < 0 else "naive event timestamp"
                payload = json.dumps({"meter": event.meter, "ts": event.ts.isoformat(), "kind": event.kind.value,
                                      "details": event.details}, default=str)  # fmt: skip
                dead.append((event.source.value, self.origin, reason, payload))
                continue
            rows.append((int(meter_id), event.ts, event.kind.value, DLMS_EVENT_CODES.get(event.kind),
                         self.lookup.sources[event.source.value], json.dumps(event.details, default=str)))  # fmt: skip
        if not rows:
            return 0
        meter_ids, ts, kinds, codes, sources, details = (list(c) for c in zip(*rows, strict=True))
        cur = self.conn.execute(
            """INSERT INTO meter_event (meter_id, ts, kind, code, source_id, details, batch_id)
               SELECT m, t, k, c, s, d::jsonb, %s
               FROM unnest(%s::int[], %s::timestamptz[], %s::text[], %s::int[], %s::smallint[], %s::text[])
                    AS u(m, t, k, c, s, d)
               ON CONFLICT (meter_id, ts, kind) DO NOTHING""",
            (batch_id, meter_ids, ts, kinds, codes, sources, details),
        )
        return cur.rowcount

    def _write_dead(
        self, rejected: Sequence[Rejected], dead: list[tuple[str, str, str, str]], key: uuid.UUID
    ) -> None:
        """Dead letters: the payload byte for byte in ``payload_bytes``, a readable rendering in ``payload``."""
        rows = [(r.source.value, r.origin, r.reason, r.payload) for r in rejected] + dead
        for reason in {d[2] for d in dead[:5]}:
            log.warning("rejected input: %s", reason, extra={"origin": self.origin})
        with self.conn.cursor().copy(
            "COPY rejected_input (source, origin, reason, payload, payload_bytes, batch_key) FROM STDIN"
        ) as copy:
            for source, origin, reason, payload in rows:
                raw = payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass")
                copy.write_row((_text(source), _text(origin), _text(reason), payload_text(raw), raw, key))


#: How much of a dead letter's payload the text column shows (``payload_bytes`` keeps it all).
PAYLOAD_TEXT_MAX = 64 * 1024


def payload_text(raw: bytes) -> str:
    r"""A dead letter's payload as text PostgreSQL accepts: UTF-8 as is, anything else escaped.

    Bytes that are not UTF-8 show as ``\xNN`` and a NUL as ``\x00`` (PostgreSQL text cannot hold
    one); a rendering longer than ``PAYLOAD_TEXT_MAX`` characters is cut with a note saying so.
    """
    text = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    if len(text) > PAYLOAD_TEXT_MAX:
        text = f"{text[:PAYLOAD_TEXT_MAX]}… [cut: {len(raw):,} bytes in all, whole in payload_bytes]"
    return text


def _text(value: str) -> str:
    r"""A reason or origin as PostgreSQL text (a NUL written out as ``\x00``)."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _months_between(lo: datetime, hi: datetime) -> set[tuple[int, int]]:
    months = set()
    y, m = lo.year, lo.month
    while (y, m) <= (hi.year, hi.month):
        months.add((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


@dataclass
class _Columns:
    """Validated rows with database ids, ready to copy."""

    meter_id: np.ndarray
    channel_id: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    unit_id: np.ndarray
    read_type_id: np.ndarray
    quality: np.ndarray

    @property
    def min_ts(self) -> datetime:
        return _aware(self.ts.min())

    @property
    def max_ts(self) -> datetime:
        return _aware(self.ts.max())

    def sort(self) -> None:
        """Sort by the primary key: neighbouring index pages, duplicates side by side."""
        order = np.lexsort((self.ts, self.channel_id, self.meter_id))
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name)[order])

    def same_key_as_previous(self) -> np.ndarray:
        """True where a row has the same (meter, channel, ts) as the row before it (sorted)."""
        same = (
            (self.meter_id[1:] == self.meter_id[:-1])
            & (self.channel_id[1:] == self.channel_id[:-1])
            & (self.ts[1:] == self.ts[:-1])
        )
        return np.concatenate(([False], same))

    def first_value_of_key(self, rows: np.ndarray) -> np.ndarray:
        """For each row index, the value of the first row of its key (what is kept)."""
        head = np.flatnonzero(~self.same_key_as_previous())
        return self.value[head[np.searchsorted(head, rows, side="right") - 1]]

    def take(self, mask: np.ndarray) -> _Columns:
        return _Columns(**{name: getattr(self, name)[mask] for name in self.__dataclass_fields__})

    def encode(self, source_id: int, received_at: datetime, batch_id: int) -> bytes:
        return encode_reading_copy(
            self.meter_id, self.channel_id, self.ts, self.value, self.unit_id, source_id,
            self.read_type_id, self.quality, received_at, batch_id,
        )  # fmt: skip


def _aware(ts: np.datetime64) -> datetime:
    micros = int((ts - np.datetime64("2000-01-01", "us")).astype(np.int64))
    return datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
