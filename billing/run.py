"""A bill run: determinants, holds and bills for one cycle, from the validated series, in one transaction.

``run_bills(url, settings, book, cycle, period_end)``:

1. settles tenant-change cases whose proof is overdue (the predecessor's move-out index applies);
2. lists the cycle's accounts active in the period, each with its own period — the day after its
   previous bill, at that bill's end index (consecutive bills never overlap, never leave a day or a
   unit unbilled) — and its meters (installation rows: exchanges inside the cycle use the old
   meter's removal index and the new meter's install index); skipped accounts and warnings are
   stored per account in ``bill_run_note``;
3. reads the validated register series of those meters around the period with one binary COPY
   (``validated_reading``, with later ``adjustment`` versions of billed data laid over it) into numpy
   arrays sorted by (meter, instant); every boundary index (a read on the day, else linear
   interpolation) and data-quality figure is then a binary search;
4. computes per account the determinants (interval channels stamped at their end: the interval
   stamped T covers (T - length, T]), holds and priced lines; compares them with the live bill of
   the same account and period: unchanged → nothing; a held bill → superseded; an issued bill →
   cancelled by a ``cancel`` bill and replaced by a ``rebill`` (never a silent change), unless the
   period is prescribed (older than ``prescription_years``);
5. writes the bills and determinants with ``COPY``, freezes the billed reads (``reading_freeze``),
   posts the issued bills to the account ledger (``billing.ledger.post_bills``) and records prepaid
   checks (consumption vs vended credit).

Billing connects as the editor role (see migration 0008).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import Connection

from billing import ledger, tenant
from billing.pricing import (
    Index,
    Line,
    Priced,
    Read,
    allocate,
    boundary_index,
    cycle_period,
    needs_intervals,
    price,
    q,
    to_decimal,
    tou_period,
)
from billing.tariffs import Tariff, TariffBook
from releve import db
from releve.model import INTERVAL_CHANNEL, MAIN_REGISTER, MAIN_REGISTERS
from releve.pgbinary import copy_records, row_dtype
from releve.settings import Settings

log = logging.getLogger(__name__)

#: Each commodity is billed from its main register (releve/model.py), time of use and demand from its intervals.
UNIT = {"electricity": "kWh", "water": "m3"}


class _Clock:
    """Step timings for the debug log (where a bill run spends its time)."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def lap(self, what: str) -> None:
        """Log the time since the last lap."""
        now = datetime.now(UTC)
        log.debug("bill run: %s %.2f s", what, (now - self.t).total_seconds())
        self.t = now


def midnight(d: date) -> datetime:
    """UTC midnight at the start of day ``d``."""
    return datetime.combine(d, time(0), UTC)


@dataclass
class Account:
    """An account of the cycle, with what billing needs about it."""

    id: int
    number: str
    customer: str
    indigent: bool
    service_point_id: int
    commodity: str
    tariff_code: str
    prepaid: bool
    opened_on: date
    closed_on: date | None


@dataclass
class Installed:
    """One installation row overlapping the period."""

    meter_id: int
    serial: str
    installed_at: datetime
    removed_at: datetime | None
    install_index: float
    removal_index: float | None
    multiplier: Decimal


@dataclass
class Determinant:
    """What one meter contributes to a bill."""

    meter_id: int
    serial: str
    start_at: datetime
    end_at: datetime
    start: Index | None
    end: Index | None
    multiplier: Decimal
    key: int = 0
    consumption: Decimal | None = None
    tou: dict[str, Decimal] = field(default_factory=dict)
    max_demand: Decimal | None = None
    #: the previous issued bill's end index when it ended at this determinant's start on the same meter:
    #: the start follows it, so that consecutive bills add up to the index difference
    billed_start: Index | None = None

    @property
    def frozen_to(self) -> datetime:
        """The latest instant of the reads this determinant rests on."""
        reads = [r.ts for i in (self.start, self.end) if i is not None for r in i.reads]
        return max([self.end_at, *reads])


@dataclass
class Draft:
    """A bill being computed."""

    account: Account
    start: date
    end: date
    dets: list[Determinant]
    segments: list[tuple[Tariff, date, date]] = field(default_factory=list)
    holds: list[str] = field(default_factory=list)
    consumption: Decimal = Decimal(0)
    priced: Priced = field(default_factory=Priced)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (code, message)
    bill_id: int | None = None  # the bill written (or left unchanged) for it by this run

    @property
    def status(self) -> str:
        """Issued or held."""
        return "held" if self.holds else "issued"

    def fingerprint(self) -> str:
        """The billed values (days, determinants, lines) hashed: equal fingerprints mean an unchanged bill."""
        parts = [str((self.end - self.start).days)]
        parts += [f"{d.meter_id}:{d.start.value if d.start else None}:{d.end.value if d.end else None}:{d.consumption}"
                  for d in self.dets]  # fmt: skip
        parts += [f"{li.code}:{li.quantity}:{li.rate}:{li.amount}" for li in self.priced.lines]
        return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Note:
    """Why an account got no bill (``skipped``), or what its bill had to work around (``warning``)."""

    account_id: int
    account: str
    kind: str  # skipped | warning
    code: str
    message: str
    bill_id: int | None = None


