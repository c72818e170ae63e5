"""The review queue: a person accepts a suggestion, edits a value, or rejects an exception.

Every decision that changes a value is a new row in ``reading_version`` (quality F, method 53 for an
accepted suggestion, 55 for an agreed value typed in), with who, when, why and the value it
replaced; the raw reading is never touched. Rejecting an exception keeps the raw value (and, if VEE
had substituted an estimate, reinstates the raw value as a new version). On billed (frozen) data the
new version is an adjustment: recorded for the next bill (a row in ``reading_adjustment`` opens the
rebill), the billed value stays current; a billed read more than two years before the correction
date is prescribed and cannot be corrected (the database refuses it too, migration 0014).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection

from analytics.vee.params import RULES


class ReviewError(Exception):
    """The decision cannot be applied (unknown or closed exception, no such suggestion)."""


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One open exception, as a reviewer sees it."""

    id: int
    serial: str
    channel: str
    ts: datetime
    rule: str
    severity: str
    value: float | None
    suggestions: list[float]
    message: str
    status: str


def list_queue(
    conn: Connection, meter: str | None = None, status: str = "open", limit: int = 50, include_info: bool = False
) -> list[QueueItem]:
    """Exceptions, worst first then by meter and time."""
    rows = conn.execute(
        """SELECT e.id, m.serial, c.code, e.ts, e.rule, e.severity, e.value, e.suggestions, e.message, e.status
           FROM vee_exception e JOIN meter m ON m.id = e.meter_id JOIN channel c ON c.id = e.channel_id
           WHERE (%(meter)s::text IS NULL OR m.serial = %(meter)s)
             AND (%(status)s::text = 'all' OR e.status = %(status)s) AND (%(info)s OR e.severity <> 'info')
           ORDER BY CASE e.severity WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, m.serial, e.ts, e.rule
           LIMIT %(limit)s""",
        {"meter": meter, "status": status, "limit": limit, "info": include_info},
    ).fetchall()
    return [QueueItem(r[0], r[1], r[2], r[3], r[4], r[5], r[6], list(r[7] or []), r[8], r[9]) for r in rows]


def queue_size(conn: Connection, meter: str | None = None, status: str = "open", include_info: bool = False) -> int:
    """How many exceptions :func:`list_queue` would list without a limit."""
    row = conn.execute(
        """SELECT count(*) FROM vee_exception e JOIN meter m ON m.id = e.meter_id
           WHERE (%(meter)s::text IS NULL OR m.serial = %(meter)s)
             AND (%(status)s::text = 'all' OR e.status = %(status)s) AND (%(info)s OR e.severity <> 'info')""",
        {"meter": meter, "status": status, "info": include_info},
    ).fetchone()
    return int(row[0]) if row else 0


def _open_exception(conn: Connection, exception_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        """SELECT id, meter_id, channel_id, ts, rule, status, suggestions FROM vee_exception WHERE id = %s
           FOR UPDATE""",
        (exception_id,),
    ).fetchone()
    if row is None:
        raise ReviewError(f"exception {exception_id} does not exist")
    if row[5] != "open":
        raise ReviewError(f"exception {exception_id} is {row[5]}, not open")
    return row


def current_value(conn: Connection, meter_id: int, channel_id: int, ts: datetime) -> tuple[float | None, int]:
    """The value in force (latest non-adjustment version, else raw) and its version number."""
    row = conn.execute(
        """SELECT value, version FROM reading_version
           WHERE meter_id = %s AND channel_id = %s AND ts = %s AND kind <> 'adjustment'
           ORDER BY version DESC LIMIT 1""",
        (meter_id, channel_id, ts),
    ).fetchone()
    if row is not None:
        return row[0], int(row[1])
    raw = conn.execute("SELECT value FROM series_between(%s, %s, %s, %s)", (meter_id, channel_id, ts, ts)).fetchone()
    return (raw[0] if raw else None), 0


