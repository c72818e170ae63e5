"""Writing a run: bills (new, superseded, cancel, rebill), determinants, read freezes and the run's notes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timedelta
from json.encoder import encode_basestring_ascii as _json_str

from psycopg import Connection

from billing.draft import UNIT, Clock, Draft, Note, RunSummary
from billing.pricing import Line
from billing.tariffs import TariffBook
from releve.model import MAIN_REGISTER


def write_notes(conn: Connection, summary: RunSummary, drafts: list[Draft]) -> None:
    """Store every skipped account's reason and every warning, per account, in ``bill_run_note``."""
    for d in drafts:
        summary.notes += [
            Note(d.account.id, d.account.number, "warning", code, msg, d.bill_id) for code, msg in d.warnings
        ]
    rows: dict[tuple[int, str, str], Note] = {}
    for n in summary.notes:  # one row per account, kind and code (two meters' warnings share it)
        k = (n.account_id, n.kind, n.code)
        rows[k] = n if k not in rows else replace(rows[k], message=f"{rows[k].message}; {n.message}")
    if not rows:
        return
    with conn.cursor().copy("COPY bill_run_note (run_id, account_id, kind, code, message, bill_id) FROM STDIN") as cp:
        for n in rows.values():
            cp.write_row((summary.run_id, n.account_id, n.kind, n.code, n.message, n.bill_id))


def write_bills(
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
    clock = Clock()
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
            cp.write_row(
                (
                    bid,
                    summary.run_id,
                    d.account.id,
                    summary.cycle,
                    d.start,
                    period_end,
                    (d.end - d.start).days,
                    kind,
                    "held" if held else "issued",
                    d.holds,
                    replaces,
                    d.account.tariff_code,
                    d.account.commodity,
                    UNIT[d.account.commodity],
                    d.consumption,
                    d.priced.subtotal,
                    d.priced.tax,
                    d.priced.total,
                    md.currency,
                    None if held else issue,
                    None if held else due,
                    fp,
                    _lines_json(d.priced.lines),
                    _DETAILS_JSON.encode(details),
                )
            )
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
                cp.write_row(
                    (
                        bid,
                        seq,
                        x.meter_id,
                        ch,
                        x.start_at,
                        x.end_at,
                        x.start.value,
                        x.end.value,
                        x.start.quality,
                        x.end.quality,
                        x.multiplier,
                        x.consumption,
                        json.dumps({k: str(v) for k, v in x.tou.items()}) if x.tou else "{}",
                        x.max_demand,
                    )
                )
    clock.lap("determinants copied")
    if freeze:
        with cur.copy("COPY reading_freeze (meter_id, frozen_to, reference) FROM STDIN") as cp:
            for row in freeze:
                cp.write_row(row)


#: ``json.dumps(details, default=str)`` without making an encoder per bill.
_DETAILS_JSON = json.JSONEncoder(default=str)


def _years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier (29 February → 28 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _lines_json(lines: list[Line]) -> str:
    """Bill lines as a JSON array; quantities, rates and amounts as exact decimal strings.

    The text ``json.dumps`` writes for a dict per line, written out directly (half the time of a
    bill's row at 100,000 bills went to building and encoding those dicts): strings are escaped by
    the json module's own encoder, and a Decimal's ``str`` is digits, a sign, a point and an
    exponent, nothing to escape (tests/billing/test_fast_paths.py holds the two equal).
    """
    return (
        "["
        + ", ".join(
            f'{{"code": {_json_str(li.code)}, "description": {_json_str(li.description)}, '
            f'"quantity": "{li.quantity}", "unit": {_json_str(li.unit)}, "rate": "{li.rate}", "amount": "{li.amount}"}}'
            for li in lines
        )
        + "]"
    )


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
