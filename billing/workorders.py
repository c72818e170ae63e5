"""Field work orders: one model for every intervention, with timers and outcomes that flow back.

Rules implemented:

- One ``work_order`` row per intervention and an append-only ``work_order_event`` trail (created,
  assigned, command queued / confirmed / failed, completed, cancelled: who and when). Kinds and where
  they come from:

  | kind | created by |
  |---|---|
  | ``inspection`` | the theft list (``from_theft``: night inspection with police, numbered in route order) |
  | ``meter_exchange`` / ``meter_check`` | open VEE exceptions (``from_vee``: a frozen or reset  |
  |  | register → exchange; index inconsistencies, clock, scale, zero → check) |
  | ``disconnect`` / ``reconnect`` | credit control, and a fraud outcome (disconnect) / its penalty paid (reconnect) |
  | ``reading_anomaly`` | a meter reader's note (``create``) |
  | ``fault`` | a fault report (``create``): must be routed (assigned) within **5 minutes** |
  | ``removal`` | a forced termination (the meter is removed at once) |

- States: ``open`` → ``assigned`` → ``done``; ``cancelled`` from any open state; disconnect and
  reconnect orders of a remotely switchable meter (Modbus or MQTT) queue the meter command
  (``releve.meter_commands.queue_command``) and wait in ``awaiting_command``: the order is done when the
  command is confirmed (``sync_commands``); a failed or expired command sends it back to ``open`` for
  a crew. A manual meter's order is completed by the crew.
- Creation is idempotent by ``source_key`` (``theft:<run>:<serial>``, ``vee:<exception>``,
  ``credit:<case>:disconnect`` …). Due time per kind (``DUE``); routing target per kind
  (``ROUTING_MINUTES``): a breach is an order not assigned within its target of being reported.
  Complaints must be recorded within 10 minutes of being received (``COMPLAINT_MINUTES``); ``sla``
  lists both kinds of breach and overdue orders.
- Outcomes flow back, each recorded once (a done order cannot be completed again):
  an inspection's result (``fraud``, ``meter_fault``, ``nothing``, ``no_access``) is added to the
  theft outcomes (``theft_inspection``: the ranking's labels); ``fraud`` also posts the penalty charge
  and creates the disconnection order; a ``meter_exchange`` closes the old installation at its final
  index and opens the new meter's at its initial index (both kept); ``meter_check`` may find the
  meter faulty and open an exchange.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg import Connection

from billing import ledger

KINDS = (
    "inspection",
    "meter_exchange",
    "meter_check",
    "disconnect",
    "reconnect",
    "reading_anomaly",
    "fault",
    "removal",
)
OPEN = ("open", "assigned", "awaiting_command")
#: Time from creation to the due time, per kind.
DUE = {
    "inspection": timedelta(days=7),
    "meter_exchange": timedelta(days=5),
    "meter_check": timedelta(days=5),
    "disconnect": timedelta(days=2),
    "reconnect": timedelta(hours=24),
    "reading_anomaly": timedelta(days=5),
    "fault": timedelta(hours=4),
    "removal": timedelta(days=2),
}
#: Service-level routing targets (minutes from report to assignment): fault reports reach a crew in 5.
ROUTING_MINUTES = {"fault": 5}
#: A complaint is recorded and routed within 10 minutes of being received.
COMPLAINT_MINUTES = 10
#: Meters whose relay can be switched remotely (the others are switched by the crew).
REMOTE = ("modbus-tcp", "modbus-rtu", "mqtt")
#: VEE rules that call for an exchange (the register cannot be trusted) or a check.
VEE_EXCHANGE = ("FROZEN", "RESET")
VEE_CHECK = ("NEGATIVE", "SUM_CHECK", "MULTIPLIER", "CLOCK", "SCALE_JUMP", "ZERO", "UNIT")
RESULTS = ("fraud", "meter_fault", "nothing", "no_access")


class WorkOrderError(Exception):
    """A work-order request that cannot be honoured (unknown order, wrong state, missing outcome …)."""


@dataclass
class Order:
    """A work order as listed."""

    id: int
    kind: str
    status: str
    account: str | None
    meter: str | None
    source: str
    priority: int
    route_order: int | None
    assignee: str | None
    reported_at: datetime
    due_at: datetime | None
    routed_at: datetime | None
    completed_at: datetime | None
    outcome: str | None
    description: str
    command_id: int | None

    def text(self) -> str:
        """One line for a list."""
        where = " ".join(x for x in (self.account or "", self.meter or "") if x)
        route = f" route {self.route_order}" if self.route_order else ""
        who = f" → {self.assignee}" if self.assignee else ""
        due = f" due {self.due_at:%Y-%m-%d %H:%M}" if self.due_at else ""
        out = f" outcome {self.outcome}" if self.outcome else ""
        return f"#{self.id} {self.kind:<15} {self.status:<16} {where}{route}{who}{due}{out}  {self.description}"


def _event(conn: Connection, order: int, event: str, by: str | None = None, **details: Any) -> None:
    conn.execute(
        "INSERT INTO work_order_event (work_order_id, event, details, by_user) "
        "VALUES (%s, %s, %s, coalesce(%s, current_user))",
        (order, event, json.dumps(details, default=str), by),
    )


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def create(
    conn: Connection,
    kind: str,
    *,
    source: str,
    source_key: str | None = None,
    account: int | None = None,
    meter: int | None = None,
    description: str = "",
    priority: int = 3,
    route_order: int | None = None,
    reported_at: datetime | None = None,
    now: datetime | None = None,
    by: str | None = None,
) -> tuple[int, bool]:
    """Create a work order (idempotent by ``source_key``); return (id, True when new).

    The account, meter and service point complete each other from the installation in place.
    Disconnect and reconnect orders of a remotely switchable meter queue the meter command.
    """
    if kind not in KINDS:
        raise WorkOrderError(f"unknown work order kind {kind!r} (one of {', '.join(KINDS)})")
    if source_key is not None:
        row = conn.execute("SELECT id FROM work_order WHERE source_key = %s", (source_key,)).fetchone()
        if row is not None:
            return int(row[0]), False
    at = _now(now)
    sp = None
    if meter is not None:
        r = conn.execute(
            """SELECT i.service_point_id, a.id FROM installation i
               LEFT JOIN account a ON a.service_point_id = i.service_point_id AND a.closed_on IS NULL
               WHERE i.meter_id = %s ORDER BY i.installed_at DESC LIMIT 1""",
            (meter,),
        ).fetchone()
        if r is not None:
            sp = r[0]
            account = account if account is not None else r[1]
    elif account is not None:
        r = conn.execute(
            """SELECT a.service_point_id, i.meter_id FROM account a
               LEFT JOIN installation i ON i.service_point_id = a.service_point_id AND i.removed_at IS NULL
               WHERE a.id = %s""",
            (account,),
        ).fetchone()
        if r is None:
            raise WorkOrderError(f"no account id {account}")
        sp, meter = r
    if kind in ("inspection", "meter_exchange", "meter_check", "disconnect", "reconnect", "removal") and meter is None:
        raise WorkOrderError(f"a {kind} order needs a meter (none installed for account id {account})")
    reported = reported_at or at
    row = conn.execute(
        """INSERT INTO work_order (kind, account_id, meter_id, service_point_id, source, source_key, priority,
                                   route_order, description, reported_at, created_at, routing_minutes, due_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (
            kind,
            account,
            meter,
            sp,
            source,
            source_key,
            priority,
            route_order,
            description,
            reported,
            at,
            ROUTING_MINUTES.get(kind),
            reported + DUE[kind],
        ),
    ).fetchone()
    assert row is not None
    oid = int(row[0])
    _event(conn, oid, "created", by, source=source, kind=kind)
    if kind in ("disconnect", "reconnect"):
        _queue_command(conn, oid, kind, meter, by, description)
    return oid, True