def _new_version(
    conn: Connection,
    exc: tuple[Any, ...],
    value: float | None,
    quality: str,
    method: int | None,
    kind: str,
    who: str,
    comment: str,
) -> tuple[int, str]:
    _, meter_id, channel_id, ts, rule, _, _ = exc
    replaced, version = current_value(conn, meter_id, channel_id, ts)
    top = conn.execute(
        "SELECT coalesce(max(version), 0) FROM reading_version WHERE meter_id = %s AND channel_id = %s AND ts = %s",
        (meter_id, channel_id, ts),
    ).fetchone()
    frozen = conn.execute(
        "SELECT reading_is_frozen(%s, %s, %s), reading_is_prescribed(%s, now()), now()::date",
        (meter_id, channel_id, ts, ts),
    ).fetchone()
    if frozen and frozen[0]:
        if frozen[1]:
            raise ReviewError(
                f"prescribed: the read at {ts.isoformat()} is billed and more than 2 years before "
                f"the correction date {frozen[2]}; it cannot be corrected (no rebill past two years)"
            )
        kind = "adjustment"
    row = conn.execute(
        """INSERT INTO reading_version (meter_id, channel_id, ts, version, value, quality, method, reason, kind,
                                        replaced_value, replaced_version, exception_id, comment, created_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (
            meter_id,
            channel_id,
            ts,
            int(top[0] if top else 0) + 1,
            value,
            quality,
            method,
            RULES[rule].reason if rule in RULES else None,
            kind,
            replaced,
            version,
            exc[0],
            comment,
            who,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0]), kind


def _close(conn: Connection, exc: tuple[Any, ...], status: str, who: str, note: str, version_id: int | None) -> None:
    conn.execute(
        """UPDATE vee_exception SET status = %s, resolved_by = %s, resolved_at = now(), note = %s, version_id = %s
           WHERE id = %s""",
        (status, who, note, version_id, exc[0]),
    )
    # The other open exceptions on the same read are settled by this decision.
    conn.execute(
        """UPDATE vee_exception SET status = 'superseded', resolved_by = %s, resolved_at = now(),
                  note = %s, version_id = %s
           WHERE meter_id = %s AND channel_id = %s AND ts = %s AND status = 'open' AND id <> %s""",
        (who, f"settled by exception {exc[0]} ({status})", version_id, exc[1], exc[2], exc[3], exc[0]),
    )


def accept(conn: Connection, exception_id: int, who: str, choice: int = 1, note: str = "") -> tuple[int, str]:
    """Apply suggestion number ``choice`` (1-based); return (version id, kind)."""
    with conn.transaction():
        exc = _open_exception(conn, exception_id)
        suggestions = list(exc[6] or [])
        if not suggestions:
            raise ReviewError(f"exception {exception_id} has no suggestion to accept: edit or reject it")
        if not 1 <= choice <= len(suggestions):
            raise ReviewError(f"exception {exception_id} has {len(suggestions)} suggestion(s), not {choice}")
        value = float(suggestions[choice - 1])
        vid, kind = _new_version(
            conn, exc, value, "F", 53, "suggestion", who, note or f"accepted suggestion {choice} of {exc[4]}"
        )
        _close(conn, exc, "accepted", who, note, vid)
    return vid, kind


def edit(conn: Connection, exception_id: int, value: float, who: str, note: str = "") -> tuple[int, str]:
    """Replace the value with one a person agreed; return (version id, kind)."""
    with conn.transaction():
        exc = _open_exception(conn, exception_id)
        vid, kind = _new_version(conn, exc, value, "F", 55, "edit", who, note or f"edited after {exc[4]}")
        _close(conn, exc, "edited", who, note, vid)
    return vid, kind


def reject(conn: Connection, exception_id: int, who: str, note: str = "") -> int | None:
    """The read is right as it is: close the exception; reinstate the raw value if VEE had replaced it."""
    with conn.transaction():
        exc = _open_exception(conn, exception_id)
        _, meter_id, channel_id, ts, _, _, _ = exc
        current, version = current_value(conn, meter_id, channel_id, ts)
        raw = conn.execute(
            "SELECT value FROM series_between(%s, %s, %s, %s)", (meter_id, channel_id, ts, ts)
        ).fetchone()
        vid: int | None = None
        if version > 0 and raw is not None and current != raw[0]:
            vid, _ = _new_version(
                conn, exc, float(raw[0]), "A", None, "edit", who, note or "exception rejected: raw value reinstated"
            )
        _close(conn, exc, "rejected", who, note, vid)
    return vid


def audit(conn: Connection, serial: str, ts: datetime | None = None) -> list[dict[str, Any]]:
    """Who changed which value of a meter, from what, to what, and why (oldest first)."""
    cur = conn.execute(
        """SELECT serial, channel, ts, version, kind, quality, method, reason, replaced_version, replaced_value,
                  value, created_by, created_at, comment, rule, exception
           FROM reading_audit WHERE serial = %s AND (%s::timestamptz IS NULL OR ts = %s)
           ORDER BY ts, version""",
        (serial, ts, ts),
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
