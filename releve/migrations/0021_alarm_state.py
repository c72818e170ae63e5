"""Alarm handling: who acknowledged a meter's alarm, when, and who is looking into it.

A meter alarm is a ``meter_event`` of an alarm kind (tamper, magnetic field, leak…); its identity is
the event's key ``(meter_id, ts, kind)``. ``alarm_state`` keeps what the control room's operators do
with it: acknowledge it and assign it to someone, with a note. A row exists only once someone acted.
It is a plain table on both paths (it is small, and ``meter_event`` may be a hypertable, which a
foreign key cannot point at). The dashboards write it through the editor role.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE alarm_state (
    meter_id         integer NOT NULL REFERENCES meter (id),
    ts               timestamptz NOT NULL,
    kind             text NOT NULL,
    acknowledged_by  text,
    acknowledged_at  timestamptz,
    assignee         text CHECK (assignee IS NULL OR assignee ~ '^[A-Za-z0-9_.@ -]{1,64}$'),
    note             text NOT NULL DEFAULT '' CHECK (length(note) <= 2000),
    updated_by       text NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, ts, kind),
    CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL))
);
COMMENT ON TABLE alarm_state IS
    'What operators did with a meter alarm (a meter_event of an alarm kind): acknowledgement, assignee, note.';
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create alarm_state; the editor role records acknowledgements and assignments."""
    conn.execute(DDL.encode())
    editor = sql.Identifier(ctx.roles[2])
    conn.execute(sql.SQL("GRANT INSERT, UPDATE ON alarm_state TO {}").format(editor))
