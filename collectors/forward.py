"""The forwarder: drains the spool into the database, oldest segment first, one batch per segment.

A segment is removed from disk only after its batch committed. If the process dies in between, the
segment drains again on restart and the database recognises its batch key: exactly once. While the
database is unreachable the forwarder backs off (up to ``max_backoff`` seconds) and the spool grows.
"""

from __future__ import annotations

import logging
import threading
import time

from collectors.spool import Spool
from ingest import BatchWriter
from releve.settings import Settings

log = logging.getLogger(__name__)


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
    ) -> None:
        self.spool = spool
        self.url = url
        self.settings = settings
        self.origin = origin
        self.seal_seconds = seal_seconds
        self.max_backoff = max_backoff
        self._writer: BatchWriter | None = None
        self.landed_rows = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def drain_once(self) -> int:
        """Land every sealed segment now; return the readings inserted. Raises if the database fails."""
        inserted = 0
        for segment in self.spool.sealed():
            batch = self.spool.read(segment)
            if self._writer is None:
                self._writer = BatchWriter(self.url, self.settings, self.origin)
            try:
                result = self._writer.write(batch.readings, batch.events, batch.rejected, batch_key=segment.key)
            except Exception:
                self._writer.close()
                self._writer = None
                raise
            self.spool.remove(segment)
            inserted += result.inserted
            self.landed_rows += result.inserted
            if result.replayed:
                log.info("segment %s had already landed (replayed after a restart)", segment.path.name)
        return inserted

    def start(self) -> None:
        """Drain in a background thread until ``stop()``."""
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
                self._stop.wait(0.2)
            except Exception as exc:  # database down or refusing: keep the spool, retry later
                self.last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
