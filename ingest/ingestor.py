"""The ingestor: buffers what collectors submit, flushes batches by count and time, pushes back.

``submit`` returns at once while there is room and blocks while ``ingest.max_pending_rows`` rows
wait (back-pressure instead of unbounded memory). A background thread flushes when a batch reaches
``ingest.batch_rows`` rows or ``ingest.batch_seconds`` have passed. A batch that fails on the
database is retried with backoff, never dropped; ``flush()`` waits until everything submitted
has landed.

With ``ingest.writers = N`` (default 1), N threads each land batches on a connection of their own:
a batch is taken while others are still being written, so the server inserts on several cores.
Batches may then commit in any order; each is still one transaction and its own duplicate check
(the primary key), so a reading submitted twice lands once whichever batch commits first, and
``on_batch`` is called from the thread that wrote the batch.

With a multi-host ``database.url`` (``target_session_attrs=read-write``) a retry reconnects to
whichever server is the primary now: the ingestor rides out a failover (docs/operations.md).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from ingest.frame import ReadingFrame
from ingest.sharded import ShardedWriter, open_writer
from ingest.writer import BatchResult, BatchWriter
from releve.model import MeterEvent, Reading, Rejected, Source
from releve.settings import Settings

log = logging.getLogger(__name__)


class Ingestor:
    """Thread-safe front of one BatchWriter (or of `ingest.writers` of them, each on its own connection)."""

    def __init__(
        self,
        url: str,
        settings: Settings,
        origin: str = "ingest",
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> None:
        self.url = url
        self.settings = settings
        self.origin = origin
        self.on_batch = on_batch
        self._cond = threading.Condition()
        self._frames: list[ReadingFrame] = []
        self._events: list[MeterEvent] = []
        self._rejected: list[Rejected] = []
        self._pending = 0  # rows submitted and not yet landed
        self._buffered = 0  # rows waiting in the buffer (not yet taken by the flusher)
        self._oldest = 0.0
        self._closing = False
        self._inflight = 0  # batches taken by the flusher and not yet landed
        self.results: list[BatchResult] = []
        self._threads = [
            threading.Thread(target=self._run, name=f"ingestor-{origin}-{k}", daemon=True)
            for k in range(settings.ingest.writers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        readings: Sequence[Reading] | ReadingFrame = (),
        events: Sequence[MeterEvent] = (),
        rejected: Sequence[Rejected] = (),
    ) -> None:
        """Queue readings, events and dead letters; block while too many rows wait."""
        if isinstance(readings, ReadingFrame):
            frames = [readings]
        else:  # a frame per source: every reading keeps its own
            by_source: dict[Source, list[Reading]] = {}
            for r in readings:
                by_source.setdefault(r.source, []).append(r)
            frames = [ReadingFrame.from_readings(rs) for rs in by_source.values()]
        rows = sum(len(f) for f in frames)
        limit = self.settings.ingest.max_pending_rows
        with self._cond:
            while self._pending + rows > limit and self._pending > 0 and not self._closing:
                self._cond.wait(0.5)
            if self._closing:
                raise RuntimeError("ingestor is closed")
            if not self._buffered and not self._events and not self._rejected:
                self._oldest = time.monotonic()
            self._frames.extend(f for f in frames if len(f))
            self._events.extend(events)
            self._rejected.extend(rejected)
            self._pending += rows
            self._buffered += rows
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every submitted row has landed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._oldest = 0.0  # make the flusher take the buffer now
            self._cond.notify_all()
            while self._pending or self._inflight or self._events or self._rejected or self._frames:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{self._pending} rows still waiting after {timeout} s")
                self._cond.wait(0.1)

    def close(self) -> None:
        """Flush and stop the background threads."""
        self.flush()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- background ------------------------------------------------------------------------------
    def _take(self) -> tuple[list[ReadingFrame], list[MeterEvent], list[Rejected]] | None:
        batch_rows = self.settings.ingest.batch_rows
        with self._cond:
            while True:
                has_data = bool(self._frames or self._events or self._rejected)
                due = has_data and (
                    self._buffered >= batch_rows
                    or time.monotonic() - self._oldest >= self.settings.ingest.batch_seconds
                    or self._closing
                )
                if due:
                    frames, self._frames = self._frames, []
                    events, self._events = self._events, []
                    rejected, self._rejected = self._rejected, []
                    self._buffered = 0
                    self._inflight += 1
                    return frames, events, rejected
                if self._closing:
                    return None
                self._cond.wait(0.05)

    def _run(self) -> None:
        writer: BatchWriter | ShardedWriter | None = None
        backoff = 0.5
        while True:
            taken = self._take()
            if taken is None:
                break
            frames, events, rejected = taken
            # One batch per source, so that every reading keeps its own; events and dead letters
            # (each with its own source) travel with the last.
            by_source: dict[Source, list[ReadingFrame]] = {}
            for f in frames:
                by_source.setdefault(f.source, []).append(f)
            parts: list[ReadingFrame | None] = [ReadingFrame.concat(fs) for fs in by_source.values()] or [None]
            for i, frame in enumerate(parts):
                last = i == len(parts) - 1
                # One key for every attempt: a batch whose commit was lost with its connection (the
                # primary died after committing, before answering) is recognised, not landed twice.
                key = uuid.uuid4()
                while True:
                    try:
                        if writer is None:
                            writer = open_writer(self.url, self.settings, self.origin)
                        result = writer.write(
                            frame if frame is not None else (),
                            events if last else (),
                            rejected if last else (),
                            batch_key=key,
                        )
                        backoff = 0.5
                        break
                    except Exception as exc:  # the database is down or failing: keep the batch, retry
                        log.warning(
                            "batch of %d rows not landed (%s); retrying in %.1f s",
                            len(frame) if frame else 0,
                            exc,
                            backoff,
                        )
                        if writer is not None:
                            writer.close()
                            writer = None
                        time.sleep(backoff)
                        backoff = min(backoff * 2, 30.0)
                self.results.append(result)
                if self.on_batch:
                    self.on_batch(result)
            with self._cond:
                self._pending -= sum(len(f) for f in frames)
                self._inflight -= 1
                self._cond.notify_all()
        if writer is not None:
            writer.close()
