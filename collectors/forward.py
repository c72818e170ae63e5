"""The forwarder: drains the spool into the database, oldest segment first.

A segment is removed from disk only after its batch committed. If the process dies in between, the
segment drains again on restart and the database recognises its batch key: exactly once. A segment
lands as one batch per reading source (``Reading.source``), so every reading keeps its own label;
the first batch carries the segment's key, the others a key derived from it, and the last one
carries the segment's events and dead letters (so that a refusal in any batch before it cannot
leave them landed twice once the segment is landed record by record).

Raw MQTT records (``Spool.append_raw``) are decoded here, off the network thread, by the MQTT
collector's ``decode_raw`` (set as ``raw_decoder``): to columns, with the same plausibility checks
and dead letters as before, once per segment (a segment retried after an outage reuses what it
decoded, so the plausibility guard never judges a message twice).

Two kinds of failure, told apart by ``is_outage``:

- **Outage** (connection refused or lost, server shutting down, out of disk, a deadlock or
  serialisation failure, a missing privilege or table after a bad deployment): nothing is wrong with
  the segment. The forwarder keeps it, backs off (up to ``max_backoff`` seconds) and retries; the
  spool grows. Past ``stall_alarm_s`` seconds of failing, ``alarm`` says so.
- **Refusal** (a data error, a constraint, an encoding error, a record that cannot be decoded): the
  database is fine but will never take this content. The forwarder lands the segment record by
  record (each record under its own derived key, so a crash part-way cannot double anything),
  moves only the refused records to the spool's quarantine with the reason, and carries on with
  the segments behind. A quarantine raises ``alarm`` until a person empties it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg

from collectors.spool import Batch, RawMessage, Segment, Spool, decode_raw, decode_record, is_raw
from ingest import BatchWriter, ReadingFrame
from ingest.sharded import ShardedWriter, open_writer
from releve.model import MeterEvent, Reading, Rejected
from releve.settings import Settings

log = logging.getLogger(__name__)

#: SQLSTATE classes that say "this content is refused" rather than "the database is not available":
#: 21 cardinality, 22 data exception (bad encoding, NUL, out of range), 23 integrity constraint,
#: 54 program limit (row too big), 0A feature not supported.
REFUSAL_SQLSTATE_CLASSES = frozenset({"21", "22", "23", "54", "0A"})


def is_outage(exc: BaseException) -> bool:
    """True if ``exc`` means the database is unavailable (retry later), False if it refused the content.

    Connection errors, server shutdown, resource exhaustion, transaction rollbacks (deadlock,
    serialisation) and anything unknown count as outages: retrying costs only time, whereas
    quarantining a good segment would hold back good readings. Data and integrity errors, whether
    the server raised them or psycopg refused to send the value (a NUL in a text parameter), and
    Python errors raised while building a batch from the segment's content count as refusals.
    """
    if isinstance(exc, psycopg.Error):
        if isinstance(exc, psycopg.DataError | psycopg.IntegrityError | psycopg.NotSupportedError):
            return False
        state = exc.sqlstate or ""
        return state[:2] not in REFUSAL_SQLSTATE_CLASSES
    return not isinstance(exc, ValueError | TypeError | KeyError | IndexError | OverflowError)


def describe(exc: BaseException) -> str:
    """One line saying what failed: the SQLSTATE when there is one, the exception's first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    state = getattr(exc, "sqlstate", None)
    kind = type(exc).__name__ + (f" {state}" if state else "")
    return f"{kind}: {text}" if text else kind


SourceBatch = tuple[list[Reading] | ReadingFrame, list[MeterEvent], list[Rejected], uuid.UUID]


@dataclass
class RawDecoded:
    """Raw MQTT messages decoded: readings as columns.

    For each row, event and dead letter: the index of the message it came from (so that a refused
    segment can be landed record by record).
    """

    frame: ReadingFrame
    row_message: np.ndarray
    events: list[tuple[int, MeterEvent]] = field(default_factory=list)
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)
    other: list[tuple[int, Reading]] = field(default_factory=list)  # a custom decoder's non-MQTT readings

    def part(self, message: int | None = None) -> tuple[ReadingFrame, Batch]:
        """The frame and the other content of one message (``None``: of all)."""
        if message is None:
            return self.frame, Batch(
                [r for _, r in self.other], [e for _, e in self.events], [x for _, x in self.rejected]
            )
        frame = self.frame.take(self.row_message == message)
        return frame, Batch(
            [r for k, r in self.other if k == message],
            [e for k, e in self.events if k == message],
            [x for k, x in self.rejected if k == message],
        )


RawDecoder = Callable[[Sequence[RawMessage]], RawDecoded]


