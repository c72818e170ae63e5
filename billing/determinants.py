"""Determinants from the validated series: the boundary indexes of every meter and the data-quality figures.

One binary COPY of ``validated_between`` (``validated_reading`` over the period; later ``adjustment``
versions of billed data laid over it) into numpy arrays sorted by (meter, instant); every boundary
index (a read on the day, else linear interpolation) and data-quality figure is then a binary search.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
from psycopg import Connection

from billing.draft import Clock, Draft, midnight
from billing.pricing import Index, Read, boundary_index
from billing.tariffs import TariffBook
from releve.model import MAIN_REGISTERS
from releve.pgbinary import copy_records, row_dtype

#: One row of ``COPY … (FORMAT binary)`` of (meter_id int4, ts timestamptz, value float8, quality int2).
_ROW = row_dtype(("meter", ">i4"), ("ts", ">i8"), ("value", ">f8"), ("q", ">i2"))
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
#: Read qualities as the series carries them. A raw read the utility itself estimated (``read_type``
#: ``estimate``) is ``estimated`` even though VEE left it as it came; a customer's own read counts as read.
_QUALITY = ("actual", "estimated", "edited", "customer")
DAY_S = 86_400


@dataclass
class _Series:
    """The validated register reads around the period, sorted by (meter, instant), as arrays.

    ``key`` = meter id × ``span`` + seconds since ``origin``: one sorted int64 axis on which every
    boundary and window lookup is a binary search.
    """

    origin: datetime
    span: int
    meter: np.ndarray
    secs: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    key: np.ndarray

    def k(self, meter: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Keys of (meter, seconds since origin) pairs."""
        return meter.astype(np.int64) * self.span + at

    def reads(self, rows: np.ndarray) -> list[Read | None]:
        """Rows ``rows`` as Reads (None where a row is -1); one instant object per distinct second."""
        if len(self.secs) == 0:
            return [None] * len(rows)
        take = rows >= 0
        at = np.where(take, rows, 0)
        stamps: dict[int, datetime] = {}
        out: list[Read | None] = []
        for ok, s, v, q in zip(
            take.tolist(), self.secs[at].tolist(), self.value[at].tolist(), self.quality[at].tolist(), strict=True
        ):
            if not ok:
                out.append(None)
                continue
            ts = stamps.get(s)
            if ts is None:
                ts = stamps[s] = self.origin + timedelta(seconds=s)
            out.append(Read(ts, v, _QUALITY[q]))
        return out