def _queue_command(conn: Connection, order: int, kind: str, meter: int | None, by: str | None, why: str) -> None:
    """Queue the relay command of a disconnect / reconnect order when the meter can be switched remotely."""
    if meter is None:
        return
    row = conn.execute("SELECT protocol FROM meter WHERE id = %s", (meter,)).fetchone()
    if row is None or row[0] not in REMOTE:
        return
    from releve.meter_commands import queue_command

    who = by or str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
    cid = queue_command(conn, meter, kind, who, reason=f"work order {order}: {why}".strip(), work_order_id=order)
    conn.execute("UPDATE work_order SET status = 'awaiting_command', command_id = %s WHERE id = %s", (cid, order))
    _event(conn, order, "command_queued", by, command=cid, kind=kind)


def _locked(conn: Connection, order: int) -> tuple[str, str, int | None, int | None, str, str | None, dict[str, Any]]:
    row = conn.execute(
        "SELECT kind, status, account_id, meter_id, source, source_key, outcome_details FROM work_order "
        "WHERE id = %s FOR UPDATE",
        (order,),
    ).fetchone()
    if row is None:
        raise WorkOrderError(f"no work order {order}")
    return row


def assign(conn: Connection, order: int, assignee: str, now: datetime | None = None, by: str | None = None) -> None:
    """Give an order to a crew or person; the first assignment is its routing time."""
    if not assignee.strip():
        raise WorkOrderError("an assignee is needed")
    _, status, *_ = _locked(conn, order)
    if status not in OPEN:
        raise WorkOrderError(f"work order {order} is {status}")
    conn.execute(
        """UPDATE work_order SET assignee = %s, routed_at = coalesce(routed_at, %s),
                  status = CASE WHEN status = 'open' THEN 'assigned' ELSE status END WHERE id = %s""",
        (assignee, _now(now), order),
    )
    _event(conn, order, "assigned", by, assignee=assignee)


