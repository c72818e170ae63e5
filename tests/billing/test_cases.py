"""Regression cases kept as data: each ``cases/*.toml`` goes through the real bill run over PostgreSQL.

A case holds its inputs — a tariff file (``[tariffs]``, the keys of tariffs.toml), the registry
(``[[point]]``, ``[[meter]]``, ``[[install]]``, ``[[account]]``) and ordered ``[[step]]``s (register
reads, interval series, VEE versions, tenant changes and proofs, vending imports, registry fixes,
bill runs) — and, on each run step, the hand-computed expectations: bills to the cent, their
determinants, hold codes, warnings, the run's notes (skip reasons) and prepaid checks. Every number is
parsed as an exact Decimal. A bill expectation names only the fields it pins down.
"""

from __future__ import annotations

import csv
import tomllib
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing import tenant
from billing.feed import VendingError, import_vending
from billing.run import run_bills
from billing.tariffs import TariffBook, TariffFile
from releve import db as releve_db
from releve.model import Reading, ReadType, Source

from .fleet import REG, Fleet, write

pytestmark = pytest.mark.db

CASES = sorted((Path(__file__).parent / "cases").glob("*.toml"))


def load(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)


def test_every_case_names_its_bug_and_pins_expectations():
    assert len(CASES) >= 6
    for path in CASES:
        case = load(path)
        assert case.get("bug") and case.get("title"), f"{path.name}: say which bug it pins"
        runs = [s for s in case["step"] if s["do"] == "run"]
        pinned = [
            r
            for r in runs
            if any("total" in b or b.get("status") == "none" for b in r.get("bill", []))
            or r.get("prepaid")
            or r.get("notes")
        ]
        assert pinned, f"{path.name}: no run pins an amount, a note or a prepaid check"


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_case(db, tmp_path, path):
    case = load(path)
    book = TariffBook(TariffFile.model_validate(case["tariffs"]), path.name)
    f = Fleet(db)
    points = {p["code"]: f.point(p["code"], p.get("commodity", "water")) for p in case.get("point", [])}
    commodity: dict[str, str] = {}
    for m in case.get("meter", []):
        commodity[m["serial"]] = m.get("commodity", "water")
        f.meter(m["serial"], commodity[m["serial"]], m.get("multiplier", 1))
    for i in case.get("install", []):
        f.install(
            i["meter"],
            points[i["point"]],
            at=i["at"],
            index=float(i.get("index", 0)),
            removed=i.get("removed_at"),
            removal_index=_float(i.get("removal_index")),
        )
    for a in case.get("account", []):
        f.account(
            a["number"],
            points[a["point"]],
            a["tariff"],
            cycle=a.get("cycle", "A"),
            opened=a.get("opened_on", date(2025, 1, 1)),
            closed=a.get("closed_on"),
            prepaid=a.get("prepaid", False),
            indigent=a.get("indigent", False),
        )
    for n, step in enumerate(case["step"]):
        where = f"{path.name}: step {n} ({step['do']})"
        STEPS[step["do"]](f, book, step, commodity, tmp_path, where)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


# --------------------------------------------------------------------------------------------- steps


def step_reads(f, book, s, commodity, tmp, where):
    """Register reads: ``points = [[instant, index], …]`` with one ``read_type``."""
    ch, unit = REG[commodity[s["meter"]]]
    rt = ReadType(s.get("read_type", "actual"))
    write(f.db, [Reading(s["meter"], ch, t, float(v), unit, Source.MANUAL, rt) for t, v in s["points"]])


def step_daily_reads(f, book, s, commodity, tmp, where):
    """One register read a day at 00:00 from ``from`` to ``to`` (inclusive), ``first`` + ``per_day`` × day."""
    ch, unit = REG[commodity[s["meter"]]]
    skip = set(s.get("except", []))
    out, t, k = [], s["from"], 0
    while t <= s["to"]:
        if t not in skip:
            out.append(
                Reading(s["meter"], ch, t, float(s["first"] + s["per_day"] * k), unit, Source.MANUAL, ReadType.ACTUAL)
            )
        t += timedelta(days=1)
        k += 1
    write(f.db, out)


def step_intervals(f, book, s, commodity, tmp, where):
    """An interval series stamped at each interval's END, from ``first_end`` to ``last_end``.

    The value of the interval stamped T (covering T − length to T) is ``value``, or the first
    ``when`` rule whose ISO ``days`` and hour ranges ``hours`` hold the interval's start, or an
    explicit ``at = [[end stamp, value], …]``.
    """
    code = {"electricity": "1-0:1.29.0", "water": "8-0:1.29.0"}[commodity[s["meter"]]]
    unit = REG[commodity[s["meter"]]][1]
    step = timedelta(minutes=int(s.get("minutes", 15)))
    at = {t: v for t, v in s.get("at", [])}
    out, t = [], s["first_end"]
    while t <= s["last_end"]:
        began = t - step
        v = s["value"]
        for rule in s.get("when", []):
            if began.isoweekday() in rule["days"] and any(lo <= began.hour < hi for lo, hi in rule["hours"]):
                v = rule["value"]
                break
        v = at.get(t, v)
        out.append(Reading(s["meter"], code, t, float(v), unit, Source.MODBUS, ReadType.ACTUAL))
        t += step
    write(f.db, out)


