"""Commands to meters: the queue API that billing, credit control, dashboards and the CLI use.

A command asks one meter to do one thing — ``disconnect`` or ``reconnect`` its relay,
``clock_sync`` (set its clock) or ``demand_reset`` — and is executed by the collector that polls the
meter (``collectors/commands.py``), over Modbus writes or an MQTT command topic, as its device
profile says. Nothing here talks to a meter: this module only reads and writes the tables of
migration 0019, so any package may use it.

States (``meter_command.state``) and who moves a command between them::

    queued ──claim──► sent ──read-back matches──► confirmed
      │  ▲             │
      │  └──retry──────┤  transient error (timeout, connection): back to queued with
      │                │  not_before = now + backoff, attempts + 1
      │                ├──► failed     the meter refused (Modbus exception, error ack) or no profile
      │                │               support, or the attempts ran out
      ├────────────────┴──► expired    expires_at passed before a confirmation
      ├──► failed                      refused before sending (the meter cannot do this command)
      └──► cancelled                   cancel_command(), or superseded by the opposite relay command

- ``queued``: waiting for a collector (not before ``not_before``).
- ``sent``: a collector took it (``collector``, ``sent_at``, ``attempts`` counts the sends) and
  waits for the meter's answer and the read-back.
- ``confirmed``: the read-back shows the requested state (``answer`` holds it, ``confirmed_at``).
- ``failed``: refused or given up; ``error`` says why.
- ``expired``: ``expires_at`` passed first; nothing more will be tried.
- ``cancelled``: withdrawn before it was sent. A command already sent cannot be cancelled (the
  meter may have acted): queue the opposite command instead.

The final states never change (a trigger refuses it), and every move is recorded in the append-only
``meter_command_event`` (``state``, ``actor`` — a person, a process or a collector — and ``detail``:
the reason, the meter's answer, the error).

Queueing is idempotent per meter and kind: while a command of that kind is open (queued or sent)
for the meter, ``queue_command`` returns its id instead of adding another. Queueing a relay command
cancels a *queued* opposite one (a reconnect after a payment withdraws the disconnect not yet sent);
if the opposite one is already *sent*, the new command queues behind it (a collector executes a
meter's commands one at a time, in order).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from psycopg import Connection
from psycopg.rows import dict_row

Kind = Literal["disconnect", "reconnect", "clock_sync", "demand_reset"]
State = Literal["queued", "sent", "confirmed", "failed", "expired", "cancelled"]

KINDS: tuple[str, ...] = ("disconnect", "reconnect", "clock_sync", "demand_reset")
STATES: tuple[str, ...] = ("queued", "sent", "confirmed", "failed", "expired", "cancelled")
OPEN_STATES: tuple[str, ...] = ("queued", "sent")
FINAL_STATES: tuple[str, ...] = ("confirmed", "failed", "expired", "cancelled")
RELAY_KINDS: dict[str, str] = {"disconnect": "reconnect", "reconnect": "disconnect"}  # kind -> its opposite

#: How long a command stays valid when the caller does not say.
DEFAULT_EXPIRES_IN = timedelta(hours=24)


class MeterCommandError(ValueError):
    """A command request that cannot be honoured: unknown meter, kind or command, or a bad transition."""


@dataclass(frozen=True)
class MeterCommand:
    """One row of ``meter_command`` with the meter's serial."""

    id: int
    meter_id: int
    serial: str
    kind: str
    state: str
    requested_by: str
    reason: str | None
    work_order_id: int | None
    requested_at: datetime
    not_before: datetime
    expires_at: datetime
    attempts: int
    collector: str | None
    sent_at: datetime | None
    confirmed_at: datetime | None
    finished_at: datetime | None
    answer: dict[str, Any] | None
    error: str | None

    @property
    def is_open(self) -> bool:
        """True while a collector may still act on it (queued or sent)."""
        return self.state in OPEN_STATES


@dataclass(frozen=True)
class CommandEvent:
    """One row of the audit, ``meter_command_event``."""

    id: int
    command_id: int
    at: datetime
    state: str
    actor: str
    detail: dict[str, Any]


