"""A credit-control run over 20,000 postpaid accounts, against the cost of reading their ledger.

    python bench/credit.py [--accounts 20000]

Builds the registry and the ledger in bulk with SQL ``generate_series``: three monthly bills per
account (due 15 January, February, March 2026); 60 % of the accounts paid everything, 25 % left
the March bill unpaid, 10 % the last two bills, 5 % all three; 3 % of the customers are indigent and
2 % have an open dispute. Then times ``run_credit`` on 20 April 2026 (arrears per account, steps,
charges, closures with their removal orders, notices written) and the same day's re-run
(idempotent: nothing new). Baseline from the same run: one ``SELECT`` summing the ledger per account
(what any credit run must at least read).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_database
from billing.credit import EXAMPLE, load_config, run_credit
from releve import db

RUN_DATE = date(2026, 4, 20)


def build(url: str, n: int) -> None:
    """Customers, service points, meters, installations, accounts, bills and payments for ``n`` accounts."""
    statements = [
        "INSERT INTO customer (id, name, phone, indigent) SELECT g, 'Customer ' || g, '+229' || lpad(g::text, 8, '0'), "
        "g % 33 = 0 FROM generate_series(1, {n}) g",
        "INSERT INTO meter (id, serial, commodity, model, unit, protocol) SELECT g, 'C' || g, 'electricity', 'bench', "
        "'kWh', CASE WHEN g % 2 = 0 THEN 'modbus-tcp' ELSE 'manual' END FROM generate_series(1, {n}) g",
        "INSERT INTO service_point (id, code, commodity, customer_class) SELECT g, 'SP' || g, 'electricity', "
        "CASE WHEN g % 10 = 0 THEN 'commercial' ELSE 'residential' END FROM generate_series(1, {n}) g",
        "INSERT INTO installation (meter_id, service_point_id, installed_at) SELECT g, g, '2025-01-01' "
        "FROM generate_series(1, {n}) g",
        "INSERT INTO account (id, number, customer_id, service_point_id, opened_on) SELECT g, 'ACC' || g, g, g, "
        "'2025-01-01' FROM generate_series(1, {n}) g",
        "SELECT setval('customer_id_seq', {n}), setval('meter_id_seq', {n}), setval('service_point_id_seq', {n}), "
        "setval('account_id_seq', {n})",
        """INSERT INTO ledger_entry (account_id, kind, amount, effective_date, due_date, source_key)
           SELECT g, 'bill', 30 + g % 50, make_date(2026, m, 5), make_date(2026, m, 15), 'bill:' || g || ':' || m
           FROM generate_series(1, {n}) g, generate_series(1, 3) m""",
        # paid bills: all three (60 %), the first two (25 %), the first (10 %), none (5 %)
        """INSERT INTO ledger_entry (account_id, kind, amount, effective_date, source_key)
           SELECT g, 'payment', -(30 + g % 50), make_date(2026, m, 12), 'payment:bench:' || g || ':' || m
           FROM generate_series(1, {n}) g, generate_series(1, 3) m
           WHERE m <= CASE WHEN g % 20 < 12 THEN 3 WHEN g % 20 < 17 THEN 2 WHEN g % 20 < 19 THEN 1 ELSE 0 END""",
        "INSERT INTO dispute (account_id, kind, received_at, description) SELECT g, 'dispute', '2026-04-01', 'bench' "
        "FROM generate_series(1, {n}) g WHERE g % 50 = 7",
    ]
    with psycopg.connect(url) as conn:
        for statement in statements:
            conn.execute(statement.replace("{n}", str(int(n))).encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=20_000)
    args = ap.parse_args()
    cfg = load_config(EXAMPLE)
    with bench_database() as (url, settings, where), tempfile.TemporaryDirectory() as out:
        print(f"database: {where}")
        t = time.perf_counter()
        build(url, args.accounts)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        print(f"setup: {args.accounts:,} accounts, {3 * args.accounts:,} bills in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT account_id, sum(amount) FROM ledger_entry GROUP BY account_id").fetchall()
        baseline = time.perf_counter() - t
        print(f"baseline: sum the ledger per account ({len(rows):,} accounts): {baseline:.2f} s")
        timings = []
        for label in ("credit run", "same-day re-run"):
            t = time.perf_counter()
            with db.connect(url, role=db.editor_role(settings)) as conn, conn.transaction():
                s = run_credit(conn, cfg, RUN_DATE, Path(out))
            timings.append(time.perf_counter() - t)
            print(
                f"{label}: {timings[-1]:.1f} s — {s.text().splitlines()[0]}; "
                f"{sum(s.actions.values()):,} step(s), {len(s.work_orders):,} order(s), {len(s.closures):,} closure "
                f"line(s)"
            )
        print(
            f"ratio credit run / baseline: {timings[0] / baseline:.1f}×; re-run / baseline: "
            f"{timings[1] / baseline:.1f}×; {args.accounts / timings[0]:,.0f} accounts/s"
        )


if __name__ == "__main__":
    main()
