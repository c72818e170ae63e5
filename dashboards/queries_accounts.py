"""The accounts page's queries: arrears by ageing bucket, the credit-control queue, one account's ledger.

Everything is read through the reader role. The position of many accounts (balance, deposit,
ageing) is computed in SQL by :data:`POSITION_SQL` with the rule of ``billing.ledger`` — credits
settle the oldest debts first (by due date, then entry); a reversed entry and its reversal drop out
of ageing together; each debt's outstanding part is aged by days past its due date (the effective
date when it has none): ``current`` (not yet due or < 30 days), ``30`` (30–59), ``60`` (60–89),
``90+``. For debit ``i`` in that order, with ``cum`` the running sum of the debits up to it and
``C`` every credit of the account, the outstanding part is ``clamp(cum − C, 0, amount)``. A test
checks that it agrees with ``billing.ledger.balances`` entry for entry; one account's page uses
``billing.ledger.balance`` itself.

The credit-control queue's *next step* comes from the same credit-control file as ``releve credit
run`` (``./credit.toml``, else ``billing/credit.example.toml``): the step after the steps taken, due
on the later of (oldest unpaid debt's due date + ``days_overdue``) and (last step + ``after_previous_days``).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from dashboards.tables import Column, TableSpec, fetch_page, like_prefix

Row = dict[str, Any]

#: Per account with ledger entries effective up to ``%(asof)s``: the books and the ageing (see the module docstring).
POSITION_SQL = """
WITH live AS (SELECT x.account_id, x.id, x.amount, coalesce(x.due_date, x.effective_date) AS due
              FROM ledger_entry x
              WHERE x.effective_date <= %(asof)s::date AND x.book = 'account' AND x.reverses_id IS NULL
                AND NOT EXISTS (SELECT 1 FROM ledger_entry r  -- a reversal is in its original's book
                                WHERE r.reverses_id = x.id AND r.effective_date <= %(asof)s::date)),
     tot AS (SELECT account_id, coalesce(sum(amount) FILTER (WHERE amount > 0), 0) AS debits,
                    coalesce(-sum(amount) FILTER (WHERE amount < 0), 0) AS credits
             FROM live GROUP BY account_id),
     owed AS (SELECT d.account_id, d.due, %(asof)s::date - d.due AS late,
                     least(d.amount, greatest(d.cum - coalesce(t.credits, 0), 0)) AS rest
              FROM (SELECT account_id, id, amount, due,
                           sum(amount) OVER (PARTITION BY account_id ORDER BY due, id) AS cum
                    FROM live WHERE amount > 0) d
              LEFT JOIN tot t ON t.account_id = d.account_id),
     ages AS (SELECT account_id,
                     sum(rest) FILTER (WHERE late < 30) AS age_current,
                     sum(rest) FILTER (WHERE late >= 30 AND late < 60) AS age_30,
                     sum(rest) FILTER (WHERE late >= 60 AND late < 90) AS age_60,
                     sum(rest) FILTER (WHERE late >= 90) AS age_90,
                     sum(rest) FILTER (WHERE late > 0) AS overdue,
                     min(due) FILTER (WHERE late > 0 AND rest > 0) AS oldest_due
              FROM owed GROUP BY account_id),
     books AS (SELECT account_id,
                      coalesce(sum(amount) FILTER (WHERE book = 'account'), 0) AS balance,
                      coalesce(-sum(amount) FILTER (WHERE book = 'deposit'), 0) AS deposit,
                      coalesce(sum(amount) FILTER (WHERE book = 'litigation'), 0) AS litigation
               FROM ledger_entry WHERE effective_date <= %(asof)s::date GROUP BY account_id)
SELECT b.account_id, b.balance, b.deposit, b.litigation, b.balance - b.deposit AS net,
       coalesce(a.age_current, 0) AS age_current, coalesce(a.age_30, 0) AS age_30,
       coalesce(a.age_60, 0) AS age_60, coalesce(a.age_90, 0) AS age_90,
       coalesce(a.overdue, 0) AS overdue, a.oldest_due,
       greatest(coalesce(t.credits, 0) - coalesce(t.debits, 0), 0) AS credit
