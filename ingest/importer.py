"""Load a directory of documented CSV files into the database: registry, then readings and events.

The directory is a simulator backfill, or a utility's export in the same formats; readings and
events go through the ingest write path like any collector's.

Files (formats in docs/simulators.md; only those present are read):

- ``areas.csv``, ``meters.csv``: transformers / DMAs with their feeder or bulk meters, meters, service
  points; each customer service point gets a customer and an account (billing cycles A–D in turn,
  tariff ``E-RES``, ``E-TOU`` for commercial electricity, ``W-RES`` for water: the codes of
  ``billing/tariffs.example.toml``) and an installation from the first reading on.
- ``register_reads.csv``, ``intervals.csv``: readings (``--reads remote``, the default), or
  ``manual_reads.csv`` in their place (``--reads manual``: a utility whose meters are read by hand).
- ``events.csv``: meter events.
- ``labels.csv``: only its ``meter_exchange`` rows, which are work orders a utility records (the
  installation history); every other label is ground truth for scoring and is never loaded.

A load is all or nothing: the registry, the readings, the events and the installations land in one
transaction, so a bad line anywhere (a value or timestamp that does not parse, a missing column, a
registry row that breaks a rule) leaves the database exactly as it was, and the error names the file
and the line. Values that parse but cannot be true — a negative register index or interval volume,
a negative voltage, current or frequency, a power factor beyond ±1 — are not a reason to refuse the
file: they go to ``rejected_input`` (dead letters) with the reason, file and line, and the rest lands.
A reading already stored with a different value is kept aside in ``reading_conflict``; the summary
counts them and shows the first few.

Loading is idempotent: registry rows are inserted once, and each chunk of readings lands with a batch
key derived from the file's content, so loading the same directory twice changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from tqdm import tqdm

from ingest.frame import ReadingFrame
from ingest.writer import BatchWriter
from releve import db
from releve.model import (
    CHANNELS,
    MAIN_REGISTER,
    MAIN_REGISTERS,
    ChannelKind,
    Commodity,
    EventKind,
    MeterEvent,
    ReadType,
    Rejected,
    Source,
)
from releve.settings import Settings

log = logging.getLogger(__name__)

CHUNK = 200_000
PROTOCOLS = {"tcp": "modbus-tcp", "rtu": "modbus-rtu", "mqtt": "mqtt"}
CYCLES = "ABCD"


class LoadError(ValueError):
    """A file cannot be loaded; the message names the file, the line and the problem."""


@dataclass
class LoadSummary:
    """What a load did."""

    meters: int = 0
    areas: int = 0
    accounts: int = 0
    exchanges: int = 0
    readings: int = 0
    duplicates: int = 0
    rejected: int = 0
    conflicts: int = 0
    events: int = 0
    files: list[str] = field(default_factory=list)
    #: The first few conflicts: (meter, channel, instant, value stored, value in the file).
    conflict_examples: list[tuple[str, str, datetime, float, float]] = field(default_factory=list)


#: Physical bounds of a channel's values (inclusive): what lies outside cannot have been measured.
BOUNDS: dict[str, tuple[float, float]] = {
    code: (0.0, np.inf)
    for code, ch in CHANNELS.items()
    if ch.kind in (ChannelKind.REGISTER, ChannelKind.INTERVAL) or ch.unit in ("V", "A", "Hz", "W")
} | {code: (-1.0, 1.0) for code, ch in CHANNELS.items() if ch.unit == "1"}  # power factor


def impossible(frame: ReadingFrame) -> dict[int, str]:
    """Rows whose value no meter can report on that channel, with the reason."""
    out: dict[int, str] = {}
    for c, code in enumerate(frame.channels):
        if code not in BOUNDS:
            continue
        lo, hi = BOUNDS[code]
        rows = np.flatnonzero((frame.channel_idx == c) & ((frame.value < lo) | (frame.value > hi)))
        what = CHANNELS[code].kind.value if CHANNELS[code].kind != ChannelKind.INSTANT else CHANNELS[code].description
        for i in rows:
            v = float(frame.value[i])
            out[int(i)] = (
                f"negative value {v:g} on {code} ({what}: never below zero)"
                if v < lo
                else f"value {v:g} on {code} ({what}) is outside {lo:g}..{hi:g}"
            )
    return out


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="") as fh:
        yield from enumerate(csv.DictReader(fh), start=2)


def load_registry(conn: psycopg.Connection, directory: Path, summary: LoadSummary) -> None:
    """areas.csv and meters.csv → area, meter, service_point, customer, account, installation."""
    areas_file, meters_file = directory / "areas.csv", directory / "meters.csv"
    if not meters_file.is_file():
        raise LoadError(f"{meters_file}: missing (a directory to load needs at least meters.csv)")
    with conn.cursor() as cur:
        if areas_file.is_file():
            for line, a in _rows(areas_file):
                try:
                    loss = (float(a["technical_loss_min"]) + float(a["technical_loss_max"])) / 2 * 100
                    cur.execute(
                        """INSERT INTO area (code, kind, commodity, technical_loss_pct, latitude, longitude)
                           VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (code) DO NOTHING""",
                        (
                            a["area"],
                            a["kind"],
                            a["commodity"],
                            round(loss, 2),
                            float(a["latitude"]),
                            float(a["longitude"]),
                        ),
                    )
                except (KeyError, ValueError, psycopg.errors.CheckViolation) as exc:
                    raise LoadError(f"{areas_file}:{line}: {exc}") from exc
                summary.areas += cur.rowcount
        feeders: list[tuple[str, str]] = []
        for line, m in _rows(meters_file):
            try:
                width = int(m["register_width_bits"]) if m.get("register_width_bits") else None
                cur.execute(
                    """INSERT INTO meter (serial, commodity, model, unit, multiplier, register_digits,
                                          register_width_bits, register_wrap, protocol, address)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (serial) DO NOTHING""",
                    (
                        m["serial"],
                        m["commodity"],
                        m["model"],
                        m["unit"],
                        float(m["multiplier"] or 1),
                        int(m["register_digits"]) if m.get("register_digits") else None,
                        width if width in (16, 32, 64) else None,
                        float(m["register_wrap"]) if m.get("register_wrap") else None,
                        PROTOCOLS.get(m["transport"], "import"),
                        json.dumps({"uri": m["address"]}),
                    ),
                )
                summary.meters += cur.rowcount
                if m["role"] == "feeder":
                    feeders.append((m["area"], m["serial"]))
                    continue
                cur.execute(
                    """INSERT INTO service_point (code, commodity, customer_class, area_id, latitude, longitude)
                       SELECT %s, %s, %s, (SELECT id FROM area WHERE code = %s), %s, %s
                       ON CONFLICT (code) DO NOTHING""",
                    (
                        m["service_point"],
                        m["commodity"],
                        m["customer_class"],
                        m["area"],
                        float(m["latitude"]),
                        float(m["longitude"]),
                    ),
                )
            except (KeyError, ValueError, psycopg.errors.CheckViolation) as exc:
                raise LoadError(f"{meters_file}:{line}: {exc}") from exc
        for area, serial in feeders:
            cur.execute(
                "UPDATE area SET feeder_meter_id = (SELECT id FROM meter WHERE serial = %s) WHERE code = %s",
                (serial, area),
            )
        # One customer and one account per service point that has none yet.
        cur.execute(
            """WITH new AS (
                   SELECT sp.id, sp.code, sp.commodity, sp.customer_class, row_number() OVER (ORDER BY sp.code) AS n
                   FROM service_point sp WHERE NOT EXISTS (SELECT 1 FROM account a WHERE a.service_point_id = sp.id)
               ), customers AS (
                   INSERT INTO customer (name) SELECT 'Customer ' || code FROM new ORDER BY n RETURNING id, name
               )
               INSERT INTO account (number, customer_id, service_point_id, billing_cycle, tariff_code, opened_on)
               SELECT 'ACC-' || new.code, c.id, new.id, substr(%s, (new.n %% 4)::int + 1, 1),
                      CASE WHEN new.commodity = 'water' THEN 'W-RES'
                           WHEN new.customer_class = 'commercial' THEN 'E-TOU' ELSE 'E-RES' END,
                      DATE '2000-01-01'
               FROM new JOIN customers c ON c.name = 'Customer ' || new.code""",
            (CYCLES,),
        )
        summary.accounts += cur.rowcount


def load_installations(conn: psycopg.Connection, directory: Path, summary: LoadSummary) -> None:
    """Installation history: each customer meter from its first reading; exchanges from labels.csv."""
    exchanges: dict[str, list[tuple[datetime, float]]] = {}
    labels = directory / "labels.csv"
    if labels.is_file():
        for _, row in _rows(labels):
            if row["kind"] == "meter_exchange":
                params = json.loads(row["params"] or "{}")
                exchanges.setdefault(row["meter"], []).append((_ts(row["start"]), float(params.get("new_initial", 0))))
    placed = [
        (row["serial"], row["service_point"]) for _, row in _rows(directory / "meters.csv") if row["role"] != "feeder"
    ]
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO installation (meter_id, service_point_id, installed_at, install_index, reason)
               SELECT m.id, sp.id, coalesce(f.ts, now()), coalesce(f.value, 0), 'initial'
               FROM unnest(%s::text[], %s::text[]) AS p(serial, sp_code)
               JOIN meter m ON m.serial = p.serial
               JOIN service_point sp ON sp.code = p.sp_code
               LEFT JOIN LATERAL (
                   SELECT r.ts, r.value FROM channel c
                   CROSS JOIN LATERAL series_span(m.id, c.id, '-infinity', 'infinity') w
                   CROSS JOIN LATERAL series_between(m.id, c.id, w.lo, w.lo) r
                   WHERE c.code = ANY(%s) ORDER BY r.ts LIMIT 1
               ) f ON true
               WHERE NOT EXISTS (SELECT 1 FROM installation i WHERE i.meter_id = m.id)""",
            ([p[0] for p in placed], [p[1] for p in placed], list(MAIN_REGISTERS)),
        )
        for serial, items in exchanges.items():
            for at, new_initial in sorted(items):
                current = cur.execute(
                    """SELECT i.id, i.meter_id, i.service_point_id FROM installation i JOIN meter m ON m.id = i.meter_id
                       WHERE m.serial = %s AND i.removed_at IS NULL AND i.installed_at < %s""",
                    (serial, at),
                ).fetchone()
                if current is None:
                    continue
                last = cur.execute(
                    """SELECT r.value FROM channel c CROSS JOIN LATERAL series_before(%s, c.id, %s, 1) r
                       WHERE c.code = ANY(%s) ORDER BY r.ts DESC LIMIT 1""",
                    (current[1], at, list(MAIN_REGISTERS)),
                ).fetchone()
                cur.execute(
                    "UPDATE installation SET removed_at = %s, removal_index = %s, reason = 'exchanged' WHERE id = %s",
                    (at, last[0] if last else 0.0, current[0]),
                )
                cur.execute(
                    """INSERT INTO installation (meter_id, service_point_id, installed_at, install_index, reason)
                       VALUES (%s, %s, %s, %s, 'exchange')""",
                    (current[1], current[2], at, new_initial),
                )
                summary.exchanges += 1


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _key(digest: str, chunk: int) -> uuid.UUID:
    """The batch key of a chunk of a file: the same content gives the same keys (loading is idempotent)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"releve-import:{digest}:{chunk}")


def _frames(path: Path, source: Source, value_col: str = "value") -> Iterator[tuple[int, ReadingFrame]]:
    """Chunks of a long-format readings file as frames; raises naming file:line on a bad row."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        col = {name: i for i, name in enumerate(header)}
        missing = {"meter", "ts", value_col, "unit"} - col.keys()
        if missing:
            raise LoadError(f"{path}:1: missing column(s) {', '.join(sorted(missing))}")
        chunk = 0
        rows: list[list[str]] = []
        for row in reader:
            rows.append(row)
            if len(rows) == CHUNK:
                yield chunk, _frame(path, rows, col, source, chunk, value_col)
                chunk += 1
                rows = []
        if rows:
            yield chunk, _frame(path, rows, col, source, chunk, value_col)


