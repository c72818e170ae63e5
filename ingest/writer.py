"""The batch writer: one transaction per batch, binary ``COPY``, an idempotent merge.

What happens to a batch, in order:

1. Its key (a UUID) is recorded in ``ingest_batch``; a key seen before means the batch already
   landed (a spool replayed after a crash) and it is skipped whole.
2. Rows that cannot be accepted — unknown meter, channel or unit, NaN or infinite value,
   timestamp before ``ingest.earliest`` or too far in the future — go to ``rejected_input`` with the
   reason; the rest of the batch carries on.
3. Rows are sorted by (meter, channel, instant). Exact duplicates inside the batch are dropped;
   a second, *different* value for the same key is kept aside in ``reading_conflict``.
4. Fast path: each run of two or more readings of one meter, channel, unit and read type within
   one UTC day becomes one *block* row of ``reading_block`` (instants, values and qualities as
   arrays: one index entry for the run instead of one per reading), the single readings become
   rows of ``reading`` (one binary COPY each, the rows' encoded and sent in pieces so the server
   inserts one while the next is encoded). The duplicate check spans both tables (migration 0030):
   under an advisory lock (exclusive for a batch with blocks, shared for singles only), a batch
   whose instants all come after the latest instant any block reaches meets no block; the rows'
   primary key checks the singles (one probe first: is the first key stored already?) and one
   query checks that no stored row falls in a run's span. On TimescaleDB, or with
   ``ingest.blocks`` off, every reading is a row. If any reading may exist already (late or
   redelivered data), the copy is rolled back to a savepoint (or not tried) and the slow path
   runs, at a cost in proportion to the batch whatever the tables hold: the stored readings (rows
   and blocks) are read back only within the batch's own windows — per (meter, channel), each run
   of the batch's instants with no gap over an hour, in the partitions of the batch's time range
   (see ``_stored_values``) — then what is identical is counted as a duplicate, what differs is
   kept as a conflict, and only the new readings are copied: a new run that meets nothing stored as
   a block, the rest as rows (a late reading may fall inside a block's span, never on one of its
   instants).
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
from psycopg import Connection, errors

from ingest.frame import (
    BLOCK_COPY_COLUMNS,
    READ_TYPES,
    READING_COPY_COLUMNS,
    ReadingFrame,
    encode_block_copy,
    encode_reading_copy,
)
from releve import db
from releve.model import DLMS_EVENT_CODES, MeterEvent, Reading, Rejected, Source
from releve.pgbinary import copy_records, pg_micros, row_dtype
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
        self.earliest = np.datetime64(settings.ingest.earliest, "us")
        #: On the plain path (``reading_block`` partitioned; on TimescaleDB it stays empty) blocks may
        #: be stored, so every batch is checked against them, whether or not this writer makes any.
        row = self.conn.execute(
            "SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('reading_block')"
        ).fetchone()
        self.checks_blocks = bool(row and row[0])
        #: Runs of a series within one UTC day go to ``reading_block`` (migration 0030) unless
        #: ``ingest.blocks`` is off.
        self.blocks = self.checks_blocks and settings.ingest.blocks
        if self._own:
            self.conn.commit()

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
        with self.conn.transaction():
            return self._write(frame, events, rejected, key, now)

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
            (
                inserted,
                duplicates,
                conflicts,
                len(dead) + len(rejected),
                n_events,
                cols.min_ts if cols else None,
                cols.max_ts if cols else None,
                batch_id,
            ),
        )
        result = BatchResult(
            key, batch_id, len(frame), inserted, duplicates, conflicts, len(dead) + len(rejected), n_events
        )
        log.debug("batch landed", extra={"batch": str(key), **result.__dict__})
        return result

    def _resolve(self, frame: ReadingFrame, now: datetime, dead: list[tuple[str, str, str, str]]) -> _Columns | None:
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
        )
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
        if self.checks_blocks:
            start, length = rows.runs()
            run = (length >= 2) & self.blocks
            # Blocks and rows must not land over each other from two writers at once: a batch with
            # blocks waits for every other writer, batches of single readings share the lock.
            self._lock(exclusive=bool(run.any()))
            # A batch whose instants all come after the latest instant any block reaches meets no
            # block (the usual case: live data, the newest file); one reaching back before it (late
            # data, a backfill, a file older than the newest) is checked run by run against them.
            clear = pg_micros(rows.ts.min()) > self._reach()
            if (
                not self._first_key_stored(rows)
                and not self._meeting(rows, start, length, run, blocks=not clear).any()
                and self._copy_blocks_and_rows(rows, start[run], length[run], source_id, now, batch_id)
            ):
                return len(rows.value), duplicates, conflicts
        # A redelivered segment overlaps what landed at its start, so when the batch's first key is
        # stored already, the COPY that would fail on it is not even tried (one index probe).
        elif not self._first_key_stored(rows) and self._copy(rows, source_id, now, batch_id):
            return len(rows.value), duplicates, conflicts
        # Some readings exist already: late or redelivered data. Compare with what is stored (rows
        # and blocks) and copy the rest (``_copy_new``); a concurrent writer of rows may land one of
        # the same keys in between (the copy then fails again), so look again, a bounded number of
        # times.
        for _ in range(_MERGE_ATTEMPTS):
            found, stored = self._stored_values(rows)
            new = ~found
            same = found & (stored == rows.value)
            differ = ~new & ~same
            fresh = rows.take(new)
            if len(fresh.value) == 0 or self._copy_new(fresh, source_id, now, batch_id):
                break
        else:
            raise RuntimeError(f"batch {batch_id}: rows kept colliding with concurrent writes; retry the batch")
        if differ.any():
            idx = np.flatnonzero(differ)
            conflicts += self._record_conflicts(rows, idx, stored[idx], source_id, batch_id)
        return len(fresh.value), duplicates + int(same.sum()), conflicts

    def _copy(self, rows: _Columns, source_id: int, received_at: datetime, batch_id: int) -> bool:
        """COPY ``rows`` into ``reading`` in binary; False (and nothing written) if a key exists.

        One COPY, encoded and sent piece by piece (``_COPY_PIECE`` rows): the server inserts a piece
        while the next one is encoded, instead of waiting for the whole batch's encoding first.
        """
        try:
            with self.conn.transaction():
                self._send_rows(rows, source_id, received_at, batch_id)
        except errors.UniqueViolation:
            return False
        return True

    def _send_rows(self, rows: _Columns, source_id: int, received_at: datetime, batch_id: int) -> None:
        """One binary COPY of ``rows`` into ``reading``, sent in pieces (the caller holds the savepoint)."""
        n = len(rows.value)
        with self.conn.cursor().copy(f"COPY reading ({READING_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            for a in range(0, n, _COPY_PIECE):
                b = min(a + _COPY_PIECE, n)
                # One header before the first row, one trailer after the last.
                copy.write(rows.take(slice(a, b)).encode(source_id, received_at, batch_id, a == 0, b == n))

    def _lock(self, exclusive: bool) -> None:
        """The writers' advisory lock over rows and blocks, until the batch commits (see migration 0030)."""
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        self.conn.execute(f"SELECT {fn}(%s)", (_BLOCK_LOCK,))

    def _reach(self) -> int:
        """The latest instant any stored block reaches, in µs since 2000-01-01 (minus infinity: none)."""
        row = self.conn.execute(
            """SELECT CASE WHEN isfinite(reach) THEN (extract(epoch FROM reach - timestamptz '2000-01-01 UTC')
                                                     * 1000000)::int8 END FROM reading_block_reach"""
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else _MINUS_INFINITY_US

    def _copy_new(self, fresh: _Columns, source_id: int, received_at: datetime, batch_id: int) -> bool:
        """The slow path's new readings: runs that meet nothing stored as blocks, the rest as rows.

        A redelivered segment's new readings (a head-end file overlapping the last one by an
        interval) are runs again once what was stored is taken out; late readings filling the gaps
        of a stored block or between stored rows meet them and stay rows.
        """
        if not self.blocks:
            return self._copy(fresh, source_id, received_at, batch_id)
        start, length = fresh.runs()
        run = length >= 2
        run &= ~self._meeting(fresh, start, length, run, blocks=True, singles=False)
        if not run.any():
            return self._copy(fresh, source_id, received_at, batch_id)
        return self._copy_blocks_and_rows(fresh, start[run], length[run], source_id, received_at, batch_id)

    def _meeting(
        self, rows: _Columns, start: np.ndarray, length: np.ndarray, run: np.ndarray, blocks: bool, singles: bool = True
    ) -> np.ndarray:
        """Which runs may meet stored readings (a mask over ``start``): one query, one probe per check.

        A run to be written as a block must hold no stored row in its span; with ``blocks`` (a batch
        reaching back before the blocks' reach) no run — nor, with ``singles``, single reading —
        may fall in a stored block's span. Singles need no probe of ``reading``: its primary key
        refuses them at the COPY. So a series' blocks never overlap each other, and a block is
        never written over a stored row.
        """
        check = run | (blocks and singles)
        met = np.zeros(len(start), bool)
        if not check.any():
            return met
        us = pg_micros(rows.ts)
        s0, s1 = start[check], start[check] + length[check] - 1
        rows_probe = """(w.run AND EXISTS (
                SELECT 1 FROM reading r
                WHERE r.meter_id = w.m AND r.channel_id = w.c AND r.ts >= t.a AND r.ts <= t.b
                  AND r.ts >= %(lo)s AND r.ts <= %(hi)s))"""
        blocks_probe = """(EXISTS (
                SELECT 1 FROM reading_block k
                WHERE k.meter_id = w.m AND k.channel_id = w.c
                  AND k.ts_first >= date_trunc('day', t.a, 'UTC') AND k.ts_first <= t.b AND k.ts_last >= t.a
                  AND k.ts_first >= %(day)s AND k.ts_first <= %(hi)s))"""
        found = self.conn.execute(
            f"""SELECT w.k - 1
                FROM unnest(%(m)s::int[], %(c)s::smallint[], %(a)s::int8[], %(b)s::int8[], %(run)s::bool[])
                     WITH ORDINALITY AS w(m, c, lo, hi, run, k)
                CROSS JOIN LATERAL (
                    SELECT timestamptz '2000-01-01 UTC' + w.lo * interval '1 microsecond' AS a,
                           timestamptz '2000-01-01 UTC' + w.hi * interval '1 microsecond' AS b) t
                WHERE {rows_probe}{" OR " + blocks_probe if blocks else ""}""",
            {
                "m": _int_array(rows.meter_id[s0]),
                "c": _int_array(rows.channel_id[s0]),
                "a": _int_array(us[s0]),
                "b": _int_array(us[s1]),
                "run": "{" + ",".join("t" if x else "f" for x in run[check].tolist()) + "}",
                "lo": _aware(rows.ts[s0].min()),
                "hi": _aware(rows.ts[s1].max()),
                "day": _aware(rows.ts[s0].min().astype("datetime64[D]")),
            },
        ).fetchall()
        met[np.flatnonzero(check)[[int(k) for (k,) in found]]] = True
        return met

    def _copy_blocks_and_rows(
        self,
        rows: _Columns,
        start: np.ndarray,
        length: np.ndarray,
        source_id: int,
        received_at: datetime,
        batch_id: int,
    ) -> bool:
        """COPY the runs as blocks, the rest as rows, move the reach; False (nothing written) on a stored key."""
        in_block = np.zeros(len(rows.value), bool)
        in_block[np.repeat(start, length) + _ramp(length)] = True
        try:
            with self.conn.transaction():
                singles = rows.take(~in_block)
                if len(singles.value):
                    self._send_rows(singles, source_id, received_at, batch_id)
                if len(start):
                    payload = encode_block_copy(
                        start,
                        length,
                        rows.meter_id,
                        rows.channel_id,
                        rows.ts,
                        rows.value,
                        rows.unit_id,
                        source_id,
                        rows.read_type_id,
                        rows.quality,
                        received_at,
                        batch_id,
                    )
                    with self.conn.cursor().copy(
                        f"COPY reading_block ({BLOCK_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.write(payload)
                    self.conn.execute(
                        """UPDATE reading_block_reach
                           SET reach = greatest(reach, %s), first_block = least(first_block, %s)""",
                        (_aware(rows.ts[start + length - 1].max()), _aware(rows.ts[start].min())),
                    )
        except errors.UniqueViolation:
            return False
        return True

    def _first_key_stored(self, rows: _Columns) -> bool:
        """True when the first row's (meter, channel, instant) is stored already (a row, or in a block)."""
        where = "series_between(%s, %s, %s, %s)" if self.checks_blocks else "reading"
        query = f"SELECT EXISTS (SELECT 1 FROM {where} WHERE meter_id = %s AND channel_id = %s AND ts = %s)"
        m, c, t = int(rows.meter_id[0]), int(rows.channel_id[0]), _aware(rows.ts[0])
        row = self.conn.execute(query, ((m, c, t, t) if self.checks_blocks else ()) + (m, c, t)).fetchone()
        return bool(row and row[0])

    def _stored_values(self, rows: _Columns) -> tuple[np.ndarray, np.ndarray]:
        """Whether each row's key is stored, and the stored value: reads only the batch's windows.

        ``rows`` is sorted by key with no key twice. A window is a run of one (meter, channel)'s
        instants with no gap over ``_WINDOW_GAP_US``. When the windows cover most of the batch's
        time range for most (meter, channel) pairs, one index scan reads the batch's meters and
        channels over that range; otherwise each window is one range scan of the primary key.
        Either way the overall time bounds are constants, so only the partitions the batch
        touches are planned, and what is read is at most about four times what the windows hold.
        Stored rows the batch does not carry are read and ignored. They come back as one binary
        ``COPY`` into numpy (:mod:`releve.pgbinary`); instants travel as microseconds since
        2000-01-01 (PostgreSQL's epoch), not as objects.
        """
        us = pg_micros(rows.ts)
        first = np.concatenate(
            (
                [True],
                (rows.meter_id[1:] != rows.meter_id[:-1])
                | (rows.channel_id[1:] != rows.channel_id[:-1])
                | (np.diff(us) > _WINDOW_GAP_US),
            )
        )
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], len(us)) - 1
        meters, channels = rows.meter_id[starts], rows.channel_id[starts]
        pair = np.unique(_pair_key(meters, channels))
        n_meters, n_channels = len(np.unique(meters)), len(np.unique(channels))
        span = int(us.max() - us.min())
        covered = int((us[ends] - us[starts]).sum()) + len(starts) * _WINDOW_GAP_US
        if n_meters * n_channels <= 2 * len(pair) and len(pair) * (span + _WINDOW_GAP_US) <= 4 * covered:
            # The windows cover most of the batch's time range for most pairs (live data: every
            # meter over the same minutes): one index scan over the meters, the channels and the
            # range — no rescan per window — reads at most about four times what the windows hold.
            found = copy_records(
                self.conn,
                """COPY (SELECT meter_id, channel_id, ts, value
                         FROM reading_between(%s, %s)
                         WHERE meter_id = ANY(%s::int[]) AND channel_id = ANY(%s::smallint[]))
                   TO STDOUT (FORMAT BINARY)""",
                (rows.min_ts, rows.max_ts, _int_array(np.unique(meters)), _int_array(np.unique(channels))),
                _STORED_DTYPE,
            )
        else:
            found = copy_records(
                self.conn,
                """COPY (SELECT w.m, w.c, r.ts, r.value
                         FROM unnest(%s::int[], %s::smallint[], %s::int8[], %s::int8[]) AS w(m, c, lo, hi)
                         CROSS JOIN LATERAL (
                             SELECT ts, value FROM series_between(w.m, w.c, %s, %s)
                             WHERE ts >= timestamptz '2000-01-01 UTC' + w.lo * interval '1 microsecond'
                               AND ts <= timestamptz '2000-01-01 UTC' + w.hi * interval '1 microsecond'
                             OFFSET 0) r) TO STDOUT (FORMAT BINARY)""",
                (
                    _int_array(meters),
                    _int_array(channels),
                    _int_array(us[starts]),
                    _int_array(us[ends]),
                    rows.min_ts,
                    rows.max_ts,
                ),
                _STORED_DTYPE,
            )
        is_stored = np.zeros(len(us), bool)
        stored = np.zeros(len(us), np.float64)
        if len(found) == 0:
            return is_stored, stored
        hit_pair = _pair_key(found["meter_id"], found["channel_id"])
        hit_us = found["ts"].astype(np.int64)
        # Stored rows and batch rows in one (meter, channel, instant) order; a batch row followed
        # by a stored row with the same key is a row already stored (keys are unique on each
        # side). Stored rows the batch does not carry match nothing.
        window = np.concatenate((_pair_key(rows.meter_id, rows.channel_id), hit_pair))
        instant = np.concatenate((us, hit_us))
        is_hit = np.concatenate((np.zeros(len(us), bool), np.ones(len(hit_us), bool)))
        order = np.lexsort((is_hit, instant, window))
        w, t, h = window[order], instant[order], is_hit[order]
        match = ~h[:-1] & h[1:] & (w[:-1] == w[1:]) & (t[:-1] == t[1:])
        is_stored[order[:-1][match]] = True
        stored[order[:-1][match]] = found["value"].astype(np.float64)[order[1:][match] - len(us)]
        return is_stored, stored

    def _record_conflicts(
        self, cols: _Columns, rows: np.ndarray, stored: np.ndarray, source_id: int, batch_id: int
    ) -> int:
        params = [
            (
                int(cols.meter_id[i]),
                int(cols.channel_id[i]),
                cols.ts[i].item().replace(tzinfo=UTC),
                float(s),
                float(cols.value[i]),
                int(cols.unit_id[i]),
                source_id,
                int(cols.read_type_id[i]),
                int(cols.quality[i]),
                batch_id,
            )
            for i, s in zip(rows, stored, strict=True)
        ]
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

    def _write_events(self, events: Sequence[MeterEvent], batch_id: int, dead: list[tuple[str, str, str, str]]) -> int:
        if not events:
            return 0
        ids = self.lookup.meter_ids([e.meter for e in events])
        rows = []
        for event, meter_id in zip(events, ids, strict=True):
            if meter_id < 0 or event.ts.tzinfo is None:
                reason = f"unknown meter {event.meter!r}" if meter_id < 0 else "naive event timestamp"
                payload = json.dumps(
                    {
                        "meter": event.meter,
                        "ts": event.ts.isoformat(),
                        "kind": event.kind.value,
                        "details": event.details,
                    },
                    default=str,
                )
                dead.append((event.source.value, self.origin, reason, payload))
                continue
            rows.append(
                (
                    int(meter_id),
                    event.ts,
                    event.kind.value,
                    DLMS_EVENT_CODES.get(event.kind),
                    self.lookup.sources[event.source.value],
                    json.dumps(event.details, default=str),
                )
            )
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

    def _write_dead(self, rejected: Sequence[Rejected], dead: list[tuple[str, str, str, str]], key: uuid.UUID) -> None:
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


