"""Prepaid checks: prepaid accounts get no bill; their consumption is compared with the credit vended."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal

from psycopg import Connection

from billing.draft import Draft, RunSummary, midnight
from billing.pricing import q
from billing.tariffs import TariffBook


def prepaid_checks(
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
            reasons.append(
                f"consumption without vending: consumed {d.consumption}, vended {vended}, "
                f"opening balance {open_bal}, closing {close}"
            )
        if not known:
            reasons.append("no consumption: " + "; ".join(d.holds or ["index missing"]))
        rows.append(
            (
                d.account.id,
                d.dets[0].meter_id,
                d.start,
                period_end,
                summary.run_id,
                cons,
                vended,
                open_bal,
                close,
                flagged,
                "; ".join(reasons),
            )
        )
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