def cancel(conn: Connection, order: int, reason: str, now: datetime | None = None, by: str | None = None) -> None:
    """Cancel an open order (its queued command too, when it was not sent yet)."""
    _, status, *_ = _locked(conn, order)
    if status not in OPEN:
        raise WorkOrderError(f"work order {order} is {status}")
    row = conn.execute("SELECT command_id FROM work_order WHERE id = %s", (order,)).fetchone()
    if row is not None and row[0] is not None:
        from releve.meter_commands import MeterCommandError, cancel_command

        try:
            cancel_command(conn, int(row[0]), by or "billing", reason)
        except MeterCommandError as exc:
            _event(conn, order, "command_not_cancelled", by, error=str(exc))
    conn.execute(
        "UPDATE work_order SET status = 'cancelled', completed_at = %s, outcome = 'cancelled' WHERE id = %s",
        (_now(now), order),
    )
    _event(conn, order, "cancelled", by, reason=reason)


@dataclass
class Completion:
    """What completing an order caused downstream."""

    order: int
    outcome: str
    inspection_id: int | None = None
    penalty_entry: int | None = None
    follow_up: int | None = None


def complete(
    conn: Connection,
    order: int,
    outcome: str,
    *,
    details: dict[str, Any] | None = None,
    penalty: Decimal | None = None,
    penalty_due_days: int = 10,
    now: datetime | None = None,
    by: str | None = None,
) -> Completion:
    """Record an order's outcome once and let it flow back (see the module docstring)."""
    kind, status, account, meter, _, source_key, _ = _locked(conn, order)
    if status not in OPEN:
        raise WorkOrderError(f"work order {order} is {status}: its outcome is recorded once")
    at = _now(now)
    details = dict(details or {})
    done = Completion(order, outcome)
    if kind == "inspection":
        if outcome not in RESULTS:
            raise WorkOrderError(f"an inspection's outcome is one of {', '.join(RESULTS)}, not {outcome!r}")
        if source_key and source_key.startswith("theft:"):
            from analytics.theft.store import StoreError, add_outcome

            _, run, serial = source_key.split(":", 2)
            try:
                done.inspection_id = add_outcome(
                    conn, int(run), serial, outcome, str(details.get("campaign", "")), str(details.get("note", "")), at
                )
            except StoreError as exc:
                raise WorkOrderError(str(exc)) from exc
            details["theft_inspection"] = done.inspection_id
        if outcome == "fraud":
            if account is None:
                raise WorkOrderError(f"work order {order}: fraud found but no account at the meter to charge")
            if penalty is None or penalty <= 0:
                raise WorkOrderError("a fraud outcome needs the penalty amount")
            today = at.astimezone(UTC).date()
            done.penalty_entry = ledger.post(
                conn,
                account,
                "penalty",
                penalty,
                today,
                due=today + timedelta(days=penalty_due_days),
                reference=f"work order {order}",
                source_key=f"fraud:{order}:penalty",
                note="fraud found on inspection",
            )
            done.follow_up, _ = create(
                conn,
                "disconnect",
                source=f"fraud:{order}",
                source_key=f"fraud:{order}:disconnect",
                account=account,
                meter=meter,
                priority=1,
                now=at,
                by=by,
                description="fraud found: cut the supply, remove the meter for the lab",
            )
            details.update(penalty_entry=done.penalty_entry, disconnect_order=done.follow_up)
    elif kind == "meter_exchange":
        _exchange(conn, order, meter, details, at)
    elif kind in ("disconnect", "reconnect"):
        cmd = conn.execute("SELECT command_id FROM work_order WHERE id = %s", (order,)).fetchone()
        if cmd is not None and cmd[0] is not None and status == "awaiting_command":
            raise WorkOrderError(f"work order {order} waits for meter command {cmd[0]} to be confirmed")
    elif kind == "meter_check" and outcome == "faulty" and meter is not None:
        done.follow_up, _ = create(
            conn,
            "meter_exchange",
            source=f"work:{order}",
            source_key=f"work:{order}:exchange",
            account=account,
            meter=meter,
            now=at,
            by=by,
            description=f"meter found faulty on check {order}",
        )
        details["exchange_order"] = done.follow_up
    conn.execute(
        "UPDATE work_order SET status = 'done', completed_at = %s, outcome = %s, outcome_details = %s WHERE id = %s",
        (at, outcome, json.dumps(details, default=str), order),
    )
    _event(conn, order, "completed", by, outcome=outcome, **details)
    return done