#: Within one (meter, channel), a gap longer than this between a batch's instants starts a new window.
_WINDOW_GAP_US = 3_600_000_000
#: Stored rows read back by the slow path (binary COPY; ``ts`` in microseconds since 2000-01-01 UTC).
_STORED_DTYPE = row_dtype(("meter_id", ">i4"), ("channel_id", ">i2"), ("ts", ">i8"), ("value", ">f8"))


def _pair_key(meter_id: np.ndarray, channel_id: np.ndarray) -> np.ndarray:
    """(meter, channel) as one sortable integer."""
    return meter_id.astype(np.int64) * 65536 + channel_id.astype(np.int64)


#: The advisory lock key writers take over rows and blocks (migration 0030): ``hashtext('releve.reading_block')``
#: would do as well; a constant keeps it readable in ``pg_locks``.
_BLOCK_LOCK = 0x52424C4B  # "RBLK"
#: :meth:`BatchWriter._reach` when no block is stored.
_MINUS_INFINITY_US = -(2**63)


def _int_array(values: np.ndarray) -> str:
    """Integers as a PostgreSQL array literal (``{1,2,3}``), cast in the query (``%s::int[]``).

    psycopg adapts a list element by element (a regular expression per element: 36 ms of a 5,000-run
    batch's 97 ms); one string joined (:func:`releve.db.int_array`) costs a fraction of a millisecond.
    """
    return db.int_array(values.tolist())


