"""Hold rules: what keeps a bill from being issued.

Missing or estimated reads, open VEE exceptions, negative consumption, and consumption outside the band
expected from the account's issued bills.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from psycopg import Connection

from billing.draft import Draft
from billing.pricing import Index, q
from billing.tariffs import TariffBook
from releve import db

_READ = ("actual", "customer")  # qualities that are a real read of the meter


def _rests_on_estimate(idx: Index) -> bool:
    """True when an index is an estimate or an edit, or is interpolated from one."""
    if idx.quality in ("estimated", "edited"):
        return True
    return idx.quality == "interpolated" and any(r.quality not in _READ for r in idx.reads)


def quality_holds(
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
                d.holds.append(
                    f"no_read: no {name} index for meter {x.serial} at {at:%Y-%m-%d} "
                    f"(no read on the day and none on both sides)"
                )
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
            d.holds.append(f"no_read: no actual read on meter {x.serial} {since} (> {h.max_days_without_read} days)")
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
        d.holds.append(
            f"estimated: {q(share * 100, 1)}% of {n_all} reads estimated or edited "
            f"(> {q(h.max_estimated_share * 100, 1)}%)"
        )
    elif day_share > h.max_estimated_share:
        d.holds.append(
            f"estimated: {missing_days} of {all_days} days without an actual read, missing or estimated "
            f"({q(day_share * 100, 1)}% > {q(h.max_estimated_share * 100, 1)}%)"
        )
    if any(x.consumption is not None and x.consumption < 0 for x in d.dets):
        d.holds.append(f"negative: consumption {total} below zero")


def history_and_holds(conn: Connection, book: TariffBook, drafts: list[Draft], period_end: date) -> None:
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
        (db.int_array(ids), period_end, h.history_bills),
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
            d.holds.append(
                f"band: consumption {d.consumption} outside {lo}–{hi} (expected {expected} from {n} bill(s))"
            )