def _load_series(conn: Connection, lo: datetime, hi: datetime, channels: list[int], adjusted: bool) -> _Series:
    """One binary COPY of the validated series in ``[lo, hi)`` (``validated_between``; adjustments laid over it)."""
    adjust = """
        LEFT JOIN (
            SELECT DISTINCT ON (rv.meter_id, rv.channel_id, rv.ts) rv.meter_id, rv.channel_id, rv.ts, rv.version,
                   rv.value
            FROM reading_version rv JOIN bill_meter bm ON bm.meter_id = rv.meter_id
            WHERE rv.kind = 'adjustment' AND rv.ts >= %(lo)s AND rv.ts < %(hi)s
            ORDER BY rv.meter_id, rv.channel_id, rv.ts, rv.version DESC
        ) a ON a.meter_id = v.meter_id AND a.channel_id = v.channel_id AND a.ts = v.ts AND a.version > v.version"""
    value, edited = ("coalesce(a.value, v.value)", "a.value IS NOT NULL OR ") if adjusted else ("v.value", "")
    query = f"""COPY (
        SELECT v.meter_id, v.ts, {value},
               (CASE WHEN {edited}v.quality = 'edited' THEN 2 WHEN v.quality = 'estimated' THEN 1
                     WHEN v.version = 0 AND v.read_type = 'estimate' THEN 1
                     WHEN v.version = 0 AND v.read_type = 'customer' THEN 3 ELSE 0 END)::int2
        FROM validated_between(%(lo)s, %(hi)s) v {adjust if adjusted else ""}
        WHERE v.ts < %(hi)s AND v.value IS NOT NULL AND v.channel_id = ANY(%(ch)s::smallint[])
          AND v.meter_id IN (SELECT meter_id FROM bill_meter)
    ) TO STDOUT (FORMAT binary)"""
    rows = copy_records(conn, query.encode(), {"ch": channels, "lo": lo, "hi": hi}, _ROW)
    offset_us = int((lo - _PG_EPOCH) // timedelta(microseconds=1))
    secs = (rows["ts"].astype(np.int64) - offset_us) // 1_000_000
    meter = rows["meter"].astype(np.int64)
    order = np.lexsort((secs, meter))
    span = int((hi - lo).total_seconds()) + 2 * DAY_S
    meter, secs = meter[order], secs[order]
    return _Series(
        lo,
        span,
        meter,
        secs,
        rows["value"].astype(np.float64)[order],
        rows["q"].astype(np.int8)[order],
        meter * span + secs,
    )


def resolve_indexes(
    conn: Connection, book: TariffBook, drafts: list[Draft], start: date, end: date
) -> tuple[dict[int, tuple[int, int, datetime | None, int]], dict[int, tuple[int, list[str]]]]:
    """Find boundary indexes, data-quality figures and open exceptions: one COPY, then binary searches.

    Returns the data-quality figures (reads, non-actual reads, last actual read, days with an actual read) and
    the open exceptions (count, rules) per determinant key, for :func:`billing.holds.quality_holds`.
    """
    if not drafts:
        return {}, {}
    clock = Clock()
    h = book.holds
    lo = midnight(start) - timedelta(days=h.max_days_without_read + 1)
    for d in drafts:  # tenant start dates may reach before the period
        lo = min(lo, d.dets[0].start_at - timedelta(days=h.max_days_without_read + 1))
    hi = midnight(end) + timedelta(days=h.max_days_without_read + 1)
    meters = sorted({x.meter_id for d in drafts for x in d.dets})
    conn.execute("CREATE TEMP TABLE bill_meter (meter_id integer PRIMARY KEY) ON COMMIT DROP")
    with conn.cursor().copy("COPY bill_meter (meter_id) FROM STDIN") as cp:
        cp.write("".join(f"{m}\n" for m in meters))  # text COPY: one id a line
    conn.execute("ANALYZE bill_meter")
    channels = [r[0] for r in conn.execute("SELECT id FROM channel WHERE code = ANY(%s)", (list(MAIN_REGISTERS),))]
    adjusted = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM reading_version WHERE kind = 'adjustment' AND ts >= %s AND ts < %s)", (lo, hi)
    ).fetchone()
    sr = _load_series(conn, lo, hi, channels, bool(adjusted and adjusted[0]))
    clock.lap(f"validated series copied ({len(sr.key)} reads)")
    n = len(sr.key)

    def secs(t: datetime) -> int:
        return int((t - lo).total_seconds())

    # Boundary indexes: a read on the day starting at the boundary, else the reads on both sides.
    wanted: dict[tuple[int, datetime], None] = {}  # each (meter, instant) once, in no particular order
    for d in drafts:
        for x in d.dets:
            if x.start is None:
                wanted[(x.meter_id, x.start_at)] = None
            if x.end is None:
                wanted[(x.meter_id, x.end_at)] = None
    points = list(wanted)
    found: dict[tuple[int, datetime], Index | None] = {}
    if points:
        at_secs = {at: secs(at) for at in {p[1] for p in points}}  # a cycle's boundaries are a handful of days
        pm = np.fromiter((p[0] for p in points), np.int64, len(points))
        ps = np.fromiter((at_secs[p[1]] for p in points), np.int64, len(points))
        i = np.searchsorted(sr.key, sr.k(pm, ps), "left")
        j = np.searchsorted(sr.key, sr.k(pm, ps + DAY_S), "left")
        has_day = j > i
        has_before = (i > 0) & (sr.meter[np.maximum(i - 1, 0)] == pm) if n else np.zeros(len(pm), bool)
        has_after = (j < n) & (sr.meter[np.minimum(j, max(n - 1, 0))] == pm) if n else np.zeros(len(pm), bool)
        # the row each point rests on (on the day; else before and after it), -1 for none
        on_day = np.where(has_day, i, -1)
        before = np.where(~has_day & has_before & has_after, i - 1, -1)
        after = np.where(~has_day & has_before & has_after, j, -1)
        reads = sr.reads(np.concatenate([on_day, before, after]))
        m = len(points)
        qd = book.rules.quantity_decimals
        for k, point in enumerate(points):
            day_read = reads[k]
            if day_read is not None:
                found[point] = boundary_index(point[1], day_read, None, None, qd)
            else:
                found[point] = boundary_index(point[1], None, reads[m + k], reads[2 * m + k], qd)
    for d in drafts:
        for x in d.dets:
            if x.start is None:
                x.start = found.get((x.meter_id, x.start_at))
            if x.end is None:
                x.end = found.get((x.meter_id, x.end_at))
            if x.billed_start is not None:
                # consecutive bills add up: the start is the previous bill's end, whatever landed since
                series, x.start = x.start, x.billed_start
                if series is not None and series.value != x.billed_start.value:
                    d.warnings.append(
                        (
                            "index_continuity",
                            (
                                f"meter {x.serial}: the previous bill ended at {x.billed_start.value} "
                                f"({x.billed_start.quality}) on {x.start_at:%Y-%m-%d}; the validated series now gives "
                                f"{series.value} ({series.quality}) there: this bill starts at the billed index, "
                                f"re-run the previous period to rebill the difference"
                            ),
                        )
                    )
    clock.lap(f"boundary indexes ({len(points)})")
    # Data-quality figures per determinant: reads, non-actual reads, days with an actual read, last actual read.
    dets = [x for d in drafts for x in d.dets]
    for key, x in enumerate(dets, start=1):
        x.key = key
    dm = np.array([x.meter_id for x in dets], np.int64)
    dlo = np.array([secs(x.start_at) for x in dets], np.int64)
    dhi = np.array([secs(x.end_at) for x in dets], np.int64)
    a = np.searchsorted(sr.key, sr.k(dm, dlo), "left")
    b = np.searchsorted(sr.key, sr.k(dm, dhi + DAY_S), "left")
    bad_cum = np.concatenate([[0], np.cumsum((sr.quality == 1) | (sr.quality == 2))])
    actual = (sr.quality == 0) | (sr.quality == 3)
    akey, ameter, asecs = sr.key[actual], sr.meter[actual], sr.secs[actual]
    aday = asecs // DAY_S
    first_of_day = np.ones(len(akey), bool)
    if len(akey) > 1:
        first_of_day[1:] = (ameter[1:] != ameter[:-1]) | (aday[1:] != aday[:-1])
    day_cum = np.concatenate([[0], np.cumsum(first_of_day)])
    da = np.searchsorted(akey, sr.k(dm, dlo), "left")
    db = np.searchsorted(akey, sr.k(dm, dhi), "left")
    last = np.searchsorted(akey, sr.k(dm, dhi + DAY_S), "left") - 1
    # per determinant, as Python numbers at once (not a numpy scalar per lookup)
    n_reads = (b - a).tolist()
    n_bad = (bad_cum[b] - bad_cum[a]).tolist()
    n_days = (day_cum[db] - day_cum[da]).tolist()
    li = np.maximum(last, 0)
    if len(akey):  # the last actual read up to the period's end, when it is recent enough to count
        recent = ((last >= 0) & (ameter[li] == dm) & (asecs[li] >= dlo - h.max_days_without_read * DAY_S)).tolist()
        last_secs = asecs[li].tolist()
    else:
        recent, last_secs = [False] * len(dets), [0] * len(dets)
    stamps: dict[int, datetime] = {}  # one instant object per distinct second
    stats: dict[int, tuple[int, int, datetime | None, int]] = {}
    for k, x in enumerate(dets):
        last_actual = None
        if recent[k]:
            last_actual = stamps.get(last_secs[k])
            if last_actual is None:
                last_actual = stamps[last_secs[k]] = lo + timedelta(seconds=last_secs[k])
        stats[x.key] = (n_reads[k], n_bad[k], last_actual, n_days[k])
    clock.lap("data-quality figures")
    exceptions: dict[int, tuple[int, list[str]]] = {}
    if h.open_exceptions:
        open_exc: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
        for meter_id, ts, rule in conn.execute(
            """SELECT e.meter_id, e.ts, e.rule FROM vee_exception e JOIN bill_meter bm ON bm.meter_id = e.meter_id
               WHERE e.status = 'open' AND e.severity <> 'info' AND e.ts >= %s AND e.ts < %s""",
            (lo, hi),
        ):
            open_exc[meter_id].append((ts, rule))
        for x in dets:
            until = x.end_at + timedelta(days=1)
            hits = [rule for ts, rule in open_exc.get(x.meter_id, ()) if x.start_at <= ts < until]
            if hits:
                exceptions[x.key] = (len(hits), sorted(set(hits)))
    clock.lap("open exceptions")
    return stats, exceptions