@dataclass
class RunSummary:
    """What a bill run did."""

    run_id: int
    cycle: str
    period_start: date
    period_end: date
    accounts: int = 0
    issued: int = 0
    held: int = 0
    unchanged: int = 0
    rebilled: int = 0
    prescribed: int = 0
    prepaid: int = 0
    prepaid_flagged: int = 0
    prepaid_unchecked: int = 0
    notes: list[Note] = field(default_factory=list)
    hold_reasons: dict[str, int] = field(default_factory=dict)
    notices: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(account number, reason) of the accounts that got no bill."""
        return [(n.account, n.message) for n in self.notes if n.kind == "skipped"]

    @property
    def warnings(self) -> list[Note]:
        """Bills (or prepaid checks) that had to work around their data."""
        return [n for n in self.notes if n.kind == "warning"]

    def skip(self, a: Account, code: str, message: str) -> None:
        """Record that account ``a`` gets no bill, and why."""
        self.notes.append(Note(a.id, a.number, "skipped", code, f"{code}: {message}"))

    def text(self, limit: int = 20) -> str:
        """A human summary (at most ``limit`` skipped accounts and warnings each; all are in bill_run_note)."""
        out = [
            f"bill run {self.run_id}: cycle {self.cycle}, {self.period_start} – {self.period_end}",
            f"accounts {self.accounts}: issued {self.issued}, held {self.held}, unchanged {self.unchanged}, "
            f"rebilled {self.rebilled}, prescribed {self.prescribed}, prepaid checked {self.prepaid} "
            f"(flagged {self.prepaid_flagged}, unchecked {self.prepaid_unchecked}), skipped {len(self.skipped)}, "
            f"warnings {len(self.warnings)}",
        ]
        out += [f"  held: {k} × {v}" for k, v in sorted(self.hold_reasons.items())]
        for kind in ("skipped", "warning"):
            notes = [n for n in self.notes if n.kind == kind]
            out += [f"  {kind} {n.account}: {n.message}" for n in notes[:limit]]
            if len(notes) > limit:
                out.append(f"  … {len(notes) - limit} more {kind}: releve bill notes --run {self.run_id}")
        out += [f"  tenant notice for case {c}" for c in self.notices]
        out.append(f"{self.seconds:.1f} s")
        return "\n".join(out)


def run_bills(
    url: str,
    settings: Settings,
    book: TariffBook,
    cycle: str,
    period_end: date,
    issue_date: date | None = None,
    out_dir: Path | None = None,
) -> RunSummary:
    """Bill ``cycle`` for the period ending on ``period_end``; see the module docstring."""
    t0 = datetime.now(UTC)
    issue = issue_date or datetime.now(UTC).date()
    with db.connect(url, role=db.editor_role(settings)) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('releve.bill.' || %s))", (cycle,))
        start, end = _cycle_window(conn, book, cycle, period_end)
        row = conn.execute(
            """INSERT INTO bill_run (cycle, period_start, period_end, issue_date, tariff_file, tariff_sha256)
               VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
            (cycle, start, period_end, issue, book.path, book.sha256),
        ).fetchone()
        assert row is not None
        summary = RunSummary(int(row[0]), cycle, start, period_end)
        clock = _Clock()
        summary.notices = tenant.expire_cases(conn, book, issue, out_dir)
        accounts = _accounts(conn, cycle, start, end)
        summary.accounts = len(accounts)
        drafts = _drafts(conn, book, accounts, start, end, summary)
        clock.lap("accounts and meters")
        _resolve_indexes(conn, book, drafts, start, end)
        clock.lap("determinants")
        regular = [d for d in drafts if not d.account.prepaid]
        _history_and_holds(conn, book, regular, period_end)
        for d in regular:
            _price(book, d)
        clock.lap("history and pricing")
        _write_bills(conn, book, summary, regular, start, period_end, issue)
        ledger.post_bills(conn, summary.run_id)  # issued, cancel and rebill bills reach the account ledger
        clock.lap("bills written")
        prepaid = [d for d in drafts if d.account.prepaid]
        _prepaid_checks(conn, book, summary, prepaid, period_end)
        _write_notes(conn, summary, drafts)
        conn.execute(
            """UPDATE bill_run SET finished_at = now(), n_accounts = %s, n_issued = %s, n_held = %s,
                      n_unchanged = %s, n_rebilled = %s, n_prepaid = %s, n_skipped = %s WHERE id = %s""",
            (summary.accounts, summary.issued, summary.held, summary.unchanged, summary.rebilled, summary.prepaid,
             len(summary.skipped), summary.run_id),
        )  # fmt: skip
    summary.seconds = (datetime.now(UTC) - t0).total_seconds()
    if out_dir is not None:
        from billing.feed import write_feed

        write_feed(url, settings, summary.run_id, out_dir)
    return summary


def _cycle_window(conn: Connection, book: TariffBook, cycle: str, period_end: date) -> tuple[date, date]:
    """Days [start, end) of the cycle's period ending on ``period_end`` (inclusive).

    The period starts the day after the cycle's previous run (so month-end cycles of 31, 28 and 31
    days follow each other without a gap or an overlap); the cycle's first run covers
    ``cycle_days`` days. Each account then follows its own previous bill (see :func:`_drafts`).
    """
    row = conn.execute(
        "SELECT max(period_end) FROM bill_run WHERE cycle = %s AND period_end < %s", (cycle, period_end)
    ).fetchone()
    start, end = cycle_period(period_end, book.rules.cycle_days)
    if row is not None and row[0] is not None:
        start = row[0] + timedelta(days=1)
    return start, end


def _write_notes(conn: Connection, summary: RunSummary, drafts: list[Draft]) -> None:
    """Store every skipped account's reason and every warning, per account, in ``bill_run_note``."""
    for d in drafts:
        summary.notes += [Note(d.account.id, d.account.number, "warning", code, msg, d.bill_id)
                          for code, msg in d.warnings]  # fmt: skip
    rows: dict[tuple[int, str, str], Note] = {}
    for n in summary.notes:  # one row per account, kind and code (two meters' warnings share it)
        k = (n.account_id, n.kind, n.code)
        rows[k] = n if k not in rows else replace(rows[k], message=f"{rows[k].message}; {n.message}")
    if not rows:
        return
    with conn.cursor().copy("COPY bill_run_note (run_id, account_id, kind, code, message, bill_id) FROM STDIN") as cp:
        for n in rows.values():
            cp.write_row((summary.run_id, n.account_id, n.kind, n.code, n.message, n.bill_id))


# --------------------------------------------------------------------------------------------- accounts


def _accounts(conn: Connection, cycle: str, start: date, end: date) -> list[Account]:
    rows = conn.execute(
        """SELECT a.id, a.number, c.name, c.indigent, a.service_point_id, sp.commodity, a.tariff_code, a.prepaid,
                  a.opened_on, a.closed_on
           FROM account a JOIN customer c ON c.id = a.customer_id JOIN service_point sp ON sp.id = a.service_point_id
           WHERE a.billing_cycle = %s AND a.opened_on < %s AND (a.closed_on IS NULL OR a.closed_on > %s)
           ORDER BY a.id""",
        (cycle, end, start),
    ).fetchall()
    return [Account(*r) for r in rows]


