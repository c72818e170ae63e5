"""The billing feed for the customer information system (CIS), and the vending import for prepaid.

Feed: for one bill run, ``bills-<cycle>-<period_end>-run<id>.csv`` (one row per bill) and ``.json``
(the run, and each bill with its determinants and lines). Amounts are decimal strings, never floats.
The columns are listed in :data:`CSV_COLUMNS` and documented in docs/billing.md.

Vending CSV (one vend per row, header required): ``account,meter,vended_at,units,amount,token`` —
``account`` (number) or ``meter`` (serial) identifies the prepaid account, ``vended_at`` an ISO
instant with offset (or ``Z``), ``units`` (kWh / m³) or ``amount`` (converted at the tariff's
``prepaid_price``), ``token`` unique (re-importing a file adds nothing twice).
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from billing.tariffs import TariffBook
from releve import db
from releve.settings import Settings

CSV_COLUMNS = [
    "run_id",
    "bill_id",
    "kind",
    "status",
    "replaces_bill_id",
    "account",
    "customer",
    "cycle",
    "period_start",
    "period_end",
    "days",
    "tariff",
    "commodity",
    "unit",
    "meters",
    "start_index",
    "end_index",
    "start_quality",
    "end_quality",
    "consumption",
    "subtotal",
    "tax",
    "total",
    "currency",
    "issue_date",
    "due_date",
    "hold_reasons",
    "read_quality",
]


class VendingError(Exception):
    """A vending file that cannot be imported (file, line, problem)."""


def _s(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if value is None:
        return ""
    return value


def write_feed(url: str, settings: Settings, run_id: int, out_dir: Path) -> tuple[Path, Path]:
    """Write the CSV and JSON feed of the bills created by run ``run_id``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with db.connect(url, role=db.reader_role(settings)) as conn:
        run = conn.execute(
            "SELECT id, cycle, period_start, period_end, issue_date, tariff_file, tariff_sha256, started_at, "
            "finished_at FROM bill_run WHERE id = %s",
            (run_id,),
        ).fetchone()
        if run is None:
            raise KeyError(f"no bill run {run_id}")
        bills = conn.execute(
            """SELECT b.id, b.kind, b.status, b.replaces_bill_id, a.number, c.name, b.cycle, b.period_start,
                      b.period_end, b.days, b.tariff_code, b.commodity, b.unit, b.consumption, b.subtotal, b.tax,
                      b.total, b.currency, b.issue_date, b.due_date, b.hold_reasons, b.details
               FROM bill b JOIN account a ON a.id = b.account_id JOIN customer c ON c.id = a.customer_id
               WHERE b.run_id = %s ORDER BY b.id""",
            (run_id,),
        ).fetchall()
        dets: dict[int, list[dict[str, Any]]] = {}
        for r in conn.execute(
            """SELECT d.bill_id, m.serial, d.start_at, d.end_at, d.start_index, d.end_index, d.start_quality,
                      d.end_quality, d.multiplier, d.consumption, d.max_demand
               FROM bill_determinant d JOIN meter m ON m.id = d.meter_id JOIN bill b ON b.id = d.bill_id
               WHERE b.run_id = %s ORDER BY d.bill_id, d.seq""",
            (run_id,),
        ):
            keys = (
                "meter",
                "start_at",
                "end_at",
                "start_index",
                "end_index",
                "start_quality",
                "end_quality",
                "multiplier",
                "consumption",
                "max_demand",
            )
            dets.setdefault(r[0], []).append(dict(zip(keys, (_s(v) for v in r[1:]), strict=True)))
        lines: dict[int, list[dict[str, Any]]] = {}
        for r in conn.execute(
            """SELECT l.bill_id, l.code, l.description, l.quantity, l.unit, l.rate, l.amount
               FROM bill_line l JOIN bill b ON b.id = l.bill_id WHERE b.run_id = %s ORDER BY l.bill_id, l.seq""",
            (run_id,),
        ):
            lkeys = ("code", "description", "quantity", "unit", "rate", "amount")
            lines.setdefault(r[0], []).append(dict(zip(lkeys, (_s(v) for v in r[1:]), strict=True)))
        notes = [
            {"account": number, "kind": kind, "code": code, "message": message, "bill_id": bill_id}
            for number, kind, code, message, bill_id in conn.execute(
                """SELECT a.number, n.kind, n.code, n.message, n.bill_id FROM bill_run_note n
                   JOIN account a ON a.id = n.account_id WHERE n.run_id = %s ORDER BY n.kind, a.number, n.code""",
                (run_id,),
            )
        ]
    stem = f"bills-{run[1]}-{run[3]}-run{run_id}"
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    records = []
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for b in bills:
            ds = dets.get(b[0], [])
            row = [
                run_id,
                b[0],
                b[1],
                b[2],
                b[3],
                b[4],
                b[5],
                b[6],
                b[7],
                b[8],
                b[9],
                b[10],
                b[11],
                b[12],
                ";".join(d["meter"] for d in ds),
                ds[0]["start_index"] if ds else "",
                ds[-1]["end_index"] if ds else "",
                ds[0]["start_quality"] if ds else "",
                ds[-1]["end_quality"] if ds else "",
                b[13],
                b[14],
                b[15],
                b[16],
                b[17],
                b[18],
                b[19],
                " | ".join(b[20]),
                (b[21] or {}).get("read_quality", ""),
            ]
            w.writerow([_s(v) for v in row])
            rec = dict(zip(CSV_COLUMNS, (_s(v) for v in row), strict=True))
            rec["hold_reasons"] = list(b[20])
            rec["determinants"] = ds
            rec["lines"] = lines.get(b[0], [])
            rec["details"] = b[21]
            records.append(rec)
    doc = {
        "run": {
            "id": run[0],
            "cycle": run[1],
            "period_start": str(run[2]),
            "period_end": str(run[3]),
            "issue_date": str(run[4]),
            "tariff_file": run[5],
            "tariff_sha256": run[6],
            "started_at": run[7].isoformat(),
            "finished_at": run[8].isoformat() if run[8] else None,
        },
        "bills": records,
        "notes": notes,
    }
    json_path.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    return csv_path, json_path