def step_version(f, book, s, commodity, tmp, where):
    """A VEE version (estimate, edit or adjustment of billed data)."""
    f.version(
        s["meter"],
        s["at"],
        float(s["value"]),
        kind=s.get("kind", "adjustment"),
        quality=s.get("quality", "S"),
        replaced=_float(s.get("replaced")),
        commodity=commodity[s["meter"]],
    )


def step_account(f, book, s, commodity, tmp, where):
    """A registry fix: the account's tariff code."""
    f.sql("UPDATE account SET tariff_code = %s WHERE number = %s", (s["tariff"], s["number"]))


def step_tenant_change(f, book, s, commodity, tmp, where):
    with releve_db.connect(f.db.url, role=releve_db.editor_role(f.db.settings)) as conn, conn.transaction():
        tenant.record_change(
            conn,
            book,
            s["account"],
            s["move_out_index"],
            s["move_out_date"],
            s["move_in_index"],
            s["move_in_date"],
            s.get("predecessor"),
            s.get("requested_on"),
        )
    check_case(f, s, where)


def step_tenant_proof(f, book, s, commodity, tmp, where):
    case_id = f.one(
        "SELECT t.id FROM tenant_case t JOIN account a ON a.id = t.account_id WHERE a.number = %s", (s["account"],)
    )
    with releve_db.connect(f.db.url, role=releve_db.editor_role(f.db.settings)) as conn, conn.transaction():
        if "error" in s:
            with pytest.raises(tenant.TenantError, match=s["error"]):
                tenant.record_proof(conn, case_id, s.get("index"), s["date"], s["document"], s["today"])
            return
        tenant.record_proof(conn, case_id, s.get("index"), s["date"], s["document"], s["today"])
    check_case(f, s, where)


def check_case(f, s, where):
    """The tenant case's columns named in ``expect`` ("none" for NULL)."""
    for key, value in s.get("expect", {}).items():
        got = f.one(
            f"SELECT t.{key} FROM tenant_case t JOIN account a ON a.id = t.account_id WHERE a.number = %s",
            (s["account"],),
        )
        assert got == (None if value == "none" else value), f"{where}: {key} {got!r} != {value!r}"


def step_vending(f, book, s, commodity, tmp, where):
    """A vending CSV import; ``check_prices`` imports with the case's tariffs (amounts need a price)."""
    path = tmp / f"vend-{abs(hash(where))}.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["account", "meter", "vended_at", "units", "amount", "token"])
        for r in s["rows"]:
            w.writerow(
                [
                    r.get("account", ""),
                    r.get("meter", ""),
                    r["vended_at"].isoformat(),
                    r.get("units", ""),
                    r.get("amount", ""),
                    r["token"],
                ]
            )
    use = book if s.get("check_prices") else None
    if "error" in s:
        with pytest.raises(VendingError, match=s["error"]):
            import_vending(f.db.url, f.db.settings, path, book=use)
        return
    assert import_vending(f.db.url, f.db.settings, path, book=use) == (len(s["rows"]), 0)