def _frame(
    path: Path, rows: list[list[str]], col: dict[str, int], source: Source, chunk: int, value_col: str
) -> ReadingFrame:
    first_line = 2 + chunk * CHUNK
    row: list[str]
    try:
        ts = np.array([r[col["ts"]].rstrip("Z") for r in rows], dtype="datetime64[us]")
        value = np.array([r[col[value_col]] for r in rows], dtype=np.float64)
    except (ValueError, IndexError) as exc:
        for i, row in enumerate(rows):  # find the line to name it
            try:
                np.datetime64(row[col["ts"]].rstrip("Z"), "us")
                float(row[col[value_col]])
            except (ValueError, IndexError) as row_exc:
                raise LoadError(f"{path}:{first_line + i}: {row_exc}") from exc
        raise LoadError(f"{path}: {exc}") from exc
    if "channel" in col:
        channels = [r[col["channel"]] for r in rows]
    else:  # manual reads: the main register of the meter's commodity
        water, electricity = MAIN_REGISTER[Commodity.WATER], MAIN_REGISTER[Commodity.ELECTRICITY]
        channels = [water if r[col["unit"]] in ("m3", "L") else electricity for r in rows]
    frame = ReadingFrame.from_columns(
        [r[col["meter"]] for r in rows], channels, ts, value, [r[col["unit"]] for r in rows], source
    )
    if "read_type" in col:
        order = {rt.value: i for i, rt in enumerate(ReadType)}
        frame.read_type_idx = np.array([order.get(r[col["read_type"]], 0) for r in rows], np.int8)
    return frame