def source_batches(batch: Batch, key: uuid.UUID, frame: ReadingFrame | None = None) -> list[SourceBatch]:
    """One batch per reading source, keyed deterministically from ``key``.

    Sources go in name order; the first batch gets ``key`` itself, the others
    ``uuid5(key, "source <name>")``. The last batch carries the events and dead letters (each of
    those has its own source column). ``frame`` (decoded raw MQTT messages) joins its source's batch.
    """
    found = {r.source for r in batch.readings}
    if frame is not None and len(frame):
        found.add(frame.source)
    else:
        frame = None
    sources = sorted(found, key=lambda s: s.value)
    if len(sources) <= 1 and frame is None:
        return [(batch.readings, batch.events, batch.rejected, key)]
    if not sources:
        return [([], batch.events, batch.rejected, key)]
    out: list[SourceBatch] = []
    for i, source in enumerate(sources):
        listed = [r for r in batch.readings if r.source is source]
        readings: list[Reading] | ReadingFrame = listed
        if frame is not None and frame.source is source:
            readings = ReadingFrame.concat([ReadingFrame.from_readings(listed), frame]) if listed else frame
        sub_key = key if i == 0 else uuid.uuid5(key, f"source {source.value}")
        last = i == len(sources) - 1
        out.append((readings, batch.events if last else [], batch.rejected if last else [], sub_key))
    return out


@dataclass
class _Content:
    """A segment decoded: its JSON records, and its raw MQTT records decoded together."""

    json_parts: dict[int, Batch]
    raw: RawDecoded | None
    raw_records: list[int]  # record index of each raw message

    def whole(self) -> tuple[Batch, ReadingFrame | None]:
        batch = Batch([], [], [])
        for part in self.json_parts.values():
            batch.readings += part.readings
            batch.events += part.events
            batch.rejected += part.rejected
        if self.raw is None:
            return batch, None
        frame, rest = self.raw.part()
        batch.readings += rest.readings
        batch.events += rest.events
        batch.rejected += rest.rejected
        return batch, frame

    def record(self, i: int) -> tuple[Batch, ReadingFrame | None]:
        if i in self.json_parts:
            return self.json_parts[i], None
        assert self.raw is not None
        frame, part = self.raw.part(self.raw_records.index(i))
        return part, frame


