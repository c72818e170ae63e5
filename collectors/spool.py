"""Store-and-forward: a durable, ordered, bounded spool of readings on local disk.

Every batch a collector produces is appended here first and made durable (fsync) before anyone is
told it was received — an MQTT message is acknowledged to the broker only then. A drainer moves the
spool into the database in order. When the database is down or slow, the spool simply grows, up to
``max_bytes``; it warns loudly from ``warn_ratio`` of that, and refuses appends at the bound
(``SpoolFullError``) rather than eat the disk.

Layout: the spool directory holds numbered segment files ``<seq>-<uuid>.open`` (being written) and
``<seq>-<uuid>.seg`` (sealed, waiting to drain). A segment is a sequence of records, each
``length (4 bytes) | crc32 (4 bytes) | JSON``. A segment's UUID is the ingest batch key it lands
with, so a segment drained again after a crash (killed between the database commit and the file's
removal) is recognised by the database and skipped: nothing is lost and nothing is doubled. A torn
record at the end of an ``.open`` segment (killed mid-write) is cut off when the spool reopens; the
records before it were durable and are kept.

A dead letter's payload is kept byte for byte: bytes travel base64-encoded inside the JSON record.

Raw MQTT messages: the MQTT callback spools each message as it came off the wire, undecoded, in a
record of its own (``append_raw``): ``0x01 | received_at (8 bytes, float seconds) | topic length
(2 bytes) | topic | payload``. A JSON record starts with ``{``, so the two kinds never mix up.
Decoding (the subscription's decoder, the plausibility checks, dead letters) happens in the
forwarder, to columns, off the network thread: see ``collectors.mqtt.MqttCollector.decode_raw``.

Quarantine: a segment (or some of its records) that the database refuses for a reason that is not
an outage is moved to ``quarantine/`` inside the spool directory by the forwarder, as
``<seq>-<uuid>.seg`` (the refused records, same format) beside ``<seq>-<uuid>.json`` (why, when,
which records, the original segment). The quarantined file gets a UUID of its own, derived from the
segment's: batch keys already used for the segment's other records can never hide it when it is
replayed. Quarantined bytes do not count against the spool bound. ``requeue`` (``releve collect
requeue``, collector stopped) moves quarantined segments back to drain again once the cause is fixed.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from releve.model import EventKind, MeterEvent, Reading, ReadType, Rejected, Source

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_RAW = struct.Struct(">BdH")
RAW_TAG = 1


@dataclass(frozen=True)
class RawMessage:
    """An MQTT message as the broker delivered it, spooled undecoded."""

    topic: str
    payload: bytes
    received_at: float  # seconds since the epoch


def is_raw(record: bytes) -> bool:
    """True for a raw-message record (``append_raw``), False for a JSON one."""
    return bool(record) and record[0] == RAW_TAG


def encode_raw(topic: str, payload: bytes, received_at: float) -> bytes:
    """The record ``append_raw`` writes (without the spool's length and CRC header)."""
    name = topic.encode()
    return _RAW.pack(RAW_TAG, received_at, len(name)) + name + payload


def decode_raw(record: bytes) -> RawMessage:
    """The message a raw record holds; ``ValueError`` if it is cut short."""
    if len(record) < _RAW.size:
        raise ValueError(f"raw MQTT spool record of {len(record)} bytes is too short")
    _, received_at, n = _RAW.unpack_from(record)
    end = _RAW.size + n
    if end > len(record):
        raise ValueError("raw MQTT spool record: topic runs past the record")
    return RawMessage(record[_RAW.size : end].decode(), record[end:], received_at)


class SpoolFullError(RuntimeError):
    """The spool reached its size bound: the database has been unreachable for too long."""


@dataclass
class Batch:
    """What one or more spool records hold."""

    readings: list[Reading]
    events: list[MeterEvent]
    rejected: list[Rejected]


@dataclass(frozen=True)
class Segment:
    """A sealed segment file, in drain order."""

    path: Path

    @property
    def seq(self) -> int:
        return int(self.path.name.split("-", 1)[0])

    @property
    def key(self) -> uuid.UUID:
        """The ingest batch key this segment lands with."""
        return uuid.UUID(self.path.name.split("-", 1)[1].split(".")[0])


def _encode(readings: Sequence[Reading], events: Sequence[MeterEvent], rejected: Sequence[Rejected]) -> bytes:
    doc: dict[str, Any] = {}
    if readings:
        doc["r"] = [
            [r.meter, r.channel, r.ts.isoformat(), r.value, r.unit, r.source.value, r.read_type.value, r.quality]
            for r in readings
        ]
    if events:
        doc["e"] = [[e.meter, e.ts.isoformat(), e.kind.value, e.source.value, e.details] for e in events]
    if rejected:
        doc["x"] = [
            [x.origin, x.reason, None, x.source.value, base64.b64encode(x.payload).decode("ascii")]
            if isinstance(x.payload, bytes)
            else [x.origin, x.reason, x.payload, x.source.value]
            for x in rejected
        ]
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


def _decode(data: bytes, batch: Batch) -> None:
    doc = json.loads(data)
    for m, c, ts, v, u, s, rt, q in doc.get("r", ()):
        batch.readings.append(Reading(m, c, datetime.fromisoformat(ts), v, u, Source(s), ReadType(rt), q))
    for m, ts, k, s, d in doc.get("e", ()):
        batch.events.append(MeterEvent(m, datetime.fromisoformat(ts), EventKind(k), Source(s), d))
    for origin, reason, text, s, *raw in doc.get("x", ()):
        payload: str | bytes = base64.b64decode(raw[0]) if raw else text
        batch.rejected.append(Rejected(origin, reason, payload, Source(s)))


def decode_record(data: bytes) -> Batch:
    """What one JSON spool record holds; raises ``ValueError`` (or a subclass) if it cannot be read.

    A raw MQTT record (``is_raw``) needs the collector's subscriptions to decode: see the forwarder.
    """
    if is_raw(data):
        raise ValueError("a raw MQTT record needs an MQTT subscription to decode it")
    batch = Batch([], [], [])
    try:
        _decode(data, batch)
    except (TypeError, KeyError) as exc:  # a record of the wrong shape
        raise ValueError(f"spool record of the wrong shape: {exc!r}") from exc
    return batch


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset after the record, payload) for each intact record; stops at the first torn one."""
    data = path.read_bytes()
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        payload = data[pos + _HEADER.size : end]
        if end > len(data) or zlib.crc32(payload) != crc:
            return
        yield end, payload
        pos = end


class Spool:
    """A spool directory. Thread-safe; one process per directory (enforced by a lock file)."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 4 << 20,
        warn_ratio: float = 0.8,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.warn_ratio = warn_ratio
        self._lock = threading.RLock()
        self._fsync_lock = threading.Lock()  # one fsync at a time; appends go on meanwhile (see ``sync``)
        self._lockfile = self._take_dir_lock()
        self._open: Path | None = None
        self._fh: Any = None
        self._open_since = 0.0
        self._open_bytes = 0  # bytes in the open segment
        self._appended = 0  # records appended, and how many of them an fsync has made durable
        self._synced = 0
        self._last_warning = 0.0
        self._recover()
        self._size = sum(p.stat().st_size for p in self.dir.glob("*.seg"))
        self._seq = max((Segment(p).seq for p in self.dir.glob("*.seg")), default=0)

    def _take_dir_lock(self) -> Any:
        import fcntl

        fh = (self.dir / "LOCK").open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise RuntimeError(f"spool {self.dir} is in use by another process") from exc
        return fh

    def _recover(self) -> None:
        """Seal segments a killed process left open, cutting a torn last record."""
        for path in sorted(self.dir.glob("*.open")):
            good = 0
            for end, _ in _records(path):
                good = end
            if good == 0:
                path.unlink()
                continue
            if good < path.stat().st_size:
                log.warning("spool: cut a torn record at the end of %s (%d bytes kept)", path.name, good)
                with path.open("r+b") as fh:
                    fh.truncate(good)
                    os.fsync(fh.fileno())
            path.rename(path.with_suffix(".seg"))
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        _fsync_dir(self.dir)

    # -- writing ------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Bytes held, sealed and open."""
        return self._size

    def append(
        self,
        readings: Sequence[Reading] = (),
        events: Sequence[MeterEvent] = (),
        rejected: Sequence[Rejected] = (),
        sync: bool = True,
    ) -> None:
        """Append one record; with ``sync`` it is durable when this returns (else call ``sync()``)."""
        if not (readings or events or rejected):
            return
        self._append(_encode(readings, events, rejected), sync)

    def append_raw(self, topic: str, payload: bytes, received_at: float, sync: bool = False) -> None:
        """Append one MQTT message undecoded (see ``RawMessage``); durable once ``sync()`` returns."""
        self._append(encode_raw(topic, payload, received_at), sync)

    def _append(self, payload: bytes, sync: bool) -> None:
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._size + len(record) > self.max_bytes:
                raise SpoolFullError(
                    f"spool {self.dir} is full ({self._size:,} of {self.max_bytes:,} bytes): "
                    "the database has been unreachable too long"
                )
            if self._fh is None:
                self._seq += 1
                self._open = self.dir / f"{self._seq:012d}-{uuid.uuid4()}.open"
                self._fh = self._open.open("ab")
                self._open_since = time.monotonic()
                self._open_bytes = 0
            self._fh.write(record)
            self._size += len(record)
            self._appended += 1
            # Counted, not asked: ``tell()`` is an lseek, and each system call lets go of the interpreter
            # lock, which the network thread then waits to take back from the forwarder (py-spy: the
            # most sampled line of the MQTT network thread).
            self._open_bytes += len(record)
            if self._open_bytes >= self.segment_bytes:
                self.seal()
            self._warn_if_near_full()
        if sync:
            self.sync()

    def sync(self) -> None:
        """Make everything appended so far durable.

        Only the flush into the kernel holds the spool's lock; the fsync runs outside it, on a
        duplicate of the segment's descriptor (a seal meanwhile cannot close it under us). Appends
        from the MQTT network thread therefore go on while the acknowledging thread waits for the
        disk: with the fsync under the lock, the network thread waited out every group commit
        (py-spy, one collector on a queued round: most of its time in the spool's lock).
        Concurrent calls stay correct: each returns once an fsync that began after its own flush
        has finished (``_synced`` counts the records made durable).
        """
        with self._lock:
            target = self._appended
            if self._synced >= target:
                return
            if self._fh is None:  # sealed since: ``seal`` synced it
                return
            self._fh.flush()
            fd = os.dup(self._fh.fileno())
        try:
            with self._fsync_lock:
                if self._synced < target:  # else an fsync after our flush covered it
                    os.fsync(fd)
                    self._synced = max(self._synced, target)
        finally:
            os.close(fd)

    def seal(self, older_than: float = 0.0) -> None:
        """Close the open segment so it can drain (only if open for at least ``older_than`` s)."""
        with self._lock:
            if self._fh is None or time.monotonic() - self._open_since < older_than:
                return
            self.sync()
            self._fh.close()
            self._fh = None
            assert self._open is not None
            self._open.rename(self._open.with_suffix(".seg"))
            self._fsync_dir()
            self._open = None

    def _warn_if_near_full(self) -> None:
        if self._size >= self.warn_ratio * self.max_bytes and time.monotonic() - self._last_warning > 10:
            self._last_warning = time.monotonic()
            log.error(
                "spool %s is %.0f%% full (%s of %s bytes): readings are not reaching the database",
                self.dir,
                100 * self._size / self.max_bytes,
                f"{self._size:,}",
                f"{self.max_bytes:,}",
            )

    # -- draining -----------------------------------------------------------------------------------
    def sealed(self) -> list[Segment]:
        """Sealed segments, oldest first."""
        return sorted((Segment(p) for p in self.dir.glob("*.seg")), key=lambda s: s.seq)

    def read(self, segment: Segment) -> Batch:
        """Everything a sealed segment holds; ``ValueError`` if a record cannot be read."""
        batch = Batch([], [], [])
        for payload in self.records(segment):
            part = decode_record(payload)
            batch.readings += part.readings
            batch.events += part.events
            batch.rejected += part.rejected
        return batch

    def records(self, segment: Segment) -> list[bytes]:
        """The raw records of a sealed segment, in order (see ``decode_record``)."""
        return [payload for _, payload in _records(segment.path)]

    # -- quarantine ---------------------------------------------------------------------------------
    @property
    def quarantine_dir(self) -> Path:
        """Where refused segments are kept (created on first use)."""
        return self.dir / "quarantine"

    def quarantine(self, segment: Segment, reason: str, records: Sequence[int] | None = None) -> Path:
        """Move ``segment`` (or only its ``records``, by index) to the quarantine with ``reason``.

        The reason file is written first and the data file atomically, then the segment is removed:
        a crash in between leaves the segment to be landed (and refused) again, never a loss.
        """
        qdir = self.quarantine_dir
        qdir.mkdir(exist_ok=True)
        target = qdir / f"{segment.seq:012d}-{uuid.uuid5(segment.key, 'quarantined')}.seg"
        all_records = self.records(segment)
        kept = list(range(len(all_records))) if records is None else sorted(records)
        info = {
            "segment": segment.path.name,
            "reason": reason,
            "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "records": kept,
            "records_in_segment": len(all_records),
        }
        _write_durably(target.with_suffix(".json"), json.dumps(info, indent=1).encode())
        if records is None:
            data = segment.path.read_bytes()
        else:
            data = b"".join(_HEADER.pack(len(r), zlib.crc32(r)) + r for r in (all_records[i] for i in kept))
        _write_durably(target, data)
        _fsync_dir(qdir)
        self.remove(segment)
        self._fsync_dir()
        log.error("spool: segment %s quarantined in %s: %s", segment.path.name, qdir, reason)
        return target

    def quarantined(self) -> list[dict[str, Any]]:
        """What the quarantine holds, oldest first: each entry's reason file plus its ``path`` and ``bytes``."""
        return quarantined(self.dir)

    def requeue(self, names: Sequence[str] = ()) -> list[str]:
        """Move quarantined segments (all, or those ``names``) back into the spool to drain; return their names."""
        held = {Path(e["path"]).name: Path(e["path"]) for e in self.quarantined()}
        unknown = [n for n in names if n not in held]
        if unknown:
            raise FileNotFoundError(f"not in {self.quarantine_dir}: {', '.join(unknown)}")
        moved = []
        with self._lock:
            for name in names or sorted(held):
                path = held[name]
                size = path.stat().st_size
                path.replace(self.dir / name)
                path.with_suffix(".json").unlink(missing_ok=True)
                self._size += size
                moved.append(name)
            self._fsync_dir()
            _fsync_dir(self.quarantine_dir)
        return moved

    def remove(self, segment: Segment) -> None:
        """Forget a segment that has landed."""
        with self._lock:
            size = segment.path.stat().st_size
            segment.path.unlink()
            self._size -= size

    def close(self) -> None:
        """Seal what is open and release the directory."""
        self.seal()
        self._lockfile.close()


def quarantined(spool_dir: Path) -> list[dict[str, Any]]:
    """The quarantine of the spool in ``spool_dir`` (readable without taking the spool's lock)."""
    qdir = Path(spool_dir) / "quarantine"
    out: list[dict[str, Any]] = []
    for seg in sorted(qdir.glob("*.seg")):
        try:
            info = json.loads(seg.with_suffix(".json").read_text())
        except (OSError, ValueError):
            info = {"segment": seg.name, "reason": "(reason file missing or unreadable)"}
        info["path"] = str(seg)
        info["bytes"] = seg.stat().st_size
        out.append(info)
    return out


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
