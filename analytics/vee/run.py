"""Incremental VEE over the database: validate what landed since the watermark, write the results.

``run_vee(url, settings)``:

1. reads the watermark (the last ``ingest_batch.id`` validated) and the newest batch id;
2. finds the register series that received reads in between, and for each the previous
   ``history_reads + 2`` reads as context (validated again for history, not reported again);
3. loads them meter range by meter range with one binary ``COPY`` each (no Python loop per row),
   converts known unit mix-ups (Wh→kWh, L→m³), adds recorded exchanges and clock events;
4. runs the vectorised rules, then writes the exceptions (review queue), the estimates
   (``reading_version``: quality S; adjustments when the data is billed) and the new watermark,
   all in one transaction, as the editor role.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg import Connection
from psycopg.types.json import Jsonb

from analytics.vee.csvfile import READ_CODES
from analytics.vee.intervals import interval_estimates, screen_intervals, sum_check, validate_interval_series
from analytics.vee.params import RULES, RuleCode, RuleParams, Severity, params_for
from analytics.vee.records import check_clock, check_unit
from analytics.vee.registers import Estimate, Finding, RegisterSeries, validate_registers
from releve import db
from releve.model import COMMODITY_CHANNELS
from releve.pgbinary import PG_EPOCH_S, copy_arrays, copy_records, row_dtype
from releve.settings import Settings

log = logging.getLogger(__name__)

WATERMARK = "registers"
#: Batches this far below the watermark are still checked for late commits (ids are taken at insert,
#: so a long ingest transaction can commit after a higher id that VEE already saw).
LATE_BATCH_WINDOW = 10_000

LOAD_DTYPE = row_dtype(
    ("meter_id", ">i4"),
    ("channel_id", ">i2"),
    ("ts", ">i8"),
    ("value", ">f8"),
    ("unit_id", ">i2"),
    ("batch_id", ">i8"),
    ("read_type_id", ">i2"),
    ("source_id", ">i2"),
)


@dataclass
class RunSummary:
    """What one run did."""

    run_id: int | None
    from_batch: int
    to_batch: int
    series: int = 0
    reads: int = 0
    new_reads: int = 0  # reads the register rules judged (one a day per series)
    landed_reads: int = 0  # new register reads covered by the run (96 a day on a 15-minute series)
    exceptions: dict[str, int] = field(default_factory=dict)
    estimates: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """A printable summary."""
        if self.run_id is None:
            return [f"nothing new since batch {self.from_batch}"]
        out = [
            f"run {self.run_id}: batches {self.from_batch + 1}–{self.to_batch}, {self.series} series, "
            f"{self.new_reads} new reads validated ({self.reads} with history) in {self.seconds:.1f} s"
            + (f", covering {self.landed_reads} new register reads" if self.landed_reads > self.new_reads else ""),
            f"estimates written: {self.estimates}",
        ]
        total = sum(self.exceptions.values())
        out.append(
            f"exceptions: {total}"
            + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(self.exceptions.items())) + ")" if total else "")
        )
        return out


@dataclass
class _Meta:
    """Per-meter registry facts used by the rules."""

    commodity: dict[int, str]
    modulus: dict[int, float]
    unit: dict[int, str]
    manual: dict[int, bool]
    read_types: dict[int, str] = field(default_factory=dict)
    manual_source: int | None = None


def _watermark(conn: Connection) -> int:
    row = conn.execute("SELECT batch_id FROM vee_watermark WHERE name = %s", (WATERMARK,)).fetchone()
    return int(row[0]) if row else 0


def run_vee_shards(
    urls: Sequence[str], settings: Settings, who: str = "vee", default_tz: str = "UTC"
) -> list[RunSummary]:
    """Run VEE on every shard at once, one thread each (docs/scaling.md, sharding by meter).

    Each shard holds every reading of its meters, so a run needs nothing from the others; the
    summaries come back in the order of ``urls``. A failing shard raises after the others finished.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(urls)), thread_name_prefix="vee-shard") as pool:
        futures = [pool.submit(run_vee, url, settings, who, default_tz=default_tz) for url in urls]
        return [f.result() for f in futures]


