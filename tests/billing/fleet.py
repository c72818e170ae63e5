"""A hand-built fleet for the billing tests: registry rows and validated reads, written for real."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from billing.run import run_bills
from billing.tariffs import load_tariffs
from ingest import BatchWriter
from releve.model import Reading, ReadType, Source

BOOK = load_tariffs(Path(__file__).parent / "tariffs_test.toml")
REG = {"water": ("8-0:1.0.0", "m3"), "electricity": ("1-0:1.8.0", "kWh")}
PERIOD_END = date(2026, 3, 31)
ISSUE = date(2026, 4, 2)


def ts(month, day, hour=0):
    return datetime(2026, month, day, hour, tzinfo=UTC)


JAN_1 = ts(1, 1)


class Fleet:
    """Registry helpers over the test database (as its superuser)."""

    def __init__(self, db):
        self.db = db

    def sql(self, query, params=()):
        with self.db.connect() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None

    def one(self, query, params=()):
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    def meter(self, serial, commodity="water", multiplier=1):
        unit = REG[commodity][1]
        return self.one(
            "INSERT INTO meter (serial, commodity, model, unit, protocol, multiplier) VALUES (%s, %s, 'test', %s, 'manual', %s) RETURNING id",
            (serial, commodity, unit, multiplier),
        )

    def point(self, code, commodity="water"):
        return self.one("INSERT INTO service_point (code, commodity) VALUES (%s, %s) RETURNING id", (code, commodity))

    def install(self, serial, sp, at=JAN_1, index=0.0, removed=None, removal_index=None):
        self.sql(
            """INSERT INTO installation (meter_id, service_point_id, installed_at, install_index, removed_at, removal_index)
               VALUES ((SELECT id FROM meter WHERE serial = %s), %s, %s, %s, %s, %s)""",
            (serial, sp, at, index, removed, removal_index),
        )

    def account(
        self,
        number,
        sp,
        tariff,
        cycle="A",
        opened=date(2025, 1, 1),
        closed=None,
        prepaid=False,
        indigent=False,
        name=None,
    ):
        cust = self.one(
            "INSERT INTO customer (name, indigent) VALUES (%s, %s) RETURNING id",
            (name or f"Customer {number}", indigent),
        )
        return self.one(
            """INSERT INTO account (number, customer_id, service_point_id, billing_cycle, tariff_code, prepaid, opened_on, closed_on)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
            (number, cust, sp, cycle, tariff, prepaid, opened, closed),
        )

    def simple(self, name, tariff="W", commodity="water", **kw):
        """A service point with one meter installed since January and one account: returns the account id."""
        sp = self.point(f"SP-{name}", commodity)
        self.meter(f"M-{name}", commodity, kw.pop("multiplier", 1))
        self.install(f"M-{name}", sp)
        return self.account(f"A-{name}", sp, tariff, **kw)

    def reads(self, serial, points, commodity="water", read_type=ReadType.ACTUAL):
        ch, unit = REG[commodity]
        write(self.db, [Reading(serial, ch, t, v, unit, Source.MANUAL, read_type) for t, v in points])

    def version(self, serial, t, value, kind="estimate", quality="E", replaced=None, commodity="water"):
        ch = REG[commodity][0]
        self.sql(
            """INSERT INTO reading_version (meter_id, channel_id, ts, version, value, quality, kind, replaced_value, created_by)
               VALUES ((SELECT id FROM meter WHERE serial = %s), (SELECT id FROM channel WHERE code = %s), %s,
                       (SELECT coalesce(max(version), 0) + 1 FROM reading_version v JOIN meter m ON m.id = v.meter_id
                        WHERE m.serial = %s AND v.ts = %s), %s, %s, %s, %s, 'test')""",
            (serial, ch, t, serial, t, value, quality, kind, replaced),
        )

    def exception(self, serial, t, rule="high_low", severity="warning", commodity="water"):
        ch = REG[commodity][0]
        return self.one(
            """INSERT INTO vee_exception (meter_id, channel_id, ts, rule, severity, message)
               VALUES ((SELECT id FROM meter WHERE serial = %s), (SELECT id FROM channel WHERE code = %s), %s, %s, %s, 'test')
               RETURNING id""",
            (serial, ch, t, rule, severity),
        )

    def run(self, period_end=PERIOD_END, issue=ISSUE, out=None, cycle="A", book=BOOK):
        return run_bills(self.db.url, self.db.settings, book, cycle, period_end, issue, out)

    def bills(self, number, period_end=PERIOD_END):
        return self.sql(
            """SELECT b.id, b.kind, b.status, b.consumption, b.subtotal, b.tax, b.total, b.hold_reasons, b.issue_date,
                      b.due_date, b.replaces_bill_id
               FROM bill b JOIN account a ON a.id = b.account_id WHERE a.number = %s AND b.period_end = %s ORDER BY b.id""",
            (number, period_end),
        )

    def live(self, number, period_end=PERIOD_END):
        rows = [b for b in self.bills(number, period_end) if b[2] in ("issued", "held") and b[1] != "cancel"]
        return rows[-1] if rows else None

    def determinants(self, bill_id):
        return self.sql(
            """SELECT m.serial, d.start_index, d.end_index, d.start_quality, d.end_quality, d.multiplier, d.consumption
               FROM bill_determinant d JOIN meter m ON m.id = d.meter_id WHERE bill_id = %s ORDER BY seq""",
            (bill_id,),
        )

    def lines(self, bill_id):
        return {
            code: amount
            for code, amount in self.sql("SELECT code, amount FROM bill_line WHERE bill_id = %s", (bill_id,))
        }


def write(db, readings):
    with BatchWriter(db.url, db.settings) as writer:
        result = writer.write(readings)
    assert result.rejected == 0


def daily_points(start: datetime, days: int, first: float, per_day: float):
    return [(start + timedelta(days=i), first + per_day * i) for i in range(days)]
