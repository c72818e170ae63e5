"""What the write path's goal needs from the table: storage layouts against raw COPY, same run.

    python bench/storage_layout.py [--meters 10000] [--history 672] [--batch-intervals 10] [--rounds 10]

Issue 18 asks the fresh write path for >= 0.40 of raw binary COPY into a bare table. The write
path costs what a COPY into ``reading`` with its primary key costs (``bench/ingest.py`` prints the
keyed COPY beside it), so the question is what the table's layout allows. On a throwaway
PostgreSQL server (durable settings, as ``bench/common.py``), four tables of the same fleet, each
holding ``--history`` quarter hours of every meter already (built in SQL, time-major as live data
arrives; setup, not timed), then ``--rounds`` rounds of live batches (half the fleet ×
``--batch-intervals`` new intervals, the shape of ``bench/ingest.py``'s fresh batch), the tables
taken in turn, their order reversed every round:

1. **bare**: ``reading``'s columns, no key, no index — the baseline;
2. **rows, meter-first key**: ``reading`` today, primary key (meter, channel, instant), rows sent in
   key order as the writer sends them;
3. **rows, time-first key**: primary key (instant, meter, channel), rows in time order: every
   insert lands at the index's right edge (the cheapest a B-tree entry per row can be);
4. **blocks**: one row per meter, channel and batch run — its instants and values in arrays
   (``timestamptz[]``, ``float8[]``), primary key (meter, channel, first instant): one index entry
   per run instead of one per reading, as TimescaleDB's compressed chunks and the wide rows of
   commercial MDMs store interval data;
5. **blocks, checked**: blocks as a write path would keep them, timed with the write path's own
   steps: partitioned by the first instant in weekly parts (as ``reading``), no block across a UTC
   midnight (so a block holding instant t starts in (t − 1 day, t] and a time range bounds what a
   read opens), and each block's ``reach`` — the latest last instant of its meter and channel's
   blocks that start no later than it. Timed: the batch (sorted by meter and instant, as the
   writer holds it) cut into runs and encoded, the duplicate check — per run, one backward index
   probe in the weekly part for the latest block starting in (first − 1 day, last], whose
   ``reach`` must fall before the run's first instant — and the COPY;
6. **blocks, exclusion constraint**: the same blocks with no primary key but ``EXCLUDE USING gist
   (meter =, channel =, [first, last] &&)`` as the duplicate check (blocks then cannot hold gaps:
   late data must fit between them);
7. **hybrid, checked**: what the route to the goal would keep (docs/storage.md, *Sixth pass*):
   blocks where a batch brings a run (two or more intervals of a meter on one UTC day), rows with
   today's key where it brings one, and one duplicate check across both stores — a run must meet
   no stored block (the probe of layout 5) and no stored row in its span (one index range probe
   into the rows); a single reading must meet no stored block (the rows' primary key checks the
   rest). Both stores weekly parts; the rows hold another channel's history, so their index is as
   deep as ``reading``'s while the blocks hold this channel's. Timed: cut, encode, check, both
   COPYs, one commit;
8. **hybrid, reach table**: layout 7 with the blocks' side of the check kept in a small table, a
   row per meter and channel holding the last instant its blocks reach (moved forward by each
   batch of blocks, in the same transaction): a run or a single that starts after its series'
   reach meets no block — one hash join of the batch with that table instead of an index probe
   per run — and the runs still probe the rows in their span. A batch with runs holds a
   transaction-level advisory lock exclusively, a batch of singles shares it: a single cannot
   land inside a block being written, nor a block over a single;
9. **hybrid, cached reach**: layout 8 with the reach table held by the writer too, and a version
   number beside it that every batch of blocks moves on: under the lock, one read of the version,
   and while it is the writer's own the batch is checked against the cached reach in numpy (a
   batch of single readings then costs the lock, that read and the rows' COPY); another writer's
   blocks make the writer read the reach table again (not timed here: one writer);
10. **hybrid, global reach**: layout 7 with one row for the blocks' side of the check: the latest
   instant any block reaches, moved on by each batch of blocks. Under the lock, a batch whose runs
   and singles all start after it meets no block (one row read; live data is newer than the last
   file or replay); a batch reaching back before it (late data, a replay overlapping a file) is
   checked run by run as layout 7 does (counted, not expected here). The runs still probe the rows.

Printed: readings/s and the ratio to the bare COPY for each, and what reading one meter's last
7 days costs in each layout (``--probes`` meters, the median): the layouts that write fast must
still read a meter fast. Nothing here is the product's code path; it measures the ground the
product would stand on.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import exit_on_sigterm
from ingest.frame import READING_COPY_COLUMNS, encode_reading_copy
from releve.pgbinary import HEADER, PG_EPOCH_US, TRAILER
from releve.pgserver import PostgresServer

COLUMNS = """meter_id integer NOT NULL, channel_id smallint NOT NULL, ts timestamptz NOT NULL,
    value double precision NOT NULL, unit_id smallint NOT NULL, source_id smallint NOT NULL,
    read_type_id smallint NOT NULL, quality smallint NOT NULL DEFAULT 0, received_at timestamptz NOT NULL,
    batch_id bigint NOT NULL"""
ROW_TABLES = {
    "bare": "",
    "rows_meter_first": ", PRIMARY KEY (meter_id, channel_id, ts)",
    "rows_time_first": ", PRIMARY KEY (ts, meter_id, channel_id)",
}
BLOCKS = """CREATE TABLE blocks (
    meter_id integer NOT NULL, channel_id smallint NOT NULL, ts_first timestamptz NOT NULL,
    ts_last timestamptz NOT NULL, ts timestamptz[] NOT NULL, value double precision[] NOT NULL,
    unit_id smallint NOT NULL, source_id smallint NOT NULL, read_type_id smallint NOT NULL,
    received_at timestamptz NOT NULL, batch_id bigint NOT NULL,
    PRIMARY KEY (meter_id, channel_id, ts_first))"""
#: Blocks as the write path would keep them: partitioned by the first instant (weekly, as ``reading``'s
#: parts), no block across a UTC midnight (a block holding instant t starts in (t - 1 day, t]: a
#: time range bounds the partitions a read opens), and ``reach``, the latest ``ts_last`` of the
#: blocks of its meter and channel that start no later than it: the duplicate check's one probe.
CHECKED = """CREATE TABLE blocks_checked (
    meter_id integer NOT NULL, channel_id smallint NOT NULL, ts_first timestamptz NOT NULL,
    ts_last timestamptz NOT NULL, reach timestamptz NOT NULL, ts timestamptz[] NOT NULL,
    value double precision[] NOT NULL, unit_id smallint NOT NULL, source_id smallint NOT NULL,
    read_type_id smallint NOT NULL, received_at timestamptz NOT NULL, batch_id bigint NOT NULL,
    PRIMARY KEY (meter_id, channel_id, ts_first)) PARTITION BY RANGE (ts_first)"""
#: The duplicate check of a batch's runs (meter, channel, first, last): how many overlap stored blocks.
PROBE = """SELECT count(*) FROM (SELECT r.m, 1::int2 AS c, timestamptz '2000-01-01 00:00Z' + r.a * interval '1 microsecond' AS a,
                                    timestamptz '2000-01-01 00:00Z' + r.b * interval '1 microsecond' AS b
                             FROM unnest(%s::int4[], %s::int8[], %s::int8[]) AS r(m, a, b)) r
    CROSS JOIN LATERAL (SELECT x.reach FROM {table} x
                        WHERE x.meter_id = r.m AND x.channel_id = r.c
                          AND x.ts_first > r.a - interval '1 day' AND x.ts_first <= r.b
                        ORDER BY x.ts_first DESC LIMIT 1) p
    WHERE p.reach >= r.a"""
#: Blocks whose ranges may not overlap for one meter and channel (a block is a run with no gap over an
#: interval, so late data that fills a gap makes a block of its own between the stored ones): the
#: exclusion constraint is the duplicate check, as reading's primary key is today.
EXCLUSIVE = """CREATE TABLE blocks_excl (
    meter_id integer NOT NULL, channel_id smallint NOT NULL, ts_first timestamptz NOT NULL,
    ts_last timestamptz NOT NULL, reach timestamptz NOT NULL, ts timestamptz[] NOT NULL,
    value double precision[] NOT NULL, unit_id smallint NOT NULL, source_id smallint NOT NULL,
    read_type_id smallint NOT NULL, received_at timestamptz NOT NULL, batch_id bigint NOT NULL,
    EXCLUDE USING gist (meter_id WITH =, channel_id WITH =, tstzrange(ts_first, ts_last, '[]') WITH &&))"""
#: The hybrid's two stores: blocks as ``blocks_checked``, rows as ``reading`` (weekly parts of both).
HYBRID_BLOCKS = CHECKED.replace("blocks_checked", "hybrid_blocks")
HYBRID_ROWS = f"""CREATE TABLE hybrid_rows ({COLUMNS}, PRIMARY KEY (meter_id, channel_id, ts))
    PARTITION BY RANGE (ts)"""
#: The hybrid's check of a batch's runs (meter, first, last; a single has first = last): how many meet
#: stored data — a stored block by its reach (as PROBE), or, for a run of two or more, a stored row in
#: its span (a single's row is checked by the rows' primary key as it lands).
HYBRID_PROBE = """SELECT count(*) FROM (SELECT r.m, timestamptz '2000-01-01 00:00Z' + r.a * interval '1 microsecond' AS a,
                                    timestamptz '2000-01-01 00:00Z' + r.b * interval '1 microsecond' AS b
                             FROM unnest(%s::int4[], %s::int8[], %s::int8[]) AS r(m, a, b)) r
    WHERE EXISTS (SELECT 1 FROM (SELECT x.reach FROM {blocks} x
                                 WHERE x.meter_id = r.m AND x.channel_id = 1
                                   AND x.ts_first > r.a - interval '1 day' AND x.ts_first <= r.b
                                 ORDER BY x.ts_first DESC LIMIT 1) p WHERE p.reach >= r.a)
       OR (r.b > r.a AND EXISTS (SELECT 1 FROM {rows} y
                                 WHERE y.meter_id = r.m AND y.channel_id = 1 AND y.ts >= r.a AND y.ts <= r.b))"""
#: Layout 8's stores: blocks and rows as layout 7's, and each series' reach.
REACH_BLOCKS = CHECKED.replace("blocks_checked", "reach_blocks")
REACH_ROWS = HYBRID_ROWS.replace("hybrid_rows", "reach_rows")
REACH_TABLE = """CREATE TABLE series_reach (meter_id integer NOT NULL, channel_id smallint NOT NULL,
    reach timestamptz NOT NULL, PRIMARY KEY (meter_id, channel_id))"""
#: Layout 8's check: how many of a batch's runs (meter, first, last) start no later than their
#: series' block reach, or (runs of two or more) meet a stored row in their span.
REACH_CHECK = """SELECT count(*) FROM (SELECT r.m, timestamptz '2000-01-01 00:00Z' + r.a * interval '1 microsecond' AS a,
                                    timestamptz '2000-01-01 00:00Z' + r.b * interval '1 microsecond' AS b
                             FROM unnest(%s::int4[], %s::int8[], %s::int8[]) AS r(m, a, b)) r
    LEFT JOIN series_reach x ON x.meter_id = r.m AND x.channel_id = 1
    WHERE x.reach >= r.a
       OR (r.b > r.a AND EXISTS (SELECT 1 FROM {rows} y
                                 WHERE y.meter_id = r.m AND y.channel_id = 1 AND y.ts >= r.a AND y.ts <= r.b))"""
#: Layout 8's reach moved forward over a batch's runs written as blocks (meter, last).
REACH_MOVE = """INSERT INTO series_reach (meter_id, channel_id, reach)
    SELECT r.m, 1, timestamptz '2000-01-01 00:00Z' + r.b * interval '1 microsecond'
    FROM unnest(%s::int4[], %s::int8[]) AS r(m, b)
    ON CONFLICT (meter_id, channel_id) DO UPDATE SET reach = greatest(series_reach.reach, EXCLUDED.reach)"""
#: Layout 9's version of the reach table, moved on by every batch of blocks.
CACHED_VERSION = """CREATE TABLE cached_reach_version (id boolean PRIMARY KEY DEFAULT true CHECK (id), version bigint NOT NULL);
    INSERT INTO cached_reach_version VALUES (true, 0)"""
#: Layout 9's rows probe: how many runs of two or more (meter, first, last) meet a stored row in their span.
ROWS_PROBE = """SELECT count(*) FROM (SELECT r.m, timestamptz '2000-01-01 00:00Z' + r.a * interval '1 microsecond' AS a,
                                    timestamptz '2000-01-01 00:00Z' + r.b * interval '1 microsecond' AS b
                             FROM unnest(%s::int4[], %s::int8[], %s::int8[]) AS r(m, a, b)) r
    WHERE EXISTS (SELECT 1 FROM {rows} y WHERE y.meter_id = r.m AND y.channel_id = 1 AND y.ts >= r.a AND y.ts <= r.b)"""
#: Layout 10's one row: the latest instant any block reaches.
GLOBAL_REACH = """CREATE TABLE global_reach (id boolean PRIMARY KEY DEFAULT true CHECK (id), reach timestamptz NOT NULL);
    INSERT INTO global_reach SELECT true, max(ts_last) FROM global_blocks"""
LABELS = {
    "bare": "rows, no key (baseline)",
    "rows_meter_first": "rows, key (meter, channel, ts)",
    "rows_time_first": "rows, key (ts, meter, channel)",
    "blocks": "blocks, key (meter, channel, first ts)",
    "blocks_checked": "blocks, checked (encode + probe + COPY)",
    "blocks_excl": "blocks, exclusion constraint (encode + COPY)",
    "hybrid": "hybrid: blocks for runs, rows for singles, checked",
    "hybrid_reach": "hybrid, reach table (lock, check, reach, COPYs)",
    "hybrid_cached": "hybrid, cached reach (lock, version, check, COPYs)",
    "hybrid_global": "hybrid, global reach (lock, reach, rows probe, COPYs)",
}
DAY_US = 86_400_000_000
START = np.datetime64("2025-01-01T00:00", "us")
QUARTER_US = 900_000_000
TIMESTAMPTZ_OID, FLOAT8_OID = 1184, 701


def block_dtype(k: int, reach: bool = False) -> np.dtype:
    """One binary COPY row of a block table with ``k`` instants (``reach``: ``blocks_checked``'s column).

    Fixed size, so a batch of blocks of one length is one record array.
    """

    def array(name: str, code: str) -> list[tuple[Any, ...]]:
        head = [(f"{name}_len", ">i4"), (f"{name}_ndim", ">i4"), (f"{name}_null", ">i4"), (f"{name}_oid", ">i4")]
        head += [(f"{name}_dim", ">i4"), (f"{name}_lb", ">i4")]
        return [*head, (name, [("l", ">i4"), ("v", code)], (k,))]

    spec: list[tuple[Any, ...]] = [("n", ">i2")]
    spec += [("l1", ">i4"), ("meter_id", ">i4"), ("l2", ">i4"), ("channel_id", ">i2")]
    spec += [("l3", ">i4"), ("ts_first", ">i8"), ("l4", ">i4"), ("ts_last", ">i8")]
    spec += [("l5", ">i4"), ("reach", ">i8")] if reach else []
    spec += array("ts", ">i8") + array("value", ">f8")
    spec += [("l7", ">i4"), ("unit_id", ">i2"), ("l8", ">i4"), ("source_id", ">i2"), ("l9", ">i4")]
    spec += [("read_type_id", ">i2"), ("l10", ">i4"), ("received_at", ">i8"), ("l11", ">i4"), ("batch_id", ">i8")]
    return np.dtype(spec)


def new_blocks(n: int, k: int, reach: bool = False) -> np.ndarray:
    """``n`` block rows of ``k`` instants with the field count, lengths, array headers and constant ids filled in."""
    rec = np.zeros(n, block_dtype(k, reach))
    rec["n"] = 12 if reach else 11
    sizes = {"l1": 4, "l2": 2, "l3": 8, "l4": 8, "l7": 2, "l8": 2, "l9": 2, "l10": 8, "l11": 8}
    for name, size in (sizes | {"l5": 8} if reach else sizes).items():
        rec[name] = size
    for name, oid in (("ts", TIMESTAMPTZ_OID), ("value", FLOAT8_OID)):
        rec[f"{name}_len"] = 20 + 12 * k
        rec[f"{name}_ndim"], rec[f"{name}_oid"], rec[f"{name}_dim"], rec[f"{name}_lb"] = 1, oid, k, 1
        rec[name]["l"] = 8
    rec["channel_id"] = rec["unit_id"] = rec["source_id"] = rec["read_type_id"] = rec["batch_id"] = 1
    rec["received_at"] = (np.datetime64(datetime.now(UTC).replace(tzinfo=None), "us") - PG_EPOCH_US).astype(np.int64)
    return rec


def encode_blocks(meters: np.ndarray, us: np.ndarray, values: np.ndarray) -> bytes:
    """One block row per meter: instants ``us`` (µs since 2000-01-01) and its row of ``values``."""
    k = len(us)
    rec = new_blocks(len(meters), k)
    rec["meter_id"] = meters
    rec["ts_first"], rec["ts_last"] = us[0], us[-1]
    rec["ts"]["v"] = us[None, :]
    rec["value"]["v"] = values
    return HEADER + rec.tobytes() + TRAILER


def encode_runs(m: np.ndarray, t: np.ndarray, v: np.ndarray) -> tuple[bytes, tuple[np.ndarray, ...]]:
    """A batch sorted by (meter, instant) as blocks: a run per meter and UTC day, runs of one length at once.

    ``t``: µs since 2000-01-01. Returns the COPY payload and the runs (meter, first, last) for the probe.
    """
    day = t // DAY_US
    cut = np.flatnonzero((m[1:] != m[:-1]) | (day[1:] != day[:-1])) + 1
    start = np.concatenate(([0], cut))
    length = np.diff(np.concatenate((start, [len(m)])))
    parts = [HEADER]
    for k in np.unique(length):
        s0 = start[length == k]
        at = s0[:, None] + np.arange(k)[None, :]
        rec = new_blocks(len(s0), int(k), reach=True)
        rec["meter_id"] = m[s0]
        rec["ts_first"], rec["ts_last"] = t[s0], t[s0 + k - 1]
        rec["reach"] = t[s0 + k - 1]  # no stored block reaches the run (the probe): its own last instant
        rec["ts"]["v"], rec["value"]["v"] = t[at], v[at]
        parts.append(rec.tobytes())
    parts.append(TRAILER)
    return b"".join(parts), (m[start], t[start], t[start + length - 1])


def cut_runs(m: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A sorted batch's runs: each run's first row and length (a run: one meter, one UTC day)."""
    day = t // DAY_US
    cut = np.flatnonzero((m[1:] != m[:-1]) | (day[1:] != day[:-1])) + 1
    start = np.concatenate(([0], cut))
    return start, np.diff(np.concatenate((start, [len(m)])))


def week_part(table: str, lo_us: int, hi_us: int) -> str:
    """The weekly part of ``table`` holding first instants in [lo, hi], or the parent if two parts do."""
    start_us = int((START - PG_EPOCH_US).astype(np.int64))
    weeks = {int((x - start_us) // (7 * DAY_US)) for x in (lo_us, hi_us)}
    return f"{table}_w{weeks.pop()}" if len(weeks) == 1 else table


class Laps:
    """Seconds a writer spends in each of its named steps, summed over the timed rounds."""

    def __init__(self, *steps: str) -> None:
        self.seconds = dict.fromkeys(steps, 0.0)
        self._first = self._last = 0.0

    def start(self) -> None:
        """A batch starts."""
        self._first = self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        """``step`` ends now: the time since the last lap (or the start) is its."""
        now = time.perf_counter()
        self.seconds[step] += now - self._last
        self._last = now

    def total(self) -> float:
        """Seconds from the batch's start to its last lap."""
        return self._last - self._first


def split_batch(
    m: np.ndarray, t: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bytes, tuple[np.ndarray, ...], bytes]:
    """A sorted batch as a hybrid writes it: its runs (first row, length), the runs of two or more as
    blocks (their COPY payload, and each one's meter, first and last instant), the single readings as
    rows (their COPY payload). The encoding is part of every hybrid's timed write."""
    start, length = cut_runs(m, t)
    single = length == 1
    in_run = np.repeat(~single, length)
    none = np.zeros(0, np.int64)
    blocks, runs = encode_runs(m[in_run], t[in_run], v[in_run]) if in_run.any() else (b"", (none, none, none))
    rows = b""
    if single.any():
        s0 = start[single]
        n = s0.size
        ones, zeros = np.ones(n, np.int16), np.zeros(n, np.int16)
        ts = PG_EPOCH_US + t[s0].astype("timedelta64[us]")
        rows = encode_reading_copy(m[s0], ones, ts, v[s0], ones, 1, ones, zeros, datetime.now(UTC), 1)
    return start, length, blocks, runs, rows


def copy_both(conn: psycopg.Connection, prefix: str, blocks: bytes, rows: bytes) -> None:
    """COPY a hybrid's blocks and rows into ``{prefix}_blocks`` and ``{prefix}_rows``, and commit."""
    if blocks:
        with conn.cursor().copy(f"COPY {prefix}_blocks FROM STDIN (FORMAT BINARY)".encode()) as cp:
            cp.write(blocks)
    if rows:
        with conn.cursor().copy(
            f"COPY {prefix}_rows ({READING_COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)".encode()
        ) as cp:
            cp.write(rows)
    conn.commit()


def take_lock(conn: psycopg.Connection, exclusive: bool) -> None:
    """The hybrids' transaction-level advisory lock: a batch with blocks holds it alone, batches of singles share it."""
    conn.execute("SELECT pg_advisory_xact_lock(18)" if exclusive else "SELECT pg_advisory_xact_lock_shared(18)")


def hybrid_write(conn: psycopg.Connection, m: np.ndarray, t: np.ndarray, v: np.ndarray) -> float:
    """Seconds to cut, encode, check and COPY one batch into the hybrid's two stores, one commit."""
    HYBRID_STEPS.start()
    start, length, blocks, _, rows = split_batch(m, t, v)
    HYBRID_STEPS.lap("encode")
    ra, rb = t[start], t[start + length - 1]
    query = HYBRID_PROBE.replace("{blocks}", week_part("hybrid_blocks", int(ra.min()) - DAY_US + 1, int(rb.max())))
    query = query.replace("{rows}", week_part("hybrid_rows", int(ra.min()), int(rb.max())))
    met = conn.execute(query.encode(), (m[start].tolist(), ra.tolist(), rb.tolist()), binary=True).fetchone()
    assert met is not None and met[0] == 0, "a fresh batch met stored readings"
    HYBRID_STEPS.lap("check")
    copy_both(conn, "hybrid", blocks, rows)
    HYBRID_STEPS.lap("copy")
    return HYBRID_STEPS.total()


#: Seconds the hybrid spent in each of its steps, over the timed rounds.
HYBRID_STEPS = Laps("encode", "check", "copy")


def reach_write(conn: psycopg.Connection, m: np.ndarray, t: np.ndarray, v: np.ndarray) -> float:
    """Seconds to cut, encode, lock, check, move the reach and COPY one batch into layout 8, one commit."""
    REACH_STEPS.start()
    start, length, blocks, (bm, _, bb), rows = split_batch(m, t, v)
    REACH_STEPS.lap("encode")
    take_lock(conn, exclusive=bool(blocks))
    ra, rb = t[start], t[start + length - 1]
    query = REACH_CHECK.replace("{rows}", week_part("reach_rows", int(ra.min()), int(rb.max())))
    met = conn.execute(query.encode(), (m[start].tolist(), ra.tolist(), rb.tolist()), binary=True).fetchone()
    assert met is not None and met[0] == 0, "a fresh batch met stored readings"
    REACH_STEPS.lap("lock + check")
    if blocks:  # each meter's last run (runs are in meter and time order; a batch across midnight has two)
        bm, bb = np.asarray(bm), np.asarray(bb)
        last = np.r_[bm[1:] != bm[:-1], True]
        conn.execute(REACH_MOVE.encode(), (bm[last].tolist(), bb[last].tolist()), binary=True)
    REACH_STEPS.lap("reach")
    copy_both(conn, "reach", blocks, rows)
    REACH_STEPS.lap("copy")
    return REACH_STEPS.total()


#: Seconds layout 8 spent in each of its steps, over the timed rounds.
REACH_STEPS = Laps("encode", "lock + check", "reach", "copy")


class ReachCache:
    """Layout 9's writer-side copy of ``cached_reach``: meters (sorted), their reach (µs), the version read."""

    def __init__(self) -> None:
        self.version = -1
        self.meters = np.zeros(0, np.int64)
        self.reach = np.zeros(0, np.int64)

    def load(self, conn: psycopg.Connection, version: int) -> None:
        rows = conn.execute(
            "SELECT meter_id, (extract(epoch FROM reach - timestamptz '2000-01-01 00:00Z') * 1e6)::int8 "
            "FROM cached_reach WHERE channel_id = 1 ORDER BY 1"
        ).fetchall()
        self.meters = np.array([r[0] for r in rows], np.int64)
        self.reach = np.array([r[1] for r in rows], np.int64)
        self.version = version

    def met(self, m: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Whether each run (meter, first instant) starts no later than its meter's reach."""
        if self.meters.size == 0:
            return np.zeros(m.size, bool)
        at = np.minimum(np.searchsorted(self.meters, m), self.meters.size - 1)
        return (self.meters[at] == m) & (self.reach[at] >= first)

    def move(self, m: np.ndarray, last: np.ndarray) -> None:
        """The reach moved to ``last`` for meters ``m`` (one run each), as the upsert did on the server."""
        meters = np.union1d(self.meters, m)
        reach = np.full(meters.size, np.iinfo(np.int64).min)
        reach[np.searchsorted(meters, self.meters)] = self.reach
        at = np.searchsorted(meters, m)
        reach[at] = np.maximum(reach[at], last)
        self.meters, self.reach = meters, reach


CACHE = ReachCache()


def cached_write(conn: psycopg.Connection, m: np.ndarray, t: np.ndarray, v: np.ndarray) -> float:
    """Seconds for layout 9's batch: cut, encode, lock, version, check (numpy + the runs' rows probe), reach, COPYs."""
    CACHED_STEPS.start()
    start, length, blocks, (bm, _, bb), rows = split_batch(m, t, v)
    single = length == 1
    CACHED_STEPS.lap("encode")
    take_lock(conn, exclusive=bool(blocks))
    row = conn.execute("SELECT version FROM cached_reach_version").fetchone()
    assert row is not None
    if row[0] != CACHE.version:
        CACHE.load(conn, row[0])
    ra, rb = t[start], t[start + length - 1]
    met = int(CACHE.met(m[start].astype(np.int64), ra).sum())
    runs = ~single
    if runs.any():
        query = ROWS_PROBE.replace("{rows}", week_part("cached_rows", int(ra.min()), int(rb.max())))
        params = (m[start][runs].tolist(), ra[runs].tolist(), rb[runs].tolist())
        found = conn.execute(query.encode(), params, binary=True).fetchone()
        met += int(found[0]) if found else 0
    assert met == 0, "a fresh batch met stored readings"
    CACHED_STEPS.lap("lock + check")
    if blocks:  # each meter's last run, as layout 8
        bm, bb = np.asarray(bm).astype(np.int64), np.asarray(bb)
        last = np.r_[bm[1:] != bm[:-1], True]
        conn.execute(
            REACH_MOVE.replace("series_reach", "cached_reach").encode(),
            (bm[last].tolist(), bb[last].tolist()),
            binary=True,
        )
        version = conn.execute("UPDATE cached_reach_version SET version = version + 1 RETURNING version").fetchone()
        assert version is not None
        CACHE.move(bm[last], bb[last])
        CACHE.version = version[0]
    CACHED_STEPS.lap("reach")
    copy_both(conn, "cached", blocks, rows)
    CACHED_STEPS.lap("copy")
    return CACHED_STEPS.total()


#: Seconds layout 9 spent in each of its steps, over the timed rounds.
CACHED_STEPS = Laps("encode", "lock + check", "reach", "copy")


def global_write(conn: psycopg.Connection, m: np.ndarray, t: np.ndarray, v: np.ndarray) -> float:
    """Seconds for layout 10's batch: cut, encode, lock, the global reach, the rows probe, the reach moved, COPYs."""
    GLOBAL_STEPS.start()
    start, length, blocks, (_, _, bb), rows = split_batch(m, t, v)
    single = length == 1
    GLOBAL_STEPS.lap("encode")
    take_lock(conn, exclusive=bool(blocks))
    row = conn.execute(
        "SELECT (extract(epoch FROM reach - timestamptz '2000-01-01 00:00Z') * 1e6)::int8 FROM global_reach"
    ).fetchone()
    assert row is not None
    ra, rb = t[start], t[start + length - 1]
    met = 0
    if int(ra.min()) <= row[0]:  # some run starts before the blocks' reach: checked run by run
        GLOBAL_FALLBACKS[0] += 1
        query = HYBRID_PROBE.replace("{blocks}", week_part("global_blocks", int(ra.min()) - DAY_US + 1, int(rb.max())))
        query = query.replace("{rows}", week_part("global_rows", int(ra.min()), int(rb.max())))
        found = conn.execute(query.encode(), (m[start].tolist(), ra.tolist(), rb.tolist()), binary=True).fetchone()
        met = int(found[0]) if found else 0
    elif (~single).any():
        runs = ~single
        query = ROWS_PROBE.replace("{rows}", week_part("global_rows", int(ra.min()), int(rb.max())))
        params = (m[start][runs].tolist(), ra[runs].tolist(), rb[runs].tolist())
        found = conn.execute(query.encode(), params, binary=True).fetchone()
        met = int(found[0]) if found else 0
    assert met == 0, "a fresh batch met stored readings"
    GLOBAL_STEPS.lap("lock + check")
    if blocks:
        conn.execute(
            "UPDATE global_reach SET reach = greatest(reach, timestamptz '2000-01-01 00:00Z' + %s * interval '1 microsecond')",
            (int(np.max(bb)),),
        )
    GLOBAL_STEPS.lap("reach")
    copy_both(conn, "global", blocks, rows)
    GLOBAL_STEPS.lap("copy")
    return GLOBAL_STEPS.total()


#: Seconds layout 10 spent in each of its steps, over the timed rounds, and the batches it checked run by run.
GLOBAL_STEPS = Laps("encode", "lock + check", "reach", "copy")
GLOBAL_FALLBACKS = [0]


def checked_write(conn: psycopg.Connection, m: np.ndarray, t: np.ndarray, v: np.ndarray) -> float:
    """Seconds to encode, check and COPY one batch into ``blocks_checked`` (the write path's own steps)."""
    STEPS.start()
    payload, (rm, ra, rb) = encode_runs(m, t, v)
    STEPS.lap("encode")
    # the probe's window (first - 1 day, last] in one weekly part: ask that part, no pruning per run
    query = PROBE.replace("{table}", week_part("blocks_checked", int(ra.min()) - DAY_US + 1, int(rb.max())))
    overlapping = conn.execute(query.encode(), (rm.tolist(), ra.tolist(), rb.tolist()), binary=True).fetchone()
    assert overlapping is not None and overlapping[0] == 0, "a fresh batch met stored blocks"
    STEPS.lap("probe")
    with conn.cursor().copy(b"COPY blocks_checked FROM STDIN (FORMAT BINARY)") as cp:
        cp.write(payload)
    conn.commit()
    STEPS.lap("copy")
    return STEPS.total()


#: Seconds the checked blocks spent in each of their steps, over the timed rounds.
STEPS = Laps("encode", "probe", "copy")


def exclusive_write(conn: psycopg.Connection, m: np.ndarray, t: np.ndarray, v: np.ndarray) -> float:
    """Seconds to encode and COPY one batch into ``blocks_excl`` (its constraint checks every block)."""
    t0 = time.perf_counter()
    payload, _ = encode_runs(m, t, v)
    with conn.cursor().copy(b"COPY blocks_excl FROM STDIN (FORMAT BINARY)") as cp:
        cp.write(payload)
    conn.commit()
    return time.perf_counter() - t0


#: The layouts whose own steps are timed with the COPY (the others: :func:`copy` of a ready payload).
WRITERS = {
    "blocks_checked": checked_write,
    "blocks_excl": exclusive_write,
    "hybrid": hybrid_write,
    "hybrid_reach": reach_write,
    "hybrid_cached": cached_write,
    "hybrid_global": global_write,
}


#: The history as the write path's blocks: runs of ``k`` intervals, none across a UTC midnight.
DAY_BLOCKS = """INSERT INTO {table}
    SELECT m, 1, min(t), max(t), max(t), array_agg(t ORDER BY t), array_agg(v ORDER BY t), 1, 1, 1, now(), 1
    FROM (SELECT m, i / %(k)s AS b, i / 96 AS d, %(start)s::timestamptz + i * interval '15 minutes' AS t,
                 i * 0.25 + m AS v
          FROM generate_series(0, %(h)s - 1) i, generate_series(0, %(m)s - 1) m) x
    GROUP BY b, d, m ORDER BY b, d, m"""


def build(url: str, meters: int, history: int, k: int, rounds: int) -> None:
    """The tables, each with ``history`` quarter hours of every meter (time-major, as live data lands)."""
    params = {"start": f"{START}Z", "h": history, "m": meters, "k": k}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, key in ROW_TABLES.items():
            conn.execute(f"CREATE TABLE {name} ({COLUMNS}{key})".encode())
            if name != "bare":
                conn.execute(
                    f"""INSERT INTO {name} SELECT m, 1, %(start)s::timestamptz + i * interval '15 minutes',
                                                  i * 0.25 + m, 1, 1, 1, 0, now(), 1
                        FROM generate_series(0, %(h)s - 1) i, generate_series(0, %(m)s - 1) m""".encode(),
                    {"start": f"{START}Z", "h": history, "m": meters},
                )
        conn.execute(BLOCKS.encode())
        conn.execute(
            """INSERT INTO blocks
               SELECT m, 1, min(t), max(t), array_agg(t ORDER BY t), array_agg(v ORDER BY t), 1, 1, 1, now(), 1
               FROM (SELECT m, i / %(k)s AS b, %(start)s::timestamptz + i * interval '15 minutes' AS t, i * 0.25 + m AS v
                     FROM generate_series(0, %(h)s - 1) i, generate_series(0, %(m)s - 1) m) x
               GROUP BY b, m ORDER BY b, m""",
            {"start": f"{START}Z", "h": history, "m": meters, "k": k},
        )
        conn.execute("CREATE EXTENSION btree_gist")
        conn.execute(EXCLUSIVE.encode())
        conn.execute(DAY_BLOCKS.format(table="blocks_excl").encode(), params)
        conn.execute(CHECKED.encode())
        conn.execute(HYBRID_BLOCKS.encode())
        conn.execute(HYBRID_ROWS.encode())
        conn.execute(REACH_BLOCKS.encode())
        conn.execute(REACH_ROWS.encode())
        conn.execute(REACH_TABLE.encode())
        conn.execute(REACH_BLOCKS.replace("reach_blocks", "cached_blocks").encode())
        conn.execute(REACH_ROWS.replace("reach_rows", "cached_rows").encode())
        conn.execute(REACH_TABLE.replace("series_reach", "cached_reach").encode())
        conn.execute(CACHED_VERSION.encode())
        conn.execute(REACH_BLOCKS.replace("reach_blocks", "global_blocks").encode())
        conn.execute(REACH_ROWS.replace("reach_rows", "global_rows").encode())
        for week in range((history + (rounds + 1) * k) // 672 + 2):  # weekly parts, as reading's
            lo = START + np.timedelta64(7 * week, "D")
            tables = ("blocks_checked", "hybrid_blocks", "hybrid_rows", "reach_blocks", "reach_rows")
            for table in (*tables, "cached_blocks", "cached_rows", "global_blocks", "global_rows"):
                conn.execute(
                    f"CREATE TABLE {table}_w{week} PARTITION OF {table} "
                    f"FOR VALUES FROM ('{lo}Z') TO ('{lo + np.timedelta64(7, 'D')}Z')".encode()
                )
        conn.execute(DAY_BLOCKS.format(table="blocks_checked").encode(), params)
        conn.execute(DAY_BLOCKS.format(table="hybrid_blocks").encode(), params)
        conn.execute(DAY_BLOCKS.format(table="global_blocks").encode(), params)
        conn.execute(GLOBAL_REACH.encode())
        for prefix, reach in (("reach", "series_reach"), ("cached", "cached_reach")):
            conn.execute(DAY_BLOCKS.format(table=f"{prefix}_blocks").encode(), params)
            conn.execute(
                f"INSERT INTO {reach} SELECT meter_id, channel_id, max(ts_last) FROM {prefix}_blocks GROUP BY 1, 2".encode()
            )
        # the rows' history on another channel: an index as deep as reading's, no overlap with channel 1
        for table in ("hybrid_rows", "reach_rows", "cached_rows", "global_rows"):
            conn.execute(
                f"""INSERT INTO {table} SELECT m, 2, %(start)s::timestamptz + i * interval '15 minutes',
                                               i * 0.25 + m, 1, 1, 1, 0, now(), 1
                    FROM generate_series(0, %(h)s - 1) i, generate_series(0, %(m)s - 1) m""".encode(),
                params,
            )
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")


def payloads(meters: np.ndarray, first: int, k: int) -> dict[str, Any]:
    """The same readings (``meters`` × intervals first..first+k-1) as each table takes them."""
    intervals = np.arange(first, first + k, dtype=np.int64)
    us = (START - PG_EPOCH_US).astype(np.int64) + intervals * QUARTER_US
    values = intervals[None, :] * 0.25 + meters[:, None]  # meters × intervals
    n = values.size
    ones, zeros = np.ones(n, np.int16), np.zeros(n, np.int16)
    now = datetime.now(UTC)

    def rows(order: str) -> bytes:
        if order == "key":  # meter-major, as the writer sorts a batch
            m, t, v = np.repeat(meters, k), np.tile(us, len(meters)), values.ravel()
        else:  # time-major, as collectors deliver it
            m, t, v = np.tile(meters, k), np.repeat(us, len(meters)), values.T.ravel()
        ts = PG_EPOCH_US + t.astype("timedelta64[us]")
        return encode_reading_copy(m, ones, ts, v, ones, 1, ones, zeros, now, 1)

    time_major = rows("time")
    sorted_batch = (np.repeat(meters, k), np.tile(us, len(meters)), values.ravel())
    return {
        "bare": time_major,
        "rows_meter_first": rows("key"),
        "rows_time_first": time_major,
        "blocks": encode_blocks(meters, us, values),
        # the batch as the writer holds it once sorted (meter-major): these encode it themselves (timed)
        "blocks_checked": sorted_batch,
        "blocks_excl": sorted_batch,
        "hybrid": sorted_batch,
        "hybrid_reach": sorted_batch,
        "hybrid_cached": sorted_batch,
        "hybrid_global": sorted_batch,
    }


def copy(conn: psycopg.Connection, table: str, payload: bytes) -> float:
    """Seconds to COPY ``payload`` into ``table`` and commit."""
    columns = "" if table == "blocks" else f" ({READING_COPY_COLUMNS})"
    t = time.perf_counter()
    with conn.cursor().copy(f"COPY {table}{columns} FROM STDIN (FORMAT BINARY)".encode()) as cp:
        cp.write(payload)
    conn.commit()
    return time.perf_counter() - t


READ = {
    "rows_meter_first": "SELECT ts, value FROM rows_meter_first WHERE meter_id = %(m)s AND channel_id = 1 "
    "AND ts >= %(lo)s AND ts < %(hi)s",
    "rows_time_first": "SELECT ts, value FROM rows_time_first WHERE meter_id = %(m)s AND channel_id = 1 "
    "AND ts >= %(lo)s AND ts < %(hi)s",
    "blocks": "SELECT u.ts, u.value FROM blocks b CROSS JOIN LATERAL unnest(b.ts, b.value) AS u(ts, value) "
    "WHERE b.meter_id = %(m)s AND b.channel_id = 1 AND b.ts_first < %(hi)s AND b.ts_last >= %(lo)s "
    "AND u.ts >= %(lo)s AND u.ts < %(hi)s",
    "blocks_checked": "SELECT u.ts, u.value FROM blocks_checked b CROSS JOIN LATERAL unnest(b.ts, b.value) AS u(ts, value) "
    "WHERE b.meter_id = %(m)s AND b.channel_id = 1 AND b.ts_first > %(lo)s::timestamptz - interval '1 day' "
    "AND b.ts_first < %(hi)s AND u.ts >= %(lo)s AND u.ts < %(hi)s",
    "blocks_excl": "SELECT u.ts, u.value FROM blocks_excl b CROSS JOIN LATERAL unnest(b.ts, b.value) AS u(ts, value) "
    "WHERE b.meter_id = %(m)s AND b.channel_id = 1 "
    "AND tstzrange(b.ts_first, b.ts_last, '[]') && tstzrange(%(lo)s, %(hi)s, '[)') AND u.ts >= %(lo)s AND u.ts < %(hi)s",
    "hybrid": "SELECT u.ts, u.value FROM hybrid_blocks b CROSS JOIN LATERAL unnest(b.ts, b.value) AS u(ts, value) "
    "WHERE b.meter_id = %(m)s AND b.channel_id = 1 AND b.ts_first > %(lo)s::timestamptz - interval '1 day' "
    "AND b.ts_first < %(hi)s AND u.ts >= %(lo)s AND u.ts < %(hi)s "
    "UNION ALL SELECT ts, value FROM hybrid_rows WHERE meter_id = %(m)s AND channel_id = 1 "
    "AND ts >= %(lo)s AND ts < %(hi)s",
}
READ["hybrid_reach"] = READ["hybrid"].replace("hybrid_", "reach_")
READ["hybrid_cached"] = READ["hybrid"].replace("hybrid_", "cached_")
READ["hybrid_global"] = READ["hybrid"].replace("hybrid_", "global_")


def check_same(url: str) -> None:
    """Stop unless every keyed layout holds the same readings (history and rounds): they timed the same work.

    The bare table is left out: it holds the rounds only.
    """
    seen = set()
    with psycopg.connect(url) as conn:
        for name in LABELS:
            if name == "bare":
                continue
            rows = name
            if name.startswith("hybrid"):
                prefix = {
                    "hybrid": "hybrid",
                    "hybrid_reach": "reach",
                    "hybrid_cached": "cached",
                    "hybrid_global": "global",
                }[name]
                rows = f"""(SELECT u.ts, u.value FROM {prefix}_blocks CROSS JOIN LATERAL unnest(ts, value) AS u(ts, value)
                            UNION ALL SELECT ts, value FROM {prefix}_rows WHERE channel_id = 1)"""
            elif name.startswith("blocks"):
                rows = f"(SELECT u.ts, u.value FROM {name} CROSS JOIN LATERAL unnest(ts, value) AS u(ts, value))"
            row = conn.execute(f"SELECT count(*), round(sum(value)::numeric, 3), max(ts) FROM {rows} x".encode())
            seen.add((name, *(row.fetchone() or ())))
    if len({figures[1:] for figures in seen}) != 1:
        raise SystemExit(f"the layouts hold different readings (count, sum, last instant): {sorted(seen)}")


def read_costs(url: str, meters: int, last: int, probes: int) -> dict[str, tuple[float, int]]:
    """Median milliseconds (and rows) to read one meter's last 7 days, per keyed layout."""
    hi = START + np.timedelta64(last * 15, "m")
    lo = hi - np.timedelta64(7, "D")
    rng = np.random.default_rng(18)
    picks = rng.choice(np.arange(0, meters, 2), size=probes, replace=False)
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, query in READ.items():
            took, n = [], 0
            for m in picks:
                params = {"m": int(m), "lo": f"{lo}Z", "hi": f"{hi}Z"}
                t = time.perf_counter()
                n = len(conn.execute(query.encode(), params).fetchall())
                took.append(time.perf_counter() - t)
            out[name] = (statistics.median(took) * 1e3, n)
    return out


def main() -> int:
    exit_on_sigterm()  # a SIGTERM stops and removes the throwaway servers
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=672, help="quarter hours already stored per meter (a week)")
    parser.add_argument(
        "--batch-intervals", type=int, default=10, help="new intervals per meter per batch (1: live polling's shape)"
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--probes", type=int, default=50, help="meters read back per layout")
    args = parser.parse_args()
    k = args.batch_intervals
    root = Path(tempfile.mkdtemp(prefix="releve-layout-"))
    root.chmod(0o755)
    server = PostgresServer(root / "data", durable=True)
    try:
        server.start()
        url = server.url()
        print(f"server: throwaway {server.version()} (durable settings: fsync on)")
        t = time.perf_counter()
        build(url, args.meters, args.history, k, args.rounds)
        print(
            f"{args.meters:,} meters x {args.history} quarter hours in each table "
            f"(built in {time.perf_counter() - t:.0f} s, not timed)"
        )
        live = np.arange(0, args.meters, 2, dtype=np.int32)  # half the fleet per batch, as bench/ingest.py
        took = dict.fromkeys(LABELS, 0.0)
        readings = 0
        first = args.history
        with psycopg.connect(url) as conn:
            for rnd in range(args.rounds + 1):  # round 0 warms the caches, not timed
                batch = payloads(live, first, k)
                order = list(LABELS) if rnd % 2 else list(LABELS)[::-1]
                for name in order:
                    write = WRITERS.get(name)
                    secs = write(conn, *batch[name]) if write else copy(conn, name, batch[name])
                    if rnd:
                        took[name] += secs
                if rnd:
                    readings += live.size * k
                first += k
        print(f"\n{args.rounds} rounds of {live.size * k:,} readings ({live.size:,} meters x {k} intervals):")
        for name, label in LABELS.items():
            rate = readings / took[name]
            print(f"  {label:52s} {rate:>12,.0f} readings/s   {took['bare'] / took[name]:5.2f} x raw COPY")
        print("  checked blocks' steps (s): " + ", ".join(f"{k} {v:.3f}" for k, v in STEPS.seconds.items()))
        print("  hybrid's steps (s): " + ", ".join(f"{k} {v:.3f}" for k, v in HYBRID_STEPS.seconds.items()))
        print(
            "  hybrid with a reach table, steps (s): "
            + ", ".join(f"{k} {v:.3f}" for k, v in REACH_STEPS.seconds.items())
        )
        print(
            "  hybrid with a cached reach, steps (s): "
            + ", ".join(f"{k} {v:.3f}" for k, v in CACHED_STEPS.seconds.items())
        )
        print(
            "  hybrid with a global reach, steps (s): "
            + ", ".join(f"{k} {v:.3f}" for k, v in GLOBAL_STEPS.seconds.items())
            + f"; batches checked run by run: {GLOBAL_FALLBACKS[0]}"
        )
        check_same(url)
        reads = read_costs(url, args.meters, first, args.probes)
        print(f"\none meter's last 7 days, median of {args.probes} meters:")
        for name, (ms, n) in reads.items():
            print(f"  {LABELS[name]:52s} {ms:8.2f} ms   ({n} readings)")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