_SELECT = """
SELECT c.id, c.meter_id, m.serial, c.kind, c.state, c.requested_by, c.reason, c.work_order_id,
       c.requested_at, c.not_before, c.expires_at, c.attempts, c.collector, c.sent_at, c.confirmed_at,
       c.finished_at, c.answer, c.error
FROM meter_command c JOIN meter m ON m.id = c.meter_id
"""


def _command(row: dict[str, Any]) -> MeterCommand:
    return MeterCommand(**row)


def resolve_meter(conn: Connection, meter: str | int) -> int:
    """The meter id for a serial (str) or an id (int); ``MeterCommandError`` when there is no such meter."""
    if isinstance(meter, bool) or not isinstance(meter, (str, int)):
        raise MeterCommandError(f"meter must be a serial (str) or an id (int), not {meter!r}")
    if isinstance(meter, int):
        row = conn.execute("SELECT id FROM meter WHERE id = %s", (meter,)).fetchone()
    else:
        row = conn.execute("SELECT id FROM meter WHERE serial = %s", (meter,)).fetchone()
    if row is None:
        what = f"id {meter}" if isinstance(meter, int) else f"serial {meter!r}"
        raise MeterCommandError(f"no meter with {what}")
    return int(row[0])


def record_event(conn: Connection, command_id: int, state: str, actor: str, **detail: Any) -> None:
    """Append one audit row (``detail`` as JSON; values that JSON cannot hold are written as text)."""
    conn.execute(
        "INSERT INTO meter_command_event (command_id, state, actor, detail) VALUES (%s, %s, %s, %s::jsonb)",
        (command_id, state, actor, json.dumps({k: v for k, v in detail.items() if v is not None}, default=str)),
    )


def queue_command(
    conn: Connection,
    meter: str | int,
    kind: str,
    requested_by: str,
    reason: str | None = None,
    work_order_id: int | None = None,
    expires_in: timedelta = DEFAULT_EXPIRES_IN,
    not_before: datetime | None = None,
) -> int:
    """Queue ``kind`` for ``meter`` (serial or id) and return the command's id.

    Returns the id of the open command of the same kind when there is one (idempotent); cancels a
    queued opposite relay command (recorded as superseded). Raises ``MeterCommandError`` for an unknown
    meter or kind, an empty ``requested_by`` or a non-positive ``expires_in``.
    """
    if kind not in KINDS:
        raise MeterCommandError(f"unknown command kind {kind!r} (expected one of {', '.join(KINDS)})")
    if not requested_by or not requested_by.strip():
        raise MeterCommandError("requested_by must name who asks for the command")
    if expires_in <= timedelta(0):
        raise MeterCommandError(f"expires_in must be positive, not {expires_in}")
    with conn.transaction():
        meter_id = resolve_meter(conn, meter)
        # One queue per meter: serialise concurrent queueing for the same meter.
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (0x4D43, meter_id))
        existing = conn.execute(
            "SELECT id FROM meter_command WHERE meter_id = %s AND kind = %s AND state IN ('queued', 'sent') "
            "ORDER BY id LIMIT 1",
            (meter_id, kind),
        ).fetchone()
        if existing is not None:
            return int(existing[0])
        row = conn.execute(
            "INSERT INTO meter_command (meter_id, kind, requested_by, reason, work_order_id, not_before, expires_at) "
            "VALUES (%s, %s, %s, %s, %s, coalesce(%s, now()), now() + %s) RETURNING id",
            (meter_id, kind, requested_by, reason, work_order_id, not_before, expires_in),
        ).fetchone()
        assert row is not None
        command_id = int(row[0])
        record_event(conn, command_id, "queued", requested_by, reason=reason, work_order_id=work_order_id)
        opposite = RELAY_KINDS.get(kind)
        if opposite is not None:
            stale = conn.execute(
                "SELECT id FROM meter_command WHERE meter_id = %s AND kind = %s AND state = 'queued' FOR UPDATE",
                (meter_id, opposite),
            ).fetchall()
            for (old_id,) in stale:
                _finish(conn, int(old_id), "cancelled", requested_by, error=f"superseded by command {command_id}")
    return command_id