@dataclass(frozen=True)
class _Previous:
    """An account's live bills around the period: the one before (its end) and any after it."""

    end: date | None = None  # period_end of the latest live bill before this period
    issued_id: int | None = None  # that bill, when issued (its end indexes start this one)
    later_start: date | None = None  # period_start of the earliest live bill after this period
    later_end: date | None = None


def _previous_bills(conn: Connection, ids: list[int], period_end: date) -> dict[int, _Previous]:
    """Per account, the live bill just before ``period_end`` and the earliest live bill after it."""
    out: dict[int, _Previous] = {}
    for acc, end, issued_id, later_start, later_end in conn.execute(
        """SELECT a.id, p.period_end, p.issued_id, n.period_start, n.period_end
           FROM unnest(%s::integer[]) AS a(id)
           LEFT JOIN LATERAL (
               SELECT b.period_end, CASE WHEN b.status = 'issued' THEN b.id END AS issued_id FROM bill b
               WHERE b.account_id = a.id AND b.period_end < %s AND b.status IN ('issued', 'held')
                 AND b.kind <> 'cancel'
               ORDER BY b.period_end DESC LIMIT 1) p ON true
           LEFT JOIN LATERAL (
               SELECT b.period_start, b.period_end FROM bill b
               WHERE b.account_id = a.id AND b.period_end > %s AND b.status IN ('issued', 'held')
                 AND b.kind <> 'cancel'
               ORDER BY b.period_end LIMIT 1) n ON true
           WHERE p.period_end IS NOT NULL OR n.period_end IS NOT NULL""",
        (ids, period_end, period_end),
    ):
        out[acc] = _Previous(end, issued_id, later_start, later_end)
    return out


def _billed_ends(conn: Connection, bill_ids: list[int], qd: int) -> dict[tuple[int, int, datetime], Index]:
    """The end index of each determinant of the given bills, by (bill, meter, end instant)."""
    out: dict[tuple[int, int, datetime], Index] = {}
    for bid, meter_id, end_at, end_index, quality in conn.execute(
        """SELECT bill_id, meter_id, end_at, end_index, end_quality FROM bill_determinant
           WHERE bill_id = ANY(%s)""",
        (bill_ids,),
    ):
        out[(bid, meter_id, end_at)] = Index(q(Decimal(end_index), qd), quality, end_at)
    return out


def _drafts(
    conn: Connection, book: TariffBook, accounts: list[Account], start: date, end: date, summary: RunSummary
) -> list[Draft]:
    """Each account's billing window and meter segments (indexes still to be found).

    Consecutive periods: an account's period starts the day after its previous live bill (never
    overlapping it, never leaving a day unbilled); an account never billed starts at the cycle's
    start, its opening, or — for a water newcomer — the subscription start its tenant case decided,
    even when that is before the cycle. A period that does not line up with the cycle's gets a
    ``period`` warning; one that would overlap a later bill is skipped.
    """
    qd = book.rules.quantity_decimals
    ids = [a.id for a in accounts]
    previous = _previous_bills(conn, ids, summary.period_end)
    sps = sorted({a.service_point_id for a in accounts})
    cases = tenant.cases_for(conn, ids)
    # accounts skipped by an earlier run of the cycle (a tariff or meter missing) and never billed since
    skipped_since: dict[int, tuple[date, int, str]] = {}
    for acc, since, run_id, code in conn.execute(
        """SELECT DISTINCT ON (n.account_id) n.account_id, r.period_start, r.id, n.code
           FROM bill_run_note n JOIN bill_run r ON r.id = n.run_id
           WHERE n.account_id = ANY(%s) AND n.kind = 'skipped' AND n.code IN ('tariff', 'meter')
             AND r.cycle = %s AND r.period_end < %s
           ORDER BY n.account_id, r.period_start, r.id""",
        ([i for i in ids if i not in previous or previous[i].end is None], summary.cycle, summary.period_end),
    ):
        skipped_since[acc] = (since, run_id, code)
    # an account may reach back before the cycle (a newcomer's subscription, a gap): installations from then
    earliest = min([start, *(c.start_date for c in [cases.get(("new", i)) for i in ids] if c and c.start_date),
                    *(p.end + timedelta(days=1) for p in previous.values() if p.end is not None),
                    *(since for since, _, _ in skipped_since.values())])  # fmt: skip
    inst: dict[int, list[Installed]] = defaultdict(list)
    for r in conn.execute(
        """SELECT i.service_point_id, i.meter_id, m.serial, i.installed_at, i.removed_at, i.install_index,
                  i.removal_index, m.multiplier
           FROM installation i JOIN meter m ON m.id = i.meter_id
           WHERE i.service_point_id IN (SELECT unnest(%s::integer[]))
             AND i.installed_at < %s AND (i.removed_at IS NULL OR i.removed_at > %s)
           ORDER BY i.service_point_id, i.installed_at""",
        (sps, midnight(end), midnight(earliest)),
    ):
        inst[r[0]].append(Installed(*r[1:]))
    billed = _billed_ends(conn, [p.issued_id for p in previous.values() if p.issued_id is not None], qd)
    drafts: list[Draft] = []
    seg_cache: dict[tuple[str, date, date], list[tuple[Tariff, date, date]]] = {}
    for a in accounts:
        prev = previous.get(a.id, _Previous())
        we = min(end, a.closed_on) if a.closed_on else end
        start_override: Index | None = None
        end_override: Index | None = None
        why = ""
        case = cases.get(("new", a.id))
        if case is not None and case.status == "open":
            summary.skip(a, "tenant_case", f"tenant case {case.id} open: no subscription until proof or "
                                           f"{case.proof_due}")  # fmt: skip
            continue
        if prev.end is not None:
            ws = prev.end + timedelta(days=1)
            why = f"the account's previous bill ended on {prev.end}"
        elif case is not None:
            assert case.start_date is not None and case.start_index is not None
            ws = case.start_date
            quality = {"accepted": "move-in", "proven": "proof", "defaulted": "move-out"}[case.status]
            start_override = Index(case.start_index, quality, midnight(case.start_date))
            why = f"the subscription starts on {case.start_date} (tenant case {case.id}, {case.status})"
        elif a.id in skipped_since and skipped_since[a.id][0] < start:
            since, run_id, code = skipped_since[a.id]
            ws = max(since, a.opened_on)
            why = f"the account was skipped by bill run {run_id} ({code}) and never billed since {since}"
        else:
            ws = max(start, a.opened_on)
        if prev.later_end is not None and prev.later_start is not None and prev.later_start <= summary.period_end:
            summary.skip(a, "overlap", f"the bill for {prev.later_end} already covers {prev.later_start} – "
                                       f"{prev.later_end}")  # fmt: skip
            continue
        old = cases.get(("old", a.id))
        if old is not None and old.move_out_date <= we:
            we = old.move_out_date
            end_override = Index(old.move_out_index, "move-out", midnight(old.move_out_date))
        if ws >= we:
            summary.skip(a, "no_days", f"no day to bill: the period would run {ws} – {we - timedelta(days=1)}")
            continue
        try:
            seg_key = (a.tariff_code, ws, we)
            if seg_key not in seg_cache:
                seg_cache[seg_key] = book.segments(a.tariff_code, ws, we)
            segments = seg_cache[seg_key]
        except KeyError as exc:
            if not a.prepaid:
                summary.skip(a, "tariff", str(exc.args[0]))
                continue
            segments = []
        w0, w1 = midnight(ws), midnight(we)
        dets: list[Determinant] = []
        for i in inst.get(a.service_point_id, []):
            s_at = max(w0, i.installed_at)
            e_at = min(w1, i.removed_at) if i.removed_at else w1
            if s_at >= e_at:
                continue
            s_idx = Index(to_decimal(i.install_index, qd), "install", i.installed_at) \
                if i.installed_at > w0 else (start_override if start_override is not None else None)  # fmt: skip
            e_idx = None
            if i.removed_at is not None and i.removed_at < w1:
                assert i.removal_index is not None
                e_idx = Index(to_decimal(i.removal_index, qd), "removal", i.removed_at)
            elif end_override is not None:
                e_idx = end_override
            det = Determinant(i.meter_id, i.serial, s_at, e_at, s_idx, e_idx, i.multiplier)
            if s_idx is None and prev.issued_id is not None:
                det.billed_start = billed.get((prev.issued_id, i.meter_id, s_at))
            dets.append(det)
        if not dets:
            summary.skip(a, "meter", f"no meter installed at the service point between {ws} and "
                                     f"{we - timedelta(days=1)}")  # fmt: skip
            continue
        d = Draft(a, ws, we, dets, segments)
        days = (we - ws).days
        if ws < start or (ws > start and prev.end is not None):
            d.warnings.append(("period", f"period {ws} – {we - timedelta(days=1)} ({days} days), not the cycle's "
                                         f"{start} – {end - timedelta(days=1)}: {why}"))  # fmt: skip
        elif ws == start and we == end and abs(days - book.rules.cycle_days) > 3:
            d.warnings.append(("period", f"period of {days} days (cycle {book.rules.cycle_days}): the cycle's "
                                         f"previous run ended on {start - timedelta(days=1)}"))  # fmt: skip
        drafts.append(d)
    return drafts