def _readings(writer: BatchWriter, path: Path, source: Source, summary: LoadSummary, progress: bool) -> list[int]:
    """Land one readings file, chunk by chunk; impossible values go to dead letters. Returns the batch ids."""
    digest = _digest(path)
    lines = sum(1 for _ in path.open()) - 1
    bar = tqdm(total=lines, desc=path.name, unit="row", disable=not progress, leave=False)
    batches = []
    for chunk, frame in _frames(path, source):
        first_line = 2 + chunk * CHUNK
        bad = impossible(frame)
        rejected = [
            Rejected(f"{path}:{first_line + i}", reason, json.dumps(frame.row(i)), source)
            for i, reason in sorted(bad.items())
        ]
        good = frame.take(np.setdiff1d(np.arange(len(frame)), np.fromiter(bad, int, len(bad)))) if bad else frame
        result = writer.write(good, rejected=rejected, batch_key=_key(digest, chunk))
        summary.readings += result.inserted
        summary.duplicates += result.duplicates
        summary.conflicts += result.conflicts
        summary.rejected += result.rejected
        if result.batch_id is not None:
            batches.append(result.batch_id)
        bar.update(len(frame))
    bar.close()
    return batches


def load_directory(
    url: str, settings: Settings, directory: Path, reads: str = "remote", progress: bool = False
) -> LoadSummary:
    """Load ``directory`` (see the module docstring) into the database at ``url``, all or nothing.

    Raises LoadError (naming file and line) or a database error; either way nothing was written.
    """
    directory = Path(directory)
    summary = LoadSummary()
    files = ["register_reads.csv", "intervals.csv"] if reads == "remote" else ["manual_reads.csv"]
    source = Source.IMPORT if reads == "remote" else Source.MANUAL
    role = db.writer_role(settings)
    with db.connect(url, autocommit=True) as conn, conn.transaction():
        load_registry(conn, directory, summary)  # as the owner: the registry is not raw data
        if role:  # readings and events as the writer role, as every collector writes them
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        writer = BatchWriter(url, settings, origin=f"import {directory}", conn=conn)
        batches: list[int] = []
        for name in files:
            if (directory / name).is_file():
                summary.files.append(name)
                batches += _readings(writer, directory / name, source, summary, progress)
        events_file = directory / "events.csv"
        if events_file.is_file():
            events = []
            for line, row in _rows(events_file):
                try:
                    events.append(
                        MeterEvent(
                            row["meter"],
                            _ts(row["ts"]),
                            EventKind(row["kind"]),
                            Source.IMPORT,
                            {"code": int(row["code"])} if row.get("code") else {},
                        )
                    )
                except (KeyError, ValueError) as exc:
                    raise LoadError(f"{events_file}:{line}: {exc}") from exc
            if events:
                summary.events = writer.write([], events, batch_key=_key(_digest(events_file), 0)).events
                summary.files.append("events.csv")
        if summary.conflicts:
            summary.conflict_examples = [
                tuple(r)
                for r in conn.execute(
                    """SELECT m.serial, c.code, rc.ts, rc.stored_value, rc.new_value FROM reading_conflict rc
                   JOIN meter m ON m.id = rc.meter_id JOIN channel c ON c.id = rc.channel_id
                   WHERE rc.batch_id = ANY(%s) ORDER BY rc.ts, m.serial LIMIT 3""",
                    (batches,),
                ).fetchall()
            ]
        if role:
            conn.execute("RESET ROLE")
        load_installations(conn, directory, summary)
    db.refresh_daily(url)
    db.refresh_hourly(url)
    return summary