def _dec(text: str, where: str) -> Decimal | None:
    if not text.strip():
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise VendingError(f"{where}: not a number: {text!r}") from exc
    if not value.is_finite() or value < 0:
        raise VendingError(f"{where}: must be a finite number >= 0: {text!r}")
    return value


def _check_price(book: TariffBook, code: str, at: datetime, where: str) -> None:
    """Refuse a vend by amount when the tariff in force that day cannot convert it to units."""
    day = at.astimezone(UTC).date()
    try:
        tariff = book.segments(code, day, day + timedelta(days=1))[0][0]
    except KeyError as exc:
        raise VendingError(f"{where}: amount: {exc.args[0]}, so the amount cannot be converted; give units") from exc
    if tariff.prepaid_price is None:
        raise VendingError(
            f"{where}: amount: tariff {code} (version from {tariff.effective_from}) has no "
            f"prepaid_price, so the amount cannot be converted to units; give units"
        )


def import_vending(
    url: str, settings: Settings, path: Path, source: str = "", book: TariffBook | None = None
) -> tuple[int, int]:
    """Import a vending CSV; return (added, already present). All or nothing: a bad line refuses the file.

    With a tariff ``book``, a vend given only as an amount is refused when the account's tariff in
    force that day has no ``prepaid_price`` (its credit in units could not be known).
    """
    rows = []
    with db.connect(url, role=db.editor_role(settings)) as conn, conn.transaction():
        accounts = {
            n: (i, sp) for i, n, sp in conn.execute("SELECT id, number, service_point_id FROM account WHERE prepaid")
        }
        tariff_of: dict[int, str] = dict(conn.execute("SELECT id, tariff_code FROM account WHERE prepaid").fetchall())
        meters: dict[str, int] = dict(
            conn.execute(
                """SELECT m.serial, a.id FROM installation i JOIN meter m ON m.id = i.meter_id
               JOIN account a ON a.service_point_id = i.service_point_id AND a.prepaid
               WHERE i.removed_at IS NULL AND a.closed_on IS NULL"""
            ).fetchall()
        )
        serial_id: dict[str, int] = dict(conn.execute("SELECT serial, id FROM meter").fetchall())
        try:
            fh = path.open(newline="", encoding="utf-8")
        except OSError as exc:
            raise VendingError(f"{path}: cannot read: {exc.strerror}") from exc
        with fh:
            reader = csv.DictReader(fh)
            missing = {"vended_at", "token"} - set(reader.fieldnames or [])
            if missing or not {"account", "meter"} & set(reader.fieldnames or []):
                raise VendingError(f"{path}: header needs account or meter, vended_at, units or amount, token")
            for n, rec in enumerate(reader, start=2):
                where = f"{path}:{n}"
                acc_no = (rec.get("account") or "").strip()
                serial = (rec.get("meter") or "").strip()
                if acc_no:
                    if acc_no not in accounts:
                        raise VendingError(f"{where}: account: {acc_no!r} is not a prepaid account")
                    acc = accounts[acc_no][0]
                elif serial in meters:
                    acc = meters[serial]
                else:
                    raise VendingError(f"{where}: meter: {serial!r} is not installed on a prepaid account")
                try:
                    at = datetime.fromisoformat(rec["vended_at"].strip().replace("Z", "+00:00"))
                except ValueError as exc:
                    raise VendingError(f"{where}: vended_at: not an ISO instant: {rec['vended_at']!r}") from exc
                if at.tzinfo is None:
                    raise VendingError(f"{where}: vended_at: needs a UTC offset or Z")
                units = _dec(rec.get("units") or "", f"{where}: units")
                amount = _dec(rec.get("amount") or "", f"{where}: amount")
                if units is None and amount is None:
                    raise VendingError(f"{where}: give units or amount")
                if units is None and book is not None:
                    _check_price(book, tariff_of[acc], at, where)
                token = (rec.get("token") or "").strip()
                if not token:
                    raise VendingError(f"{where}: token: empty")
                rows.append((acc, serial_id.get(serial), at, units, amount, token, source or str(path.name)))
        added = 0
        for r in rows:
            cur = conn.execute(
                """INSERT INTO vending (account_id, meter_id, vended_at, units, amount, token, source)
                   VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (token) DO NOTHING""",
                r,
            )
            added += cur.rowcount
    return added, len(rows) - added