def _finish(
    conn: Connection,
    command_id: int,
    state: str,
    actor: str,
    error: str | None = None,
    answer: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        "UPDATE meter_command SET state = %s, error = coalesce(%s, error), answer = coalesce(%s::jsonb, answer) "
        "WHERE id = %s",
        (state, error, json.dumps(answer) if answer is not None else None, command_id),
    )
    record_event(conn, command_id, state, actor, error=error, answer=answer)


def cancel_command(conn: Connection, command_id: int, requested_by: str, reason: str | None = None) -> MeterCommand:
    """Cancel a queued command and return it.

    ``MeterCommandError`` when there is no such command, or it is no longer queued (a command already
    sent may have reached the meter: queue the opposite command instead).
    """
    if not requested_by or not requested_by.strip():
        raise MeterCommandError("requested_by must name who cancels the command")
    with conn.transaction():
        row = conn.execute("SELECT state FROM meter_command WHERE id = %s FOR UPDATE", (command_id,)).fetchone()
        if row is None:
            raise MeterCommandError(f"no meter command {command_id}")
        if row[0] != "queued":
            raise MeterCommandError(f"meter command {command_id} is {row[0]}: only a queued command can be cancelled")
        _finish(conn, command_id, "cancelled", requested_by, error=reason or "cancelled")
    return command_status(conn, command_id)


def command_status(conn: Connection, command_id: int) -> MeterCommand:
    """The command with this id; ``MeterCommandError`` when there is none."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SELECT + " WHERE c.id = %s", (command_id,)).fetchone()
    if row is None:
        raise MeterCommandError(f"no meter command {command_id}")
    return _command(row)


def command_events(conn: Connection, command_id: int) -> list[CommandEvent]:
    """The audit trail of one command, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, command_id, at, state, actor, detail FROM meter_command_event WHERE command_id = %s "
            "ORDER BY id",
            (command_id,),
        ).fetchall()
    return [CommandEvent(**r) for r in rows]


def list_commands(
    conn: Connection,
    meter: str | int | None = None,
    states: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    work_order_id: int | None = None,
    limit: int | None = 100,
) -> list[MeterCommand]:
    """Commands, newest first, filtered by meter (serial or id), states, kinds and work order."""
    where: list[str] = []
    params: list[Any] = []
    if meter is not None:
        where.append("c.meter_id = %s")
        params.append(resolve_meter(conn, meter))
    for column, values, allowed in (("state", states, STATES), ("kind", kinds, KINDS)):
        if values is None:
            continue
        chosen = list(values)
        bad = [v for v in chosen if v not in allowed]
        if bad:
            raise MeterCommandError(f"unknown {column} {bad[0]!r} (expected one of {', '.join(allowed)})")
        where.append(f"c.{column} = ANY(%s)")
        params.append(chosen)
    if work_order_id is not None:
        where.append("c.work_order_id = %s")
        params.append(work_order_id)
    query = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY c.id DESC"
    if limit is not None:
        query += " LIMIT %s"
        params.append(limit)
    with conn.cursor(row_factory=dict_row) as cur:
        return [_command(r) for r in cur.execute(query, params).fetchall()]


def pending_commands(
    conn: Connection, meters: Sequence[str | int] | None = None, kinds: Iterable[str] | None = None
) -> list[MeterCommand]:
    """Open commands (queued or sent), oldest first, optionally for some meters (serials or ids)."""
    where = ["c.state IN ('queued', 'sent')"]
    params: list[Any] = []
    if meters is not None:
        where.append("c.meter_id = ANY(%s)")
        params.append([resolve_meter(conn, m) for m in meters])
    if kinds is not None:
        chosen = list(kinds)
        bad = [k for k in chosen if k not in KINDS]
        if bad:
            raise MeterCommandError(f"unknown command kind {bad[0]!r} (expected one of {', '.join(KINDS)})")
        where.append("c.kind = ANY(%s)")
        params.append(chosen)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_SELECT + " WHERE " + " AND ".join(where) + " ORDER BY c.id", params).fetchall()
    return [_command(r) for r in rows]


