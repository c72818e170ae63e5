"""The cycle's period and each account's own: the accounts active in it, their previous bills, their meters."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from psycopg import Connection

from billing import tenant
from billing.draft import Account, Determinant, Draft, Installed, RunSummary, midnight
from billing.pricing import Index, cycle_period, q, to_decimal
from billing.tariffs import Tariff, TariffBook
from releve import db


def cycle_window(conn: Connection, book: TariffBook, cycle: str, period_end: date) -> tuple[date, date]:
    """Days [start, end) of the cycle's period ending on ``period_end`` (inclusive).

    The period starts the day after the cycle's previous run (so month-end cycles of 31, 28 and 31
    days follow each other without a gap or an overlap); the cycle's first run covers
    ``cycle_days`` days. Each account then follows its own previous bill (see :func:`make_drafts`).
    """
    row = conn.execute(
        "SELECT max(period_end) FROM bill_run WHERE cycle = %s AND period_end < %s", (cycle, period_end)
    ).fetchone()
    start, end = cycle_period(period_end, book.rules.cycle_days)
    if row is not None and row[0] is not None:
        start = row[0] + timedelta(days=1)
    return start, end


def list_accounts(conn: Connection, cycle: str, start: date, end: date) -> list[Account]:
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
        (db.int_array(ids), period_end, period_end),
    ):
        out[acc] = _Previous(end, issued_id, later_start, later_end)
    return out


def _billed_ends(conn: Connection, bill_ids: list[int], qd: int) -> dict[tuple[int, int, datetime], Index]:
    """The end index of each determinant of the given bills, by (bill, meter, end instant)."""
    out: dict[tuple[int, int, datetime], Index] = {}
    for bid, meter_id, end_at, end_index, quality in conn.execute(
        """SELECT bill_id, meter_id, end_at, end_index, end_quality FROM bill_determinant
           WHERE bill_id = ANY(%s::bigint[])""",
        (db.int_array(bill_ids),),
    ):
        out[(bid, meter_id, end_at)] = Index(q(Decimal(end_index), qd), quality, end_at)
    return out


def make_drafts(
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
           WHERE n.account_id = ANY(%s::integer[]) AND n.kind = 'skipped' AND n.code IN ('tariff', 'meter')
             AND r.cycle = %s AND r.period_end < %s
           ORDER BY n.account_id, r.period_start, r.id""",
        (
            db.int_array(i for i in ids if i not in previous or previous[i].end is None),
            summary.cycle,
            summary.period_end,
        ),
    ):
        skipped_since[acc] = (since, run_id, code)
    # an account may reach back before the cycle (a newcomer's subscription, a gap): installations from then
    earliest = min(
        [
            start,
            *(c.start_date for c in [cases.get(("new", i)) for i in ids] if c and c.start_date),
            *(p.end + timedelta(days=1) for p in previous.values() if p.end is not None),
            *(since for since, _, _ in skipped_since.values()),
        ]
    )
    inst: dict[int, list[Installed]] = defaultdict(list)
    for r in conn.execute(
        """SELECT i.service_point_id, i.meter_id, m.serial, i.installed_at, i.removed_at, i.install_index,
                  i.removal_index, m.multiplier
           FROM installation i JOIN meter m ON m.id = i.meter_id
           WHERE i.service_point_id IN (SELECT unnest(%s::integer[]))
             AND i.installed_at < %s AND (i.removed_at IS NULL OR i.removed_at > %s)
           ORDER BY i.service_point_id, i.installed_at""",
        (db.int_array(sps), midnight(end), midnight(earliest)),
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
            summary.skip(
                a, "tenant_case", f"tenant case {case.id} open: no subscription until proof or {case.proof_due}"
            )
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
            summary.skip(
                a, "overlap", f"the bill for {prev.later_end} already covers {prev.later_start} – {prev.later_end}"
            )
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
            s_idx = (
                Index(to_decimal(i.install_index, qd), "install", i.installed_at)
                if i.installed_at > w0
                else (start_override if start_override is not None else None)
            )
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
            summary.skip(
                a, "meter", f"no meter installed at the service point between {ws} and {we - timedelta(days=1)}"
            )
            continue
        d = Draft(a, ws, we, dets, segments)
        days = (we - ws).days
        if ws < start or (ws > start and prev.end is not None):
            d.warnings.append(
                (
                    "period",
                    f"period {ws} – {we - timedelta(days=1)} ({days} days), not the cycle's "
                    f"{start} – {end - timedelta(days=1)}: {why}",
                )
            )
        elif ws == start and we == end and abs(days - book.rules.cycle_days) > 3:
            d.warnings.append(
                (
                    "period",
                    f"period of {days} days (cycle {book.rules.cycle_days}): the cycle's "
                    f"previous run ended on {start - timedelta(days=1)}",
                )
            )
        drafts.append(d)
    return drafts
