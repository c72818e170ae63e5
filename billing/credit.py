"""Credit control: steps per customer class, arrangements, the indigent register, disputes, notices.

Rules implemented (defaults in ``billing/credit.example.toml``):

- A **credit-control run** for a day looks at every postpaid account that is not closed. Its arrears
  are the outstanding debts past their due date (``billing.ledger``: credits settle the oldest debts
  first). Below ``credit.min_overdue`` nothing happens.
- **Steps per customer class** (``service_point.customer_class``; ``default`` otherwise): reminder →
  final notice → disconnection (electricity cut, water restricted). A case opens with the first step;
  the next step is taken when the oldest unpaid debt is ``days_overdue`` past due **and** the
  previous step is ``after_previous_days`` old; at most one step per account and day. A step may
  post a charge. A disconnection creates a ``disconnect`` work order (which queues the relay command
  for a smart meter).
- **Reconnection** on payment or arrangement: when the arrears are gone (or an arrangement is in
  force) the case closes; if the disconnection was carried out (or its command queued) a
  ``reconnect`` order is created and the class's ``reconnection_charge`` posted; a disconnection
  not yet carried out (no crew went, its command still queued) is cancelled instead.
- **Holds**: an open dispute or complaint on the account puts collection and disconnection on hold
  (no step is taken while it is open); so does an arrangement in force.
- **Indigent register** (``indigent_registration`` ↔ ``customer.indigent``): registered households
  get the tariff's free basic units (the bill run reads ``customer.indigent``) and are **never
  disconnected**: the disconnection step is recorded as ``exempt``, no order is made. A registration
  past its ``expires_on`` ends at the next run.
- **Arrangements**: instalments with due dates; an instalment is **missed** when, ``grace_days`` after
  its due date, the payments since the plan started fall short of the instalments due so far: the
  plan is ``broken`` (a forced termination, see ``billing.closure``) and collection resumes. Paid in
  full: ``kept``.
- **Fraud**: a disconnection after fraud is reconnected once the penalty is paid (the penalty entry
  fully settled): a ``reconnect`` order.
- **Notices** for the mailing or SMS gateway: ``notices-<date>.csv`` (account, customer, phone,
  channel, step, overdue, oldest due date, charge, message), ``notices-<date>.txt`` (the letters
  of the mail channel) and ``notices-<date>.pdf`` (the same letters, a page each, when the day has
  any), rewritten from every notice of the day.
- **Idempotent per day**: one action per account, day and step (a unique key); running the same day
  again takes no step twice and writes the same notices.
"""

from __future__ import annotations

import csv
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from billing import closure, ledger, workorders
from billing.closure import ClosureRules

EXAMPLE = Path(__file__).with_name("credit.example.toml")