# --------------------------------------------------------------------------------------------- indexes


#: One row of ``COPY … (FORMAT binary)`` of (meter_id int4, ts timestamptz, value float8, quality int2).
_ROW = row_dtype(("meter", ">i4"), ("ts", ">i8"), ("value", ">f8"), ("q", ">i2"))
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
#: Read qualities as the series carries them. A raw read the utility itself estimated (``read_type``
#: ``estimate``) is ``estimated`` even though VEE left it as it came; a customer's own read counts as read.
_QUALITY = ("actual", "estimated", "edited", "customer")
_READ = ("actual", "customer")  # qualities that are a real read of the meter
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

    def read(self, i: int) -> Read:
        """Row ``i`` as a Read."""
        return Read(self.origin + timedelta(seconds=int(self.secs[i])), float(self.value[i]),
                    _QUALITY[int(self.quality[i])])  # fmt: skip


def _load_series(conn: Connection, lo: datetime, hi: datetime, channels: list[int], adjusted: bool) -> _Series:
    """One binary COPY of ``validated_reading`` (adjustments to billed data laid over it) into arrays."""
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
        FROM validated_reading v {adjust if adjusted else ""}
        WHERE v.ts >= %(lo)s AND v.ts < %(hi)s AND v.value IS NOT NULL AND v.channel_id = ANY(%(ch)s::smallint[])
          AND v.meter_id IN (SELECT meter_id FROM bill_meter)
    ) TO STDOUT (FORMAT binary)"""
    rows = copy_records(conn, query.encode(), {"ch": channels, "lo": lo, "hi": hi}, _ROW)
    offset_us = int((lo - _PG_EPOCH) // timedelta(microseconds=1))
    secs = (rows["ts"].astype(np.int64) - offset_us) // 1_000_000
    meter = rows["meter"].astype(np.int64)
    order = np.lexsort((secs, meter))
    span = int((hi - lo).total_seconds()) + 2 * DAY_S
    meter, secs = meter[order], secs[order]
    return _Series(lo, span, meter, secs, rows["value"].astype(np.float64)[order], rows["q"].astype(np.int8)[order],
                   meter * span + secs)  # fmt: skip


def _resolve_indexes(conn: Connection, book: TariffBook, drafts: list[Draft], start: date, end: date) -> None:
    """Find boundary indexes, data-quality figures and open exceptions: one COPY, then binary searches."""
    if not drafts:
        return
    clock = _Clock()
    h = book.holds
    lo = midnight(start) - timedelta(days=h.max_days_without_read + 1)
    for d in drafts:  # tenant start dates may reach before the period
        lo = min(lo, d.dets[0].start_at - timedelta(days=h.max_days_without_read + 1))
    hi = midnight(end) + timedelta(days=h.max_days_without_read + 1)
    meters = sorted({x.meter_id for d in drafts for x in d.dets})
    conn.execute("CREATE TEMP TABLE bill_meter (meter_id integer PRIMARY KEY) ON COMMIT DROP")
    with conn.cursor().copy("COPY bill_meter (meter_id) FROM STDIN") as cp:
        for m in meters:
            cp.write_row((m,))
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
    points = sorted({(x.meter_id, x.start_at) for d in drafts for x in d.dets if x.start is None}
                    | {(x.meter_id, x.end_at) for d in drafts for x in d.dets if x.end is None})  # fmt: skip
    found: dict[tuple[int, datetime], Index | None] = {}
    if points:
        pm = np.array([p[0] for p in points], np.int64)
        ps = np.array([secs(p[1]) for p in points], np.int64)
        i = np.searchsorted(sr.key, sr.k(pm, ps), "left")
        j = np.searchsorted(sr.key, sr.k(pm, ps + DAY_S), "left")
        has_day = j > i
        has_before = (i > 0) & (sr.meter[np.maximum(i - 1, 0)] == pm) if n else np.zeros(len(pm), bool)
        has_after = (j < n) & (sr.meter[np.minimum(j, max(n - 1, 0))] == pm) if n else np.zeros(len(pm), bool)
        qd = book.rules.quantity_decimals
        for k, (meter_id, at) in enumerate(points):
            if has_day[k]:
                found[(meter_id, at)] = boundary_index(at, sr.read(int(i[k])), None, None, qd)
                continue
            before = sr.read(int(i[k]) - 1) if has_before[k] else None
            after = sr.read(int(j[k])) if has_after[k] else None
            found[(meter_id, at)] = boundary_index(at, None, before, after, qd)
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
                    d.warnings.append(("index_continuity", (
                        f"meter {x.serial}: the previous bill ended at {x.billed_start.value} "
                        f"({x.billed_start.quality}) on {x.start_at:%Y-%m-%d}; the validated series now gives "
                        f"{series.value} ({series.quality}) there: this bill starts at the billed index, re-run "
                        f"the previous period to rebill the difference")))  # fmt: skip
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
    stats: dict[int, tuple[int, int, datetime | None, int]] = {}
    for k, x in enumerate(dets):
        last_actual = None
        li = int(last[k])
        if li >= 0 and ameter[li] == x.meter_id and asecs[li] >= dlo[k] - h.max_days_without_read * DAY_S:
            last_actual = lo + timedelta(seconds=int(asecs[li]))
        stats[x.key] = (int(b[k] - a[k]), int(bad_cum[b[k]] - bad_cum[a[k]]), last_actual,
                        int(day_cum[db[k]] - day_cum[da[k]]))  # fmt: skip
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
    for d in drafts:
        _quality_holds(book, d, stats, exceptions)
        d.holds = list(dict.fromkeys(d.holds))  # one meter installed twice (an exchange) says it once
    _intervals(conn, book, [d for d in drafts if needs_intervals(d.segments)])


def _rests_on_estimate(idx: Index) -> bool:
    """True when an index is an estimate or an edit, or is interpolated from one."""
    if idx.quality in ("estimated", "edited"):
        return True
    return idx.quality == "interpolated" and any(r.quality not in _READ for r in idx.reads)


def _quality_holds(
    book: TariffBook,
    d: Draft,
    stats: dict[int, tuple[int, int, datetime | None, int]],
    exceptions: dict[int, tuple[int, list[str]]],
) -> None:
    """Consumption per determinant and the holds that depend on the series alone."""
    h = book.holds
    qd = book.rules.quantity_decimals
    n_all = n_bad = 0
    missing_days = all_days = 0
    total = Decimal(0)
    for x in d.dets:
        for name, idx in (("start", x.start), ("end", x.end)):
            if idx is None:
                at = x.start_at if name == "start" else x.end_at
                d.holds.append(f"no_read: no {name} index for meter {x.serial} at {at:%Y-%m-%d} "
                               f"(no read on the day and none on both sides)")  # fmt: skip
        n, bad, last_actual, actual_days = stats.get(x.key, (0, 0, None, 0))
        days = -(-(x.end_at - x.start_at) // timedelta(days=1))
        if n >= days:  # a remotely read meter (a read a day or more): days without an actual read count
            all_days += days
            missing_days += max(days - actual_days, 0)
        # the interpolation neighbours outside the window count too
        extra = [r for r in (x.start.reads[:1] if x.start and x.start.quality == "interpolated" else ())]
        extra += [r for r in (x.end.reads[1:] if x.end and x.end.quality == "interpolated" else ())]
        n += len(extra)
        bad += sum(1 for r in extra if r.quality not in _READ)
        n_all += n
        n_bad += bad
        if x.end is not None and x.end.quality in ("removal", "move-out"):
            pass  # the register's own reads end with the installation; no read gap to judge
        elif last_actual is None or (x.end_at - last_actual) > timedelta(days=h.max_days_without_read):
            since = f"since {last_actual:%Y-%m-%d}" if last_actual else "in the window"
            d.holds.append(f"no_read: no actual read on meter {x.serial} {since} "
                           f"(> {h.max_days_without_read} days)")  # fmt: skip
        if x.key in exceptions:
            n_exc, rules = exceptions[x.key]
            d.holds.append(f"vee_exceptions: {n_exc} open on meter {x.serial} ({', '.join(rules)})")
        if x.start is not None and x.end is not None:
            x.consumption = q((x.end.value - x.start.value) * x.multiplier, qd)
            total += x.consumption
    d.consumption = total
    share = Decimal(n_bad) / Decimal(n_all) if n_all else Decimal(0)
    day_share = Decimal(missing_days) / Decimal(all_days) if all_days else Decimal(0)
    d.details["estimated_share"] = str(q(share, 4))
    d.details["reads"] = n_all
    d.details["days_without_actual_read"] = missing_days
    # the bill says whether it rests on estimates (the utility's own, VEE's or an edit), held or not
    d.details["read_quality"] = (
        "estimated"
        if any(_rests_on_estimate(i) for x in d.dets for i in (x.start, x.end) if i is not None)
        else "actual"
    )
    if share > h.max_estimated_share:
        d.holds.append(f"estimated: {q(share * 100, 1)}% of {n_all} reads estimated or edited "
                       f"(> {q(h.max_estimated_share * 100, 1)}%)")  # fmt: skip
    elif day_share > h.max_estimated_share:
        d.holds.append(f"estimated: {missing_days} of {all_days} days without an actual read, missing or estimated "
                       f"({q(day_share * 100, 1)}% > {q(h.max_estimated_share * 100, 1)}%)")  # fmt: skip
    if any(x.consumption is not None and x.consumption < 0 for x in d.dets):
        d.holds.append(f"negative: consumption {total} below zero")


def _intervals(conn: Connection, book: TariffBook, drafts: list[Draft]) -> None:
    """Time-of-use consumption and maximum demand from the validated interval series."""
    dets = [x for d in drafts for x in d.dets]
    keys = [x.key for x in dets]
    if not keys:
        return
    tz = book.rules.timezone
    per: dict[int, list[tuple[date, int, int, float, float]]] = defaultdict(list)
    interval_s: dict[int, int] = {}
    # Intervals are stamped at their END: the interval stamped T covers (T - length, T]. It belongs to
    # the determinant whose window holds that span (lo < T <= hi), to the tariff segment of the UTC day
    # its span starts on, and to the TOU period of the local weekday and hour its span starts in.
    for k, day, dow, hour, total, peak, ivl in conn.execute(
        """SELECT s.key, (b.began AT TIME ZONE 'UTC')::date, extract(isodow FROM b.began AT TIME ZONE %(tz)s)::int,
                  extract(hour FROM b.began AT TIME ZONE %(tz)s)::int, sum(v.value), max(v.value), max(c.interval_s)
           FROM unnest(%(keys)s::integer[], %(meters)s::integer[], %(los)s::timestamptz[], %(his)s::timestamptz[])
                AS s(key, meter_id, lo, hi)
           JOIN validated_reading v ON v.meter_id = s.meter_id AND v.ts > s.lo AND v.ts <= s.hi
           JOIN channel c ON c.id = v.channel_id AND c.code = ANY(%(ch)s)
           CROSS JOIN LATERAL (SELECT v.ts - make_interval(secs => coalesce(c.interval_s, 900)) AS began) b
           WHERE v.value IS NOT NULL
           GROUP BY 1, 2, 3, 4""",
        {
            "tz": tz,
            "ch": list(INTERVAL_CHANNEL.values()),
            "keys": keys,
            "meters": [x.meter_id for x in dets],
            "los": [x.start_at for x in dets],
            "his": [x.end_at for x in dets],
        },
    ):
        per[k].append((day, dow, hour, float(total), float(peak)))
        interval_s[k] = int(ivl or 900)
    qd = book.rules.quantity_decimals
    for d in drafts:
        raw: dict[tuple[int, str], float] = {}
        peak_kw: Decimal | None = None
        missing = False
        for x in d.dets:
            rows = per.get(x.key)
            if not rows:
                missing = True
                continue
            kw = Decimal(repr(max(r[4] for r in rows) * 3600 / interval_s[x.key])) * x.multiplier
            x.max_demand = q(kw, qd)
            peak_kw = x.max_demand if peak_kw is None else max(peak_kw, x.max_demand)
            mine: dict[str, float] = {}
            for day, dow, hour, total, _ in rows:
                for k, (t, lo, hi) in enumerate(d.segments):
                    if lo <= day < hi and t.tou:
                        name = tou_period(t, dow, hour)
                        raw[(k, name)] = raw.get((k, name), 0.0) + total * float(x.multiplier)
                        mine[name] = mine.get(name, 0.0) + total * float(x.multiplier)
            # the meter's own interval sums per period (unscaled), kept with its determinant
            x.tou = {name: q(Decimal(repr(v)), qd) for name, v in mine.items()}
        if missing:
            d.holds.append("intervals: the tariff needs interval data (time of use or demand) and some is missing")
            continue
        d.details["max_demand"] = str(peak_kw)
        order = [(k, p.name) for k, (t, _, _) in enumerate(d.segments) for p in t.tou]
        if order:
            weights = [round(raw.get(o, 0.0) * 1_000_000) for o in order]
            shares = allocate(d.consumption, weights if sum(weights) else [1] * len(order), qd)
            d.details["tou"] = [{} for _ in d.segments]
            for (k, name), share in zip(order, shares, strict=True):
                d.details["tou"][k][name] = share


# --------------------------------------------------------------------------------------------- holds


def _history_and_holds(conn: Connection, book: TariffBook, drafts: list[Draft], period_end: date) -> None:
    """Hold bills whose consumption falls outside the band expected from the account's issued bills."""
    h = book.holds
    ids = [d.account.id for d in drafts]
    history: dict[int, tuple[Decimal, int, int]] = {}
    for acc, cons, days, n in conn.execute(
        """SELECT account_id, sum(consumption), sum(days), count(*) FROM (
               SELECT account_id, consumption, days,
                      row_number() OVER (PARTITION BY account_id ORDER BY period_end DESC) AS k
               FROM bill WHERE account_id IN (SELECT unnest(%s::integer[]))
                 AND period_end < %s AND status = 'issued' AND kind <> 'cancel'
           ) b WHERE k <= %s GROUP BY account_id""",
        (ids, period_end, h.history_bills),
    ):
        history[acc] = (Decimal(cons), int(days), int(n))
    qd = book.rules.quantity_decimals
    for d in drafts:
        if d.account.id not in history or any(x.consumption is None for x in d.dets):
            continue
        cons, days, n = history[d.account.id]
        if days <= 0 or cons <= 0:
            continue
        expected = q(cons / days * (d.end - d.start).days, qd)
        lo, hi = q(expected * h.band_low, qd), q(expected * h.band_high, qd)
        d.details["expected"] = {"consumption": str(expected), "low": str(lo), "high": str(hi), "bills": n}
        if not lo <= d.consumption <= hi:
            d.holds.append(f"band: consumption {d.consumption} outside {lo}–{hi} "
                           f"(expected {expected} from {n} bill(s))")  # fmt: skip


