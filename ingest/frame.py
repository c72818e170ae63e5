"""ReadingFrame: a batch of readings as columns, and its binary ``COPY`` encoding.

Collectors hand over ``Reading`` objects; simulators, importers and backfills hand over columns.
Either way the writer works on columns: validation, sorting and duplicate detection are numpy
operations, and the rows reach PostgreSQL as one binary ``COPY`` buffer built without a Python
loop per row. Text columns (meter serial, channel, unit) are categorical: a list of distinct
values and an index array, so mapping them to database ids costs one lookup per distinct value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from releve.model import Reading, ReadType, Source
from releve.pgbinary import HEADER, TRAILER, encode, new_rows, pg_micros, row_dtype

READ_TYPES: tuple[ReadType, ...] = tuple(ReadType)


def _factorize(values: Iterable[str]) -> tuple[list[str], np.ndarray]:
    """Distinct values in order of first appearance, and each value's index among them."""
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return list(index), np.asarray(codes, dtype=np.int32)


@dataclass
class ReadingFrame:
    """Readings as columns. ``ts`` is datetime64[us] in UTC (naive in numpy, aware in meaning)."""

    meters: list[str]
    meter_idx: np.ndarray
    channels: list[str]
    channel_idx: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    units: list[str]
    unit_idx: np.ndarray
    source: Source = Source.IMPORT
    read_type_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))

    def __post_init__(self) -> None:
        n = len(self.value)
        if len(self.read_type_idx) != n:
            self.read_type_idx = np.zeros(n, np.int8)
        if len(self.quality) != n:
            self.quality = np.zeros(n, np.int16)
        for name in ("meter_idx", "channel_idx", "ts", "unit_idx"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ReadingFrame column {name} has {len(getattr(self, name))} rows, value has {n}")

    def __len__(self) -> int:
        return len(self.value)

    @classmethod
    def from_readings(cls, readings: Sequence[Reading], source: Source | None = None) -> ReadingFrame:
        """Build a frame from Reading objects (the collectors' path).

        A frame holds one source: readings of several sources raise ``ValueError`` (split them by
        ``Reading.source`` first) unless ``source`` overrides them all.
        """
        if source is None and len({r.source for r in readings}) > 1:
            found = ", ".join(sorted({r.source.value for r in readings}))
            raise ValueError(f"readings of several sources ({found}) in one frame: split them by source")
        meters, meter_idx = _factorize(r.meter for r in readings)
        channels, channel_idx = _factorize(r.channel for r in readings)
        units, unit_idx = _factorize(r.unit for r in readings)
        ts = np.array([_utc_naive(r.ts) for r in readings], dtype="datetime64[us]")
        rt_index = {rt: i for i, rt in enumerate(READ_TYPES)}
        return cls(
            meters=meters,
            meter_idx=meter_idx,
            channels=channels,
            channel_idx=channel_idx,
            ts=ts,
            value=np.fromiter((r.value for r in readings), np.float64, len(readings)),
            units=units,
            unit_idx=unit_idx,
            source=source or (readings[0].source if readings else Source.IMPORT),
            read_type_idx=np.fromiter((rt_index[r.read_type] for r in readings), np.int8, len(readings)),
            quality=np.fromiter((r.quality for r in readings), np.int16, len(readings)),
        )

    @classmethod
    def from_columns(
        cls,
        meter: Sequence[str] | np.ndarray,
        channel: Sequence[str] | np.ndarray,
        ts: np.ndarray,
        value: np.ndarray,
        unit: Sequence[str] | np.ndarray,
        source: Source = Source.IMPORT,
    ) -> ReadingFrame:
        """Build a frame from plain columns (importers, simulators)."""
        meters, meter_idx = _factorize(meter)
        channels, channel_idx = _factorize(channel)
        units, unit_idx = _factorize(unit)
        return cls(
            meters,
            meter_idx,
            channels,
            channel_idx,
            np.asarray(ts, "datetime64[us]"),
            np.asarray(value, np.float64),
            units,
            unit_idx,
            source,
        )

    def take(self, rows: np.ndarray) -> ReadingFrame:
        """The frame restricted to ``rows`` (a boolean mask or an index array)."""
        return ReadingFrame(
            self.meters,
            self.meter_idx[rows],
            self.channels,
            self.channel_idx[rows],
            self.ts[rows],
            self.value[rows],
            self.units,
            self.unit_idx[rows],
            self.source,
            self.read_type_idx[rows],
            self.quality[rows],
        )

    def row(self, i: int) -> dict[str, object]:
        """Row ``i`` as a plain dict (for dead letters and messages)."""
        return {
            "meter": self.meters[self.meter_idx[i]],
            "channel": self.channels[self.channel_idx[i]],
            "ts": str(self.ts[i]) + "Z",
            "value": float(self.value[i]),
            "unit": self.units[self.unit_idx[i]],
            "source": self.source.value,
            "read_type": READ_TYPES[self.read_type_idx[i]].value,
        }

    @staticmethod
    def concat(frames: Sequence[ReadingFrame]) -> ReadingFrame:
        """One frame holding the rows of all ``frames`` (categories merged)."""
        if len(frames) == 1:
            return frames[0]
        if len({f.source for f in frames}) > 1:
            found = ", ".join(sorted({f.source.value for f in frames}))
            raise ValueError(f"frames of several sources ({found}) cannot be one frame: concatenate by source")

        def merge(cats_name: str, idx_name: str) -> tuple[list[str], np.ndarray]:
            index: dict[str, int] = {}
            parts = []
            for f in frames:
                mapping = np.array([index.setdefault(c, len(index)) for c in getattr(f, cats_name)], np.int32)
                parts.append(mapping[getattr(f, idx_name)] if len(mapping) else getattr(f, idx_name))
            return list(index), np.concatenate(parts) if parts else np.zeros(0, np.int32)

        meters, meter_idx = merge("meters", "meter_idx")
        channels, channel_idx = merge("channels", "channel_idx")
        units, unit_idx = merge("units", "unit_idx")
        return ReadingFrame(
            meters,
            meter_idx,
            channels,
            channel_idx,
            np.concatenate([f.ts for f in frames]),
            np.concatenate([f.value for f in frames]),
            units,
            unit_idx,
            frames[0].source,
            np.concatenate([f.read_type_idx for f in frames]),
            np.concatenate([f.quality for f in frames]),
        )


def _utc_naive(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"naive timestamp {ts.isoformat()}: Relevé needs timezone-aware times")
    return ts.astimezone(UTC).replace(tzinfo=None)


# Binary COPY rows of the reading table: every column fixed-width, so one numpy record per row.
READING_COPY_DTYPE = row_dtype(
    ("meter_id", ">i4"),
    ("channel_id", ">i2"),
    ("ts", ">i8"),
    ("value", ">f8"),
    ("unit_id", ">i2"),
    ("source_id", ">i2"),
    ("read_type_id", ">i2"),
    ("quality", ">i2"),
    ("received_at", ">i8"),
    ("batch_id", ">i8"),
)
READING_COPY_COLUMNS = (
    "meter_id, channel_id, ts, value, unit_id, source_id, read_type_id, quality, received_at, batch_id"
)


def encode_reading_copy(
    meter_id: np.ndarray,
    channel_id: np.ndarray,
    ts: np.ndarray,
    value: np.ndarray,
    unit_id: np.ndarray,
    source_id: int,
    read_type_id: np.ndarray,
    quality: np.ndarray,
    received_at: datetime,
    batch_id: int,
    first: bool = True,
    last: bool = True,
) -> bytes:
    """The binary COPY payload for rows of the reading table (header and trailer unless a middle piece)."""
    rec = new_rows(READING_COPY_DTYPE, len(value))
    rec["meter_id"] = meter_id
    rec["channel_id"] = channel_id
    rec["ts"] = pg_micros(ts)
    rec["value"] = value
    rec["unit_id"] = unit_id
    rec["source_id"] = source_id
    rec["read_type_id"] = read_type_id
    rec["quality"] = quality
    rec["received_at"] = pg_micros(np.array([_utc_naive(received_at)], "datetime64[us]"))[0]
    rec["batch_id"] = batch_id
    return encode(rec, first, last)


#: ``reading_block``'s columns in the order :func:`encode_block_copy` writes them (migration 0030).
BLOCK_COPY_COLUMNS = ", ".join(
    (
        "meter_id",
        "channel_id",
        "ts_first",
        "ts_last",
        "ts",
        "value",
        "quality",
        "unit_id",
        "source_id",
        "read_type_id",
        "received_at",
        "batch_id",
    )
)
_TIMESTAMPTZ_OID, _FLOAT8_OID, _INT2_OID = 1184, 701, 21


def _block_dtype(k: int) -> np.dtype:
    """One binary COPY row of ``reading_block`` holding ``k`` instants: fixed size for a given ``k``."""

    def array(name: str, code: str) -> list[Any]:
        # Length word, then the array header (dimensions, NULL flag, element type, length, lower
        # bound), then a length word before each element.
        head = ["len", "ndim", "null", "oid", "dim", "lb"]
        return [*((f"{name}_{h}", ">i4") for h in head), (name, [("l", ">i4"), ("v", code)], (k,))]

    spec: list[Any] = [("n", ">i2")]
    spec += [("l1", ">i4"), ("meter_id", ">i4"), ("l2", ">i4"), ("channel_id", ">i2")]
    spec += [("l3", ">i4"), ("ts_first", ">i8"), ("l4", ">i4"), ("ts_last", ">i8")]
    spec += array("ts", ">i8") + array("value", ">f8") + array("quality", ">i2")
    spec += [("l8", ">i4"), ("unit_id", ">i2"), ("l9", ">i4"), ("source_id", ">i2"), ("l10", ">i4")]
    spec += [("read_type_id", ">i2"), ("l11", ">i4"), ("received_at", ">i8"), ("l12", ">i4"), ("batch_id", ">i8")]
    return np.dtype(spec)


def encode_block_copy(
    start: np.ndarray,
    length: np.ndarray,
    meter_id: np.ndarray,
    channel_id: np.ndarray,
    ts: np.ndarray,
    value: np.ndarray,
    unit_id: np.ndarray,
    source_id: int,
    read_type_id: np.ndarray,
    quality: np.ndarray,
    received_at: datetime,
    batch_id: int,
) -> bytes:
    """The binary COPY payload (header and trailer) for one block per run of sorted rows.

    A run is rows ``start[i] .. start[i] + length[i] - 1`` of the columns: one meter, channel, unit
    and read type, instants rising within one UTC day. Runs of one length are one record array, so
    the encoding is a few numpy operations per distinct length, not a Python loop per block.
    """
    us = pg_micros(ts)
    received = pg_micros(np.array([_utc_naive(received_at)], "datetime64[us]"))[0]
    parts = [HEADER]
    for k in np.unique(length):
        s0 = start[length == k]
        at = s0[:, None] + np.arange(k)[None, :]
        rec = np.empty(len(s0), _block_dtype(int(k)))
        rec["n"] = 12
        for name, size in (("l1", 4), ("l2", 2), ("l3", 8), ("l4", 8), ("l8", 2), ("l9", 2), ("l10", 2), ("l11", 8)):
            rec[name] = size
        rec["l12"] = 8
        for name, oid, size in (("ts", _TIMESTAMPTZ_OID, 8), ("value", _FLOAT8_OID, 8), ("quality", _INT2_OID, 2)):
            rec[f"{name}_len"] = 20 + (4 + size) * k
            rec[f"{name}_ndim"], rec[f"{name}_null"], rec[f"{name}_oid"] = 1, 0, oid
            rec[f"{name}_dim"], rec[f"{name}_lb"] = k, 1
            rec[name]["l"] = size
        rec["meter_id"] = meter_id[s0]
        rec["channel_id"] = channel_id[s0]
        rec["ts_first"], rec["ts_last"] = us[s0], us[s0 + k - 1]
        rec["ts"]["v"], rec["value"]["v"], rec["quality"]["v"] = us[at], value[at], quality[at]
        rec["unit_id"], rec["source_id"], rec["read_type_id"] = unit_id[s0], source_id, read_type_id[s0]
        rec["received_at"], rec["batch_id"] = received, batch_id
        parts.append(rec.tobytes())
    parts.append(TRAILER)
    return b"".join(parts)
