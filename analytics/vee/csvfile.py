"""File mode: validate register reads from a CSV file, write exceptions and suggestions as CSV.

Input (header line required, columns in any order, extra columns ignored)::

    meter,read_at,index,read_type[,unit,register_digits]

- ``meter``: the meter's serial (one series per meter);
- ``read_at``: ISO 8601 (``2024-04-02T13:00``, with or without offset) or ``dd/mm/yyyy HH:MM``;
  times without an offset are local to ``--tz`` (default UTC);
- ``index``: the register value (a number; ``,`` accepted as the decimal separator);
- ``read_type``: ``actual`` (or ``normal``), ``customer`` (or ``customer read``), ``estimate``
  (or ``system estimate``), ``move_out``, ``move_in``;
- ``unit`` (optional): ``m3``/``L`` (water) or ``kWh``/``Wh`` (electricity); default ``m3``;
- ``register_digits`` (optional): digits on the register display (it rolls over at 10^digits).

A bad line is reported as ``file:line: problem`` and skipped; the good lines are still validated.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

import numpy as np

from analytics.vee import records
from analytics.vee.params import Severity, params_for
from analytics.vee.registers import Finding, RegisterSeries, fmt, validate_registers

READ_TYPES = {
    "actual": "actual",
    "normal": "actual",
    "customer": "customer",
    "customer read": "customer",
    "estimate": "estimate",
    "system estimate": "estimate",
    "move_out": "move_out",
    "move-out": "move_out",
    "move_in": "move_in",
    "move-in": "move_in",
}
#: read_type → the register rules' code (0 actual, 1 customer read, 2 the utility's estimate).
READ_CODES = {"actual": 0, "customer": 1, "estimate": 2, "move_out": 0, "move_in": 0}
WATER_UNITS = {"m3", "l"}
REQUIRED = ("meter", "read_at", "index", "read_type")
OUT_COLUMNS = (
    "meter",
    "read_at",
    "index",
    "read_type",
    "rule",
    "severity",
    "usage",
    "usage_lo",
    "usage_hi",
    "read_lo",
    "read_hi",
    "suggestions",
    "message",
)


class CsvFormatError(Exception):
    """The file cannot be read at all (no header, missing columns)."""


@dataclass(frozen=True, slots=True)
class CsvRead:
    """One good line of the input."""

    line: int
    meter: str
    read_at: datetime
    index: float
    read_type: str
    unit: str
    digits: int | None


@dataclass(frozen=True, slots=True)
class CsvException:
    """One finding, tied back to its input line."""

    read: CsvRead
    finding: Finding


def parse_time(text: str, tz: ZoneInfo) -> datetime:
    """ISO 8601 or dd/mm/yyyy [HH:MM[:SS]]; naive times are local to ``tz``."""
    text = text.strip()
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        for pattern in ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y"):
            try:
                ts = datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"read_at {text!r} is neither ISO 8601 nor dd/mm/yyyy HH:MM") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=tz)
    return ts.astimezone(UTC)


def read_csv(stream: TextIO, name: str, tz: ZoneInfo) -> tuple[list[CsvRead], list[str]]:
    """Good reads and ``name:line: problem`` messages for the bad lines."""
    reader = csv.reader(stream)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise CsvFormatError(f"{name}: empty file (expected a header: meter,read_at,index,read_type)") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise CsvFormatError(f"{name}:1: header lacks column(s) {', '.join(missing)} (have {', '.join(header)})")
    col = {h: i for i, h in enumerate(header)}
    reads: list[CsvRead] = []
    errors: list[str] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        try:
            reads.append(_parse_row(row, col, line, tz))
        except ValueError as exc:
            errors.append(f"{name}:{line}: {exc}")
    return reads, errors


def _parse_row(row: list[str], col: dict[str, int], line: int, tz: ZoneInfo) -> CsvRead:
    if len(row) < len(REQUIRED) or len(row) <= max(col[c] for c in REQUIRED):
        raise ValueError(f"{len(row)} field(s), expected at least {max(col[c] for c in REQUIRED) + 1}")

    def get(name: str) -> str:
        i = col.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    meter = get("meter")
    if not meter:
        raise ValueError("meter is empty")
    read_at = parse_time(get("read_at"), tz)
    raw = get("index").replace(" ", "")
    try:
        index = float(raw.replace(",", ".")) if raw.count(",") == 1 and "." not in raw else float(raw)
    except ValueError:
        raise ValueError(f"index {raw!r} is not a number") from None
    if not math.isfinite(index) or index < 0:
        raise ValueError(f"index {raw!r} must be a finite number ≥ 0")
    rt = READ_TYPES.get(get("read_type").lower())
    if rt is None:
        raise ValueError(f"read_type {get('read_type')!r} unknown (expected one of {', '.join(sorted(READ_TYPES))})")
    unit = get("unit") or "m3"
    digits_text = get("register_digits")
    digits = None
    if digits_text:
        if not digits_text.isdigit() or not 1 <= int(digits_text) <= 12:
            raise ValueError(f"register_digits {digits_text!r} must be a whole number 1–12")
        digits = int(digits_text)
    return CsvRead(line, meter, read_at, index, rt, unit, digits)


def check_reads(reads: Iterable[CsvRead]) -> list[CsvException]:
    """Validate the reads (one series per meter) and return the findings with their lines."""
    ordered = sorted(reads, key=lambda r: (r.meter, r.read_at, r.line))
    if not ordered:
        return []
    meters = sorted({r.meter for r in ordered})
    sid = {m: i for i, m in enumerate(meters)}
    classes: list[str] = []
    class_of: dict[str, int] = {}
    param_class = np.zeros(len(meters), np.int64)
    modulus = np.full(len(meters), np.inf)
    for r in ordered:
        commodity = "water" if r.unit.lower() in WATER_UNITS else "electricity"
        param_class[sid[r.meter]] = class_of.setdefault(commodity, len(class_of))
        if commodity not in classes:
            classes.append(commodity)
        if r.digits:
            modulus[sid[r.meter]] = 10.0**r.digits
    params = [params_for(c, "manual") for c in classes]
    batch = RegisterSeries(
        series=np.array([sid[r.meter] for r in ordered], np.int64),
        t=np.array([r.read_at.timestamp() for r in ordered]),
        value=np.array([r.index for r in ordered]),
        modulus=modulus,
        param_class=param_class,
        params=params,
    )
    batch.read_type = np.array([READ_CODES.get(r.read_type, 0) for r in ordered], np.int8)
    result = validate_registers(batch)
    out = [CsvException(ordered[f.row], f) for f in result.findings]
    out.extend(check_move_in(ordered, params_for("water").move_tolerance))
    out.sort(key=lambda e: (e.read.meter, e.read.read_at, e.finding.rule))
    return out


def check_move_in(ordered: list[CsvRead], tolerance: float) -> list[CsvException]:
    """The MOVE_IN rule (:func:`analytics.vee.records.check_move_in`) on reads sorted by meter and time."""
    found = records.check_move_in(
        [r.meter for r in ordered], [r.read_type for r in ordered], [r.index for r in ordered], tolerance
    )
    return [CsvException(ordered[f.row], f) for f in found]


def write_exceptions(exceptions: list[CsvException], stream: TextIO, include_info: bool = True) -> int:
    """Write the exceptions CSV; return the number of rows written."""
    w = csv.writer(stream, lineterminator="\n")
    w.writerow(OUT_COLUMNS)
    n = 0
    for e in exceptions:
        f = e.finding
        if not include_info and f.severity == Severity.INFO:
            continue
        band = f.band or ("", "")
        read_band = f.read_band or ("", "")
        w.writerow(
            [
                e.read.meter,
                e.read.read_at.isoformat(),
                fmt(e.read.index),
                e.read.read_type,
                f.rule,
                f.severity.value,
                "" if f.usage is None else fmt(f.usage),
                *(fmt(x) if x != "" else "" for x in (*band, *read_band)),
                ";".join(fmt(s.value) for s in f.suggestions),
                f.message,
            ]
        )
        n += 1
    return n


def check_file(path: Path, out: TextIO, tz: str = "UTC") -> tuple[list[CsvException], list[str]]:
    """Read ``path``, validate, write the exceptions to ``out``; return (exceptions, line errors)."""
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reads, errors = read_csv(stream, str(path), ZoneInfo(tz))
    exceptions = check_reads(reads)
    write_exceptions(exceptions, out)
    return exceptions, errors