class CreditError(Exception):
    """A credit-control request or configuration that cannot be used (names the file / record and the problem)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    """One credit-control step."""

    name: str = Field(min_length=1)
    days_overdue: int = Field(ge=0)
    after_previous_days: int = Field(0, ge=0)
    action: Literal["notice", "disconnect"]
    channel: Literal["sms", "mail", ""] = ""
    charge: Decimal = Field(Decimal(0), ge=0)


class ClassSteps(_Strict):
    """The steps of one customer class."""

    name: str = Field(min_length=1)
    reconnection_charge: Decimal = Field(Decimal(0), ge=0)
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _order(self) -> ClassSteps:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names repeat: {names}")
        days = [s.days_overdue for s in self.steps]
        if days != sorted(days):
            raise ValueError(f"steps must come in increasing days_overdue: {days}")
        return self


class General(_Strict):
    """``[credit]``."""

    min_overdue: Decimal = Field(Decimal("1.00"), ge=0)
    charge_due_days: int = Field(10, ge=0)
    currency: str = ""


class Arrangement(_Strict):
    """``[arrangement]``."""

    grace_days: int = Field(5, ge=0)


class Fraud(_Strict):
    """``[fraud]``."""

    penalty: Decimal = Field(Decimal("150.00"), gt=0)
    penalty_due_days: int = Field(10, ge=0)


class CreditConfig(_Strict):
    """The credit-control file."""

    credit: General = Field(default_factory=General)
    class_: list[ClassSteps] = Field(alias="class", min_length=1)
    arrangement: Arrangement = Field(default_factory=Arrangement)
    fraud: Fraud = Field(default_factory=Fraud)
    closure: ClosureRules = Field(default_factory=ClosureRules)
    path: str = ""

    @model_validator(mode="after")
    def _default(self) -> CreditConfig:
        if "default" not in {c.name for c in self.class_}:
            raise ValueError('a [[class]] named "default" is needed (classes without their own steps use it)')
        return self

    def steps_for(self, customer_class: str) -> ClassSteps:
        """The steps of a class (``default`` when it has none of its own)."""
        by = {c.name: c for c in self.class_}
        return by.get(customer_class, by["default"])


def load_config(path: str | Path | None = None) -> CreditConfig:
    """Load and validate a credit-control file (default: ./credit.toml, else the shipped example)."""
    p = Path(path) if path is not None else (Path("credit.toml") if Path("credit.toml").exists() else EXAMPLE)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as exc:
        raise CreditError(f"{p}: cannot read: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CreditError(f"{p}: not valid TOML: {exc}") from exc
    try:
        return CreditConfig.model_validate({**data, "path": str(p)})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise CreditError(f"{p}: {problems}") from exc


# --------------------------------------------------------------------------------------------- register


def register_indigent(conn: Connection, number: str, evidence: str, on: date, expires: date | None = None) -> int:
    """Put the customer of account ``number`` on the indigent register."""
    if not evidence.strip():
        raise CreditError("the indigent register needs the evidence (social survey, certificate …)")
    cust = conn.execute("SELECT customer_id FROM account WHERE number = %s", (number,)).fetchone()
    if cust is None:
        raise CreditError(f"no account {number!r}")
    if conn.execute(
        "SELECT 1 FROM indigent_registration WHERE customer_id = %s AND ended_on IS NULL", (cust[0],)
    ).fetchone():
        raise CreditError(f"the customer of {number} is already on the indigent register")
    row = conn.execute(
        "INSERT INTO indigent_registration (customer_id, registered_on, expires_on, evidence) VALUES (%s, %s, %s, %s) "
        "RETURNING id",
        (cust[0], on, expires, evidence),
    ).fetchone()
    conn.execute("UPDATE customer SET indigent = true WHERE id = %s", (cust[0],))
    assert row is not None
    return int(row[0])


def end_indigent(conn: Connection, number: str, on: date, reason: str) -> None:
    """Take the customer of account ``number`` off the register."""
    row = conn.execute(
        """SELECT r.id, r.customer_id FROM indigent_registration r JOIN account a ON a.customer_id = r.customer_id
           WHERE a.number = %s AND r.ended_on IS NULL""",
        (number,),
    ).fetchone()
    if row is None:
        raise CreditError(f"the customer of {number} is not on the indigent register")
    conn.execute("UPDATE indigent_registration SET ended_on = %s, end_reason = %s WHERE id = %s", (on, reason, row[0]))
    conn.execute("UPDATE customer SET indigent = false WHERE id = %s", (row[1],))


def _expire_indigent(conn: Connection, on: date) -> int:
    rows = conn.execute(
        "SELECT id, customer_id FROM indigent_registration WHERE ended_on IS NULL AND expires_on < %s", (on,)
    ).fetchall()
    for rid, cust in rows:
        conn.execute("UPDATE indigent_registration SET ended_on = %s, end_reason = 'expired' WHERE id = %s", (on, rid))
        conn.execute("UPDATE customer SET indigent = false WHERE id = %s", (cust,))
    return len(rows)


def open_dispute(
    conn: Connection, number: str, kind: str, description: str, received_at: datetime, amount: Decimal | None = None
) -> int:
    """Record a dispute or complaint: collection and disconnection of the account hold while it is open."""
    if kind not in ("dispute", "complaint"):
        raise CreditError(f"kind must be dispute or complaint, not {kind!r}")
    if not description.strip():
        raise CreditError("say what the dispute or complaint is about")
    acc = ledger.account_id(conn, number)
    row = conn.execute(
        "INSERT INTO dispute (account_id, kind, received_at, description, amount) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING id",
        (acc, kind, received_at, description, amount),
    ).fetchone()
    assert row is not None
    return int(row[0])


def close_dispute(conn: Connection, dispute: int, status: str, resolution: str, at: datetime) -> None:
    """Close a dispute (upheld, rejected or withdrawn): collection resumes at the next run."""
    if status not in ("upheld", "rejected", "withdrawn"):
        raise CreditError(f"status must be upheld, rejected or withdrawn, not {status!r}")
    row = conn.execute("SELECT status FROM dispute WHERE id = %s FOR UPDATE", (dispute,)).fetchone()
    if row is None:
        raise CreditError(f"no dispute {dispute}")
    if row[0] != "open":
        raise CreditError(f"dispute {dispute} is already {row[0]}")
    conn.execute(
        "UPDATE dispute SET status = %s, resolution = %s, closed_at = %s WHERE id = %s",
        (status, resolution, at, dispute),
    )


def arrange(conn: Connection, number: str, instalments: list[tuple[date, Decimal]], on: date) -> int:
    """Agree a payment plan (instalments with due dates) for account ``number``."""
    if not instalments:
        raise CreditError("an arrangement needs at least one instalment")
    if any(a <= 0 for _, a in instalments):
        raise CreditError("instalments must be positive")
    dues = [d for d, _ in instalments]
    if dues != sorted(dues) or dues[0] < on:
        raise CreditError("instalment due dates must be in order and not before the arrangement")
    acc = ledger.account_id(conn, number)
    if conn.execute("SELECT 1 FROM payment_arrangement WHERE account_id = %s AND status = 'active'", (acc,)).fetchone():
        raise CreditError(f"account {number} already has an arrangement in force")
    total = sum((a for _, a in instalments), Decimal(0))
    row = conn.execute(
        "INSERT INTO payment_arrangement (account_id, created_on, total) VALUES (%s, %s, %s) RETURNING id",
        (acc, on, total),
    ).fetchone()
    assert row is not None
    conn.cursor().executemany(
        "INSERT INTO arrangement_instalment (arrangement_id, seq, due_date, amount) VALUES (%s, %s, %s, %s)",
        [(row[0], k + 1, d, a) for k, (d, a) in enumerate(instalments)],
    )
    return int(row[0])


def _check_arrangements(conn: Connection, cfg: CreditConfig, on: date) -> tuple[list[tuple[int, int]], set[int]]:
    """Break plans with a missed instalment, mark those paid in full; return (broken (plan, account), in force)."""
    broken: list[tuple[int, int]] = []
    active: set[int] = set()
    plans = conn.execute(
        "SELECT id, account_id, created_on, total FROM payment_arrangement WHERE status = 'active'"
    ).fetchall()
    for pid, acc, created, total in plans:
        paid_row = conn.execute(
            """SELECT coalesce(-sum(e.amount), 0) FROM ledger_entry e
               WHERE e.account_id = %s AND e.book = 'account' AND e.effective_date >= %s AND e.effective_date <= %s
                 AND (e.kind = 'payment' OR e.reverses_id IN (SELECT id FROM ledger_entry WHERE kind = 'payment'))""",
            (acc, created, on),
        ).fetchone()
        paid = Decimal(paid_row[0]) if paid_row else Decimal(0)
        due_row = conn.execute(
            "SELECT coalesce(sum(amount), 0), coalesce(max(due_date)::text, '') FROM arrangement_instalment "
            "WHERE arrangement_id = %s AND due_date + %s < %s",
            (pid, cfg.arrangement.grace_days, on),
        ).fetchone()
        due = Decimal(due_row[0]) if due_row else Decimal(0)
        if paid >= Decimal(total):
            conn.execute("UPDATE payment_arrangement SET status = 'kept', closed_on = %s WHERE id = %s", (on, pid))
        elif paid < due:
            conn.execute(
                "UPDATE payment_arrangement SET status = 'broken', closed_on = %s, reason = %s WHERE id = %s",
                (on, f"missed instalment: paid {paid} of {due} due by {due_row[1] if due_row else ''}", pid),
            )
            broken.append((int(pid), int(acc)))
        else:
            active.add(int(acc))
    return broken, active


# --------------------------------------------------------------------------------------------- the run


@dataclass
class Notice:
    """A notice for the mailing / SMS gateway."""

    account: str
    customer: str
    phone: str
    channel: str
    step: str
    overdue: Decimal
    oldest_due: date | None
    charge: Decimal
    message: str


@dataclass
class CreditSummary:
    """What a credit-control run did."""

    run_id: int
    run_date: date
    accounts: int = 0
    actions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    held: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    work_orders: list[int] = field(default_factory=list)
    broken: list[int] = field(default_factory=list)
    closures: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def text(self) -> str:
        """A human summary."""
        acts = ", ".join(f"{k} {v}" for k, v in sorted(self.actions.items())) or "none"
        held = ", ".join(f"{k} {v}" for k, v in sorted(self.held.items())) or "none"
        out = [
            f"credit run {self.run_id} on {self.run_date}: {self.accounts} account(s) in arrears",
            f"steps: {acts}",
            f"on hold: {held}",
            f"work orders: {', '.join(map(str, self.work_orders)) or 'none'}",
        ]
        out += [f"arrangement {b} broken" for b in self.broken]
        out += self.closures
        out += [f"wrote {p}" for p in self.files]
        return "\n".join(out)


MESSAGES = {
    "notice": "Dear {customer}, account {account} has {overdue}{cur} overdue since {oldest}. Please pay to avoid "
    "further action.",
    "final": "FINAL NOTICE. Dear {customer}, account {account} has {overdue}{cur} overdue since {oldest}. Without "
    "payment or an arrangement, supply will be {cut}.",
}


def _case(conn: Connection, acc: int, on: date, open_cases: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """The account's open case (id, steps taken), opened now when it has none."""
    if acc in open_cases:
        return open_cases[acc]
    new = conn.execute(
        "INSERT INTO credit_case (account_id, opened_on) VALUES (%s, %s) RETURNING id", (acc, on)
    ).fetchone()
    assert new is not None
    open_cases[acc] = (int(new[0]), 0)
    return open_cases[acc]