def _exchange(conn: Connection, order: int, meter: int | None, details: dict[str, Any], at: datetime) -> None:
    """Close the old meter's installation at its final index, open the new one's at its initial index."""
    try:
        old_index = float(details["old_index"])
        new_serial = str(details["new_meter"])
        new_index = float(details.get("new_index", 0))
    except (KeyError, ValueError) as exc:
        raise WorkOrderError("a meter exchange needs old_index, new_meter and new_index") from exc
    new = conn.execute("SELECT id FROM meter WHERE serial = %s", (new_serial,)).fetchone()
    if new is None:
        raise WorkOrderError(f"no meter {new_serial!r} in the registry: register it first")
    inst = conn.execute(
        "SELECT id, service_point_id, installed_at FROM installation WHERE meter_id = %s AND removed_at IS NULL "
        "FOR UPDATE",
        (meter,),
    ).fetchone()
    if inst is None:
        raise WorkOrderError(f"work order {order}: the meter is not installed anywhere")
    when = datetime.fromisoformat(str(details["at"])) if details.get("at") else at
    if when <= inst[2]:
        raise WorkOrderError(f"the exchange ({when}) must come after the installation ({inst[2]})")
    conn.execute(
        "UPDATE installation SET removed_at = %s, removal_index = %s, reason = %s WHERE id = %s",
        (when, old_index, f"exchanged (work order {order})", inst[0]),
    )
    conn.execute(
        "INSERT INTO installation (meter_id, service_point_id, installed_at, install_index, reason) "
        "VALUES (%s, %s, %s, %s, %s)",
        (new[0], inst[1], when, new_index, f"exchange (work order {order})"),
    )
    details.update(old_index=old_index, new_meter=new_serial, new_index=new_index, at=when.isoformat())