def run_vee(
    url: str,
    settings: Settings,
    who: str = "vee",
    chunk_reads: int = 1_000_000,
    progress: Callable[[int], Any] | None = None,
    on_total: Callable[[int], Any] | None = None,
    default_tz: str = "UTC",
) -> RunSummary:
    """Validate everything landed since the watermark; see the module docstring."""
    started = datetime.now(UTC)
    with db.connect(url, role=db.editor_role(settings)) as conn, conn.transaction():
        # One run at a time: a second one waits, then finds nothing new.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('releve.vee'))")
        lo = _watermark(conn)
        row = conn.execute("SELECT coalesce(max(id), 0) FROM ingest_batch").fetchone()
        hi = int(row[0]) if row else 0
        # Batches not yet validated: above the watermark, and any below it that committed late.
        conn.execute("DROP TABLE IF EXISTS vee_todo")
        conn.execute(
            """CREATE TEMP TABLE vee_todo ON COMMIT DROP AS
               SELECT b.id AS batch_id FROM ingest_batch b
               WHERE b.id <= %s AND b.id > %s - %s
                 AND NOT EXISTS (SELECT 1 FROM vee_batch v WHERE v.batch_id = b.id)""",
            (hi, lo, LATE_BATCH_WINDOW),
        )
        conn.execute("ANALYZE vee_todo")
        todo = np.array([r[0] for r in conn.execute("SELECT batch_id FROM vee_todo ORDER BY 1").fetchall()], np.int64)
        if not len(todo):
            return RunSummary(None, lo, hi)
        run_id = _one(
            conn, "INSERT INTO vee_run (from_batch, to_batch, run_by) VALUES (%s, %s, %s) RETURNING id", (lo, hi, who)
        )
        summary = RunSummary(run_id, lo, hi)
        scope = _scope(conn)
        summary.series = len(scope)
        summary.landed_reads = int(sum(n for _, n in scope))
        if on_total:
            on_total(int(sum(n for _, n in scope)))
        meta = _meta(conn, sorted({m for m, _ in scope}))
        units: dict[int, str] = dict(conn.execute("SELECT id, code FROM unit").fetchall())
        for a, b in _chunks(scope, chunk_reads):
            cols = _load(conn, a, b)
            if len(cols["value"]) == 0:
                continue
            found, estimates, keys, n_new = _validate_chunk(conn, cols, meta, units, todo)
            summary.reads += len(cols["value"])
            summary.new_reads += n_new
            _write(conn, run_id, who, keys, found, estimates)
            for f in found:
                summary.exceptions[f.rule] = summary.exceptions.get(f.rule, 0) + 1
            summary.estimates += len(estimates)
            if progress:
                progress(n_new)
        found_i, n_est = _interval_pass(conn, run_id, who, default_tz)
        for f in found_i:
            summary.exceptions[f.rule] = summary.exceptions.get(f.rule, 0) + 1
        summary.estimates += n_est
        conn.execute("INSERT INTO vee_batch (batch_id, run_id) SELECT batch_id, %s FROM vee_todo", (run_id,))
        conn.execute(
            """INSERT INTO vee_watermark (name, batch_id, run_id) VALUES (%s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET batch_id = excluded.batch_id, run_id = excluded.run_id,
                                                updated_at = now()""",
            (WATERMARK, hi, run_id),
        )
        conn.execute(
            """UPDATE vee_run SET finished_at = now(), n_series = %s, n_reads = %s, n_exceptions = %s,
                      n_estimates = %s WHERE id = %s""",
            (summary.series, summary.new_reads, sum(summary.exceptions.values()), summary.estimates, run_id),
        )
    summary.seconds = (datetime.now(UTC) - started).total_seconds()
    return summary


def _one(conn: Connection, query: str, params: tuple[Any, ...]) -> int:
    row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return int(row[0])


