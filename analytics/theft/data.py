"""The columnar input of theft ranking, and the documented CSV importers.

:class:`TheftData` holds meters × days arrays plus the registry facts the signals need. It is
built from the database (:mod:`analytics.theft.store`), from the simulator
(``bench/simdata.py``, for bench and tests) or from CSV files:

- **long** interval consumption: ``meter,timestamp,value`` (header required; extra columns are
  ignored; ISO 8601 timestamps, UTC unless they carry an offset). Values are summed per day and,
  when there is more than one value a day, per hour (for the profile signals).
- **wide** daily consumption, the SGCC theft data set layout: ``CONS_NO,FLAG,<one column per
  day>``; day headers ``YYYY-MM-DD`` or ``YYYY/M/D``; empty cells are missing days. ``FLAG`` (1
  theft, 0 normal) is kept as ``flags`` for evaluation only; ranking never reads it.
- **areas** (optional): ``meter,area[,customer_class,commodity,latitude,longitude,import_only]``.
- **feeders** (optional): ``area,date,value[,technical_loss_pct]``: the feeder / bulk meter's
  daily total per area, for the energy balance.
- **events** (optional): ``meter,timestamp,kind[,code]`` with ``kind`` a ``releve.model.EventKind``
  value (``terminal_cover_open``, ``magnetic_field``, ``reverse_energy``, ``reverse_flow``…).

Errors name the file and line (:class:`TheftImportError`, a ``ValueError``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from releve.arrays import BoolArray, FloatArray, IntArray

#: Meters per group when hourly series are read a group at a time (:meth:`TheftData.hourly_chunks`):
#: a group's hourly arrays and the interval balance's regressors stay within a few hundred MB.
HOURLY_CHUNK_METERS = 400


class TheftImportError(ValueError):
    """A CSV file the importer cannot read; the message names the file and line."""


class LazyHourly:
    """Meters × days × 24 hourly consumption read on demand, a group of meters at a time.

    A fleet of 100,000 meters × 365 days × 24 hours is 7 GB as one array: from the database the
    hourly series are never held whole. ``load(rows)`` returns the hourly array of those meter
    rows (len(rows) × days × 24, NaN for hours of incomplete days); the features read the fleet
    area by area (:meth:`TheftData.hourly_chunks`), the explanations the rows of their candidates
    (``hourly[i, days]``).
    """

    def __init__(self, load: Callable[[IntArray], FloatArray], n_meters: int, n_days: int) -> None:
        self.load = load
        self.shape = (n_meters, n_days, 24)
        self.ndim = 3
        self._cache: dict[int, FloatArray] = {}

    def __getitem__(self, key: Any) -> FloatArray:
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if not isinstance(first, int | np.integer):
            raise TypeError("LazyHourly: index one meter row at a time (use load() for many)")
        i = int(first)
        if i not in self._cache:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[i] = self.load(np.array([i], dtype=np.int64))[0]
        return np.asarray(self._cache[i][rest] if rest else self._cache[i])


@dataclass
class Event:
    """One meter event on the day grid."""

    meter: int
    day: int
    ts: datetime
    kind: str
    code: int | None = None


@dataclass
class TheftData:
    """Meters × days of recorded consumption with what the signals need beside it.

    ``daily`` is recorded consumption per day (NaN: no data); ``cumulative`` says it comes from
    register advances, so a value after silent days may hold their catch-up. ``export`` is the
    export / reverse register's daily advance, ``hourly`` meters × days × 24 when interval data
    exists (from the database a :class:`LazyHourly`, read area by area). ``feeders`` maps an area
    to its feeder / bulk meter's daily total, ``feeders_hourly`` to its hourly totals (days × 24)
    when the feeder has interval data.
    """

    serials: list[str]
    first_day: date
    daily: FloatArray
    commodity: np.ndarray
    customer_class: np.ndarray
    area: np.ndarray
    latitude: FloatArray
    longitude: FloatArray
    import_only: BoolArray
    wrap: FloatArray
    cumulative: bool = False
    export: FloatArray | None = None
    hourly: FloatArray | LazyHourly | None = None
    events: list[Event] = field(default_factory=list)
    feeders: dict[str, FloatArray] = field(default_factory=dict)
    feeders_hourly: dict[str, FloatArray] = field(default_factory=dict)
    technical_loss_pct: dict[str, float] = field(default_factory=dict)
    vee_exceptions: np.ndarray | None = None
    estimate_streak: np.ndarray | None = None
    unit: np.ndarray | None = None
    flags: np.ndarray | None = None
    meter_ids: list[int | None] | None = None
    #: Meters × days: the day's half-hour (finest interval) texture, :func:`interval_texture`
    #: (NaN: incomplete day, or no interval data). Summing intervals into hours averages it away.
    #: Beside a :class:`LazyHourly` from the database it is filled as the hours are read, a group at
    #: a time from the same rows: whole once :meth:`hourly_chunks` has gone through the fleet.
    texture: FloatArray | None = None

    @property
    def n_meters(self) -> int:
        """Number of meters."""
        return len(self.serials)

    @property
    def n_days(self) -> int:
        """Number of days."""
        return int(self.daily.shape[1])

    def day(self, index: int) -> date:
        """The calendar day of column ``index``."""
        return self.first_day + timedelta(days=int(index))

    def hourly_chunks(self, max_meters: int | None = None) -> Iterator[tuple[IntArray, FloatArray]]:
        """(meter rows, their hourly array) in groups of whole areas; nothing without hourly data.

        A fleet of up to ``max_meters`` in memory comes whole, as one group; larger ones and a
        :class:`LazyHourly` in groups of about ``max_meters`` (an area is never split: the interval
        balance works area by area). Every hourly signal is per meter or per area, so the groups
        give the figures the whole fleet at once would, holding one group's arrays at a time.
        """
        hourly = self.hourly
        if hourly is None:
            return
        max_meters = max_meters or HOURLY_CHUNK_METERS
        if self.n_meters <= max_meters and not isinstance(hourly, LazyHourly):
            yield np.arange(self.n_meters, dtype=np.int64), hourly
            return
        load = hourly.load if isinstance(hourly, LazyHourly) else hourly.__getitem__
        codes = np.unique(self.area.astype(str), return_inverse=True)[1].reshape(-1)
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        group: list[IntArray] = []
        size = 0
        for rows in np.split(order, bounds):
            # Meters without an area are independent of each other: split them like any rows.
            parts = [rows] if self.area[rows[0]] else np.array_split(rows, -(-rows.size // max_meters))
            for part in parts:
                if group and size + part.size > max_meters:
                    chunk = np.sort(np.concatenate(group))
                    yield chunk, load(chunk)
                    group, size = [], 0
                group.append(part)
                size += part.size
        if group:
            chunk = np.sort(np.concatenate(group))
            yield chunk, load(chunk)

    def weekdays(self) -> np.ndarray:
        """Weekday (0 Monday … 6 Sunday) of each column."""
        return (self.first_day.weekday() + np.arange(self.n_days)) % 7

    @classmethod
    def blank(cls, serials: list[str], first_day: date, daily: FloatArray) -> TheftData:
        """Data with defaults for everything but the consumption (unknown class, area, position)."""
        m = len(serials)
        return cls(
            serials=list(serials),
            first_day=first_day,
            daily=daily,
            commodity=np.full(m, "electricity", dtype=object),
            customer_class=np.full(m, "unknown", dtype=object),
            area=np.full(m, "", dtype=object),
            latitude=np.full(m, np.nan),
            longitude=np.full(m, np.nan),
            import_only=np.ones(m, dtype=bool),
            wrap=np.full(m, np.inf),
        )


#: kWh added to every interval before the log in :func:`interval_texture`: a fridge's few watts,
#: so that steps between near-zero intervals do not count as large ratios.
TEXTURE_FLOOR = 0.01


def interval_texture(intervals: FloatArray, floor: float = TEXTURE_FLOOR) -> FloatArray:
    """Meters × days: the day's median |log step| between consecutive intervals.

    ``intervals`` is meters × days × intervals a day at the finest resolution the data has (48
    half-hours), each step ``|log((xₜ + floor) / (xₜ₋₁ + floor))|``. Real household load moves in
    steps that last several intervals (a kettle, an oven, heating): most consecutive intervals are
    close and the median step is small. A register scaled at random per interval jumps at every
    one. The median ignores a household's few real switch-ons; the log makes it independent of
    the day's level. NaN for days with a missing interval. Summed into hours this is averaged away.
    """
    x = np.asarray(intervals, dtype=float)
    ok = np.isfinite(x).all(axis=2)
    with np.errstate(invalid="ignore"):
        step = np.abs(np.diff(np.log(np.maximum(x, 0.0) + floor), axis=2))
        out = np.median(step, axis=2) if step.shape[2] else np.full(ok.shape, np.nan)
    return np.where(ok & np.isfinite(out), out, np.nan)


def register_advance(last: FloatArray, initial: FloatArray | None = None, rows: int = 8_192) -> FloatArray:
    """Daily advance of a register from its last read per day (meters × days, NaN: no read).

    A day without a read stays NaN and the next read's advance covers the whole gap (the catch-up
    that :func:`analytics.theft.signals.clean_daily` spreads back). The first day is measured from
    ``initial`` (NaN when unknown). The reads of a block of ``rows`` meters, in row order, are one
    flat array: each read's advance is its difference from the read before it, or from ``initial``
    at a meter's first read. The temporaries are one block's, not the fleet's.
    """
    m, d = last.shape
    init = np.full(m, np.nan) if initial is None else np.asarray(initial, dtype=float)
    out = np.empty((m, d))
    for a in range(0, m, rows):
        part = last[a : a + rows]
        ok = np.isfinite(part)
        value = part[ok]
        prev = np.empty_like(value)
        prev[1:] = value[:-1]
        count = ok.sum(axis=1)
        has = count > 0
        prev[(np.cumsum(count) - count)[has]] = init[a : a + rows][has]
        block = out[a : a + rows]
        block.fill(np.nan)
        block[ok] = value - prev
    return out


@dataclass
class FileOptions:
    """How a utility's files are laid out.

    ``columns`` maps the documented column names (``meter``, ``timestamp``, ``value``, ``flag``,
    ``area``, ``date``…) to the file's own (``{"meter": "LCLid", "timestamp": "tstp"}``);
    ``stamps`` says whether an interval's time stamp is its ``start`` (default) or its ``end``
    (an end-stamped 00:00 value belongs to the day before); ``tz`` is the zone whose days and
    hours the data is summed into, and in which naive time stamps are read (default UTC).
    """

    columns: dict[str, str] = field(default_factory=dict)
    stamps: str = "start"
    tz: tzinfo | None = None

    @classmethod
    def parse(cls, columns: str | None = None, stamps: str = "start", tz: str | None = None) -> FileOptions:
        """From the command line: ``meter=LCLid,timestamp=tstp``, ``start|end``, an IANA zone name."""
        mapping: dict[str, str] = {}
        for part in (columns or "").split(","):
            if not part.strip():
                continue
            name, sep, theirs = part.partition("=")
            if not sep or not name.strip() or not theirs.strip():
                raise TheftImportError(f"--columns: {part!r} is not NAME=COLUMN (e.g. meter=LCLid)")
            mapping[name.strip()] = theirs.strip()
        if stamps not in ("start", "end"):
            raise TheftImportError(f"--stamps must be start or end, not {stamps!r}")
        zone: tzinfo | None = None
        if tz:
            try:
                zone = ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise TheftImportError(f"--tz: unknown time zone {tz!r}") from exc
        return cls(mapping, stamps, zone)

    def local(self, text: str) -> datetime:
        """A time stamp as the local instant its interval falls in (end stamps moved back one second)."""
        ts = parse_ts(text, self.tz)
        if self.stamps == "end":
            ts = ts - timedelta(seconds=1)
        return ts.astimezone(self.tz or UTC)


DEFAULT_OPTIONS = FileOptions()


def parse_ts(text: str, tz: tzinfo | None = None) -> datetime:
    """An ISO 8601 instant; naive means UTC, or local time in ``tz`` when given."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    ts = datetime.fromisoformat(text)
    return ts.replace(tzinfo=tz or UTC).astimezone(UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def parse_day(text: str) -> date:
    """A day header or cell: ``YYYY-MM-DD``, ``YYYY/M/D`` or an ISO instant (its UTC date)."""
    text = text.strip()
    for sep in ("-", "/"):
        parts = text.split(sep)
        if len(parts) == 3 and all(p.strip().isdigit() for p in parts):
            return date(int(parts[0]), int(parts[1]), int(parts[2]))
    return parse_ts(text).date()


def _reader(
    path: Path, required: tuple[str, ...], columns: dict[str, str] | None = None
) -> tuple[list[str], Iterator[list[str]]]:
    """The header and an iterator over the remaining rows (the file closes when they run out).

    ``columns`` maps documented names to the file's own: the header comes back in documented names.
    """
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise TheftImportError(f"{path}: {exc.strerror or exc}") from exc
    reader = csv.reader(fh)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration as exc:
        fh.close()
        raise TheftImportError(f"{path}: empty file") from exc
    theirs = {v: k for k, v in (columns or {}).items()}
    header = [theirs.get(h, h) for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        fh.close()
        hint = " (map yours with --columns NAME=COLUMN)" if columns is not None else ""
        raise TheftImportError(f"{path}:1: missing column(s) {', '.join(missing)} (header: {','.join(header)}){hint}")

    def rows() -> Iterator[list[str]]:
        with fh:
            yield from reader

    return header, rows()


def read_long(path: Path, options: FileOptions = DEFAULT_OPTIONS) -> TheftData:
    """Interval (or daily) consumption in long format ``meter,timestamp,value``.

    Days and hours are those of ``options.tz`` (UTC by default); an end-stamped interval counts in
    the hour (and day) it covers.
    """
    path = Path(path)
    header, reader = _reader(path, ("meter", "timestamp", "value"), options.columns)
    im, it, iv = header.index("meter"), header.index("timestamp"), header.index("value")
    meters: dict[str, int] = {}
    rows_m: list[int] = []
    rows_day: list[int] = []
    rows_hour: list[int] = []
    rows_ts: list[float] = []
    rows_v: list[float] = []
    for line, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            ts = options.local(row[it])
            value = float(row[iv]) if row[iv].strip() else float("nan")
        except (ValueError, IndexError) as exc:
            raise TheftImportError(f"{path}:{line}: {exc}") from exc
        serial = row[im].strip()
        if not serial:
            raise TheftImportError(f"{path}:{line}: empty meter")
        rows_m.append(meters.setdefault(serial, len(meters)))
        rows_day.append(ts.date().toordinal())
        rows_hour.append(ts.hour)
        rows_ts.append(ts.timestamp())
        rows_v.append(value)
    if not rows_m:
        raise TheftImportError(f"{path}: no rows")
    mi = np.array(rows_m)
    dd = np.array(rows_day)
    hh = np.array(rows_hour)
    vv = np.array(rows_v)
    first = int(dd.min())
    n_days = int(dd.max()) - first + 1
    di = dd - first
    ok = np.isfinite(vv)
    daily = np.zeros((len(meters), n_days))
    np.add.at(daily, (mi[ok], di[ok]), vv[ok])
    seen = np.zeros((len(meters), n_days), dtype=bool)
    seen[mi[ok], di[ok]] = True
    daily[~seen] = np.nan
    per_day = np.zeros((len(meters), n_days), dtype=np.int64)
    np.add.at(per_day, (mi, di), 1)
    data = TheftData.blank(list(meters), date.fromordinal(first), daily)
    if per_day.max() > 1:
        hourly = np.zeros((len(meters), n_days, 24))
        np.add.at(hourly, (mi[ok], di[ok], hh[ok]), vv[ok])
        hourly[~seen] = np.nan
        data.hourly = hourly
        data.texture = _long_texture(mi, di, np.array(rows_ts), vv, per_day)
    return data


def _long_texture(mi: IntArray, di: IntArray, ts: FloatArray, vv: FloatArray, per_day: IntArray) -> FloatArray:
    """:func:`interval_texture` of long rows: consecutive intervals of the same meter and day.

    A day counts when it holds its meter's most common number of intervals a day (no gap) and
    every value is present.
    """
    m, d = per_day.shape
    order = np.lexsort((ts, di, mi))
    mi, di, vv = mi[order], di[order], vv[order]
    same = (mi[1:] == mi[:-1]) & (di[1:] == di[:-1])
    with np.errstate(invalid="ignore"):
        step = np.abs(np.diff(np.log(np.maximum(vv, 0.0) + TEXTURE_FLOOR)))[same]
    group = (mi[1:] * d + di[1:])[same]
    bad = np.zeros(m * d, dtype=bool)
    bad[(mi * d + di)[~np.isfinite(vv)]] = True
    out = np.full(m * d, np.nan)
    if group.size:
        o = np.lexsort((step, group))
        group, step = group[o], step[o]
        keys, start, count = np.unique(group, return_index=True, return_counts=True)
        out[keys] = 0.5 * (step[start + (count - 1) // 2] + step[start + count // 2])
    usual = np.array([np.bincount(r[r > 0]).argmax() if (r > 0).any() else 0 for r in per_day])
    full = (per_day == usual[:, None]) & (per_day > 1) & ~bad.reshape(m, d)
    return np.where(full, out.reshape(m, d), np.nan)


def read_wide(path: Path, options: FileOptions = DEFAULT_OPTIONS) -> TheftData:
    """Daily consumption in the SGCC wide layout ``CONS_NO,FLAG,<day>,<day>,…``.

    With ``--columns meter=…,flag=…`` the meter and flag columns may have other names.
    """
    path = Path(path)
    columns = dict(options.columns)
    columns.setdefault("CONS_NO", columns.pop("meter", "CONS_NO"))
    columns.setdefault("FLAG", columns.pop("flag", "FLAG"))
    header, reader = _reader(path, ("CONS_NO",), columns)
    id_col = header.index("CONS_NO")
    flag_col = header.index("FLAG") if "FLAG" in header else -1
    day_cols = [i for i in range(len(header)) if i not in (id_col, flag_col)]
    try:
        days = [parse_day(header[i]) for i in day_cols]
    except ValueError as exc:
        raise TheftImportError(f"{path}:1: a day column is not a date: {exc}") from exc
    if not days:
        raise TheftImportError(f"{path}:1: no day columns")
    first = min(days)
    n_days = (max(days) - first).days + 1
    col_day = np.array([(d - first).days for d in days])
    serials: list[str] = []
    flags: list[int] = []
    values: list[np.ndarray] = []
    for line, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        try:
            vals = np.array([float(row[i]) if row[i].strip() else np.nan for i in day_cols])
            flag = int(float(row[flag_col])) if flag_col >= 0 and row[flag_col].strip() else 0
        except ValueError as exc:
            raise TheftImportError(f"{path}:{line}: {exc}") from exc
        serials.append(row[id_col].strip())
        flags.append(flag)
        values.append(vals)
    if not serials:
        raise TheftImportError(f"{path}: no rows")
    daily = np.full((len(serials), n_days), np.nan)
    daily[:, col_day] = np.vstack(values)
    data = TheftData.blank(serials, first, daily)
    if flag_col >= 0:
        data.flags = np.array(flags)
    return data


def read_areas(data: TheftData, path: Path, options: FileOptions = DEFAULT_OPTIONS) -> None:
    """Attach areas (and class, commodity, coordinates, import-only) from ``meter,area,…``."""
    path = Path(path)
    header, reader = _reader(path, ("meter", "area"), options.columns)
    index = {s: i for i, s in enumerate(data.serials)}
    col = {h: header.index(h) for h in header}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        i = index.get(row[col["meter"]].strip())
        if i is None:
            continue
        try:
            data.area[i] = row[col["area"]].strip()
            if "customer_class" in col and row[col["customer_class"]].strip():
                data.customer_class[i] = row[col["customer_class"]].strip()
            if "commodity" in col and row[col["commodity"]].strip():
                data.commodity[i] = row[col["commodity"]].strip()
            if "latitude" in col and row[col["latitude"]].strip():
                data.latitude[i] = float(row[col["latitude"]])
            if "longitude" in col and row[col["longitude"]].strip():
                data.longitude[i] = float(row[col["longitude"]])
            if "import_only" in col and row[col["import_only"]].strip():
                data.import_only[i] = row[col["import_only"]].strip().lower() in ("1", "true", "yes", "t")
        except (ValueError, IndexError) as exc:
            raise TheftImportError(f"{path}:{line}: {exc}") from exc


def read_feeders(data: TheftData, path: Path, options: FileOptions = DEFAULT_OPTIONS) -> None:
    """Attach feeder / bulk totals from ``area,date,value[,technical_loss_pct]`` at any resolution.

    ``date`` (or ``timestamp``) is a day or an instant. Values are summed per day (the daily
    balance) and, where an area's day has a value in every hour (hourly or finer data), per hour:
    the interval balance (:func:`analytics.theft.signals.interval_balance`). Coarser than hourly
    (4-hourly, daily) gives the daily balance only.
    """
    path = Path(path)
    columns = dict(options.columns)
    header, reader = _reader(path, ("area", "value"), columns)
    if "date" not in header and "timestamp" not in header:
        raise TheftImportError(f"{path}:1: missing column(s) date (or timestamp) (header: {','.join(header)})")
    ia, iv = header.index("area"), header.index("value")
    idt = header.index("date") if "date" in header else header.index("timestamp")
    it = header.index("technical_loss_pct") if "technical_loss_pct" in header else -1
    hourly: dict[str, FloatArray] = {}
    counts: dict[str, np.ndarray] = {}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            text = row[idt].strip()
            value = float(row[iv])
            if len(text) <= 10 and "T" not in text and " " not in text:
                day, hour = (parse_day(text) - data.first_day).days, -1
            else:
                ts = options.local(text)
                day, hour = (ts.date() - data.first_day).days, ts.hour
        except (ValueError, IndexError) as exc:
            raise TheftImportError(f"{path}:{line}: {exc}") from exc
        area = row[ia].strip()
        series = data.feeders.setdefault(area, np.full(data.n_days, np.nan))
        if 0 <= day < data.n_days:
            series[day] = value if np.isnan(series[day]) else series[day] + value
            if hour >= 0:
                h = hourly.setdefault(area, np.zeros((data.n_days, 24)))
                c = counts.setdefault(area, np.zeros((data.n_days, 24), dtype=np.int64))
                h[day, hour] += value
                c[day, hour] += 1
        if it >= 0 and row[it].strip():
            data.technical_loss_pct[area] = float(row[it])
    for area, h in hourly.items():
        full = np.asarray((counts[area] > 0).all(axis=1), dtype=bool)
        if full.sum() >= 7:
            data.feeders_hourly[area] = np.where(full[:, None], h, np.nan)


def read_events(data: TheftData, path: Path, options: FileOptions = DEFAULT_OPTIONS) -> None:
    """Attach meter events from ``meter,timestamp,kind[,code]``."""
    path = Path(path)
    header, reader = _reader(path, ("meter", "timestamp", "kind"), options.columns)
    im, it, ik = header.index("meter"), header.index("timestamp"), header.index("kind")
    ic = header.index("code") if "code" in header else -1
    index = {s: i for i, s in enumerate(data.serials)}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        i = index.get(row[im].strip())
        if i is None:
            continue
        try:
            ts = parse_ts(row[it], options.tz)
            code = int(row[ic]) if ic >= 0 and row[ic].strip() else None
        except (ValueError, IndexError) as exc:
            raise TheftImportError(f"{path}:{line}: {exc}") from exc
        local_day = ts.astimezone(options.tz or UTC).date()
        data.events.append(Event(i, (local_day - data.first_day).days, ts, row[ik].strip(), code))


def load_files(
    path: Path,
    fmt: str,
    areas: Path | None = None,
    feeders: Path | None = None,
    events: Path | None = None,
    options: FileOptions = DEFAULT_OPTIONS,
) -> TheftData:
    """Read a consumption file (``long`` or ``wide``) and the optional side files."""
    if fmt == "long":
        data = read_long(path, options)
    elif fmt == "wide":
        data = read_wide(path, options)
    else:
        raise TheftImportError(f"unknown format {fmt!r} (long or wide)")
    if areas is not None:
        read_areas(data, areas, options)
    if feeders is not None:
        read_feeders(data, feeders, options)
    if events is not None:
        read_events(data, events, options)
    return data