def sync_commands(conn: Connection, now: datetime | None = None) -> tuple[int, int]:
    """Complete the orders whose meter command was confirmed; reopen those whose command failed or expired."""
    from releve.meter_commands import command_status

    done = reopened = 0
    for oid, cid in conn.execute(
        "SELECT id, command_id FROM work_order WHERE status = 'awaiting_command' ORDER BY id FOR UPDATE"
    ).fetchall():
        cmd = command_status(conn, int(cid))
        if cmd.state == "confirmed":
            conn.execute(
                "UPDATE work_order SET status = 'done', completed_at = %s, outcome = 'confirmed', "
                "outcome_details = %s WHERE id = %s",
                (cmd.confirmed_at or _now(now), json.dumps({"command": cid, "answer": cmd.answer}, default=str), oid),
            )
            _event(conn, oid, "command_confirmed", None, command=cid, answer=cmd.answer)
            done += 1
        elif cmd.state in ("failed", "expired", "cancelled"):
            conn.execute(
                "UPDATE work_order SET status = CASE WHEN assignee IS NULL THEN 'open' ELSE 'assigned' END "
                "WHERE id = %s",
                (oid,),
            )
            _event(conn, oid, "command_" + cmd.state, None, command=cid, error=cmd.error)
            reopened += 1
    return done, reopened


def from_theft(conn: Connection, run_id: int, top: int, now: datetime | None = None) -> list[int]:
    """Inspection orders for the ``top`` candidates of theft run ``run_id``, numbered in route order.

    A meter that already has an open inspection order is skipped; running it again adds nothing.
    """
    from analytics.theft.ranking import route_order

    if conn.execute("SELECT 1 FROM theft_run WHERE id = %s", (run_id,)).fetchone() is None:
        raise WorkOrderError(f"no theft run {run_id}")
    rows = conn.execute(
        """SELECT c.rank, c.serial, coalesce(c.meter_id, m.id), c.latitude, c.longitude, c.risk, c.expected_value,
                  c.reasons
           FROM theft_candidate c LEFT JOIN meter m ON m.serial = c.serial
           WHERE c.run_id = %s ORDER BY c.rank LIMIT %s""",
        (run_id, top),
    ).fetchall()

    @dataclass
    class _Stop:
        latitude: float | None
        longitude: float | None
        route_order: int | None = None

    stops = [_Stop(r[3], r[4]) for r in rows]
    route_order(stops)  # type: ignore[arg-type]
    # meters without coordinates come after the route, in rank order
    last = max((x.route_order or 0 for x in stops), default=0)
    for x in stops:
        if x.route_order is None:
            last += 1
            x.route_order = last
    made = []
    for r, stop in zip(rows, stops, strict=True):
        rank, serial, meter, *_ = r
        if meter is None:
            continue
        busy = conn.execute(
            "SELECT 1 FROM work_order WHERE kind = 'inspection' AND meter_id = %s AND status IN ('open', 'assigned')",
            (meter,),
        ).fetchone()
        if (
            busy is not None
            and conn.execute("SELECT 1 FROM work_order WHERE source_key = %s", (f"theft:{run_id}:{serial}",)).fetchone()
            is None
        ):
            continue
        reasons = "; ".join(r[7][:3])
        oid, new = create(
            conn,
            "inspection",
            source=f"theft run {run_id}",
            source_key=f"theft:{run_id}:{serial}",
            meter=meter,
            priority=1 if rank <= 10 else 2,
            route_order=stop.route_order,
            description=f"night inspection with police (rank {rank}, risk {r[5]:.2f}): {reasons}",
            now=now,
        )
        if new:
            made.append(oid)
    return made


def from_vee(conn: Connection, now: datetime | None = None) -> list[int]:
    """Meter exchange or check orders for open VEE exceptions that call for a visit (one per meter and rule)."""
    made = []
    for meter, rule, first, n, message in conn.execute(
        """SELECT meter_id, rule, min(id), count(*), (array_agg(message ORDER BY id))[1] FROM vee_exception
           WHERE status = 'open' AND severity IN ('error', 'warning') AND rule = ANY(%s)
           GROUP BY meter_id, rule ORDER BY min(id)""",
        (list(VEE_EXCHANGE + VEE_CHECK),),
    ).fetchall():
        kind = "meter_exchange" if rule in VEE_EXCHANGE else "meter_check"
        busy = conn.execute(
            "SELECT 1 FROM work_order WHERE kind = %s AND meter_id = %s AND status IN ('open', 'assigned')",
            (kind, meter),
        ).fetchone()
        if busy is not None:
            continue
        oid, new = create(
            conn,
            kind,
            source=f"vee {rule}",
            source_key=f"vee:{first}",
            meter=meter,
            description=f"{rule} × {n}: {message}",
            now=now,
        )
        if new:
            made.append(oid)
    return made