def _price(book: TariffBook, d: Draft) -> None:
    """Price a draft, unless an index is missing (then it stays held at zero)."""
    if any(x.consumption is None for x in d.dets) or not d.segments:
        return
    tou = None
    if "tou" in d.details:
        tou = d.details["tou"]
    max_demand = Decimal(d.details["max_demand"]) if "max_demand" in d.details else None
    if needs_intervals(d.segments) and "max_demand" not in d.details:
        return
    d.priced = price(d.segments, d.consumption, book.rules, UNIT[d.account.commodity], d.account.indigent,
                     tou, max_demand)  # fmt: skip
    if tou is not None:
        d.details["tou"] = [{k: str(v) for k, v in seg.items()} for seg in tou]


# --------------------------------------------------------------------------------------------- writing


def _write_bills(
    conn: Connection,
    book: TariffBook,
    summary: RunSummary,
    drafts: list[Draft],
    period_start: date,
    period_end: date,
    issue: date,
) -> None:
    """Compare each draft with the live bill of its account and period; write what changed."""
    live: dict[int, tuple[int, str, str, int | None, str, list[str]]] = {}
    for bid, acc, status, fp, replaces, kind, holds in conn.execute(
        """SELECT id, account_id, status, fingerprint, replaces_bill_id, kind, hold_reasons FROM bill
           WHERE period_end = %s AND cycle = %s AND status IN ('issued', 'held') AND kind <> 'cancel'""",
        (period_end, summary.cycle),
    ):
        live[acc] = (bid, status, fp, replaces, kind, list(holds))
    clock = _Clock()
    due = issue + timedelta(days=book.rules.due_days)
    prescribed_before = _years_before(issue, book.rules.prescription_years)
    new: list[tuple[Draft, str, int | None, str]] = []  # draft, kind, replaces, fingerprint
    superseded: list[int] = []
    cancels: list[int] = []
    for d in drafts:
        fp = d.fingerprint()
        old = live.get(d.account.id)
        for reason in d.holds:
            code = reason.split(":")[0]
            summary.hold_reasons[code] = summary.hold_reasons.get(code, 0) + 1
        if old is None:
            new.append((d, "regular", None, fp))
        elif old[2] == fp and (old[1] == "issued" or old[5] == d.holds):
            # same values: an issued bill stands (a later exception does not reopen it); a held one
            # stays held for the same reasons
            summary.unchanged += 1
            d.bill_id = old[0]
            continue
        elif old[1] == "held":
            superseded.append(old[0])
            new.append((d, old[4] if old[3] is not None else "regular", old[3], fp))
        elif period_end < prescribed_before:
            # prescription: a correction older than prescription_years is not rebilled; the bill stands
            summary.prescribed += 1
            d.bill_id = old[0]
            d.warnings.append(
                (
                    "prescribed",
                    (
                        f"bill {old[0]} for the period ending {period_end} differs from the validated data now "
                        f"(total would be {d.priced.total}), but the period ended before {prescribed_before} "
                        f"({book.rules.prescription_years} years before {issue}): prescribed, not rebilled"
                    ),
                )
            )
            continue
        else:  # an issued bill whose data changed: cancel it and rebill
            cancels.append(old[0])
            new.append((d, "rebill", old[0], fp))
            summary.rebilled += 1
        if d.holds:
            summary.held += 1
        else:
            summary.issued += 1
    if superseded:
        conn.execute("UPDATE bill SET status = 'superseded' WHERE id = ANY(%s)", (superseded,))
    if cancels:
        conn.execute("UPDATE bill SET status = 'cancelled' WHERE id = ANY(%s)", (cancels,))
    n_ids = len(new) + len(cancels)
    ids = [r[0] for r in conn.execute("SELECT nextval('bill_id_seq') FROM generate_series(1, %s)", (n_ids,))]
    cancel_ids = dict(zip(cancels, ids[len(new) :], strict=True))
    for original, cid in cancel_ids.items():
        _write_cancel(conn, summary.run_id, original, cid, issue, due)
    clock.lap("compared with live bills")
    cur = conn.cursor()
    md = book.rules
    freeze: list[tuple[int, datetime, str]] = []
    with cur.copy(
        """COPY bill (id, run_id, account_id, cycle, period_start, period_end, days, kind, status, hold_reasons,
                      replaces_bill_id, tariff_code, commodity, unit, consumption, subtotal, tax, total, currency,
                      issue_date, due_date, fingerprint, lines, details) FROM STDIN"""
    ) as cp:
        for (d, kind, replaces, fp), bid in zip(new, ids, strict=False):
            d.bill_id = bid
            held = bool(d.holds)
            details = dict(d.details)
            details["tariff_versions"] = [f"{t.code}@{t.effective_from}:{lo}/{hi}" for t, lo, hi in d.segments]
            details["window"] = [str(d.start), str(d.end)]
            if d.warnings:
                details["warnings"] = [f"{code}: {msg}" for code, msg in d.warnings]
            cp.write_row((
                bid, summary.run_id, d.account.id, summary.cycle, d.start, period_end, (d.end - d.start).days,
                kind, "held" if held else "issued", d.holds, replaces, d.account.tariff_code, d.account.commodity,
                UNIT[d.account.commodity], d.consumption, d.priced.subtotal, d.priced.tax, d.priced.total,
                md.currency, None if held else issue, None if held else due, fp, _lines_json(d.priced.lines),
                json.dumps(details, default=str),
            ))  # fmt: skip
            if not held:
                freeze += [(x.meter_id, x.frozen_to, f"bill {bid}") for x in d.dets]
    clock.lap("bills copied")
    channel_ids: dict[str, int] = dict(conn.execute("SELECT code, id FROM channel").fetchall())
    with cur.copy(
        """COPY bill_determinant (bill_id, seq, meter_id, channel_id, start_at, end_at, start_index, end_index,
                                  start_quality, end_quality, multiplier, consumption, tou, max_demand) FROM STDIN"""
    ) as cp:
        for (d, _, _, _), bid in zip(new, ids, strict=False):
            ch = channel_ids[MAIN_REGISTER[d.account.commodity]]
            for seq, x in enumerate(d.dets):
                if x.start is None or x.end is None or x.consumption is None:
                    continue
                cp.write_row((bid, seq, x.meter_id, ch, x.start_at, x.end_at, x.start.value, x.end.value,
                              x.start.quality, x.end.quality, x.multiplier, x.consumption,
                              json.dumps({k: str(v) for k, v in x.tou.items()}),
                              x.max_demand))  # fmt: skip
    clock.lap("determinants copied")
    if freeze:
        with cur.copy("COPY reading_freeze (meter_id, frozen_to, reference) FROM STDIN") as cp:
            for row in freeze:
                cp.write_row(row)


