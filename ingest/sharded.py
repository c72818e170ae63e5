"""The write path over shards: one batch in, one batch per shard out, each on its shard's server.

A batch is split by the shard of each reading's meter (``releve.shards``: the coordinator's hash
partitioning decides), and each part lands through an ordinary ``BatchWriter`` on its shard, under a
key derived from the batch's own (``uuid5(key, "shard k")``): replaying the batch after a crash
lands only the parts that had not committed. Readings of meters the registry does not know, and
the batch's dead letters, go to shard 0, where the writer keeps them as dead letters as usual.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np

from ingest.frame import ReadingFrame
from ingest.writer import BatchResult, BatchWriter
from releve import db, shards
from releve.model import MeterEvent, Reading, Rejected
from releve.settings import Settings


class ShardedWriter:
    """Routes batches to per-shard writers; the coordinator is asked once per meter where it lives."""

    def __init__(
        self, coordinator_url: str, shard_urls: Sequence[str], settings: Settings, origin: str = "ingest"
    ) -> None:
        if not shard_urls:
            raise ValueError("ShardedWriter needs at least one shard URL")
        self.n = len(shard_urls)
        self.coordinator = db.connect(coordinator_url, role=db.reader_role(settings), autocommit=True)
        self.writers = [BatchWriter(url, settings, origin) for url in shard_urls]
        self._shard: dict[str, int] = {}
        self.parts: list[BatchResult] = []  # the last batch's result per shard written

    def close(self) -> None:
        """Close every connection."""
        for writer in self.writers:
            writer.close()
        self.coordinator.close()

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def shard_of(self, serials: Sequence[str]) -> np.ndarray:
        """The shard of each serial (0 for meters the registry does not know: they become dead letters)."""
        missing = [s for s in dict.fromkeys(serials) if s not in self._shard]
        if missing:
            found = shards.shards_of(self.coordinator, missing, self.n)
            self._shard.update({s: found.get(s, 0) for s in missing})
        return np.array([self._shard[s] for s in serials], dtype=np.int32)

    def write(
        self,
        readings: Sequence[Reading] | ReadingFrame = (),
        events: Sequence[MeterEvent] = (),
        rejected: Sequence[Rejected] = (),
        batch_key: uuid.UUID | None = None,
    ) -> BatchResult:
        """Land one batch, split per shard; return the sum of what became of its parts.

        ``replayed`` is True only when every part had landed before; ``parts`` keeps each part's result.
        """
        frame = readings if isinstance(readings, ReadingFrame) else ReadingFrame.from_readings(readings)
        key = batch_key or uuid.uuid4()
        row_shard = self.shard_of(frame.meters)[frame.meter_idx] if len(frame) else np.zeros(0, np.int32)
        event_shard = self.shard_of([e.meter for e in events]) if events else np.zeros(0, np.int32)
        results: list[BatchResult] = []
        for k, writer in enumerate(self.writers):
            part = frame.take(row_shard == k)
            part_events = [e for e, s in zip(events, event_shard, strict=True) if s == k]
            part_rejected = rejected if k == 0 else ()
            if len(part) or part_events or part_rejected:
                results.append(writer.write(part, part_events, part_rejected, batch_key=uuid.uuid5(key, f"shard {k}")))
        self.parts = results
        return BatchResult(
            key,
            None,
            len(frame),
            sum(r.inserted for r in results),
            sum(r.duplicates for r in results),
            sum(r.conflicts for r in results),
            sum(r.rejected for r in results),
            sum(r.events for r in results),
            replayed=bool(results) and all(r.replayed for r in results),
        )


def open_writer(url: str, settings: Settings, origin: str = "ingest") -> BatchWriter | ShardedWriter:
    """The writer the settings ask for; collectors' forwarders and the Ingestor use this.

    Per shard when ``database.shard_urls`` is set (``url`` is then the coordinator), else one
    ``BatchWriter`` on ``url``.
    """
    if settings.database.shard_urls:
        return ShardedWriter(url, settings.database.shard_urls, settings, origin)
    return BatchWriter(url, settings, origin)