def list_orders(
    conn: Connection, status: str | None = None, kind: str | None = None, open_only: bool = False
) -> list[Order]:
    """Orders, most urgent first (route order inside an inspection list)."""
    rows = conn.execute(
        """SELECT w.id, w.kind, w.status, a.number, m.serial, w.source, w.priority, w.route_order, w.assignee,
                  w.reported_at, w.due_at, w.routed_at, w.completed_at, w.outcome, w.description, w.command_id
           FROM work_order w LEFT JOIN account a ON a.id = w.account_id LEFT JOIN meter m ON m.id = w.meter_id
           WHERE (%(s)s::text IS NULL OR w.status = %(s)s) AND (%(k)s::text IS NULL OR w.kind = %(k)s)
             AND (NOT %(o)s OR w.status IN ('open', 'assigned', 'awaiting_command'))
           ORDER BY w.status IN ('done', 'cancelled'), w.priority, w.due_at, w.route_order NULLS LAST, w.id""",
        {"s": status, "k": kind, "o": open_only},
    ).fetchall()
    return [Order(*r) for r in rows]


@dataclass
class Breach:
    """A service-level breach."""

    what: str
    id: int
    target: str
    late_by: timedelta
    detail: str

    def text(self) -> str:
        """One line."""
        minutes = int(self.late_by.total_seconds() // 60)
        return f"{self.what} {self.id}: {self.target} missed by {minutes} min — {self.detail}"


def sla(conn: Connection, now: datetime | None = None) -> list[Breach]:
    """Service-level breaches on ``now``.

    Routing breaches (fault reports not assigned within 5 minutes), complaints recorded later than 10
    minutes after they were received, and open orders past their due time.
    """
    at = _now(now)
    out = []
    for oid, kind, reported, routed, minutes, desc in conn.execute(
        """SELECT id, kind, reported_at, routed_at, routing_minutes, description FROM work_order
           WHERE routing_minutes IS NOT NULL AND status <> 'cancelled'
             AND coalesce(routed_at, %s) - reported_at > make_interval(mins => routing_minutes) ORDER BY id""",
        (at,),
    ):
        late = (routed or at) - reported - timedelta(minutes=minutes)
        state = "assigned late" if routed else "not assigned yet"
        out.append(Breach("work order", oid, f"{kind} routed within {minutes} min", late, f"{state}; {desc}"))
    for did, received, recorded, desc in conn.execute(
        """SELECT id, received_at, recorded_at, description FROM dispute
           WHERE kind = 'complaint' AND recorded_at - received_at > make_interval(mins => %s) ORDER BY id""",
        (COMPLAINT_MINUTES,),
    ):
        out.append(
            Breach(
                "complaint",
                did,
                f"recorded within {COMPLAINT_MINUTES} min",
                recorded - received - timedelta(minutes=COMPLAINT_MINUTES),
                desc,
            )
        )
    for oid, kind, due, desc in conn.execute(
        """SELECT id, kind, due_at, description FROM work_order
           WHERE status IN ('open', 'assigned', 'awaiting_command') AND due_at < %s ORDER BY due_at""",
        (at,),
    ):
        out.append(Breach("work order", oid, f"{kind} done by its due time", at - due, desc))
    return out


def events(conn: Connection, order: int) -> list[tuple[datetime, str, str, dict[str, Any]]]:
    """An order's trail, oldest first."""
    return [
        tuple(r)
        for r in conn.execute(
            "SELECT at, event, by_user, details FROM work_order_event WHERE work_order_id = %s ORDER BY id", (order,)
        )
    ]


def today(now: datetime | None = None) -> date:
    """The UTC date of ``now``."""
    return _now(now).astimezone(UTC).date()