def _ramp(length: np.ndarray) -> np.ndarray:
    """0, 1, …, length[i] - 1 for each run, concatenated (offsets of each run's rows from its start)."""
    ends = np.cumsum(length)
    return np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - length, length)


#: Rows per piece of a batch's COPY (encoded while the server inserts the piece before).
_COPY_PIECE = 25_000
#: How many times the slow path looks again when concurrent writers keep landing the same keys.
_MERGE_ATTEMPTS = 5


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

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        """Each run's first row and length: rows of one meter, channel, unit and read type in one UTC day (sorted)."""
        day = pg_micros(self.ts) // 86_400_000_000
        cut = (
            (self.meter_id[1:] != self.meter_id[:-1])
            | (self.channel_id[1:] != self.channel_id[:-1])
            | (day[1:] != day[:-1])
            | (self.unit_id[1:] != self.unit_id[:-1])
            | (self.read_type_id[1:] != self.read_type_id[:-1])
        )
        start = np.concatenate(([0], np.flatnonzero(cut) + 1))
        return start, np.diff(np.append(start, len(self.ts)))

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

    def take(self, mask: np.ndarray | slice) -> _Columns:
        return _Columns(**{name: getattr(self, name)[mask] for name in self.__dataclass_fields__})

    def encode(
        self, source_id: int, received_at: datetime, batch_id: int, first: bool = True, last: bool = True
    ) -> bytes:
        return encode_reading_copy(
            self.meter_id,
            self.channel_id,
            self.ts,
            self.value,
            self.unit_id,
            source_id,
            self.read_type_id,
            self.quality,
            received_at,
            batch_id,
            first,
            last,
        )


def _aware(ts: np.datetime64) -> datetime:
    micros = int((ts - np.datetime64("2000-01-01", "us")).astype(np.int64))
    return datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