def step_run(f, book, s, commodity, tmp, where):
    bills_before = f.one("SELECT count(*) FROM bill")
    summary = run_bills(f.db.url, f.db.settings, book, s.get("cycle", "A"), s["period_end"], s["issue_date"], tmp)
    for key, value in s.get("summary", {}).items():
        got = len(summary.skipped) if key == "skipped" else getattr(summary, key)
        assert got == value, f"{where}: summary.{key} = {got!r}, expected {value!r}\n{summary.text()}"
    if "new_bills" in s:
        assert f.one("SELECT count(*) FROM bill") - bills_before == s["new_bills"], where
    for exp in s.get("bill", []):
        check_bill(f, exp, s["period_end"], f"{where}: {exp['account']}")
    if "notes" in s:
        got = f.sql(
            """SELECT a.number, n.kind, n.code, n.message FROM bill_run_note n JOIN account a ON a.id = n.account_id
               WHERE n.run_id = %s ORDER BY 1, 2, 3""",
            (summary.run_id,),
        )
        assert [(r[0], r[1], r[2]) for r in got] == sorted((n["account"], n["kind"], n["code"]) for n in s["notes"]), (
            f"{where}: notes {got}"
        )
        for n in s["notes"]:
            msg = next(r[3] for r in got if (r[0], r[1], r[2]) == (n["account"], n["kind"], n["code"]))
            assert n.get("contains", "") in msg, f"{where}: note {msg!r} lacks {n.get('contains')!r}"
        assert f.one("SELECT n_skipped FROM bill_run WHERE id = %s", (summary.run_id,)) == sum(
            1 for n in s["notes"] if n["kind"] == "skipped"
        )
    for exp in s.get("prepaid", []):
        row = f.sql(
            """SELECT p.consumption, p.vended, p.opening_balance, p.closing_balance, p.flagged, p.reason
               FROM prepaid_check p JOIN account a ON a.id = p.account_id WHERE a.number = %s AND p.period_end = %s""",
            (exp["account"], s["period_end"]),
        )[0]
        got = dict(zip(("consumption", "vended", "opening", "closing", "flagged", "reason"), row, strict=True))
        for key in ("consumption", "vended", "opening", "flagged"):
            if key in exp:
                assert got[key] == exp[key], f"{where}: prepaid {exp['account']} {key} {got[key]!r} != {exp[key]!r}"
        if "closing" in exp:
            assert got["closing"] == (None if exp["closing"] == "unknown" else exp["closing"]), where
        assert exp.get("reason_contains", "") in got["reason"], f"{where}: reason {got['reason']!r}"


STEPS = {
    "reads": step_reads,
    "daily_reads": step_daily_reads,
    "intervals": step_intervals,
    "version": step_version,
    "account": step_account,
    "tenant_change": step_tenant_change,
    "tenant_proof": step_tenant_proof,
    "vending": step_vending,
    "run": step_run,
}


def check_bill(f: Fleet, exp: dict[str, Any], period_end: date, where: str) -> None:
    kind = exp.get("kind")
    rows = f.sql(
        """SELECT b.id, b.kind, b.status, b.period_start, b.days, b.consumption, b.subtotal, b.tax, b.total,
                  b.hold_reasons, b.issue_date, b.due_date, b.details
           FROM bill b JOIN account a ON a.id = b.account_id
           WHERE a.number = %s AND b.period_end = %s AND (%s::text IS NULL OR b.kind = %s) ORDER BY b.id""",
        (exp["account"], exp.get("period_end", period_end), kind, kind),
    )
    if exp.get("status") == "none":
        assert not rows, f"{where}: expected no bill, found {rows}"
        return
    assert rows, f"{where}: no bill"
    live = [r for r in rows if r[2] in ("issued", "held")]
    bid, kind_, status, start, days, cons, sub, tax, total, holds, issue, due, details = (live or rows)[-1]
    got = {
        "kind": kind_,
        "status": status,
        "period_start": start,
        "days": days,
        "consumption": cons,
        "subtotal": sub,
        "tax": tax,
        "total": total,
        "issue_date": issue,
        "due_date": due,
        "read_quality": details.get("read_quality"),
        "max_demand": Decimal(details["max_demand"]) if "max_demand" in details else None,
    }
    for key, value in exp.items():
        if key in got:
            assert got[key] == value, f"{where}: {key} {got[key]!r} != {value!r}"
    if "holds" in exp:
        assert sorted({h.split(":")[0] for h in holds}) == sorted(exp["holds"]), f"{where}: holds {holds}"
    if "hold_contains" in exp:
        assert any(exp["hold_contains"] in h for h in holds), f"{where}: holds {holds}"
    if "warnings" in exp:
        codes = sorted({w.split(":")[0] for w in details.get("warnings", [])})
        assert codes == sorted(exp["warnings"]), f"{where}: warnings {details.get('warnings')}"
    if "lines" in exp:
        assert f.lines(bid) == exp["lines"], f"{where}: lines {f.lines(bid)}"
    if "determinants" in exp:
        got_d = f.sql(
            """SELECT m.serial, d.start_at, d.end_at, d.start_index, d.end_index, d.start_quality, d.end_quality,
                      d.consumption
               FROM bill_determinant d JOIN meter m ON m.id = d.meter_id WHERE bill_id = %s ORDER BY seq""",
            (bid,),
        )
        assert len(got_d) == len(exp["determinants"]), f"{where}: determinants {got_d}"
        keys = (
            "meter",
            "start_at",
            "end_at",
            "start_index",
            "end_index",
            "start_quality",
            "end_quality",
            "consumption",
        )
        for g, e in zip(got_d, exp["determinants"], strict=True):
            gd = dict(zip(keys, g, strict=True))
            for key, value in e.items():
                assert gd[key] == value, f"{where}: determinant {key} {gd[key]!r} != {value!r}"