FROM books b LEFT JOIN ages a ON a.account_id = b.account_id LEFT JOIN tot t ON t.account_id = b.account_id
"""

#: What holds collection on an account, in words (an indigent customer is never disconnected, notices still go).
HOLDS_SQL = """concat_ws(', ',
    CASE WHEN EXISTS (SELECT 1 FROM dispute d WHERE d.account_id = a.id AND d.status = 'open' AND d.kind = 'dispute')
         THEN 'dispute open' END,
    CASE WHEN EXISTS (SELECT 1 FROM dispute d WHERE d.account_id = a.id AND d.status = 'open' AND d.kind = 'complaint')
         THEN 'complaint open' END,
    CASE WHEN EXISTS (SELECT 1 FROM payment_arrangement r WHERE r.account_id = a.id AND r.status = 'active')
         THEN 'arrangement in force' END,
    CASE WHEN cu.indigent THEN 'indigent (never disconnected)' END)"""

#: Whether collection is on hold: an open dispute or complaint, or an arrangement in force.
ON_HOLD_SQL = """(EXISTS (SELECT 1 FROM dispute d WHERE d.account_id = a.id AND d.status = 'open')
                 OR EXISTS (SELECT 1 FROM payment_arrangement r WHERE r.account_id = a.id AND r.status = 'active'))"""

ARREARS = TableSpec(
    source=f"""({POSITION_SQL}) p JOIN account a ON a.id = p.account_id JOIN customer cu ON cu.id = a.customer_id
               JOIN service_point sp ON sp.id = a.service_point_id
               LEFT JOIN credit_case k ON k.account_id = a.id AND k.closed_on IS NULL""",
    columns={
        "account": Column("a.number"),
        "customer": Column("cu.name"),
        "class": Column("coalesce(sp.customer_class, 'default')"),
        "commodity": Column("sp.commodity"),
        "balance": Column("p.balance", "number"),
        "overdue": Column("p.overdue", "number"),
        "age_current": Column("p.age_current", "number"),
        "age_30": Column("p.age_30", "number"),
        "age_60": Column("p.age_60", "number"),
        "age_90": Column("p.age_90", "number"),
        "oldest_due": Column("p.oldest_due::text"),
        "deposit": Column("p.deposit", "number"),
        "case": Column("coalesce(k.id::text, '')"),
        "holds": Column(HOLDS_SQL),
    },
    default_order="p.overdue DESC, a.number",
    where="p.overdue > 0",
)

#: The open credit-control cases with their last step, the next one and when it is due.
QUEUE = TableSpec(
    source=f"""credit_case k JOIN account a ON a.id = k.account_id JOIN customer cu ON cu.id = a.customer_id
               JOIN service_point sp ON sp.id = a.service_point_id
               LEFT JOIN ({POSITION_SQL}) p ON p.account_id = k.account_id
               LEFT JOIN LATERAL (SELECT x.step, x.action_date, x.work_order_id FROM credit_action x
                                  WHERE x.case_id = k.id ORDER BY x.id DESC LIMIT 1) last ON true
               LEFT JOIN jsonb_to_recordset(%(steps)s::jsonb)
                         AS s(class text, seq int, name text, days_overdue int, after_previous_days int, action text)
                      ON s.class = CASE WHEN sp.customer_class = ANY(%(classes)s::text[]) THEN sp.customer_class
                                        ELSE 'default' END
                     AND s.seq = k.last_step + 1
               LEFT JOIN work_order w ON w.id = last.work_order_id""",
    columns={
        "case": Column("k.id", "number"),
        "account": Column("a.number"),
        "customer": Column("cu.name"),
        "opened": Column("k.opened_on::text"),
        "overdue": Column("coalesce(p.overdue, 0)", "number"),
        "oldest_due": Column("p.oldest_due::text"),
        "last_step": Column("coalesce(replace(last.step, '_', ' ') || ' on ' || last.action_date, 'none yet')"),
        "next_step": Column(
            f"""CASE WHEN coalesce(p.overdue, 0) = 0 THEN 'closes at the next run (arrears settled)'
                     WHEN {ON_HOLD_SQL} THEN 'on hold'
                     WHEN s.name IS NULL THEN 'every step taken'
                     WHEN s.action = 'disconnect' AND cu.indigent
                          THEN replace(s.name, '_', ' ') || ' (exempt: indigent)'
                     ELSE replace(s.name, '_', ' ') END"""
        ),
        "next_due": Column(
            "CASE WHEN s.name IS NOT NULL AND p.oldest_due IS NOT NULL THEN "
            "greatest(p.oldest_due + s.days_overdue, last.action_date + s.after_previous_days)::text END"
        ),
        "disconnected": Column(
            "CASE WHEN NOT k.disconnected THEN 'no' WHEN w.status IS NULL THEN 'yes' "
            "ELSE 'yes (order ' || w.id || ': ' || replace(w.status, '_', ' ') || ')' END"
        ),
        "holds": Column(HOLDS_SQL),
    },
    default_order="CASE WHEN s.name IS NOT NULL AND p.oldest_due IS NOT NULL THEN "
    "greatest(p.oldest_due + s.days_overdue, last.action_date + s.after_previous_days) END NULLS LAST, k.opened_on, "
    "a.number",
    where="k.closed_on IS NULL",
)

#: One account's movements (ledger and prepaid vending), with the running balance of the account book.
ENTRIES = TableSpec(
    source="""(SELECT x.*, CASE WHEN x.book = 'account'
                              THEN sum(x.amount) FILTER (WHERE x.book = 'account')
                                   OVER (ORDER BY x.effective_date, x.posted_at, x.entry_id NULLS LAST
                                         ROWS UNBOUNDED PRECEDING) END AS running
               FROM account_activity x WHERE x.account_id = %(acc)s) v""",
    columns={
        "date": Column("v.effective_date::text"),
        "kind": Column("replace(v.kind, '_', ' ')"),
        "book": Column("v.book"),
        "reference": Column("v.reference"),
        "note": Column("coalesce(v.note, '')"),
        "due": Column("coalesce(v.due_date::text, '')"),
        "amount": Column("v.amount", "number"),
        "units": Column("v.units", "number"),
        "balance": Column("v.running", "number"),
        "entry": Column("v.entry_id", "number"),
    },
    default_order="v.effective_date DESC, v.posted_at DESC, v.entry_id DESC NULLS LAST",
)


def steps_json(config: Any) -> tuple[str, list[str]]:
    """The credit-control steps per class as JSON rows for :data:`QUEUE`, and the class names."""
    rows = [
        {
            "class": c.name,
            "seq": k,
            "name": s.name,
            "days_overdue": s.days_overdue,
            "after_previous_days": s.after_previous_days,
            "action": s.action,
        }
        for c in config.class_
        for k, s in enumerate(c.steps, start=1)
    ]
    return json.dumps(rows), [c.name for c in config.class_]


def today() -> date:
    """The day positions are computed for (UTC)."""
    return datetime.now(UTC).date()


class AccountQueries:
    """Reads for ``/accounts`` and ``/accounts/<number>`` over the dashboards' reader pool."""

    def __init__(self, read: Any) -> None:
        self.read = read
        self._config: Any = None

    def config(self) -> Any:
        """The credit-control file ``releve credit run`` uses by default (loaded once)."""
        if self._config is None:
            from billing.credit import load_config

            self._config = load_config(None)
        return self._config

    def arrears_summary(self, as_of: date | None = None) -> Row:
        """Accounts in arrears, what is owed, and the outstanding amount per ageing bucket (every account)."""
        with self.read.connection() as conn:
            cur = conn.execute(
                f"""SELECT count(*) FILTER (WHERE p.overdue > 0) AS accounts,
                           coalesce(sum(p.balance) FILTER (WHERE p.balance > 0), 0) AS owed,
                           coalesce(sum(p.overdue), 0) AS overdue,
                           coalesce(sum(p.age_current), 0) AS age_current, coalesce(sum(p.age_30), 0) AS age_30,
                           coalesce(sum(p.age_60), 0) AS age_60, coalesce(sum(p.age_90), 0) AS age_90,
                           coalesce(sum(p.deposit), 0) AS deposits, coalesce(sum(p.litigation), 0) AS litigation,
                           count(*) FILTER (WHERE p.credit > 0) AS in_credit
                    FROM ({POSITION_SQL}) p""",
                {"asof": as_of or today()},
            )
            names = [d.name for d in cur.description or []]
            row = dict(zip(names, cur.fetchone() or (), strict=True))
            row["open_cases"] = conn.execute("SELECT count(*) FROM credit_case WHERE closed_on IS NULL").fetchone()[0]
            row["on_hold"] = conn.execute(
                """SELECT count(DISTINCT account_id) FROM (
                       SELECT account_id FROM dispute WHERE status = 'open'
                       UNION ALL SELECT account_id FROM payment_arrangement WHERE status = 'active') h"""
            ).fetchone()[0]
        return row

    def arrears(
        self, page: int, size: int, sort_by: Any, filter_query: str | None, as_of: date | None = None
    ) -> tuple[list[Row], int]:
        """Accounts with debts past due, most overdue first (server-side page)."""
        with self.read.connection() as conn:
            return fetch_page(conn, ARREARS, page, size, sort_by, filter_query, {"asof": as_of or today()})

    def credit_queue(
        self, page: int, size: int, sort_by: Any, filter_query: str | None, as_of: date | None = None
    ) -> tuple[list[Row], int]:
        """Open credit-control cases, next step due first (server-side page)."""
        steps, classes = steps_json(self.config())
        with self.read.connection() as conn:
            return fetch_page(
                conn,
                QUEUE,
                page,
                size,
                sort_by,
                filter_query,
                {"asof": as_of or today(), "steps": steps, "classes": classes},
            )

    def positions(self, as_of: date | None = None) -> dict[int, Row]:
        """:data:`POSITION_SQL` for every account with entries (the tests compare it with ``billing.ledger``)."""
        with self.read.connection() as conn:
            cur = conn.execute(f"SELECT * FROM ({POSITION_SQL}) p", {"asof": as_of or today()})
            names = [d.name for d in cur.description or []]
            return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}

    def account(self, number: str, as_of: date | None = None) -> Row | None:
        """One account: who and where, its position (``billing.ledger.balance``), case, holds and recent history."""
        from billing import ledger

        with self.read.connection() as conn:
            cur = conn.execute(
                """SELECT a.id, a.number, a.billing_cycle, a.tariff_code, a.prepaid, a.opened_on, a.closed_on,
                          cu.name AS customer, coalesce(cu.phone, '') AS phone, cu.indigent,
                          sp.code AS service_point, sp.address AS street, sp.commodity,
                          coalesce(sp.customer_class, 'default') AS customer_class,
                          (SELECT m.serial FROM installation i JOIN meter m ON m.id = i.meter_id
                           WHERE i.service_point_id = sp.id AND i.removed_at IS NULL
                           ORDER BY i.installed_at DESC LIMIT 1) AS meter
                   FROM account a JOIN customer cu ON cu.id = a.customer_id
                   JOIN service_point sp ON sp.id = a.service_point_id WHERE a.number = %s""",
                (number,),
            )
            names = [d.name for d in cur.description or []]
            found = cur.fetchone()
            if found is None:
                return None
            acc = dict(zip(names, found, strict=True))
            acc["position"] = ledger.balance(conn, acc["id"], as_of or today())
            acc["case"] = _rows(
                conn,
                """SELECT k.id, k.opened_on, k.last_step, k.disconnected FROM credit_case k
                                         WHERE k.account_id = %s AND k.closed_on IS NULL""",
                (acc["id"],),
            )
            acc["actions"] = _rows(
                conn,
                """SELECT x.action_date, replace(x.step, '_', ' ') AS step, x.action, x.channel, x.overdue,
                          x.work_order_id, x.message
                   FROM credit_action x WHERE x.account_id = %s ORDER BY x.action_date DESC, x.id DESC LIMIT 50""",
                (acc["id"],),
            )
            acc["disputes"] = _rows(
                conn,
                """SELECT id, kind, status, received_at, description, amount, resolution FROM dispute
                   WHERE account_id = %s ORDER BY received_at DESC LIMIT 20""",
                (acc["id"],),
            )
            acc["arrangements"] = _rows(
                conn,
                """SELECT r.id, r.created_on, r.total, r.status, r.reason,
                          (SELECT string_agg(i.due_date || ': ' || i.amount, ', ' ORDER BY i.seq)
                           FROM arrangement_instalment i WHERE i.arrangement_id = r.id) AS instalments
                   FROM payment_arrangement r WHERE r.account_id = %s ORDER BY r.id DESC LIMIT 10""",
                (acc["id"],),
            )
            acc["orders"] = _rows(
                conn,
                """SELECT w.id, w.kind, w.status, w.assignee, w.due_at, w.completed_at, w.outcome, w.description
                   FROM work_order w WHERE w.account_id = %s ORDER BY w.id DESC LIMIT 20""",
                (acc["id"],),
            )
        return acc

    def entries(
        self, account_id: int, page: int, size: int, sort_by: Any, filter_query: str | None
    ) -> tuple[list[Row], int]:
        """One account's movements, newest first, with the running balance (server-side page)."""
        with self.read.connection() as conn:
            return fetch_page(conn, ENTRIES, page, size, sort_by, filter_query, {"acc": account_id})

    def find_accounts(self, text: str, limit: int = 20) -> list[str]:
        """Account numbers starting with ``text`` (for the account picker)."""
        with self.read.connection() as conn:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT number FROM account WHERE number LIKE %s ORDER BY number LIMIT %s",
                    (like_prefix(text), limit),
                )
            ]


def _rows(conn: Any, query: str, params: tuple[Any, ...]) -> list[Row]:
    cur = conn.execute(query, params)
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