def _years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier (29 February → 28 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _lines_json(lines: list[Line]) -> str:
    """Bill lines as a JSON array; quantities, rates and amounts as exact decimal strings."""
    return json.dumps([{"code": li.code, "description": li.description, "quantity": str(li.quantity), "unit": li.unit,
                        "rate": str(li.rate), "amount": str(li.amount)} for li in lines])  # fmt: skip


def _write_cancel(conn: Connection, run_id: int, original: int, cid: int, issue: date, due: date) -> None:
    """A cancel bill: the original with every amount negated, issued now."""
    conn.execute(
        """INSERT INTO bill (id, run_id, account_id, cycle, period_start, period_end, days, kind, status,
                             replaces_bill_id, tariff_code, commodity, unit, consumption, subtotal, tax, total,
                             currency, issue_date, due_date, fingerprint, lines, details)
           SELECT %s, %s, account_id, cycle, period_start, period_end, days, 'cancel', 'issued', id, tariff_code,
                  commodity, unit, -consumption, -subtotal, -tax, -total, currency, %s, %s, 'cancel:' || fingerprint,
                  (SELECT coalesce(jsonb_agg(jsonb_build_object(
                              'code', e->>'code', 'description', 'cancels: ' || (e->>'description'),
                              'quantity', (-(e->>'quantity')::numeric)::text, 'unit', e->>'unit', 'rate', e->>'rate',
                              'amount', (-(e->>'amount')::numeric)::text) ORDER BY n), '[]'::jsonb)
                   FROM jsonb_array_elements(b.lines) WITH ORDINALITY AS x(e, n)),
                  details
           FROM bill b WHERE id = %s""",
        (cid, run_id, issue, due, original),
    )
    conn.execute(
        """INSERT INTO bill_determinant (bill_id, seq, meter_id, channel_id, start_at, end_at, start_index, end_index,
                                         start_quality, end_quality, multiplier, consumption, tou, max_demand)
           SELECT %s, seq, meter_id, channel_id, start_at, end_at, start_index, end_index, start_quality,
                  end_quality, multiplier, -consumption, tou, max_demand
           FROM bill_determinant WHERE bill_id = %s""",
        (cid, original),
    )


# --------------------------------------------------------------------------------------------- prepaid


def _prepaid_checks(
    conn: Connection, book: TariffBook, summary: RunSummary, drafts: list[Draft], period_end: date
) -> None:
    """Prepaid accounts get no bill: consumption is compared with the credit vended (theft signal)."""
    if not drafts:
        return
    ids = [d.account.id for d in drafts]
    opening: dict[int, Decimal] = {}
    for acc, bal in conn.execute(
        """SELECT DISTINCT ON (account_id) account_id, closing_balance FROM prepaid_check
           WHERE account_id IN (SELECT unnest(%s::integer[])) AND period_end < %s AND closing_balance IS NOT NULL
           ORDER BY account_id, period_end DESC""",
        (ids, period_end),
    ):
        opening[acc] = Decimal(bal)
    vend: dict[int, list[tuple[datetime, Decimal | None, Decimal | None]]] = defaultdict(list)
    lo = min(midnight(d.start) for d in drafts)
    hi = max(midnight(d.end) for d in drafts)
    for acc, at, units, amount in conn.execute(
        "SELECT account_id, vended_at, units, amount FROM vending WHERE account_id IN (SELECT unnest(%s::integer[])) "
        "AND vended_at >= %s AND vended_at < %s",
        (ids, lo, hi),
    ):
        vend[acc].append((at, units, amount))
    qd = book.rules.quantity_decimals
    tol = book.prepaid.tolerance
    rows = []
    for d in drafts:
        w0, w1 = midnight(d.start), midnight(d.end)
        vended = Decimal(0)
        unpriced: list[Decimal] = []
        price_ = next((t.prepaid_price for t, _, _ in reversed(d.segments) if t.prepaid_price), None)
        for at, units, amount in vend.get(d.account.id, []):
            if not w0 <= at < w1:
                continue
            if units is not None:
                vended += Decimal(units)
            elif price_ is not None and amount is not None:
                vended += q(Decimal(amount) / price_, qd)
            elif amount is not None:
                unpriced.append(Decimal(amount))
        open_bal = opening.get(d.account.id, Decimal(0))
        known = all(x.consumption is not None for x in d.dets)
        cons = d.consumption if known else None
        reasons = []
        if unpriced:
            # credit unknown: neither counted as zero (that would read as theft) nor guessed
            msg = (
                f"unchecked: {len(unpriced)} vend(s) by amount ({sum(unpriced, Decimal(0))} "
                f"{book.rules.currency}) and tariff {d.account.tariff_code} has no prepaid_price, so the "
                f"credit vended is unknown: no balance, no flag; import the vends in units or set prepaid_price"
            )
            reasons.append(msg)
            d.warnings.append(("vend_unpriced", msg))
            summary.prepaid_unchecked += 1
        close = open_bal + vended - d.consumption if known and not unpriced else None
        flagged = close is not None and close < -tol
        if flagged:
            reasons.append(f"consumption without vending: consumed {d.consumption}, vended {vended}, "
                           f"opening balance {open_bal}, closing {close}")  # fmt: skip
        if not known:
            reasons.append("no consumption: " + "; ".join(d.holds or ["index missing"]))
        rows.append((d.account.id, d.dets[0].meter_id, d.start, period_end, summary.run_id, cons, vended, open_bal,
                     close, flagged, "; ".join(reasons)))  # fmt: skip
        summary.prepaid += 1
        summary.prepaid_flagged += int(flagged)
    conn.cursor().executemany(
        """INSERT INTO prepaid_check (account_id, meter_id, period_start, period_end, run_id, consumption, vended,
                                      opening_balance, closing_balance, flagged, reason)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (account_id, period_end) DO UPDATE SET run_id = excluded.run_id,
               consumption = excluded.consumption, vended = excluded.vended,
               opening_balance = excluded.opening_balance, closing_balance = excluded.closing_balance,
               flagged = excluded.flagged, reason = excluded.reason, checked_at = now()""",
        rows,
    )
