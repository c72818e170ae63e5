"""The database side of theft ranking: input from the stored series, runs, candidates and outcomes.

Input (:func:`load_from_database`): customer meters (every meter that is not an area's feeder /
bulk meter) with their service point's class, area and coordinates; daily consumption from the
``validated_reading`` view (the import register's last value per day, its advance per day; or the
interval channel summed per day when the meter has no register), the export / reverse register,
hourly interval sums for the profile signals, ``meter_event`` rows, each area's feeder or bulk
meter and technical-loss percentage, and from VEE the open index-inconsistency exceptions
(``NEGATIVE``, ``SUM_CHECK``, ``MULTIPLIER``) and the longest run of estimated days.

Columnar: the daily figures come from the daily series (migration 0026: one row per meter,
channel and month, the month's days in a 31-element array, kept by the daily refresh) in one
binary ``COPY`` whose rows all have one size, so its body is read as numpy record arrays
(:func:`_series_blocks`) and laid straight into the grids; the span of the data comes from the
readings per day (``daily_read_count``). The hourly sums come the same way from the hourly series
(migration 0029: one row per meter, interval channel and month, the month's 31 × 24 hours in one
fixed-size value, kept by the hourly refresh), a group of whole areas at a time while the ranking
runs (:class:`analytics.theft.data.LazyHourly`), so neither a Python object (nor a CopyData message)
per reading nor a meters × days × 24 array for the whole fleet is ever built.

Runs, candidates and outcomes are written as the editor role (``database.use_roles``).
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from analytics.theft import DEFAULT_DAYS, DEFAULT_KEEP, DEFAULT_ORDER
from analytics.theft.data import (
    HOURLY_CHUNK_METERS,
    Event,
    LazyHourly,
    TheftData,
    register_advance,
)
from analytics.theft.features import Progress
from analytics.theft.ranking import INPUT_NAMES, Candidate
from analytics.theft.signals import longest_true_run
from releve.arrays import BoolArray, FloatArray, IntArray, sum_in_order
from releve.db import connect, editor_role, reader_role, refresh_daily, refresh_hourly
from releve.model import COMMODITY_CHANNELS
from releve.pgbinary import PG_EPOCH_DAYS, copy_blocks, row_dtype
from releve.settings import Settings

IMPORT_CHANNELS = tuple(ch.register for ch in COMMODITY_CHANNELS.values())
EXPORT_CHANNELS = tuple(ch.export for ch in COMMODITY_CHANNELS.values())
INTERVAL_CHANNELS = tuple(ch.interval for ch in COMMODITY_CHANNELS.values())
INDEX_RULES = ("NEGATIVE", "SUM_CHECK", "MULTIPLIER")
RESULTS = ("fraud", "meter_fault", "nothing", "no_access")


class StoreError(Exception):
    """Something the user asked of the stored runs that cannot be done (unknown run, meter…)."""


def _period(conn: psycopg.Connection, start: date | None, end: date | None, days: int) -> tuple[date, date]:
    if start is not None and end is not None:  # nothing to look up
        if end <= start:
            raise StoreError(f"empty period {start} … {end}")
        if conn.execute("SELECT EXISTS (SELECT 1 FROM daily_read_count)").fetchone() != (True,):
            raise StoreError("no readings in the database")
        return start, end
    # The readings per day (kept with the daily series, migration 0026: 365 rows a year of data)
    # give the first and last day and the reads of the last two.
    per_day: dict[date, int] = defaultdict(int)
    for day, n in conn.execute("SELECT day, n FROM daily_read_count").fetchall():
        per_day[day.astimezone(UTC).date()] += int(n or 0)
    if not per_day:
        raise StoreError("no readings in the database")
    first, last = min(per_day), max(per_day)
    if end is None:
        end = last + timedelta(days=1)
        # A last day with fewer readings than the day before is partial (or only the spill-over of
        # end-stamped intervals at midnight): it would read as a fleet-wide drop. Left out.
        before = per_day.get(last - timedelta(days=1), 0)  # (a defaultdict: .get adds nothing)
        partial = before > 0 and per_day[last] < 0.9 * before
        if partial and last > first:
            end = last
    if start is None:
        # The last ``days`` days, but not before the first reading.
        start = max(end - timedelta(days=days), first)
    if end <= start:
        raise StoreError(f"empty period {start} … {end}")
    return start, end


def _row_of(ids: list[int]) -> IntArray:
    """Meter id → row (−1: not one of ``ids``), as an array indexed by id."""
    out = np.full(max(ids, default=0) + 2, -1, dtype=np.int64)
    out[np.asarray(ids, dtype=np.int64)] = np.arange(len(ids), dtype=np.int64)
    return out


def _rows(lookup: IntArray, meter_ids: np.ndarray) -> IntArray:
    """Rows of ``meter_ids`` through ``lookup`` (−1 for ids it does not know)."""
    ids = meter_ids.astype(np.int64)
    inside = (ids >= 0) & (ids < len(lookup))
    return np.where(inside, lookup[np.where(inside, ids, 0)], -1)


def _channel_ids(conn: psycopg.Connection, codes: tuple[str, ...]) -> list[int]:
    return [int(r[0]) for r in conn.execute("SELECT id FROM channel WHERE code = ANY(%s)", (list(codes),))]


def _edited_per_day(
    conn: psycopg.Connection, codes: tuple[str, ...], lo: datetime, hi: datetime
) -> list[tuple[int, date, float]]:
    """The last value of each (meter, day) that carries an estimate or edit (``validated_reading``'s merge).

    Few pairs: rows, not a COPY.
    """
    return conn.execute(
        """WITH touched AS (
               SELECT DISTINCT v.meter_id, v.channel_id, date_trunc('day', v.ts AT TIME ZONE 'UTC') AS day
               FROM reading_version v JOIN channel c ON c.id = v.channel_id
               WHERE c.code = ANY(%s) AND v.ts >= %s AND v.ts < %s)
           SELECT DISTINCT ON (t.meter_id, t.day) t.meter_id, t.day::date, coalesce(v.value, r.value)
           FROM touched t
           CROSS JOIN LATERAL series_between(t.meter_id, t.channel_id, t.day AT TIME ZONE 'UTC',
                                             (t.day + interval '1 day') AT TIME ZONE 'UTC') r
           LEFT JOIN LATERAL (SELECT rv.value FROM reading_version rv
                              WHERE rv.meter_id = r.meter_id AND rv.channel_id = r.channel_id AND rv.ts = r.ts
                                AND rv.kind <> 'adjustment' ORDER BY rv.version DESC LIMIT 1) v ON true
           WHERE coalesce(v.value, r.value) IS NOT NULL AND r.ts < (t.day + interval '1 day') AT TIME ZONE 'UTC'
           ORDER BY t.meter_id, t.day, r.ts DESC""",
        (list(codes), lo, hi),
    ).fetchall()


def _lay_over(grid: FloatArray, lookup: IntArray, edited: list[tuple[int, date, float]], start: date) -> None:
    """Estimates and edits over the daily aggregate's last values."""
    n_days = grid.shape[1]
    for mid, d, v in edited:
        k = int(lookup[mid]) if 0 <= mid < len(lookup) else -1
        j = (d - start).days
        if k >= 0 and 0 <= j < n_days:
            grid[k, j] = v


#: One row of ``daily_series`` in a binary COPY: meter, channel, month (a ``date``: days since
#: 2000-01-01) and the month's days, a ``bytea`` of :data:`_SERIES_DAYS` big-endian ``float8``
#: (day ``d`` of the month at ``d - 1``, NaN: no reading). Every row has this size (migration
#: 0026), so the COPY's body is one record array: no Python step per row.
_SERIES_DAYS = 31
_SERIES_ROW = row_dtype(("meter_id", ">i4"), ("channel_id", ">i2"), ("month", ">i4"), ("day", f"({_SERIES_DAYS},)>f8"))


def _series_blocks(
    conn: psycopg.Connection, channels: list[int], first: date, last: date, block_rows: int = 1 << 15
) -> Iterator[tuple[IntArray, IntArray, IntArray, FloatArray]]:
    """``daily_series`` rows of ``channels`` for the months ``first`` … ``last``, ``block_rows`` at a time.

    Yields (meter, channel, month's first day as a PostgreSQL day number, rows × 31 values). One
    binary COPY with neither a sort nor a grouping: the rows stream from the table as stored.
    """
    for rec in copy_blocks(
        conn,
        """COPY (SELECT meter_id, channel_id, month, value FROM daily_series
                 WHERE channel_id = ANY(%s::smallint[]) AND month >= %s AND month <= %s)
           TO STDOUT (FORMAT binary)""",
        (channels, first, last),
        _SERIES_ROW,
        block_rows,
    ):
        if not ((rec["n"] == 4) & (rec["l4"] == _SERIES_DAYS * 8)).all():
            raise ValueError(f"daily_series rows are not {_SERIES_DAYS} float8 a month (see migration 0026)")
        yield (
            rec["meter_id"].astype(np.int64),
            rec["channel_id"].astype(np.int64),
            rec["month"].astype(np.int64),
            rec["day"].astype(np.float64),
        )


def _register_grids(
    conn: psycopg.Connection,
    start: date,
    n_days: int,
    row_of: IntArray,
    m: int,
    feeder_row: IntArray,
    n_feeders: int,
    interval: list[int],
) -> tuple[FloatArray, FloatArray | None, FloatArray, bool, set[int]]:
    """Last register value per day (NaN: no read): customers' import, their export, feeders' import.

    The export grid is None when no export register value came. One binary COPY of the daily
    series (one row per meter, channel and month, however often meters are read: migration
    0026), laid into the grids a block at a time. Also whether any import register value came,
    and the meters with a day of the ``interval`` channels from the day before the period to the
    day after it (a superset of those with an interval in it: the same read, instead of a second one).
    """
    imp = np.asarray(_channel_ids(conn, IMPORT_CHANNELS), dtype=np.int64)
    exp = np.asarray(_channel_ids(conn, EXPORT_CHANNELS), dtype=np.int64)
    daily = np.full((m, n_days), np.nan)
    export: FloatArray | None = None  # made when the first export value comes (most fleets have none)
    feeder = np.full((n_feeders, n_days), np.nan)
    any_import = False
    with_interval: set[int] = set()
    origin = (start - date(2000, 1, 1)).days  # the period's first day in PostgreSQL's day numbers
    before, after = start - timedelta(days=1), start + timedelta(days=n_days)
    for meter, channel, month, value in _series_blocks(
        conn, imp.tolist() + exp.tolist() + interval, before.replace(day=1), after.replace(day=1)
    ):
        day = (month - origin)[:, None] + np.arange(_SERIES_DAYS)  # each value's day in the period
        seen = np.isfinite(value)
        near = seen & (day >= -1) & (day <= n_days)
        with_interval.update(meter[np.isin(channel, interval) & near.any(axis=1)].tolist())
        inside = seen & (day >= 0) & (day < n_days)
        is_imp = np.isin(channel, imp)
        is_exp = np.isin(channel, exp)
        any_import = any_import or bool(inside[is_imp].any())
        if export is None and inside[is_exp].any():
            export = np.full((m, n_days), np.nan)
        # Each value's place in its grid, flat (row × days + day): one scatter of the values kept.
        customer = _rows(row_of, meter)
        at_customer = customer[:, None] * n_days + day
        feeders = _rows(feeder_row, meter)
        for grid, rows, at, sel in (
            (daily, customer, at_customer, is_imp),
            (export, customer, at_customer, is_exp),
            (feeder, feeders, feeders[:, None] * n_days + day, is_imp),
        ):
            if grid is not None:
                keep = inside & (sel & (rows >= 0))[:, None]
                grid.reshape(-1)[at[keep]] = value[keep]
    return daily, export, feeder, any_import, with_interval


#: One row of ``hourly_series`` in a binary COPY (migration 0029): meter, channel, month (days since
#: 2000-01-01) and the month's hours, a ``bytea`` of 31 × 24 big-endian ``float8`` (hour ``h`` of
#: day ``d`` of the month at ``24(d − 1) + h``; NaN: no interval). Every row has this size, so the
#: COPY's body is one record array. The texture rows likewise, 31 ``float8`` a month.
_HOUR_SERIES_ROW = row_dtype(
    ("meter_id", ">i4"), ("channel_id", ">i2"), ("month", ">i4"), ("value", f"({_SERIES_DAYS}, 24)>f8")
)
_TEXTURE_SERIES_ROW = row_dtype(
    ("meter_id", ">i4"), ("channel_id", ">i2"), ("month", ">i4"), ("texture", f"({_SERIES_DAYS},)>f8")
)
#: One row of ``interval_day_series`` (migration 0033): the month's 31 day totals.
_DAY_TOTAL_ROW = row_dtype(
    ("meter_id", ">i4"), ("channel_id", ">i2"), ("month", ">i4"), ("value", f"({_SERIES_DAYS},)>f8")
)
_HOUR_TEXTURE_ROW = row_dtype(
    ("meter_id", ">i4"),
    ("channel_id", ">i2"),
    ("month", ">i4"),
    ("value", f"({_SERIES_DAYS}, 24)>f8"),
    ("texture", f"({_SERIES_DAYS},)>f8"),
)


class _HourlyReader:
    """Hourly sums of the interval channels for a group of meters at a time, from ``hourly_series``.

    The refresh (migrations 0027, 0029) has summed the intervals per meter, channel and hour (each
    in the hour it covers: intervals are stamped at their end), a month's hours in one fixed-size
    value: a read is one binary COPY of the group's month rows, as stored (no sort, no grouping on
    the server), read as numpy record arrays and laid into the group's array. A day missing any
    hour is NaN whole (the profile signals compare whole days). The connection stays open for the
    ranking (:class:`analytics.theft.data.LazyHourly` reads the fleet area by area).
    """

    def __init__(self, conn: psycopg.Connection, channels: list[int], lo: datetime, hi: datetime, n_days: int) -> None:
        self.conn = conn
        self.channels = channels
        self.lo = lo
        self.hi = hi
        self.n_days = n_days

    def _months(
        self, columns: str, meter_ids: list[int], dtype: np.dtype, table: str = "hourly_series"
    ) -> Iterator[tuple[IntArray, IntArray, BoolArray, np.ndarray]]:
        """The month rows of ``meter_ids`` in the period, a block at a time: (rows, day, inside, records).

        Per row: its place in ``meter_ids``, each of its 31 days' column in the period (rows × 31),
        whether that day is in the period and in the month, and the block's records (``columns``
        after meter, channel and month, as ``dtype`` has them). The blocks come channel by channel
        in ascending id (a meter with two interval channels adds them up, or takes the later one's
        texture, in that order, as before 0029).
        """
        first = self.lo.date().replace(day=1)
        last = (self.hi.date() - timedelta(days=1)).replace(day=1)
        origin = (self.lo.date() - date(2000, 1, 1)).days  # the period's first day in PostgreSQL's day numbers
        row_of = _row_of(meter_ids)
        fields = len(dtype.names or ()) // 2
        for channel in sorted(self.channels):
            for rec in copy_blocks(
                self.conn,
                f"""COPY (SELECT meter_id, channel_id, month, {columns} FROM {table}
                          WHERE meter_id = ANY(%s) AND channel_id = %s AND month >= %s AND month <= %s)
                    TO STDOUT (FORMAT binary)""",
                (meter_ids, channel, first, last),
                dtype,
                block_rows=512,  # 3 MB of month rows: a block's temporaries stay small beside a group's arrays
            ):
                names = dtype.names or ()
                if not (rec["n"] == fields).all() or any(
                    not (rec[f"l{k}"] == dtype[names[2 * k]].itemsize).all() for k in range(4, fields + 1)
                ):
                    raise ValueError(f"{table} rows are not a month of 31 days a row (see migrations 0029, 0033)")
                rows = _rows(row_of, rec["meter_id"])
                month = rec["month"].astype(np.int64)
                # A month's days end at the next month's first: its length, as numpy counts months.
                start = (month + PG_EPOCH_DAYS).astype("datetime64[D]")
                length = ((start.astype("datetime64[M]") + 1).astype("datetime64[D]") - start).astype(np.int64)
                dom = np.arange(_SERIES_DAYS)
                day = (month - origin)[:, None] + dom
                inside = (rows >= 0)[:, None] & (dom < length[:, None]) & (day >= 0) & (day < self.n_days)
                yield rows, day, inside, rec

    def _hours_and_texture(self, meter_ids: list[int], hours: bool, texture: bool) -> tuple[FloatArray, FloatArray]:
        """:meth:`read` and/or :meth:`texture` (the one not asked for comes back empty) from one COPY."""
        n = len(meter_ids)
        out = np.zeros((n, self.n_days, 24) if hours else (0, self.n_days, 24))
        seen = np.zeros(out.shape, dtype=bool)
        tex = np.full((n, self.n_days) if texture else (0, self.n_days), np.nan)
        if n and self.channels:
            columns = ", ".join(c for c, on in (("value", hours), ("texture", texture)) if on)
            dtype = _HOUR_SERIES_ROW if not texture else _TEXTURE_SERIES_ROW if not hours else _HOUR_TEXTURE_ROW
            flat_out, flat_seen = out.reshape(-1, 24), seen.reshape(-1, 24)
            for rows, day, inside, rec in self._months(columns, meter_ids, dtype):
                at = rows[:, None] * self.n_days + day
                if hours:
                    part = rec["value"].astype(np.float64)[inside]  # a (meter, day) once per channel
                    known = np.isfinite(part)
                    flat_out[at[inside]] += np.where(known, part, 0.0)
                    flat_seen[at[inside]] |= known
                if texture:
                    value = rec["texture"].astype(np.float64)
                    keep = inside & np.isfinite(value)
                    tex.reshape(-1)[at[keep]] = value[keep]
        out[~seen.all(axis=2)] = np.nan
        return out, tex

    def read(self, meter_ids: list[int]) -> FloatArray:
        """len(meter_ids) × days × 24 (NaN: hour of an incomplete day, or no data)."""
        return self._hours_and_texture(meter_ids, hours=True, texture=False)[0]

    def texture(self, meter_ids: list[int]) -> FloatArray:
        """len(meter_ids) × days: :func:`analytics.theft.data.interval_texture`, made by the refresh.

        Per meter, channel and day, the median |ln| step between consecutive intervals over the
        interval channel, kept in ``hourly_series`` (migrations 0027, 0029) for days whose
        intervals are evenly spaced and fill them. NaN: incomplete day, or no interval data; a
        meter with two interval channels has the texture of the later channel where it has one.
        """
        return self._hours_and_texture(meter_ids, hours=False, texture=True)[1]

    def read_with_texture(self, meter_ids: list[int]) -> tuple[FloatArray, FloatArray]:
        """:meth:`read` and :meth:`texture` of the same meters from one pass over their month rows."""
        return self._hours_and_texture(meter_ids, hours=True, texture=True)

    def day_totals(self, meter_ids: list[int]) -> tuple[FloatArray, BoolArray]:
        """Each meter's complete days from ``interval_day_series`` (migration 0033): (totals, alone).

        ``totals`` is len(meter_ids) × days: the day's 24 hours added in hour order, what
        ``sum_in_order`` makes of :meth:`read`'s hours (NaN: a day missing an hour, or no data), read
        as 31 float8 a month instead of 31 × 24. ``alone`` is False for a meter with rows in more
        than one interval channel: its hours are the channels' added hour by hour, which its
        channels' day totals do not give; read its hours (:meth:`read`) instead.
        """
        n = len(meter_ids)
        out = np.full((n, self.n_days), np.nan)
        order = sorted(self.channels)
        has = np.zeros((n, len(order)), dtype=bool)  # which interval channels each meter has rows in
        if n and self.channels:
            for rows, day, inside, rec in self._months("value", meter_ids, _DAY_TOTAL_ROW, "interval_day_series"):
                at = rows[:, None] * self.n_days + day
                value = rec["value"].astype(np.float64)
                keep = inside & np.isfinite(value)
                out.reshape(-1)[at[keep]] = value[keep]
                mine = rows >= 0
                has[rows[mine], np.searchsorted(order, rec["channel_id"][mine].astype(np.int64))] = True
        return out, has.sum(axis=1) <= 1

    def read_chunked(self, meter_ids: list[int], per: int = HOURLY_CHUNK_METERS) -> FloatArray:
        """:meth:`read` a group of ``per`` meters at a time into one array (the feeders)."""
        out = np.full((len(meter_ids), self.n_days, 24), np.nan)
        for a in range(0, len(meter_ids), per):
            out[a : a + per] = self.read(meter_ids[a : a + per])
        return out

    def any_data(self, meter_ids: list[int]) -> bool:
        """Whether any of these meters has an interval value in the period (an index probe per month row).

        A month row counts when its days in the period hold a value: their bytes are not all the
        NaNs the refresh writes for an hour without an interval.
        """
        if not meter_ids or not self.channels:
            return False
        lo, hi = self.lo.date(), self.hi.date()
        row = self.conn.execute(
            f"""SELECT EXISTS (
                    SELECT 1 FROM hourly_series s
                    CROSS JOIN LATERAL (SELECT greatest(%(lo)s::date - s.month, 0) AS a,
                                               least(%(hi)s::date - s.month, {_SERIES_DAYS}) AS b) d
                    WHERE s.meter_id = ANY(%(ids)s) AND s.channel_id = ANY(%(ch)s::smallint[])
                      AND s.month >= %(first)s AND s.month < %(hi)s AND d.b > d.a
                      AND substring(s.value FROM 192 * d.a + 1 FOR 192 * (d.b - d.a))
                          <> decode(repeat(encode(float8send('NaN'::float8), 'hex'), 24 * (d.b - d.a)), 'hex'))""",
            {"lo": lo, "hi": hi, "first": lo.replace(day=1), "ids": meter_ids, "ch": self.channels},
        ).fetchone()
        return bool(row and row[0])


#: Hourly series up to this size (bytes as meters × days × 24 floats) are read whole; above, area
#: by area while the ranking runs (64 MB: about 900 meters × 365 days).
HOURLY_IN_MEMORY = 64 << 20


def load_from_database(
    conn: psycopg.Connection,
    start: date | None = None,
    end: date | None = None,
    days: int = 365,
    hourly_in_memory: int = HOURLY_IN_MEMORY,
) -> TheftData:
    """Build :class:`TheftData` for ``[start, end)``.

    Default period: the last ``days`` days up to the last reading, not before the first reading.
    Daily series come in one binary COPY of the daily aggregate. Hourly series (interval data) are
    summed per hour by the database; above ``hourly_in_memory`` bytes they are read area by area
    while the ranking runs (a :class:`LazyHourly`: ``conn`` must stay open until the candidates are
    explained), so the fleet's hourly array is never held whole.
    """
    start, end = _period(conn, start, end, days)
    n_days = (end - start).days
    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    hi = datetime(end.year, end.month, end.day, tzinfo=UTC)
    # Each meter's latest installation in one pass over the table (hash joins), not an index probe per meter.
    meters = conn.execute(
        """WITH inst AS (SELECT DISTINCT ON (meter_id) meter_id, service_point_id FROM installation
                         ORDER BY meter_id, installed_at DESC)
            SELECT m.id, m.serial, m.commodity, m.unit, m.import_only,
                   coalesce(m.register_wrap, power(10, m.register_digits)::double precision),
                   sp.customer_class, coalesce(a.code, ''), sp.latitude, sp.longitude
            FROM meter m
            LEFT JOIN inst ON inst.meter_id = m.id
            LEFT JOIN service_point sp ON sp.id = inst.service_point_id
            LEFT JOIN area a ON a.id = sp.area_id
            WHERE m.id NOT IN (SELECT feeder_meter_id FROM area WHERE feeder_meter_id IS NOT NULL)
            ORDER BY m.serial"""
    ).fetchall()
    if not meters:
        raise StoreError("no customer meters in the database")
    meter_ids = [int(r[0]) for r in meters]
    row_of = _row_of(meter_ids)
    feeders = conn.execute(
        "SELECT a.code, a.feeder_meter_id, a.technical_loss_pct FROM area a WHERE a.feeder_meter_id IS NOT NULL"
    ).fetchall()
    feeder_ids = [int(f[1]) for f in feeders]
    feeder_row = _row_of(feeder_ids)
    m = len(meters)

    interval_channels = _channel_ids(conn, INTERVAL_CHANNELS)
    last, last_export, feeder_last, any_import, with_interval = _register_grids(
        conn, start, n_days, row_of, m, feeder_row, len(feeders), interval_channels
    )
    imp_edits = _edited_per_day(conn, IMPORT_CHANNELS, lo, hi)
    _lay_over(last, row_of, imp_edits, start)
    export_edits = _edited_per_day(conn, EXPORT_CHANNELS, lo, hi)
    if last_export is None and export_edits:
        last_export = np.full((m, n_days), np.nan)
    if last_export is not None:
        _lay_over(last_export, row_of, export_edits, start)
    _lay_over(feeder_last, feeder_row, imp_edits, start)
    daily = register_advance(last)
    del last
    # No export register in the fleet: no array (an all-NaN one is 290 MB at 100,000 × 365 and
    # every export signal reads it as zero anyway).
    export = register_advance(last_export) if last_export is not None and np.isfinite(last_export).any() else None
    feeder_daily = register_advance(feeder_last)
    cumulative = any_import or bool(imp_edits)
    del last_export, feeder_last

    # Hourly profiles from the raw intervals: the shape of a day, not billing figures, so estimates
    # filling the odd gap do not matter and the view's version merge is skipped.
    reader = _HourlyReader(conn, interval_channels, lo, hi, n_days)
    hourly: FloatArray | LazyHourly | None = None
    texture: FloatArray | None = None
    feeder_hourly: dict[int, FloatArray] = {}
    customer_interval = [i for i in meter_ids if i in with_interval]
    feeder_interval = [i for i in feeder_ids if i in with_interval]
    if reader.any_data(customer_interval) or reader.any_data(feeder_interval):
        ids = np.asarray(meter_ids, dtype=np.int64)
        # The half-hour texture (per meter and day, from the raw intervals: summed into hours it
        # is averaged away), kept in the same month rows as the hours.
        texture = np.full((m, n_days), np.nan)
        load: Callable[[IntArray], FloatArray]
        if m * n_days * 24 * 8 <= hourly_in_memory:
            whole = reader.read_chunked(meter_ids)
            hourly = whole
            load = whole.__getitem__
        else:

            def hours_and_texture(rows: IntArray) -> FloatArray:
                """The rows' hours, their texture laid into ``texture`` from the same pass over their month rows."""
                part, texture[rows] = reader.read_with_texture(ids[rows].tolist())
                return part

            # Read lazily, each group's texture comes with its hours as the ranking reads them: one
            # pass over the month rows instead of two (36 GB each at 100,000 meters × 365 days, more
            # than a server's page cache holds). TheftData.texture is whole once the ranking's hourly
            # pass (TheftData.hourly_chunks) has gone through the fleet.
            lazy = LazyHourly(hours_and_texture, m, n_days)
            hourly, load = lazy, lazy.load
        # For meters without a register, their daily consumption: the sum of their complete days.
        # Read lazily, those of the interval-only meters kept by the refresh (interval_day_series,
        # migration 0033: 31 values a month row where the hours are 31 × 24; their hours and texture
        # are read once, as the ranking goes); a meter with two interval channels, and a fleet read
        # whole, add up the hours, in the same order.
        with_iv = np.flatnonzero(np.isin(ids, customer_interval))
        no_register = np.flatnonzero(~np.isfinite(daily).any(axis=1))
        both = np.intersect1d(with_iv, no_register) if isinstance(hourly, LazyHourly) else np.zeros(0, np.int64)
        if both.size:
            totals, alone = reader.day_totals(ids[both].tolist())
            daily[both[alone]] = totals[alone]
            both = both[alone]
        if not isinstance(hourly, LazyHourly):
            for a in range(0, with_iv.size, HOURLY_CHUNK_METERS):
                rows = with_iv[a : a + HOURLY_CHUNK_METERS]
                texture[rows] = reader.texture(ids[rows].tolist())
        from_hours = np.setdiff1d(no_register, both)
        for a in range(0, from_hours.size, HOURLY_CHUNK_METERS):
            rows = from_hours[a : a + HOURLY_CHUNK_METERS]
            daily[rows] = sum_in_order(load(rows))
        # Feeders with an interval channel: hourly totals (the interval balance), and their daily
        # sums when they have no register at all.
        feeder_index = {i: k for k, i in enumerate(feeder_ids)}
        f_rows = [feeder_index[i] for i in feeder_interval]
        f_hourly = reader.read_chunked(feeder_interval)
        for j, k in enumerate(f_rows):
            full = np.isfinite(f_hourly[j]).all(axis=1)
            if full.sum() >= 7:
                feeder_hourly[k] = f_hourly[j]
                if not np.isfinite(feeder_daily[k]).any():
                    feeder_daily[k] = sum_in_order(f_hourly[j])
        del f_hourly

    data = TheftData(
        serials=[r[1] for r in meters],
        first_day=start,
        daily=daily,
        commodity=np.array([r[2] for r in meters], dtype=object),
        customer_class=np.array([r[6] or "unknown" for r in meters], dtype=object),
        area=np.array([r[7] for r in meters], dtype=object),
        latitude=np.array([np.nan if r[8] is None else r[8] for r in meters], dtype=float),
        longitude=np.array([np.nan if r[9] is None else r[9] for r in meters], dtype=float),
        import_only=np.array([bool(r[4]) for r in meters]),
        wrap=np.array([np.inf if r[5] is None else float(r[5]) for r in meters]),
        cumulative=cumulative,
        export=export,
        hourly=hourly,
        texture=texture,
        unit=np.array([r[3] for r in meters], dtype=object),
        meter_ids=list(meter_ids),
    )
    for k, (code, _, pct) in enumerate(feeders):
        data.feeders[code] = feeder_daily[k]
        if k in feeder_hourly:
            data.feeders_hourly[code] = feeder_hourly[k]
        if pct is not None and float(pct) > 0:
            data.technical_loss_pct[code] = float(pct)
    for mid, ts, kind, code in conn.execute(
        "SELECT meter_id, ts, kind, code FROM meter_event WHERE ts >= %s AND ts < %s ORDER BY ts", (lo, hi)
    ):
        k = int(_rows(row_of, np.array([mid]))[0])
        if k >= 0:
            data.events.append(Event(k, (ts.astimezone(UTC).date() - start).days, ts, kind, code))
    vee = np.zeros(m)
    estimated: list[tuple[int, int]] = []  # (row, day) of the days with an estimate
    if conn.execute("SELECT to_regclass('vee_exception') IS NOT NULL").fetchone() == (True,):
        for mid, n in conn.execute(
            """SELECT meter_id, count(*) FROM vee_exception WHERE rule = ANY(%s) AND status <> 'rejected'
               AND ts >= %s AND ts < %s GROUP BY 1""",
            (list(INDEX_RULES), lo, hi),
        ):
            k = int(_rows(row_of, np.array([mid]))[0])
            if k >= 0:
                vee[k] = n
        for mid, day in conn.execute(
            """SELECT DISTINCT meter_id, (ts AT TIME ZONE 'UTC')::date FROM reading_version
               WHERE kind = 'estimate' AND ts >= %s AND ts < %s""",
            (lo, hi),
        ):
            k = int(_rows(row_of, np.array([mid]))[0])
            if k >= 0:
                estimated.append((k, (day - start).days))
    data.vee_exceptions = vee
    # The longest run of estimated days, over the few meters with an estimate (the others have none).
    streak = np.zeros(m, dtype=np.int64)
    if estimated:
        rows, days_in = np.asarray(estimated, dtype=np.int64).T
        which, row_in = np.unique(rows, return_inverse=True)
        mask = np.zeros((which.size, n_days), dtype=bool)
        mask[row_in.reshape(-1), days_in] = True
        streak[which] = longest_true_run(mask)
    data.estimate_streak = streak
    return data


# ---------------------------------------------------------------------------------------- runs


def save_run(
    settings: Settings,
    url: str,
    candidates: list[Candidate],
    source: str,
    parameters: dict[str, Any],
    data: TheftData,
    n_labels: int = 0,
    model: str = "unsupervised",
) -> int:
    """Store a run and its candidates (as the editor role); return the run id."""
    with connect(url, role=editor_role(settings)) as conn, conn.transaction():
        row = conn.execute(
            """INSERT INTO theft_run (source, parameters, period_from, period_to, n_meters, n_candidates,
                                      n_labels, model)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            (
                source,
                json.dumps(parameters, default=str),
                data.first_day,
                data.first_day + timedelta(days=data.n_days - 1),
                data.n_meters,
                len(candidates),
                n_labels,
                model,
            ),
        ).fetchone()
        assert row is not None
        run_id = int(row[0])
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO theft_candidate (run_id, rank, serial, meter_id, area, commodity, customer_class,
                       latitude, longitude, risk, expected_value, unbilled_energy, signal, reasons, evidence, inputs)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                [
                    (
                        run_id,
                        c.rank,
                        c.meter,
                        c.meter_id,
                        c.area,
                        c.commodity,
                        c.customer_class,
                        c.latitude,
                        c.longitude,
                        c.risk,
                        c.expected_value,
                        c.unbilled,
                        c.signal,
                        json.dumps(c.reasons),
                        json.dumps(c.evidence, default=str),
                        json.dumps(c.inputs),
                    )
                    for c in candidates
                ],
            )
    return run_id


def load_candidates(settings: Settings, url: str, run_id: int) -> list[Candidate]:
    """The stored list of run ``run_id``, in rank order."""
    with connect(url, role=reader_role(settings)) as conn:
        if conn.execute("SELECT 1 FROM theft_run WHERE id = %s", (run_id,)).fetchone() is None:
            raise StoreError(f"no theft run {run_id}")
        rows = conn.execute(
            """SELECT rank, serial, area, commodity, customer_class, latitude, longitude, risk, expected_value,
                      unbilled_energy, signal, reasons, evidence, inputs, meter_id
               FROM theft_candidate WHERE run_id = %s ORDER BY rank""",
            (run_id,),
        ).fetchall()
    return [
        Candidate(
            rank=r[0],
            meter=r[1],
            area=r[2],
            commodity=r[3],
            customer_class=r[4],
            latitude=r[5],
            longitude=r[6],
            risk=r[7],
            rule=float(r[13].get("rule", 0.0)),
            forest=float(r[13].get("forest", 0.0)),
            supervised=None,
            unbilled=r[9],
            expected_value=r[8],
            reasons=list(r[11]),
            evidence=r[12],
            inputs=r[13],
            signal=r[10],
            meter_id=r[14],
            unit=str(((r[12] or {}).get("daily") or {}).get("unit") or ""),
        )
        for r in rows
    ]


def run_currency(settings: Settings, url: str, run_id: int) -> str:
    """The currency run ``run_id``'s expected values are in (stored with the run; else the bills')."""
    with connect(url, role=reader_role(settings)) as conn:
        row = conn.execute("SELECT parameters->>'currency' FROM theft_run WHERE id = %s", (run_id,)).fetchone()
        return str(row[0]) if row and row[0] else bill_currency(conn)


def bill_currency(conn: psycopg.Connection) -> str:
    """The currency money is counted in: the one on most bills (empty before the first bill run).

    The dashboards label money with the same query, so the CLI's list and the fraud page agree.
    """
    row = conn.execute("SELECT currency FROM bill GROUP BY currency ORDER BY count(*) DESC LIMIT 1").fetchone()
    return str(row[0]) if row and row[0] else ""


def record_outcome(
    settings: Settings,
    url: str,
    run_id: int,
    serial: str,
    result: str,
    campaign: str = "",
    note: str = "",
    visited_at: datetime | None = None,
) -> int:
    """Record what a visit found for a meter on run ``run_id``'s list; return the inspection id."""
    with connect(url, role=editor_role(settings)) as conn, conn.transaction():
        return add_outcome(conn, run_id, serial, result, campaign, note, visited_at)


def add_outcome(
    conn: psycopg.Connection,
    run_id: int,
    serial: str,
    result: str,
    campaign: str = "",
    note: str = "",
    visited_at: datetime | None = None,
) -> int:
    """:func:`record_outcome` inside the caller's transaction (a field work order completing an inspection)."""
    if result not in RESULTS:
        raise StoreError(f"result must be one of {', '.join(RESULTS)}, not {result!r}")
    if conn.execute("SELECT 1 FROM theft_run WHERE id = %s", (run_id,)).fetchone() is None:
        raise StoreError(f"no theft run {run_id}")
    if (
        conn.execute("SELECT 1 FROM theft_candidate WHERE run_id = %s AND serial = %s", (run_id, serial)).fetchone()
        is None
    ):
        raise StoreError(f"meter {serial} is not on the list of run {run_id}")
    row = conn.execute(
        """INSERT INTO theft_inspection (run_id, serial, campaign, result, note, visited_at)
           VALUES (%s, %s, %s, %s, %s, coalesce(%s, now())) RETURNING id""",
        (run_id, serial, campaign, result, note, visited_at),
    ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class OutcomeRow:
    """One visit outcome to record (from a file: ``line`` is its line number)."""

    run: int
    serial: str
    result: str
    campaign: str = ""
    note: str = ""
    visited_at: datetime | None = None
    line: int = 0


@dataclass
class Rejected:
    """An outcome row that was not recorded, and why."""

    row: OutcomeRow | None
    line: int
    raw: list[str]
    reason: str


def read_outcomes(path: Path, run: int | None = None, campaign: str = "") -> tuple[list[OutcomeRow], list[Rejected]]:
    """Parse a visits CSV: ``meter,result[,run,campaign,note,visited_at]`` (header required).

    ``run`` and ``campaign`` given here fill the rows whose file has no such column or an empty cell.
    ``visited_at`` is ISO 8601 (UTC unless it carries an offset). Rows that cannot be read are
    returned as rejected with the reason; the others are returned to be checked and recorded.
    """
    from analytics.theft.data import parse_ts

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise StoreError(f"{path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise StoreError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration as exc:
        raise StoreError(f"{path}: empty file") from exc
    missing = [c for c in ("meter", "result") if c not in header]
    if "run" not in header and run is None:
        missing.append("run (or --run)")
    if missing:
        raise StoreError(f"{path}:1: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    col = {h: k for k, h in enumerate(header)}
    rows: list[OutcomeRow] = []
    bad: list[Rejected] = []
    for line, raw in enumerate(reader, start=2):
        if not raw or all(not c.strip() for c in raw):
            continue

        def cell(name: str, raw: list[str] = raw) -> str:
            k = col.get(name)
            return raw[k].strip() if k is not None and k < len(raw) else ""

        try:
            run_text = cell("run")
            run_id = int(run_text) if run_text else run
            if run_id is None:
                raise ValueError("no run")
            result = cell("result")
            if result not in RESULTS:
                raise ValueError(f"result must be one of {', '.join(RESULTS)}, not {result!r}")
            serial = cell("meter")
            if not serial:
                raise ValueError("empty meter")
            when = cell("visited_at")
            rows.append(
                OutcomeRow(
                    run_id,
                    serial,
                    result,
                    cell("campaign") or campaign,
                    cell("note"),
                    parse_ts(when) if when else None,
                    line,
                )
            )
        except ValueError as exc:
            bad.append(Rejected(None, line, raw, str(exc)))
    return rows, bad


def record_outcomes(settings: Settings, url: str, rows: list[OutcomeRow]) -> tuple[int, list[Rejected]]:
    """Record many visit outcomes in one transaction; rows whose meter is not on their run's list are rejected.

    Returns the number recorded and the rejected rows (with the reason). Accepted rows are
    recorded even when others are rejected.
    """
    if not rows:
        return 0, []
    with connect(url, role=editor_role(settings)) as conn, conn.transaction():
        runs = sorted({r.run for r in rows})
        listed = {
            (int(a), b)
            for a, b in conn.execute("SELECT run_id, serial FROM theft_candidate WHERE run_id = ANY(%s)", (runs,))
        }
        known_runs = {int(r[0]) for r in conn.execute("SELECT id FROM theft_run WHERE id = ANY(%s)", (runs,))}
        ok: list[OutcomeRow] = []
        bad: list[Rejected] = []
        for r in rows:
            if r.run not in known_runs:
                bad.append(Rejected(r, r.line, [], f"no theft run {r.run}"))
            elif (r.run, r.serial) not in listed:
                bad.append(Rejected(r, r.line, [], f"meter {r.serial} is not on the list of run {r.run}"))
            else:
                ok.append(r)
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO theft_inspection (run_id, serial, campaign, result, note, visited_at)
                   VALUES (%s, %s, %s, %s, %s, coalesce(%s, now()))""",
                [(r.run, r.serial, r.campaign, r.result, r.note, r.visited_at) for r in ok],
            )
    return len(ok), bad


def write_rejected(path: Path, bad: list[Rejected]) -> None:
    """The rejected rows as CSV ``line,meter,run,result,campaign,reason`` (kept for inspection)."""
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["line", "meter", "run", "result", "campaign", "reason"])
        for b in bad:
            if b.row is not None:
                w.writerow([b.line, b.row.serial, b.row.run, b.row.result, b.row.campaign, b.reason])
            else:
                w.writerow([b.line, "|".join(b.raw), "", "", "", b.reason])


@dataclass
class Labels:
    """Training labels from inspections: model inputs at listing time and fraud (1) or not (0)."""

    serials: list[str]
    x: FloatArray
    y: np.ndarray


def training_labels(conn: psycopg.Connection) -> Labels:
    """The latest conclusive outcome per meter (``no_access`` teaches nothing) with its stored inputs."""
    rows = conn.execute(
        """SELECT DISTINCT ON (i.serial) i.serial, i.result, c.inputs
           FROM theft_inspection i JOIN theft_candidate c ON c.run_id = i.run_id AND c.serial = i.serial
           WHERE i.result <> 'no_access'
           ORDER BY i.serial, i.visited_at DESC, i.id DESC"""
    ).fetchall()
    x = np.array([[float(r[2].get(n, 0.0)) for n in INPUT_NAMES] for r in rows]).reshape(len(rows), len(INPUT_NAMES))
    y = np.array([1 if r[1] == "fraud" else 0 for r in rows], dtype=int)
    return Labels([r[0] for r in rows], x, y)


def inspected(conn: psycopg.Connection) -> set[str]:
    """Meters with a conclusive inspection outcome (left off the next list unless asked)."""
    return {r[0] for r in conn.execute("SELECT DISTINCT serial FROM theft_inspection WHERE result <> 'no_access'")}


def campaign_report(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Per campaign: visits, outcomes, hit rate, unbilled energy per fraud found, the models that ranked.

    The hit rate is fraud / visits with access; the energy is per unit (kWh and m³ are never added
    together); ``ranked_by`` names the models of the runs whose lists were visited.
    """
    rows = conn.execute(
        """SELECT i.campaign, i.result, c.commodity, coalesce(c.evidence->'daily'->>'unit', ''), count(*),
                  sum(c.unbilled_energy), min(i.visited_at), max(i.visited_at),
                  array_agg(DISTINCT r.model ORDER BY r.model)
           FROM theft_inspection i JOIN theft_candidate c ON c.run_id = i.run_id AND c.serial = i.serial
           JOIN theft_run r ON r.id = i.run_id
           GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"""
    ).fetchall()
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {r: 0 for r in RESULTS} | {"energy_fraud": defaultdict(float), "models": set()}
    )
    for campaign, result, commodity, unit, n, energy, first, last, models in rows:
        rec = out[campaign]
        rec[result] += int(n)
        rec["first"] = min(rec.get("first", first), first)
        rec["last"] = max(rec.get("last", last), last)
        rec["models"].update(models)
        if result == "fraud":
            symbol = {"m3": "m³"}.get(unit, unit) or ("m³" if commodity == "water" else "kWh")
            rec["energy_fraud"][symbol] += float(energy or 0.0)
    report = []
    for campaign, rec in sorted(out.items()):
        visits = sum(rec[r] for r in RESULTS)
        access = visits - rec["no_access"]
        report.append(
            {
                "campaign": campaign or "(none)",
                "visits": visits,
                **{r: rec[r] for r in RESULTS},
                "hit_rate": rec["fraud"] / access if access else None,
                "energy_per_fraud": {u: e / rec["fraud"] for u, e in sorted(rec["energy_fraud"].items())}
                if rec["fraud"]
                else None,
                "ranked_by": sorted(rec["models"]),
            }
        )
    return report


@dataclass
class DatabaseRanking:
    """A ranking of the database's fleet, and the run it was stored as (None when not stored)."""

    candidates: list[Candidate]
    run_id: int | None
    model: str
    data: TheftData
    excluded: int
    labels: int
    note: str = ""
    #: Seconds: refresh, load, score (with the hourly reads while it runs), store.
    timings: dict[str, float] = field(default_factory=dict)
    #: The currency of the expected values (the bills'; empty before the first bill run).
    currency: str = ""


def rank_database(
    settings: Settings,
    url: str,
    *,
    start: date | None = None,
    end: date | None = None,
    days: int = DEFAULT_DAYS,
    keep: int = DEFAULT_KEEP,
    order: str = DEFAULT_ORDER,
    filters: dict[str, Any] | None = None,
    tariff: dict[str, float] | None = None,
    include_inspected: bool = False,
    store: bool = True,
    origin: str = "database",
    progress: Progress | None = None,
) -> DatabaseRanking:
    """Rank the fleet in the database (with the outcomes recorded so far as labels) and store the run.

    ``progress``: see :data:`analytics.theft.features.Progress`.
    """
    from analytics.theft.ranking import score

    filters = filters or {}
    # scikit-learn (the isolation forest runs at every ranking) takes about 1.3 s to import: it is
    # imported beside the refresh and the database read, which mostly wait for the server.
    warm = threading.Thread(target=importlib.import_module, args=("sklearn.ensemble",), daemon=True)
    warm.start()
    t0 = time.perf_counter()
    refresh_daily(url, role=editor_role(settings))  # the daily aggregate must cover what landed
    refresh_hourly(url, role=editor_role(settings))  # and the hourly series (interval channels)
    t1 = time.perf_counter()
    # One snapshot for the whole read: hourly series come area by area while the ranking runs.
    with connect(url, role=reader_role(settings)) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        data = load_from_database(conn, start, end, days)
        labels = training_labels(conn)
        exclude = set() if include_inspected else inspected(conn)
        currency = bill_currency(conn)
        t2 = time.perf_counter()
        warm.join()
        ranking = score(
            data,
            training=(labels.x, labels.y) if len(labels.y) else None,
            tariff=tariff or {},
            exclude=exclude,
            progress=progress,
        )
        model = ranking.model_name
        cands = ranking.candidates(keep, by=order, **filters)
    t3 = time.perf_counter()
    run_id = None
    if store:
        params = {
            "order": order,
            "filters": filters,
            "tariff": tariff or {},
            "keep": keep,
            "excluded": len(exclude),
            "labels": len(labels.y),
            "model_note": ranking.model_note(),
            "currency": currency,
        }
        run_id = save_run(
            settings,
            url,
            cands,
            origin,
            params,
            data,
            n_labels=ranking.model.n_labels if ranking.model else 0,
            model=model,
        )
    timings = {"refresh": t1 - t0, "load": t2 - t1, "score": t3 - t2, "store": time.perf_counter() - t3}
    return DatabaseRanking(
        cands, run_id, model, data, len(exclude), len(labels.y), ranking.model_note(), timings, currency
    )