def relay_state(conn: Connection, meter: str | int) -> str | None:
    """``'disconnected'`` or ``'connected'`` from the meter's last confirmed relay command; None if none."""
    row = conn.execute(
        "SELECT kind FROM meter_command WHERE meter_id = %s AND state = 'confirmed' "
        "AND kind IN ('disconnect', 'reconnect') ORDER BY confirmed_at DESC, id DESC LIMIT 1",
        (resolve_meter(conn, meter),),
    ).fetchone()
    if row is None:
        return None
    return "disconnected" if row[0] == "disconnect" else "connected"


# --- the collector's side: claim, record the outcome --------------------------------------------


def expire_overdue(
    conn: Connection, actor: str, meters: Sequence[int] | None = None, in_flight: Sequence[int] = ()
) -> list[int]:
    """Move open commands whose ``expires_at`` has passed to ``expired``; return their ids.

    ``in_flight``: commands the caller is executing right now; they are left alone so that what the
    meter answers is recorded (a disconnect the meter carried out must not read as expired).
    """
    with conn.transaction():
        query = "SELECT id, attempts FROM meter_command WHERE state IN ('queued', 'sent') AND expires_at <= now()"
        params: list[Any] = []
        if meters is not None:
            query += " AND meter_id = ANY(%s)"
            params.append(list(meters))
        if in_flight:
            query += " AND NOT id = ANY(%s)"
            params.append(list(in_flight))
        rows = conn.execute(query + " FOR UPDATE SKIP LOCKED", params).fetchall()
        for command_id, attempts in rows:
            error = (
                f"expired after {attempts} attempt(s) without confirmation"
                if attempts
                else "expired before any collector could send it"
            )
            _finish(conn, int(command_id), "expired", actor, error=error)
    return [int(r[0]) for r in rows]


def claim_next(conn: Connection, meter_id: int, collector: str) -> MeterCommand | None:
    """Take the meter's oldest due queued command for ``collector`` (state ``sent``), or None.

    A meter's commands run one at a time and in order: nothing is claimed while another of its
    commands is ``sent``, nor past an older queued one that is not due yet.
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT id, state, not_before <= now() AND expires_at > now() FROM meter_command "
            "WHERE meter_id = %s AND state IN ('queued', 'sent') ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            (meter_id,),
        ).fetchone()
        if row is None or row[1] != "queued" or not row[2]:
            return None
        command_id = int(row[0])
        conn.execute(
            "UPDATE meter_command SET state = 'sent', collector = %s, sent_at = now(), attempts = attempts + 1 "
            "WHERE id = %s",
            (collector, command_id),
        )
        attempt = conn.execute("SELECT attempts FROM meter_command WHERE id = %s", (command_id,)).fetchone()
        record_event(conn, command_id, "sent", collector, attempt=attempt[0] if attempt else None)
    return command_status(conn, command_id)


def confirm(conn: Connection, command_id: int, collector: str, answer: dict[str, Any]) -> None:
    """The read-back showed the requested state: ``confirmed`` with the meter's answer."""
    with conn.transaction():
        conn.execute("UPDATE meter_command SET confirmed_at = now() WHERE id = %s", (command_id,))
        _finish(conn, command_id, "confirmed", collector, answer=answer)


def fail(conn: Connection, command_id: int, collector: str, error: str, answer: dict[str, Any] | None = None) -> None:
    """The meter refused or the attempts ran out: ``failed`` with the reason."""
    with conn.transaction():
        _finish(conn, command_id, "failed", collector, error=error, answer=answer)


def retry_later(
    conn: Connection,
    command_id: int,
    collector: str,
    error: str,
    delay: timedelta,
    answer: dict[str, Any] | None = None,
) -> None:
    """A transient error: back to ``queued``, not before ``now + delay``; the error is kept."""
    with conn.transaction():
        conn.execute(
            "UPDATE meter_command SET state = 'queued', not_before = now() + %s, error = %s, "
            "answer = coalesce(%s::jsonb, answer) WHERE id = %s",
            (delay, error, json.dumps(answer) if answer is not None else None, command_id),
        )
        record_event(
            conn, command_id, "queued", collector, error=error, retry_in_s=delay.total_seconds(), answer=answer
        )