def _action(
    conn: Connection,
    run: int,
    case: int | None,
    acc: int,
    on: date,
    step: str,
    action: str,
    *,
    channel: str = "",
    overdue: Decimal = Decimal(0),
    oldest: date | None = None,
    charge: int | None = None,
    order: int | None = None,
    message: str = "",
) -> bool:
    row = conn.execute(
        """INSERT INTO credit_action (run_id, case_id, account_id, action_date, step, action, channel, overdue,
                                      oldest_due, charge_entry_id, work_order_id, message)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (account_id, action_date, step) DO NOTHING RETURNING id""",
        (run, case, acc, on, step, action, channel, overdue, oldest, charge, order, message),
    ).fetchone()
    return row is not None


def run_credit(
    conn: Connection, cfg: CreditConfig, on: date, out_dir: Path | None = None, now: datetime | None = None
) -> CreditSummary:
    """Run credit control for day ``on`` (see the module docstring), inside the caller's transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('releve.credit'))")
    at = now or datetime.combine(on, time(6), UTC)
    row = conn.execute(
        "INSERT INTO credit_run (run_date, config_file) VALUES (%s, %s) RETURNING id", (on, cfg.path)
    ).fetchone()
    assert row is not None
    s = CreditSummary(int(row[0]), on)
    workorders.sync_commands(conn, at)
    _expire_indigent(conn, on)
    broken, arranged = _check_arrangements(conn, cfg, on)
    for pid, acc in broken:
        s.broken.append(pid)
        _action(
            conn,
            s.run_id,
            None,
            acc,
            on,
            f"arrangement {pid}",
            "arrangement_broken",
            message="missed instalment: the arrangement is broken",
        )
    disputed = {r[0] for r in conn.execute("SELECT DISTINCT account_id FROM dispute WHERE status = 'open'")}
    accounts = conn.execute(
        """SELECT a.id, a.number, c.name, coalesce(c.phone, ''), c.indigent, sp.customer_class, sp.commodity
           FROM account a JOIN customer c ON c.id = a.customer_id JOIN service_point sp ON sp.id = a.service_point_id
           WHERE NOT a.prepaid AND (a.closed_on IS NULL OR a.closed_on > %s) ORDER BY a.id""",
        (on,),
    ).fetchall()
    acted_today = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT account_id FROM credit_action WHERE action_date = %s AND action IN "
            "('notice', 'disconnect', 'exempt', 'reconnect')",
            (on,),
        )
    }
    positions = ledger.balances(conn, [a[0] for a in accounts], on)
    cases: dict[int, tuple[int, int]] = {
        int(a): (int(c), int(n))
        for a, c, n in conn.execute("SELECT account_id, id, last_step FROM credit_case WHERE closed_on IS NULL")
    }
    for acc, number, name, phone, indigent, klass, commodity in accounts:
        pos = positions[acc]
        steps = cfg.steps_for(klass)
        case = cases.get(acc)
        settled = pos.overdue < cfg.credit.min_overdue
        if case is not None and (settled or acc in arranged):
            _settle(conn, s, cfg, steps, case[0], acc, on, at, "paid" if settled else "arrangement")
            del cases[acc]
        if settled:
            continue
        s.accounts += 1
        if acc in disputed:
            s.held["dispute"] += 1
            continue
        if acc in arranged:
            s.held["arrangement"] += 1
            continue
        if acc in acted_today:
            continue
        case_id, done = _case(conn, acc, on, cases)
        if done >= len(steps.steps):
            continue
        step = steps.steps[done]
        assert pos.oldest_due is not None
        late = (on - pos.oldest_due).days
        if late < step.days_overdue:
            continue
        if done > 0:
            last = conn.execute("SELECT max(action_date) FROM credit_action WHERE case_id = %s", (case_id,)).fetchone()
            if last is not None and last[0] is not None and (on - last[0]).days < step.after_previous_days:
                continue
        _take_step(conn, s, cfg, steps, case_id, done, acc, number, name, phone, indigent, commodity, pos, on, at)
    _fraud_reconnections(conn, s, on, at)
    s.closures = closure.review(conn, cfg.closure, on, broken, at)
    conn.execute(
        "UPDATE credit_run SET n_accounts = %s, n_actions = %s, n_held = %s WHERE id = %s",
        (s.accounts, sum(s.actions.values()), sum(s.held.values()), s.run_id),
    )
    if out_dir is not None:
        s.files = write_notices(conn, cfg, on, out_dir)
    return s


def _charge(
    conn: Connection, cfg: CreditConfig, acc: int, amount: Decimal, on: date, key: str, what: str
) -> int | None:
    if amount <= 0:
        return None
    return ledger.post(
        conn,
        acc,
        "charge",
        amount,
        on,
        due=on + timedelta(days=cfg.credit.charge_due_days),
        reference=what,
        source_key=key,
        note="credit control",
    )


def _case_order(
    conn: Connection,
    s: CreditSummary,
    case_id: int,
    kind: str,
    acc: int,
    priority: int,
    at: datetime,
    description: str,
) -> int:
    """The credit case's ``kind`` work order (one per case and kind), counted in the run's summary."""
    order, _ = workorders.create(
        conn,
        kind,
        source=f"credit case {case_id}",
        source_key=f"credit:{case_id}:{kind}",
        account=acc,
        priority=priority,
        now=at,
        description=description,
    )
    s.work_orders.append(order)
    return order


def _take_step(
    conn: Connection,
    s: CreditSummary,
    cfg: CreditConfig,
    steps: ClassSteps,
    case_id: int,
    done: int,
    acc: int,
    number: str,
    name: str,
    phone: str,
    indigent: bool,
    commodity: str,
    pos: ledger.Balance,
    on: date,
    at: datetime,
) -> None:
    step = steps.steps[done]
    cur = f" {cfg.credit.currency}" if cfg.credit.currency else ""
    cut = "cut" if commodity == "electricity" else "restricted"
    order = None
    charge = None
    if step.action == "disconnect" and indigent:
        action, message = "exempt", "indigent register: exempt from disconnection"
    elif step.action == "disconnect":
        action = "disconnect"
        what = "cut the electricity supply" if commodity == "electricity" else "restrict the water supply"
        order = _case_order(
            conn, s, case_id, "disconnect", acc, 2, at, f"arrears {pos.overdue} since {pos.oldest_due}: {what}"
        )
        message = f"disconnection ordered (work order {order})"
        charge = _charge(conn, cfg, acc, step.charge, on, f"credit:{case_id}:{step.name}", step.name)
        conn.execute("UPDATE credit_case SET disconnected = true WHERE id = %s", (case_id,))
    else:
        action = "notice"
        final = done + 1 < len(steps.steps) and steps.steps[done + 1].action == "disconnect"
        message = MESSAGES["final" if final else "notice"].format(
            customer=name, account=number, overdue=pos.overdue, cur=cur, oldest=pos.oldest_due, cut=cut
        )
        charge = _charge(conn, cfg, acc, step.charge, on, f"credit:{case_id}:{step.name}", step.name)
    if _action(
        conn,
        s.run_id,
        case_id,
        acc,
        on,
        step.name,
        action,
        channel=step.channel,
        overdue=pos.overdue,
        oldest=pos.oldest_due,
        charge=charge,
        order=order,
        message=message,
    ):
        s.actions[step.name if action != "exempt" else "exempt"] += 1
    conn.execute("UPDATE credit_case SET last_step = %s WHERE id = %s", (done + 1, case_id))


def _settle(
    conn: Connection,
    s: CreditSummary,
    cfg: CreditConfig,
    steps: ClassSteps,
    case_id: int,
    acc: int,
    on: date,
    at: datetime,
    why: str,
) -> None:
    """Arrears gone or arranged: close the case; reconnect (with its charge) or cancel a pending disconnection."""
    dis = conn.execute(
        "SELECT id, status FROM work_order WHERE source_key = %s", (f"credit:{case_id}:disconnect",)
    ).fetchone()
    if dis is not None:
        oid, status = dis
        if status == "awaiting_command":
            from releve.meter_commands import command_status

            cmd = conn.execute("SELECT command_id FROM work_order WHERE id = %s", (oid,)).fetchone()
            if cmd is not None and command_status(conn, int(cmd[0])).state == "queued":
                status = "open"  # the meter was never told: withdraw the order and its command
        if status in ("open", "assigned"):
            workorders.cancel(conn, oid, f"arrears settled ({why}) before the disconnection", at)
        elif status in ("done", "awaiting_command"):
            order = _case_order(conn, s, case_id, "reconnect", acc, 1, at, f"reconnection on {why}")
            charge = _charge(
                conn, cfg, acc, steps.reconnection_charge, on, f"credit:{case_id}:reconnection", "reconnection"
            )
            if _action(
                conn,
                s.run_id,
                case_id,
                acc,
                on,
                "reconnect",
                "reconnect",
                charge=charge,
                order=order,
                message=f"reconnection on {why} (work order {order})",
            ):
                s.actions["reconnect"] += 1
    conn.execute("UPDATE credit_case SET closed_on = %s, close_reason = %s WHERE id = %s", (on, why, case_id))


def _fraud_reconnections(conn: Connection, s: CreditSummary, on: date, at: datetime) -> None:
    """A supply cut after fraud is reconnected once the penalty is paid."""
    for oid, acc, details in conn.execute(
        """SELECT w.id, w.account_id, w.outcome_details FROM work_order w
           WHERE w.kind = 'inspection' AND w.outcome = 'fraud' AND w.status = 'done'
             AND NOT EXISTS (SELECT 1 FROM work_order r WHERE r.source_key = 'fraud:' || w.id || ':reconnect')"""
    ).fetchall():
        penalty = details.get("penalty_entry")
        dis = conn.execute(
            "SELECT status FROM work_order WHERE source_key = %s", (f"fraud:{oid}:disconnect",)
        ).fetchone()
        if penalty is None or dis is None or dis[0] != "done":
            continue
        if int(penalty) in ledger.balance(conn, acc, on).unpaid:
            continue
        order, _ = workorders.create(
            conn,
            "reconnect",
            source=f"fraud:{oid}",
            source_key=f"fraud:{oid}:reconnect",
            account=acc,
            priority=2,
            now=at,
            description="penalty paid: reinstall the tested meter, reconnect",
        )
        s.work_orders.append(order)
        s.actions["fraud_reconnect"] += 1


NOTICE_COLUMNS = ("account", "customer", "phone", "channel", "step", "overdue", "oldest_due", "charge", "message")


def notices(conn: Connection, on: date) -> list[Notice]:
    """Every notice of day ``on`` (whichever run of the day produced it)."""
    rows = conn.execute(
        """SELECT a.number, c.name, coalesce(c.phone, ''), x.channel, x.step, x.overdue, x.oldest_due,
                  coalesce(e.amount, 0), x.message
           FROM credit_action x JOIN account a ON a.id = x.account_id JOIN customer c ON c.id = a.customer_id
           LEFT JOIN ledger_entry e ON e.id = x.charge_entry_id
           WHERE x.action_date = %s AND x.action = 'notice' ORDER BY a.number, x.id""",
        (on,),
    ).fetchall()
    return [Notice(*r) for r in rows]


def write_notices(conn: Connection, cfg: CreditConfig, on: date, out_dir: Path) -> list[Path]:
    """``notices-<date>.csv`` for the gateway; the mail letters as ``notices-<date>.txt`` and ``.pdf``.

    The PDF (a page per letter, :mod:`billing.notices_pdf`) is written when the day has letters to post.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = notices(conn, on)
    path = out_dir / f"notices-{on}.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(NOTICE_COLUMNS)
        for n in rows:
            w.writerow(
                [n.account, n.customer, n.phone, n.channel, n.step, n.overdue, n.oldest_due or "", n.charge, n.message]
            )
    letters = out_dir / f"notices-{on}.txt"
    parts = []
    for n in rows:
        if n.channel != "mail":
            continue
        charge = f"\nA charge of {n.charge} has been added to your account." if n.charge else ""
        parts.append(f"{n.customer}\nAccount {n.account}\n{on}\n\n{n.message}{charge}\n")
    letters.write_text("\f\n".join(parts), encoding="utf-8")
    from billing.notices_pdf import letters_pdf

    mail = [n for n in rows if n.channel == "mail"]
    pdf = out_dir / f"notices-{on}.pdf"
    if not mail:
        pdf.unlink(missing_ok=True)
        return [path, letters]
    pdf.write_bytes(letters_pdf(mail, on, cfg.credit.currency))
    return [path, letters, pdf]


def list_cases(conn: Connection, open_only: bool = True) -> list[tuple[str, int, date, int, bool, str]]:
    """Credit cases: (account, case, opened, steps taken, disconnected, last action)."""
    return [
        tuple(r)
        for r in conn.execute(
            """SELECT a.number, k.id, k.opened_on, k.last_step, k.disconnected,
                  coalesce((SELECT x.step || ' ' || x.action_date FROM credit_action x WHERE x.case_id = k.id
                            ORDER BY x.id DESC LIMIT 1), '')
           FROM credit_case k JOIN account a ON a.id = k.account_id
           WHERE NOT %s OR k.closed_on IS NULL ORDER BY k.opened_on, a.number""",
            (open_only,),
        )
    ]