def _scope(conn: Connection) -> list[tuple[int, int]]:
    """Series with new reads: fill the temp table ``vee_scope``; return (meter, new register reads) per meter.

    The new reads are found by their batch, within the time span the writer recorded for the
    batches (``ingest_batch.min_ts``/``max_ts``): only the parts of that span are read, so a daily
    run costs a day's parts however long the history. A batch with rows but no span (written
    around the writer) leaves the search unbounded.
    """
    context = max(p.history_reads for p in (params_for("electricity"), params_for("water"))) + 2
    span = conn.execute(
        """SELECT bool_and(b.min_ts IS NOT NULL OR b.n_inserted = 0 AND b.n_rows > 0), min(b.min_ts), max(b.max_ts)
           FROM ingest_batch b JOIN vee_todo t ON t.batch_id = b.id"""
    ).fetchone()
    bounded = span is not None and bool(span[0]) and span[1] is not None
    reads = "reading_between(%s, %s)" if bounded else "reading_all"
    conn.execute("DROP TABLE IF EXISTS vee_scope")
    conn.execute(
        """CREATE TEMP TABLE vee_scope ON COMMIT DROP AS
           SELECT n.meter_id, n.channel_id, c.kind, c.code, c.interval_s, n.new_from, n.n_new,
                  -- more than two reads a day: the database picks the first of each day (see _load)
                  n.n_new > 2 * (extract(epoch FROM n.new_to - n.new_from) / 86400 + 1) AS dense,
                  CASE WHEN c.kind = 'register'
                       THEN least(coalesce(ctx.ts, '-infinity'::timestamptz), n.new_from - make_interval(days => %s))
                       ELSE n.new_from - interval '8 days' END AS ctx_from  -- a week back: like days
           FROM (SELECT meter_id, channel_id, min(ts) AS new_from, max(ts) AS new_to, count(*) AS n_new
                 FROM """
        + reads
        + """ WHERE batch_id IN (SELECT batch_id FROM vee_todo) GROUP BY 1, 2) n
           JOIN channel c ON c.id = n.channel_id AND c.kind IN ('register', 'interval')
           LEFT JOIN LATERAL (SELECT r.ts FROM series_before(n.meter_id, n.channel_id, n.new_from, %s) r
                              WHERE c.kind = 'register'
                              ORDER BY r.ts DESC OFFSET %s LIMIT 1) ctx ON true""",
        (context + 1, *((span[1], span[2]) if bounded and span else ()), context, context - 1),
    )
    conn.execute("CREATE INDEX ON vee_scope (meter_id, channel_id)")
    conn.execute("ANALYZE vee_scope")
    rows = conn.execute(
        "SELECT meter_id, sum(n_new)::bigint FROM vee_scope WHERE kind = 'register' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    return [(int(m), int(n)) for m, n in rows]


def _chunks(scope: list[tuple[int, int]], chunk_reads: int) -> list[tuple[int, int]]:
    """Meter id ranges [a, b] holding about ``chunk_reads`` new reads each."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    acc = 0
    for meter, n in scope:
        if start is None:
            start = meter
        acc += n
        if acc >= chunk_reads:
            out.append((start, meter))
            start, acc = None, 0
    if start is not None:
        out.append((start, scope[-1][0]))
    return out


def _meta(conn: Connection, meters: list[int]) -> _Meta:
    rows = conn.execute(
        """SELECT id, commodity, register_digits, register_width_bits, unit, protocol = 'manual', register_wrap
           FROM meter WHERE id = ANY(%s)""",
        (meters,),
    ).fetchall()
    modulus: dict[int, float] = {}
    for mid, _, digits, bits, _, _, wrap in rows:
        # The explicit rollover point wins: a 16-bit counter of 0.1 kWh wraps at 6553.6, not 65536.
        modulus[mid] = wrap or (10.0**digits if digits else (2.0**bits if bits and bits < 64 else math.inf))
    read_types = {int(i): str(name) for i, name in conn.execute("SELECT id, name FROM read_type").fetchall()}
    src = conn.execute("SELECT id FROM reading_source WHERE name = 'manual'").fetchone()
    return _Meta(
        {r[0]: r[1] for r in rows},
        modulus,
        {r[0]: r[4] for r in rows},
        {r[0]: bool(r[5]) for r in rows},
        read_types,
        int(src[0]) if src else None,
    )


#: The first read of each UTC day of series ``(q.m, q.c)`` within ``[q.lo, q.hi]`` — what a scan of
#: that range in time order keeps when it keeps a read whose predecessor (in the range) is of an
#: earlier day, and the first — as one index probe per day instead of a scan of every read: the
#: range's first and last reads bound the days (``series_span``), then each day's first read is a
#: ``LIMIT 1`` probe of the rows' primary key and of the day's blocks (``series_first``). Days are
#: 24 hours from a UTC midnight whatever the session's time zone.
_FIRST_OF_EACH_DAY = """
    SELECT x.meter_id, x.channel_id, x.ts, x.value, x.unit_id, x.batch_id, x.read_type_id, x.source_id
    FROM series_span(q.m, q.c, q.lo, q.hi) w
    CROSS JOIN LATERAL generate_series(date_trunc('day', w.lo, 'UTC'), w.hi, interval '24 hours') d(day)
    CROSS JOIN LATERAL series_first(q.m, q.c, greatest(d.day, w.lo),
                                    least(d.day + interval '24 hours' - interval '1 microsecond', w.hi)) x"""


def _load(conn: Connection, a: int, b: int) -> dict[str, np.ndarray]:
    """Reads of the scope's series for meters a..b (with context), as columns sorted by series and time.

    Register rules judge one read per day (the first of each UTC day): the utility's high/low band is
    a per-day notion, and a 15-minute AMI series would otherwise be judged on its daily profile.
    Manually read series (one read a month) pass through unchanged. Two binary ``COPY``s, no sort in
    the database: sparse series (two reads a day or fewer) send every read and numpy keeps the first
    of each day; dense ones (15-minute registers) are thinned by the database with one index probe
    per series and UTC day (:data:`_FIRST_OF_EACH_DAY`), so one row a day is read and sent out of 96.
    """
    # The chunk's earliest context bounds the union's window (a constant, so both tables' parts are
    # pruned when it is planned); the join then keeps each series from its own context on.
    row = conn.execute(
        """SELECT min(ctx_from)::text FROM vee_scope
           WHERE meter_id BETWEEN %s AND %s AND kind = 'register' AND NOT dense""",
        (a, b),
    ).fetchone()
    sparse = _copy_rows(
        conn,
        """COPY (SELECT r.meter_id, r.channel_id, r.ts, r.value, r.unit_id, r.batch_id, r.read_type_id, r.source_id
                 FROM reading_between(%s::timestamptz, 'infinity') r
                 JOIN vee_scope s ON s.meter_id = r.meter_id AND s.channel_id = r.channel_id
                 WHERE r.meter_id BETWEEN %s AND %s AND s.meter_id BETWEEN %s AND %s AND r.ts >= s.ctx_from
                   AND s.kind = 'register' AND NOT s.dense)
           TO STDOUT (FORMAT BINARY)""",
        (row[0] if row and row[0] is not None else "infinity", a, b, a, b),
    )
    dense = _copy_rows(
        conn,
        """COPY (SELECT r.meter_id, r.channel_id, r.ts, r.value, r.unit_id, r.batch_id, r.read_type_id, r.source_id
                 FROM vee_scope s
                 CROSS JOIN LATERAL (SELECT s.meter_id AS m, s.channel_id AS c, s.ctx_from AS lo,
                                            'infinity'::timestamptz AS hi) q
                 CROSS JOIN LATERAL ("""
        + _FIRST_OF_EACH_DAY
        + """) r
                 WHERE s.meter_id BETWEEN %s AND %s AND s.kind = 'register' AND s.dense)
           TO STDOUT (FORMAT BINARY)""",
        (a, b),
    )
    rec = np.concatenate([sparse, dense])
    meter = rec["meter_id"].astype(np.int64)
    channel = rec["channel_id"].astype(np.int64)
    ts = rec["ts"].astype(np.int64)
    order = np.lexsort((ts, channel, meter))
    meter, channel, ts = meter[order], channel[order], ts[order]
    # The first read of each UTC day of each series (PostgreSQL microseconds since 2000-01-01, a UTC midnight).
    day = ts // 86_400_000_000
    first = np.ones(len(ts), bool)
    first[1:] = (meter[1:] != meter[:-1]) | (channel[1:] != channel[:-1]) | (day[1:] != day[:-1])
    keep = order[first]
    return {
        "meter_id": meter[first],
        "channel_id": channel[first],
        "t": ts[first] / 1e6 + PG_EPOCH_S,
        "value": rec["value"].astype(np.float64)[keep],
        "unit_id": rec["unit_id"].astype(np.int64)[keep],
        "batch_id": rec["batch_id"].astype(np.int64)[keep],
        "read_type_id": rec["read_type_id"].astype(np.int64)[keep],
        "source_id": rec["source_id"].astype(np.int64)[keep],
    }


def _copy_rows(conn: Connection, query: str, params: tuple[Any, ...]) -> np.ndarray:
    """The rows of one binary ``COPY`` of ``LOAD_DTYPE``'s columns, as a numpy record array."""
    return copy_records(conn, query, params, LOAD_DTYPE)


def _validate_chunk(
    conn: Connection, cols: dict[str, np.ndarray], meta: _Meta, units: dict[int, str], todo: np.ndarray
) -> tuple[list[Finding], list[Estimate], tuple[np.ndarray, np.ndarray], int]:
    """Run the rules over one chunk; return findings, estimates, (meter, channel) per series, new reads."""
    key = cols["meter_id"] * 65536 + cols["channel_id"]
    uniq, series = np.unique(key, return_inverse=True)
    s_meter = (uniq // 65536).astype(np.int64)
    s_channel = (uniq % 65536).astype(np.int64)
    classes: dict[tuple[str, str], int] = {}
    param_class = np.zeros(len(uniq), np.int64)
    modulus = np.full(len(uniq), np.inf)
    # Manually read: the meter's protocol says so, or its reads were typed in (source manual), as
    # `ingest load --reads manual` lands them.
    typed_in = np.zeros(len(uniq), bool)
    if meta.manual_source is not None:
        np.logical_or.at(typed_in, series, cols["source_id"] == meta.manual_source)
    for j, m in enumerate(s_meter.tolist()):
        klass = (meta.commodity.get(m, "electricity"), "manual" if meta.manual.get(m) or typed_in[j] else "")
        param_class[j] = classes.setdefault(klass, len(classes))
        modulus[j] = meta.modulus.get(m, math.inf)
    params: list[RuleParams] = [params_for(c, k) for c, k in classes]
    emit = np.isin(cols["batch_id"], todo)
    value = cols["value"].copy()
    findings_pre: list[Finding] = []

    # Unit check: the read's unit against the meter's; known factors are converted for the rules.
    unit_code = np.array([units.get(u, "") for u in range(max(units) + 1)], dtype=object) if units else None
    meter_unit = np.array([meta.unit.get(m, "") for m in s_meter.tolist()], dtype=object)[series]
    if unit_code is not None:
        value, findings_pre = check_unit(cols["value"], unit_code[cols["unit_id"]], meter_unit, emit)

    ex = _exchanges(conn, s_meter, s_channel)
    top = int(cols["read_type_id"].max(initial=0)) + 1
    codes = np.array([READ_CODES.get(meta.read_types.get(x, ""), 0) for x in range(top)], np.int8)
    read_type = codes[cols["read_type_id"]]
    batch = RegisterSeries(
        series.astype(np.int64), cols["t"], value, modulus, param_class, params, emit, *ex, read_type=read_type
    )
    result = validate_registers(batch)
    findings = findings_pre + result.findings + _clock_findings(conn, cols, emit, series, s_meter)
    keys = (s_meter, s_channel)
    # Re-key rows to absolute (meter, channel, t) for writing.
    for f in findings:
        f.details["_key"] = (int(cols["meter_id"][f.row]), int(cols["channel_id"][f.row]), float(cols["t"][f.row]))
    for e in result.estimates:
        if e.row is not None:
            e.t = float(cols["t"][e.row])
    return findings, result.estimates, keys, int(emit.sum())


def _exchanges(
    conn: Connection, s_meter: np.ndarray, s_channel: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Recorded exchanges: a meter removed (removal index) and installed again (install index)."""
    rows = conn.execute(
        """SELECT meter_id, extract(epoch FROM removed_at), removal_index, next_install
           FROM (SELECT meter_id, removed_at, removal_index,
                        lead(install_index) OVER (PARTITION BY meter_id ORDER BY installed_at) AS next_install
                 FROM installation WHERE meter_id = ANY(%s)) x
           WHERE removed_at IS NOT NULL AND next_install IS NOT NULL""",
        (np.unique(s_meter).tolist(),),
    ).fetchall()
    ser, tt, rem, ins = [], [], [], []
    for meter, t, removal, install in rows:
        for j in np.flatnonzero(s_meter == meter):
            ser.append(int(j))
            tt.append(float(t))
            rem.append(float(removal) if removal is not None else math.nan)
            ins.append(float(install))
    order = np.argsort(np.array(ser, np.int64), kind="stable")
    return (np.array(ser, np.int64)[order], np.array(tt)[order], np.array(rem)[order], np.array(ins)[order])


def _clock_findings(
    conn: Connection, cols: dict[str, np.ndarray], emit: np.ndarray, series: np.ndarray, s_meter: np.ndarray
) -> list[Finding]:
    """Clock invalid, or adjusted by more than the tolerance: flag the first read at or after the event."""
    if not emit.any():
        return []
    t_lo, t_hi = float(cols["t"][emit].min()), float(cols["t"][emit].max())
    rows = conn.execute(
        """SELECT meter_id, extract(epoch FROM ts), kind, details FROM meter_event
           WHERE meter_id = ANY(%s) AND kind IN ('clock_adjusted', 'clock_invalid')
             AND ts >= to_timestamp(%s) - interval '40 days' AND ts <= to_timestamp(%s)""",
        (np.unique(s_meter).tolist(), t_lo, t_hi),
    ).fetchall()
    # Device time: collectors store the meter's clock minus their own (channel 0-0:1.0.0, seconds)
    # when a profile exposes the clock. The first read after the offset leaves the tolerance is flagged.
    # The channel's id is a constant of the query, so each meter's clock reads are one range of the
    # primary key: joined to ``channel`` instead, the planner read every read of the chunk's meters
    # over its whole window (half a second a chunk of a million daily reads, a sixth of the run).
    clock = conn.execute("SELECT id FROM channel WHERE code = '0-0:1.0.0'").fetchone()
    drift = (
        []
        if clock is None
        else conn.execute(
            """SELECT DISTINCT ON (r.meter_id) r.meter_id, extract(epoch FROM r.ts), r.value
               FROM reading_between(to_timestamp(%s) - interval '1 day', to_timestamp(%s)) r
               WHERE r.channel_id = %s AND r.meter_id = ANY(%s) AND abs(r.value) > %s
               ORDER BY r.meter_id, r.ts""",
            (t_lo, t_hi, clock[0], np.unique(s_meter).tolist(), params_for("electricity").clock_tolerance_s),
        ).fetchall()
    )
    return check_clock(
        cols["meter_id"], cols["t"], cols["value"], emit, rows, drift, params_for("electricity").clock_tolerance_s
    )


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(round(t * 1e6) / 1e6, UTC)


def _write(
    conn: Connection,
    run_id: int,
    who: str,
    keys: tuple[np.ndarray, np.ndarray],
    findings: list[Finding],
    estimates: list[Estimate],
) -> None:
    """Insert exceptions (idempotent per read and rule) and estimate versions."""
    if findings:
        conn.execute(
            """CREATE TEMP TABLE IF NOT EXISTS vee_new_exception (
                   meter_id integer, channel_id smallint, ts timestamptz, rule text, severity text,
                   value double precision, usage double precision, usage_lo double precision,
                   usage_hi double precision, read_lo double precision, read_hi double precision,
                   suggestions double precision[], message text, details jsonb) ON COMMIT DROP"""
        )
        with conn.cursor().copy("COPY vee_new_exception FROM STDIN") as copy:
            for f in findings:
                meter, channel, t = f.details.pop("_key")
                band = f.band or (None, None)
                read_band = f.read_band or (None, None)
                details = dict(f.details)
                if f.suggestions:
                    details["suggestions"] = [{"value": s.value, "why": s.why} for s in f.suggestions]
                copy.write_row(
                    (
                        meter,
                        channel,
                        _ts(t),
                        f.rule,
                        f.severity.value,
                        _fin(f.value),
                        _fin(f.usage),
                        _fin(band[0]),
                        _fin(band[1]),
                        _fin(read_band[0]),
                        _fin(read_band[1]),
                        [s.value for s in f.suggestions],
                        f.message,
                        Jsonb(details),
                    )
                )
        conn.execute(
            """INSERT INTO vee_exception (meter_id, channel_id, ts, rule, severity, value, usage, usage_lo, usage_hi,
                                          read_lo, read_hi, suggestions, message, details, run_id, status)
               SELECT meter_id, channel_id, ts, rule, severity, value, usage, usage_lo, usage_hi, read_lo, read_hi,
                      suggestions, message, details, %s, CASE WHEN severity = 'info' THEN 'noted' ELSE 'open' END
               FROM vee_new_exception ON CONFLICT (meter_id, channel_id, ts, rule) DO NOTHING""",
            (run_id,),
        )
        conn.execute("TRUNCATE vee_new_exception")
    if estimates:
        s_meter, s_channel = keys
        rows = [
            (
                int(s_meter[e.series]),
                int(s_channel[e.series]),
                _ts(e.t),
                e.value,
                e.method,
                e.reason,
                _fin(e.replaced),
                e.rule,
            )
            for e in estimates
        ]
        write_versions(conn, rows, who, run_id)


def write_versions(conn: Connection, rows: list[tuple[Any, ...]], who: str, run_id: int | None) -> None:
    """Insert estimate versions (meter, channel, ts, value, method, reason, replaced, rule) on top of what exists.

    A version on billed (frozen) data is written as an adjustment: the billed value stays current.
    The estimate is linked to the error exception of its read when there is one.
    """
    conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS vee_new_version (
               meter_id integer, channel_id smallint, ts timestamptz, value double precision, method smallint,
               reason smallint, replaced_value double precision, rule text) ON COMMIT DROP"""
    )
    with conn.cursor().copy("COPY vee_new_version FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    conn.execute(
        """INSERT INTO reading_version (meter_id, channel_id, ts, version, value, quality, method, reason, kind,
                                        replaced_value, replaced_version, exception_id, comment, created_by, run_id)
           SELECT n.meter_id, n.channel_id, n.ts, coalesce(p.version, 0) + 1, n.value, 'S', n.method, n.reason,
                  CASE WHEN reading_is_frozen(n.meter_id, n.channel_id, n.ts) THEN 'adjustment' ELSE 'estimate' END,
                  n.replaced_value, coalesce(p.version, 0),
                  (SELECT e.id FROM vee_exception e WHERE e.meter_id = n.meter_id AND e.channel_id = n.channel_id
                     AND e.ts = n.ts AND e.severity = 'error' ORDER BY e.id LIMIT 1),
                  CASE WHEN n.rule = 'GAP' THEN 'missing read filled' ELSE 'bad read substituted' END, %s, %s
           FROM vee_new_version n
           LEFT JOIN LATERAL (SELECT max(v.version) AS version FROM reading_version v
                              WHERE v.meter_id = n.meter_id AND v.channel_id = n.channel_id AND v.ts = n.ts) p
                  ON true
           -- A substitute goes on a read once (a later run that sees it again as context adds nothing;
           -- a person's decision stands); billed reads past the prescription are not corrected.
           WHERE (n.replaced_value IS NULL OR p.version IS NULL)
             AND NOT (reading_is_frozen(n.meter_id, n.channel_id, n.ts) AND reading_is_prescribed(n.ts, now()))""",
        (who, run_id),
    )
    conn.execute("TRUNCATE vee_new_version")


def _fin(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def severity_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Open exceptions per severity (for status lines)."""
    rows = conn.execute("SELECT severity, count(*) FROM vee_exception WHERE status = 'open' GROUP BY 1").fetchall()
    return {str(s): int(n) for s, n in rows} | {s.value: 0 for s in Severity if s.value not in dict(rows)}


SERIES_DTYPE = row_dtype(("meter_id", ">i4"), ("channel_id", ">i2"), ("ts", ">i8"), ("value", ">f8"))


def _copy_series(conn: Connection, query: str, params: tuple[Any, ...]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The (meter, channel, ts, value) rows of one binary ``COPY``, by series.

    As {meter * 65536 + channel: (t, value)}, each series in time order, ``t`` in Unix seconds.
    """
    rec = copy_records(conn, query, params, SERIES_DTYPE)
    if len(rec) == 0:
        return {}
    key = rec["meter_id"].astype(np.int64) * 65536 + rec["channel_id"].astype(np.int64)
    ts = rec["ts"].astype(np.int64)
    order = np.lexsort((ts, key))
    key, t, v = key[order], ts[order] / 1e6 + PG_EPOCH_S, rec["value"].astype(np.float64)[order]
    cuts = np.flatnonzero(np.diff(key)) + 1
    starts = np.r_[0, cuts]
    ends = np.r_[cuts, len(key)]
    return {int(key[a]): (t[a:b], v[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)}


def _copy_series_arrays(
    conn: Connection, query: str, params: tuple[Any, ...]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """As :func:`_copy_series`, from a binary ``COPY`` of one row per series: (meter, channel, ts[], value[]).

    The database sends a series as two arrays (``array_agg``), so Python takes one step per series
    instead of one per value (1.3 M values in the pipeline bench); each series is put in time order here.
    """
    meters, channels, stamps, values = copy_arrays(conn, query, params, (">i4", ">i2", ">i8[]", ">f8[]"))
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for meter, channel, ts, value in zip(meters, channels, stamps, values, strict=True):
        ts = ts.astype(np.int64)
        order = np.argsort(ts, kind="stable")
        out[meter * 65536 + channel] = (ts[order] / 1e6 + PG_EPOCH_S, value.astype(np.float64)[order])
    return out


#: The register channel an interval channel's values add up to (for the sum check).
_REGISTER_OF = (
    "CASE s.code "
    + " ".join(  # an interval channel's register (releve.model); codes are constants
        f"WHEN '{ch.interval}' THEN '{ch.register}'" for ch in COMMODITY_CHANNELS.values()
    )
    + " END"
)


def _interval_pass(
    conn: Connection, run_id: int, who: str, default_tz: str, chunk_reads: int = 2_000_000
) -> tuple[list[Finding], int]:
    """Interval series with new values: day counts (DST aware), spikes, zero runs, short-gap estimates, sum check.

    The values come meter range by meter range in one binary ``COPY`` each, and so do the register
    reads the sum check needs (the first of each UTC day, picked by the database), not a query per series.
    """
    series = conn.execute(
        f"""SELECT s.meter_id, s.channel_id, s.code, s.interval_s, extract(epoch FROM s.new_from)::float8,
                  extract(epoch FROM s.ctx_from)::float8, coalesce(z.tz, %s), m.commodity, m.multiplier::float8,
                  rc.id, s.n_new
           FROM vee_scope s JOIN meter m ON m.id = s.meter_id
           LEFT JOIN meter_timezone z ON z.meter_id = s.meter_id
           LEFT JOIN channel rc ON rc.code = {_REGISTER_OF}
           WHERE s.kind = 'interval' ORDER BY 1, 2""",
        (default_tz,),
    ).fetchall()
    findings: list[Finding] = []
    estimates: list[tuple[Any, ...]] = []
    # Each series' values are read once: caching the inner scans by series (Memoize, chosen when the
    # freshly landed partitions have no statistics yet) only adds a copy of every row (≈ 30 %).
    conn.execute("SET LOCAL enable_memoize = off")
    chunks: list[list[Any]] = [[]]
    acc = 0
    for row in series:
        if acc >= chunk_reads and row[0] != chunks[-1][-1][0]:  # a meter's series stay in one chunk
            chunks.append([])
            acc = 0
        chunks[-1].append(row)
        acc += int(row[10])
    for chunk in chunks:
        if not chunk:
            continue
        a, b = chunk[0][0], chunk[-1][0]
        values = _copy_series_arrays(
            conn,
            """COPY (SELECT s.meter_id, s.channel_id, v.ts, v.value
                     FROM vee_scope s
                     CROSS JOIN LATERAL (SELECT array_agg(x.ts ORDER BY x.ts) AS ts,
                                                array_agg(x.value ORDER BY x.ts) AS value
                                         FROM series_between(s.meter_id, s.channel_id, s.ctx_from, 'infinity') x) v
                     WHERE s.kind = 'interval' AND s.meter_id BETWEEN %s AND %s AND v.ts IS NOT NULL)
               TO STDOUT (FORMAT BINARY)""",
            (a, b),
        )
        # The register reads between each interval series' first value (less one interval) and its last.
        registers = _copy_series(
            conn,
            f"""COPY (SELECT s.meter_id, s.channel_id, g.ts, g.value
                      FROM vee_scope s JOIN channel rc ON rc.code = {_REGISTER_OF}
                      CROSS JOIN LATERAL series_span(s.meter_id, s.channel_id, s.ctx_from, 'infinity') w
                      CROSS JOIN LATERAL (SELECT s.meter_id AS m, rc.id AS c, w.hi AS hi,
                                                 w.lo - make_interval(secs => coalesce(s.interval_s, 900)) AS lo) q
                      CROSS JOIN LATERAL ({_FIRST_OF_EACH_DAY}) g
                      WHERE s.kind = 'interval' AND s.meter_id BETWEEN %s AND %s)
                TO STDOUT (FORMAT BINARY)""",
            (a, b),
        )
        _check_interval_chunk(chunk, values, registers, findings, estimates)
    if findings:
        _write(conn, run_id, who, (np.zeros(0, np.int64), np.zeros(0, np.int64)), findings, [])
    if estimates:
        write_versions(conn, estimates, who, run_id)
    return findings, len(estimates)


def _check_interval_chunk(
    chunk: list[Any],
    values: dict[int, tuple[np.ndarray, np.ndarray]],
    registers: dict[int, tuple[np.ndarray, np.ndarray]],
    findings: list[Finding],
    estimates: list[tuple[Any, ...]],
) -> None:
    """The interval rules and the sum check for one chunk's series, appended in the chunk's order.

    Series sharing a zone, an interval length and a commodity go through the interval rules together
    in numpy (:func:`screen_intervals`); a series near a DST change goes through the per-series rules,
    and a series where a value is missing gets its estimates from :func:`interval_estimates` — the
    findings and estimates are those of running the per-series rules on every series. The sum
    check runs over every series of the chunk at once (:func:`_sum_checks`).
    """
    empty = (np.zeros(0), np.zeros(0))
    series = [values.get(row[0] * 65536 + row[1], empty) for row in chunk]
    now = datetime.now(UTC)
    groups: dict[tuple[str, int, str], list[int]] = {}
    for i, row in enumerate(chunk):
        groups.setdefault((row[6], int(row[3] or 900), row[7]), []).append(i)
    per_series: dict[int, tuple[list[Finding], list[tuple[Any, ...]]]] = {}
    for (tz_name, interval_s, commodity), members in groups.items():
        tz, params = ZoneInfo(tz_name), params_for(commodity)
        bounds = np.r_[0, np.cumsum([len(series[i][0]) for i in members])]
        t = np.concatenate([series[i][0] for i in members])
        v = np.concatenate([series[i][1] for i in members])
        emit_from = np.array([float(chunk[i][4]) for i in members])
        screen = screen_intervals(t, v, bounds, emit_from, tz, interval_s, params, now)
        for k, i in enumerate(members):
            meter, channel, new_from = chunk[i][0], chunk[i][1], chunk[i][4]
            if not screen.exact[k]:
                found, est = validate_interval_series(series[i][0], series[i][1], new_from, tz, interval_s, params)
            else:
                found = screen.findings[k]
                est = (
                    interval_estimates(series[i][0], series[i][1], new_from, tz, interval_s, params)
                    if screen.may_estimate[k]
                    else []
                )
            if found or est:
                per_series[i] = (
                    [
                        Finding(
                            0,
                            f.rule,
                            RULES[f.rule].severity,
                            f.message,
                            f.value,
                            details={**f.details, "_key": (meter, channel, f.t)},
                        )
                        for f in found
                    ],
                    [(meter, channel, _ts(tj), value, method, 94, None, RuleCode.GAP) for tj, value, method in est],
                )
    sums = _sum_checks(chunk, series, registers)
    for i in sorted(per_series.keys() | sums.keys()):
        found_i, est_i = per_series.get(i, ([], []))
        findings.extend(found_i)
        estimates.extend(est_i)
        findings.extend(sums.get(i, []))


def _sum_checks(
    chunk: list[Any], series: list[tuple[np.ndarray, np.ndarray]], registers: dict[int, tuple[np.ndarray, np.ndarray]]
) -> dict[int, list[Finding]]:
    """Σ intervals between consecutive register reads vs the register delta × multiplier, for a chunk at once.

    For each series of ``chunk`` that has a register channel and values: the register reads
    (the first of each UTC day, from one interval before the series' first value to its last) are
    taken in pairs; a pair ending at or after the series' ``new_from``, whose register did not go
    back, and whose period holds exactly the intervals it should (complete periods; the count rule
    speaks for the others) compares the sum of the intervals after the first read up to and
    including the second with the register's advance × multiplier (:func:`sum_check`). The sums are
    each series' own running sums, as one series alone would give them; findings by series index.
    """
    idx = [i for i, row in enumerate(chunk) if row[9] is not None and len(series[i][0])]
    if not idx:
        return {}
    empty = (np.zeros(0), np.zeros(0))
    regs = [registers.get(chunk[i][0] * 65536 + chunk[i][1], empty) for i in idx]
    n_int = np.array([len(series[i][0]) for i in idx])
    n_reg = np.array([len(r[0]) for r in regs])
    off = np.r_[0, np.cumsum(n_int)]  # where each series' intervals start in the concatenation
    # Each series' running sum with a leading 0 (np.cumsum of that series alone: the same floats).
    csum = np.concatenate([np.r_[0.0, np.cumsum(series[i][1])] for i in idx])
    csum_off = off[:-1] + np.arange(len(idx))
    reg_sid = np.repeat(np.arange(len(idx)), n_reg)
    reg_t = np.concatenate([r[0] for r in regs]).astype(np.float64)
    reg_v = np.concatenate([r[1] for r in regs]).astype(np.float64)
    # How many of its series' intervals lie at or before each register read (searchsorted, side right).
    int_t = np.concatenate([series[i][0] for i in idx])
    int_sid = np.repeat(np.arange(len(idx)), n_int)
    kind = np.r_[np.zeros(len(int_t), np.int8), np.ones(len(reg_t), np.int8)]
    order = np.lexsort((kind, np.r_[int_t, reg_t], np.r_[int_sid, reg_sid]))
    before = np.cumsum(kind[order] == 0)[kind[order] == 1] - off[reg_sid]  # register reads in (sid, t) order
    pair = np.flatnonzero(reg_sid[1:] == reg_sid[:-1])
    s = reg_sid[pair]
    ta, tb, va, vb = reg_t[pair], reg_t[pair + 1], reg_v[pair], reg_v[pair + 1]
    a, b = before[pair], before[pair + 1]
    interval_s = np.array([int(chunk[i][3] or 900) for i in idx])[s]
    new_from = np.array([float(chunk[i][4]) for i in idx])[s]
    complete = (tb >= new_from) & (vb >= va) & (b - a == np.round((tb - ta) / interval_s))
    interval_sum = csum[csum_off[s] + b] - csum[csum_off[s] + a]
    multiplier = np.array([float(chunk[i][8]) for i in idx])[s]
    params = [params_for(chunk[i][7]) for i in idx]
    tolerance = np.array([p.sum_tolerance for p in params])[s]
    abs_tolerance = np.array([p.sum_abs_tolerance for p in params])[s]
    expected = (vb - va) * multiplier
    slack = np.maximum(np.maximum(tolerance * np.abs(expected), abs_tolerance), 1e-9 * tolerance)
    agree = (expected == interval_sum) | (np.abs(interval_sum - expected) <= slack)
    out: dict[int, list[Finding]] = {}
    for j in np.flatnonzero(complete & ~agree).tolist():  # the few that differ: the message, as one series gives it
        k = int(s[j])
        i = idx[k]
        meter, channel, reg_channel = chunk[i][0], chunk[i][1], chunk[i][9]
        code, message = sum_check(
            float(interval_sum[j]),
            float(vb[j]) - float(va[j]),
            float(multiplier[j]),
            params[k].sum_tolerance,
            abs_tolerance=params[k].sum_abs_tolerance,
        )
        if code:
            rule = RULES[code]
            out.setdefault(i, []).append(
                Finding(
                    0,
                    code,
                    rule.severity,
                    message,
                    float(vb[j]),
                    details={"_key": (meter, reg_channel, float(tb[j])), "interval_channel": channel},
                )
            )
    return out