class Forwarder:
    """Moves sealed spool segments into the database."""

    def __init__(
        self,
        spool: Spool,
        url: str,
        settings: Settings,
        origin: str = "collector",
        seal_seconds: float = 1.0,
        max_backoff: float = 30.0,
        stall_alarm_s: float = 60.0,
        raw_decoder: RawDecoder | None = None,
    ) -> None:
        self.spool = spool
        self.raw_decoder = raw_decoder
        self._decoded: tuple[str, _Content] | None = None  # the segment under retry, decoded once
        self.url = url
        self.settings = settings
        self.origin = origin
        self.seal_seconds = seal_seconds
        self.max_backoff = max_backoff
        self.stall_alarm_s = stall_alarm_s
        self._writer: BatchWriter | ShardedWriter | None = None
        self.landed_rows = 0
        self.landed_segments = 0
        self.refused_records = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None  # monotonic time of the first failure of a streak
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- health ---------------------------------------------------------------------------------
    @property
    def database_ok(self) -> bool | None:
        """Whether the last attempt reached the database (None before any attempt)."""
        if self.last_error is not None:
            return False
        return True if self.landed_segments or self._writer is not None else None

    def failing_seconds(self) -> float:
        """How long the forwarder has been failing without a break (0 when it is not)."""
        return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since

    def alarm(self) -> str | None:
        """Why a person is needed, or None: segments in quarantine, or a forwarder stuck too long."""
        held = self.spool.quarantined()
        if held:
            return (
                f"{len(held)} spool segment(s) quarantined (refused by the database), last: "
                f"{held[-1].get('reason', '?')}"
            )
        stalled = self.failing_seconds()
        if stalled >= self.stall_alarm_s:
            return f"spool not draining for {stalled:.0f} s: {self.last_error}"
        return None

    # -- landing ---------------------------------------------------------------------------------
    def drain_once(self) -> int:
        """Land every sealed segment now; return the readings inserted.

        Refused content goes to the quarantine; an outage raises (the segment stays spooled).
        """
        before = self.landed_rows
        for segment in self.spool.sealed():
            self._land(segment)
        return self.landed_rows - before

    def _content(self, segment: Segment) -> _Content:
        """The segment decoded (once: a retry after an outage reuses it)."""
        if self._decoded is not None and self._decoded[0] == segment.path.name:
            return self._decoded[1]
        json_parts: dict[int, Batch] = {}
        raws: list[RawMessage] = []
        raw_records: list[int] = []
        for i, record in enumerate(self.spool.records(segment)):
            if is_raw(record):
                raws.append(decode_raw(record))
                raw_records.append(i)
            else:
                json_parts[i] = decode_record(record)
        raw = None
        if raws:
            if self.raw_decoder is None:
                raise ValueError("raw MQTT records in the spool but no MQTT subscription to decode them")
            raw = self.raw_decoder(raws)
        content = _Content(json_parts, raw, raw_records)
        self._decoded = (segment.path.name, content)
        return content

    def _land(self, segment: Segment) -> None:
        try:
            batch, frame = self._content(segment).whole()
            self._write(batch, segment.key, frame)
        except Exception as exc:
            if is_outage(exc):
                raise
            self._land_record_by_record(segment, exc)
            self._decoded = None
            return
        self.spool.remove(segment)
        self._decoded = None
        self.landed_segments += 1

    def _write(self, batch: Batch, key: uuid.UUID, frame: ReadingFrame | None = None) -> None:
        for readings, events, rejected, sub_key in source_batches(batch, key, frame):
            if self._writer is None:
                self._writer = open_writer(self.url, self.settings, self.origin)  # per shard when sharded
            try:
                result = self._writer.write(readings, events, rejected, batch_key=sub_key)
            except Exception as exc:
                if is_outage(exc):  # the connection may be gone: start over with a fresh one
                    self._writer.close()
                    self._writer = None
                raise
            self.landed_rows += result.inserted
            if result.replayed:
                log.info("batch %s had already landed (replayed after a restart)", sub_key)

    def _land_record_by_record(self, segment: Segment, first: Exception) -> None:
        """Land what can land of a refused segment, one record at a time; quarantine the rest.

        Readings of a source batch that committed before the refusal land again here: the write
        path recognises them as duplicates. Events and dead letters travel in the last source batch,
        so they had not landed (see ``source_batches``).
        """
        records = self.spool.records(segment)
        try:
            content: _Content | None = self._content(segment)
        except Exception as exc:  # some record cannot be read: decode them one by one below
            if is_outage(exc):
                raise
            content = None
        log.warning(
            "segment %s refused (%s); landing its %d record(s) one by one",
            segment.path.name,
            describe(first),
            len(records),
        )
        refused: list[int] = []
        reasons: list[str] = []
        if len(records) > 1:
            for i, record in enumerate(records):
                try:
                    if content is not None:
                        part, frame = content.record(i)
                    elif is_raw(record):
                        if self.raw_decoder is None:
                            raise ValueError("a raw MQTT record but no MQTT subscription to decode it")
                        frame, part = self.raw_decoder([decode_raw(record)]).part()
                    else:
                        part, frame = decode_record(record), None
                    self._write(part, uuid.uuid5(segment.key, f"record {i}"), frame)
                except Exception as exc:
                    if is_outage(exc):
                        raise
                    refused.append(i)
                    reasons.append(f"record {i}: {describe(exc)}")
        else:
            refused, reasons = list(range(len(records))), [describe(first)]
        self.refused_records += len(refused)
        if refused:
            self.spool.quarantine(segment, "; ".join(dict.fromkeys(reasons)), refused)
        else:  # every record landed on its own: the refusal came from records meeting in one batch
            self.spool.remove(segment)
        self.landed_segments += 1

    # -- the thread -------------------------------------------------------------------------------
    def start(self) -> None:
        """Drain in a background thread until ``stop()`` (again after a ``stop()``)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            self.spool.seal(older_than=self.seal_seconds)
            try:
                self.drain_once()
                backoff = 0.5
                self.last_error = None
                self.failing_since = None
                self._stop.wait(0.2)
            except Exception as exc:  # an outage: keep the spool, retry later
                self.last_error = describe(exc)
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                log.warning("forwarder: database unavailable (%s); retrying in %.1f s", self.last_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop the thread; with ``drain``, first try to land what is spooled (bounded by ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if drain:
            self.spool.seal()
            deadline = time.monotonic() + timeout
            while self.spool.sealed() and time.monotonic() < deadline:
                try:
                    self.drain_once()
                except Exception as exc:
                    log.warning("forwarder: %d segment(s) stay spooled (%s)", len(self.spool.sealed()), exc)
                    break
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def quarantine_summary(entries: Sequence[dict[str, object]]) -> str:
    """One line per quarantined segment, for ``collect status`` and logs."""
    return "\n".join(
        f"  {e.get('segment')}: {e.get('bytes', 0):,} bytes, {e.get('quarantined_at', '?')}: {e.get('reason')}"
        for e in entries
    )
