"""Interval reading: time-of-use consumption and maximum demand from the validated interval series."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
from psycopg import Connection

from billing.components import TOU
from billing.draft import Draft
from billing.pricing import allocate, q, tou_period
from billing.tariffs import Tariff, TariffBook
from releve.model import INTERVAL_CHANNEL
from releve.pgbinary import copy_records, row_dtype

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000
#: One interval of a determinant: its key, its instant (µs since 2000-01-01 UTC), value and length (s).
_ROW = row_dtype(("key", ">i4"), ("ts", ">i8"), ("value", ">f8"), ("ivl", ">i4"))

# Intervals are stamped at their END: the interval stamped T covers (T - length, T]. It belongs to the
# determinant whose window holds that span (lo < T <= hi), to the tariff segment of the UTC day its
# span starts on, and to the TOU period of the local weekday and hour its span starts in.
#
# Each determinant's series is read by its meter, channel and window (validated_series: the primary
# keys of rows and blocks), a plan no row estimate can turn around: joined to the run's whole window
# instead, the blocks' unnested instants were estimated at a thousandth of their number and the
# determinants scanned once per interval. The intervals come as one binary COPY and are put in
# their day, weekday and hour here: the server's time-zone arithmetic and grouping per interval
# cost three times the read itself.
_QUERY = b"""COPY (
    SELECT s.key, v.ts, v.value, c.ivl
    FROM unnest(%(keys)s::integer[], %(meters)s::integer[], %(los)s::timestamptz[], %(his)s::timestamptz[])
         AS s(key, meter_id, lo, hi)
    JOIN (SELECT id, coalesce(interval_s, 900) AS ivl FROM channel WHERE code = ANY(%(ch)s)) c ON true
    CROSS JOIN LATERAL validated_series(s.meter_id, c.id, s.lo, s.hi) v
    WHERE v.ts > s.lo AND v.value IS NOT NULL
) TO STDOUT (FORMAT binary)"""


class _Intervals:
    """The run's intervals sorted by determinant key, each with its UTC day and local weekday × hour cell."""

    def __init__(self, rows: np.ndarray, timezone: str) -> None:
        order = np.argsort(rows["key"], kind="stable")
        self.key = rows["key"].astype(np.int64)[order]
        self.value = rows["value"].astype(np.float64)[order]
        self.ivl = rows["ivl"].astype(np.int64)[order]
        began = rows["ts"].astype(np.int64)[order] - self.ivl * 1_000_000
        # The zone's offset at each distinct start (a month of 15-minute intervals: 2,880 of them).
        starts, at = np.unique(began, return_inverse=True)
        zone = ZoneInfo(timezone)
        offset = np.array([_offset_us(zone, int(u)) for u in starts], dtype=np.int64)
        local = began + offset[at.reshape(-1)]
        self.day = began // _DAY_US  # the UTC day, in days since 2000-01-01
        local_day = local // _DAY_US
        # ISO weekday (2000-01-01 was a Saturday, 6) − 1, times 24, plus the local hour: 0 … 167.
        self.cell = ((local_day + 5) % 7) * 24 + (local // _HOUR_US) % 24

    def of(self, key: int) -> slice:
        """The rows of one determinant."""
        return slice(int(np.searchsorted(self.key, key, "left")), int(np.searchsorted(self.key, key, "right")))


def _offset_us(zone: ZoneInfo, at_us: int) -> int:
    """The zone's UTC offset in µs at an instant given in µs since 2000-01-01 UTC."""
    offset = (_PG_EPOCH + timedelta(microseconds=at_us)).astimezone(zone).utcoffset()
    return 0 if offset is None else offset // timedelta(microseconds=1)


def load_intervals(conn: Connection, windows: list[tuple[int, int, datetime, datetime]], timezone: str) -> _Intervals:
    """The validated intervals of each (key, meter, lo, hi) stamped in ``(lo, hi]``, placed in ``timezone``."""
    keys, meters, los, his = (list(c) for c in zip(*windows, strict=True)) if windows else ([], [], [], [])
    rows = copy_records(
        conn,
        _QUERY,
        {"ch": list(INTERVAL_CHANNEL.values()), "keys": keys, "meters": meters, "los": los, "his": his},
        _ROW,
    )
    return _Intervals(rows, timezone)


def _periods(tariff: Tariff, cache: dict[int, list[str]]) -> list[str]:
    """The TOU period of each weekday × hour cell (0 … 167) of a tariff version."""
    names = cache.get(id(tariff))
    if names is None:
        names = cache[id(tariff)] = [tou_period(tariff, dow, hour) for dow in range(1, 8) for hour in range(24)]
    return names


def _day(d: date) -> int:
    """A date as days since 2000-01-01 (the UTC day numbers of :class:`_Intervals`)."""
    return (d - date(2000, 1, 1)).days


def read_intervals(conn: Connection, book: TariffBook, drafts: list[Draft]) -> None:
    """Time-of-use consumption and maximum demand from the validated interval series."""
    dets = [x for d in drafts for x in d.dets]
    if not dets:
        return
    iv = load_intervals(
        conn,
        [(x.key, x.meter_id, x.start_at, x.end_at) for x in dets],
        book.rules.timezone,
    )
    qd = book.rules.quantity_decimals
    periods: dict[int, list[str]] = {}
    for d in drafts:
        raw: dict[tuple[int, str], float] = {}
        peak_kw: Decimal | None = None
        missing = False
        tou_segments = [(k, t, _day(lo), _day(hi)) for k, (t, lo, hi) in enumerate(d.segments) if t.uses(TOU)]
        for x in d.dets:
            mine_rows = iv.of(x.key)
            if mine_rows.start == mine_rows.stop:
                missing = True
                continue
            value = iv.value[mine_rows]
            peak = float(value.max())
            interval_s = int(iv.ivl[mine_rows].max())
            kw = Decimal(repr(peak * 3600 / interval_s)) * x.multiplier
            x.max_demand = q(kw, qd)
            peak_kw = x.max_demand if peak_kw is None else max(peak_kw, x.max_demand)
            mine: dict[str, float] = {}
            mult = float(x.multiplier)
            day, cell = iv.day[mine_rows], iv.cell[mine_rows]
            for k, t, lo, hi in tou_segments:
                inside = (day >= lo) & (day < hi)
                # Per weekday × hour cell of the segment, then each cell put in its period.
                sums = np.bincount(cell[inside], weights=value[inside] * mult, minlength=168)
                seen = np.bincount(cell[inside], minlength=168) > 0
                names = _periods(t, periods)
                for c in np.flatnonzero(seen):
                    name, v = names[c], float(sums[c])
                    raw[(k, name)] = raw.get((k, name), 0.0) + v
                    mine[name] = mine.get(name, 0.0) + v
            # the meter's own interval sums per period (unscaled), kept with its determinant
            x.tou = {name: q(Decimal(repr(v)), qd) for name, v in mine.items()}
        if missing:
            d.holds.append("intervals: the tariff needs interval data (time of use or demand) and some is missing")
            continue
        d.details["max_demand"] = str(peak_kw)
        order = [(k, p.name) for k, (t, _, _) in enumerate(d.segments) for p in t.part(TOU).tou]
        if order:
            weights = [round(raw.get(o, 0.0) * 1_000_000) for o in order]
            shares = allocate(d.consumption, weights if sum(weights) else [1] * len(order), qd)
            d.details["tou"] = [{} for _ in d.segments]
            for (k, name), share in zip(order, shares, strict=True):
                d.details["tou"][k][name] = share
