"""Water, change of occupant: the tolerated index difference, proof, and the default after 15 days.

The previous occupant's move-out index and the newcomer's move-in index are recorded together.
At most ``tenant_change.tolerance`` (5 m³) apart: the subscription opens at the move-in index.
Further apart: no subscription, a case is opened and the customer must bring proof (a deed of sale or
an entry inventory showing an index and a date). With proof, the subscription starts at the proof's
index and date; a document that shows a date but no index takes the predecessor's index at that
date (the recorded move-out index on the move-out date, else the meter's validated index there, by
the bill run's boundary rule). Without proof within ``tenant_change.proof_days`` (15) days **of the
customer's request**, it starts at the predecessor's move-out index and date, and a notice tells the
customer so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from psycopg import Connection

from billing.tariffs import TariffBook
from releve import db
from releve.model import MAIN_REGISTERS


class TenantError(Exception):
    """A tenant-change request that cannot be recorded."""


@dataclass(frozen=True)
class Case:
    """A tenant-change case as billing needs it."""

    id: int
    account_id: int
    predecessor_account_id: int | None
    status: str
    move_out_index: Decimal
    move_out_date: date
    move_in_index: Decimal
    move_in_date: date
    proof_due: date
    start_index: Decimal | None
    start_date: date | None


_CASE_COLUMNS = """id, account_id, predecessor_account_id, status, move_out_index, move_out_date, move_in_index,
                   move_in_date, proof_due, start_index, start_date"""


def cases_for(conn: Connection, account_ids: list[int]) -> dict[tuple[str, int], Case]:
    """Cases where the account is the newcomer (``("new", id)``) or the predecessor (``("old", id)``)."""
    out: dict[tuple[str, int], Case] = {}
    for row in conn.execute(
        f"SELECT {_CASE_COLUMNS} FROM tenant_case WHERE account_id IN (SELECT unnest(%s::integer[])) "
        "OR predecessor_account_id IN (SELECT unnest(%s::integer[]))",
        (db.int_array(account_ids), db.int_array(account_ids)),
    ):
        case = Case(*row)
        out[("new", case.account_id)] = case
        if case.predecessor_account_id is not None:
            out[("old", case.predecessor_account_id)] = case
    return out


def record_change(
    conn: Connection,
    book: TariffBook,
    account: str,
    move_out_index: Decimal,
    move_out_date: date,
    move_in_index: Decimal,
    move_in_date: date,
    predecessor: str | None = None,
    requested_on: date | None = None,
) -> Case:
    """Record a change of occupant for the newcomer's ``account``; open a case when the indexes differ too much.

    ``requested_on`` is the day the customer asked for the subscription (default: the move-in date):
    the case is opened then, and the ``proof_days`` to bring proof run from it.
    """
    row = conn.execute(
        """SELECT a.id, a.service_point_id, sp.commodity FROM account a
           JOIN service_point sp ON sp.id = a.service_point_id WHERE a.number = %s""",
        (account,),
    ).fetchone()
    if row is None:
        raise TenantError(f"unknown account {account}")
    acc_id, sp_id, commodity = row
    if commodity != "water":
        raise TenantError(f"account {account} is {commodity}: the tenant-change rule is for water")
    if predecessor:
        prow = conn.execute(
            "SELECT id FROM account WHERE number = %s AND service_point_id = %s", (predecessor, sp_id)
        ).fetchone()
        if prow is None:
            raise TenantError(f"predecessor account {predecessor} is not at the same service point")
    else:
        prow = conn.execute(
            """SELECT id FROM account WHERE service_point_id = %s AND id <> %s AND opened_on <= %s
               ORDER BY opened_on DESC LIMIT 1""",
            (sp_id, acc_id, move_out_date),
        ).fetchone()
    pred_id = prow[0] if prow else None
    tol = book.tenant_change.tolerance
    diff = abs(move_in_index - move_out_index)
    accepted = diff <= tol
    requested = requested_on or move_in_date
    due = requested + timedelta(days=book.tenant_change.proof_days)
    crow = conn.execute(
        f"""INSERT INTO tenant_case (service_point_id, account_id, predecessor_account_id, move_out_index,
                                    move_out_date, move_in_index, move_in_date, difference, tolerance, status,
                                    opened_on, proof_due, start_index, start_date, resolved_on)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_CASE_COLUMNS}""",
        (
            sp_id,
            acc_id,
            pred_id,
            move_out_index,
            move_out_date,
            move_in_index,
            move_in_date,
            diff,
            tol,
            "accepted" if accepted else "open",
            requested,
            due,
            move_in_index if accepted else None,
            move_in_date if accepted else None,
            requested if accepted else None,
        ),
    ).fetchone()
    assert crow is not None
    return Case(*crow)


def record_proof(
    conn: Connection, case_id: int, index: Decimal | None, on: date, document: str, today: date, decimals: int = 3
) -> Case:
    """Record the customer's proof: the subscription starts at its index and date.

    A document with a date but no index (``index`` None) takes the predecessor's index at that date:
    the recorded move-out index when the date is the move-out date, else the meter's validated index
    at the start of that day (:func:`index_at`). Without either, the proof is refused.
    """
    row = conn.execute(
        "SELECT status, proof_due, service_point_id, move_out_date, move_out_index FROM tenant_case "
        "WHERE id = %s FOR UPDATE",
        (case_id,),
    ).fetchone()
    if row is None:
        raise TenantError(f"no tenant case {case_id}")
    status, due, sp_id, out_date, out_index = row
    if status != "open":
        raise TenantError(f"tenant case {case_id} is {status}, not open")
    if today > due:
        raise TenantError(f"tenant case {case_id}: proof was due by {due} (today {today}); run the expiry")
    start = index
    if start is None:
        start = Decimal(out_index) if on == out_date else index_at(conn, sp_id, on, decimals)
        if start is None:
            raise TenantError(
                f"tenant case {case_id}: the document shows no index and there is no validated "
                f"index of the meter on {on} to take the predecessor's from; give --index"
            )
    crow = conn.execute(
        f"""UPDATE tenant_case SET status = 'proven', proof_index = %s, proof_date = %s, proof_document = %s,
                   start_index = %s, start_date = %s, resolved_on = %s WHERE id = %s RETURNING {_CASE_COLUMNS}""",
        (index, on, document, start, on, today, case_id),
    ).fetchone()
    assert crow is not None
    return Case(*crow)


def index_at(conn: Connection, service_point_id: int, on: date, decimals: int = 3) -> Decimal | None:
    """The register index of the meter installed at the service point at the start of day ``on``.

    The bill run's boundary rule: the first validated read on that day, else linear interpolation
    between the last read before and the first read after it; None when neither exists.
    """
    from billing.pricing import Read, boundary_index

    at = datetime.combine(on, time(0), UTC)
    rows = conn.execute(
        """WITH m AS (SELECT meter_id FROM installation WHERE service_point_id = %(sp)s AND installed_at <= %(at)s
                      AND (removed_at IS NULL OR removed_at > %(at)s) ORDER BY installed_at DESC LIMIT 1),
                ch AS (SELECT id FROM channel WHERE code = ANY(%(registers)s))
           (SELECT 'day', v.ts, v.value, v.quality FROM validated_reading v, m WHERE v.meter_id = m.meter_id
              AND v.channel_id IN (SELECT id FROM ch) AND v.ts >= %(at)s AND v.ts < %(next)s AND v.value IS NOT NULL
            ORDER BY v.ts LIMIT 1)
           UNION ALL
           (SELECT 'before', v.ts, v.value, v.quality FROM validated_reading v, m WHERE v.meter_id = m.meter_id
              AND v.channel_id IN (SELECT id FROM ch) AND v.ts < %(at)s AND v.value IS NOT NULL
            ORDER BY v.ts DESC LIMIT 1)
           UNION ALL
           (SELECT 'after', v.ts, v.value, v.quality FROM validated_reading v, m WHERE v.meter_id = m.meter_id
              AND v.channel_id IN (SELECT id FROM ch) AND v.ts >= %(next)s AND v.value IS NOT NULL
            ORDER BY v.ts LIMIT 1)""",
        {"sp": service_point_id, "at": at, "next": at + timedelta(days=1), "registers": list(MAIN_REGISTERS)},
    ).fetchall()
    found = {kind: Read(ts, float(value), quality) for kind, ts, value, quality in rows}
    idx = boundary_index(at, found.get("day"), found.get("before"), found.get("after"), decimals)
    return idx.value if idx is not None else None


def notice_text(
    case_id: int,
    account: str,
    customer: str,
    move_out_index: Decimal,
    move_out_date: date,
    move_in_index: Decimal,
    move_in_date: date,
    proof_days: int,
) -> str:
    """The letter telling the newcomer that the predecessor's move-out index applies."""
    return (
        f"Account {account} — {customer}\n"
        f"Tenant-change case {case_id}\n\n"
        f"At your move-in on {move_in_date} the water meter showed {move_in_index} m³, while the previous "
        f"occupant's move-out index on {move_out_date} was {move_out_index} m³.\n"
        f"No proof of your move-in index (deed of sale or entry inventory showing the index and the date) "
        f"was received within {proof_days} days.\n"
        f"Your subscription therefore starts at the previous occupant's move-out index, {move_out_index} m³, "
        f"on {move_out_date}; consumption from that index is billed to you.\n"
    )


def expire_cases(conn: Connection, book: TariffBook, as_of: date, out_dir: Path | None = None) -> list[int]:
    """Default every open case whose proof is overdue on ``as_of``; write the notices; return the case ids."""
    rows = conn.execute(
        """SELECT t.id, a.number, c.name, t.move_out_index, t.move_out_date, t.move_in_index, t.move_in_date
           FROM tenant_case t JOIN account a ON a.id = t.account_id JOIN customer c ON c.id = a.customer_id
           WHERE t.status = 'open' AND t.proof_due < %s ORDER BY t.id FOR UPDATE OF t""",
        (as_of,),
    ).fetchall()
    done = []
    for cid, number, name, out_idx, out_date, in_idx, in_date in rows:
        text = notice_text(cid, number, name, out_idx, out_date, in_idx, in_date, book.tenant_change.proof_days)
        conn.execute(
            """UPDATE tenant_case SET status = 'defaulted', start_index = move_out_index, start_date = move_out_date,
                      resolved_on = %s, notice = %s WHERE id = %s""",
            (as_of, text, cid),
        )
        if out_dir is not None:
            folder = out_dir / "notices"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"tenant-case-{cid}.txt").write_text(text, encoding="utf-8")
        done.append(int(cid))
    return done
