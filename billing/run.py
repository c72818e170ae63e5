"""A bill run: determinants, holds and bills for one cycle, from the validated series, in one transaction.

``run_bills(url, settings, book, cycle, period_end)``:

1. settles tenant-change cases whose proof is overdue (the predecessor's move-out index applies);
2. lists the cycle's accounts active in the period, each with its own period — the day after its
   previous bill, at that bill's end index (consecutive bills never overlap, never leave a day or a
   unit unbilled) — and its meters (installation rows: exchanges inside the cycle use the old
   meter's removal index and the new meter's install index); skipped accounts and warnings are
   stored per account in ``bill_run_note``;
3. reads the validated register series of those meters around the period with one binary COPY
   (``validated_between``: ``validated_reading`` over the period, with later ``adjustment`` versions of
   billed data laid over it) into numpy arrays sorted by (meter, instant); every boundary index (a
   read on the day, else linear interpolation) and data-quality figure is then a binary search;
4. computes per account the determinants (interval channels stamped at their end: the interval
   stamped T covers (T - length, T]), holds and priced lines; compares them with the live bill of
   the same account and period: unchanged → nothing; a held bill → superseded; an issued bill →
   cancelled by a ``cancel`` bill and replaced by a ``rebill`` (never a silent change), unless the
   period is prescribed (older than ``prescription_years``);
5. writes the bills and determinants with ``COPY``, freezes the billed reads (``reading_freeze``),
   posts the issued bills to the account ledger (``billing.ledger.post_bills``) and records prepaid
   checks (consumption vs vended credit).

This module orchestrates the steps; each lives in its own module: ``billing.tenant`` (1), ``billing.periods``
(2: the cycle's window, accounts, previous bills, meters), ``billing.determinants`` (3: the series, boundary
indexes, data-quality figures), ``billing.holds`` and ``billing.intervals`` (4: hold rules; time of use and
demand), ``billing.store`` (4–5: compare, cancel/rebill, write, freeze, notes), ``billing.prepaid`` (5); the
shared data (accounts, determinants, drafts, the run summary) is in ``billing.draft``.

Billing connects as the editor role (see migration 0008).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from billing import ledger, tenant
from billing.determinants import resolve_indexes
from billing.draft import UNIT, Clock, Draft, RunSummary
from billing.holds import history_and_holds, quality_holds
from billing.intervals import read_intervals
from billing.periods import cycle_window, list_accounts, make_drafts
from billing.prepaid import prepaid_checks
from billing.pricing import needs_intervals, price
from billing.store import write_bills, write_notes
from billing.tariffs import TariffBook
from releve import db
from releve.settings import Settings


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
    with _collector_paused(), db.connect(url, role=db.editor_role(settings)) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('releve.bill.' || %s))", (cycle,))
        start, end = cycle_window(conn, book, cycle, period_end)
        row = conn.execute(
            """INSERT INTO bill_run (cycle, period_start, period_end, issue_date, tariff_file, tariff_sha256)
               VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
            (cycle, start, period_end, issue, book.path, book.sha256),
        ).fetchone()
        assert row is not None
        summary = RunSummary(int(row[0]), cycle, start, period_end)
        clock = Clock()
        summary.notices = tenant.expire_cases(conn, book, issue, out_dir)
        accounts = list_accounts(conn, cycle, start, end)
        summary.accounts = len(accounts)
        drafts = make_drafts(conn, book, accounts, start, end, summary)
        clock.lap("accounts and meters")
        stats, exceptions = resolve_indexes(conn, book, drafts, start, end)
        for d in drafts:
            quality_holds(book, d, stats, exceptions)
            d.holds = list(dict.fromkeys(d.holds))  # one meter installed twice (an exchange) says it once
        read_intervals(conn, book, [d for d in drafts if needs_intervals(d.segments)])
        clock.lap("determinants")
        regular = [d for d in drafts if not d.account.prepaid]
        history_and_holds(conn, book, regular, period_end)
        for d in regular:
            _price(book, d)
        clock.lap("history and pricing")
        write_bills(conn, book, summary, regular, start, period_end, issue)
        ledger.post_bills(conn, summary.run_id)  # issued, cancel and rebill bills reach the account ledger
        clock.lap("bills written")
        prepaid = [d for d in drafts if d.account.prepaid]
        prepaid_checks(conn, book, summary, prepaid, period_end)
        write_notes(conn, summary, drafts)
        conn.execute(
            """UPDATE bill_run SET finished_at = now(), n_accounts = %s, n_issued = %s, n_held = %s,
                      n_unchanged = %s, n_rebilled = %s, n_prepaid = %s, n_skipped = %s WHERE id = %s""",
            (
                summary.accounts,
                summary.issued,
                summary.held,
                summary.unchanged,
                summary.rebilled,
                summary.prepaid,
                len(summary.skipped),
                summary.run_id,
            ),
        )
    summary.seconds = (datetime.now(UTC) - t0).total_seconds()
    if out_dir is not None:
        from billing.feed import write_feed

        write_feed(url, settings, summary.run_id, out_dir)
    return summary


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the run (its memory is freed by reference counts).

    A run holds a few objects per account (drafts, determinants, indexes, lines): hundreds of
    thousands at 100,000 accounts. Each full collection walks all of them, and as they accumulate
    the collector runs full collections again and again: a quarter of the run's Python time at
    100,000 accounts (docs/billing.md, "Leaner per account"). None of them refers back to another
    in a cycle, so pausing the collector frees nothing later than it would have; it is restored
    after the run.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


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
    d.priced = price(
        d.segments, d.consumption, book.rules, UNIT[d.account.commodity], d.account.indigent, tou, max_demand
    )
    if tou is not None:
        d.details["tou"] = [{k: str(v) for k, v in seg.items()} for seg in tou]
