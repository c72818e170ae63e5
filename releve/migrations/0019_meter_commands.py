"""Commands to meters: a queue the collectors execute, and an append-only audit of every step.

- ``meter_command``: one row per command (relay ``disconnect``/``reconnect``, ``clock_sync``,
  ``demand_reset``), who asked and why (``requested_by``, ``reason``, ``work_order_id`` — no foreign
  key: work orders live in another migration), when it may run (``not_before``) and until when
  (``expires_at``), and its state. States and the moves allowed between them are enforced here by a
  trigger (see ``releve/meter_commands.py`` for what each means)::

      queued ─► sent ─► confirmed
        │  ▲     │
        │  └─────┤ (retry after a transient error)
        │        ├─► failed
        ├────────┴─► expired
        ├─► failed
        └─► cancelled

  A command in a final state (confirmed, failed, expired, cancelled) can no longer change.
- ``meter_command_event``: who did what when — queued by whom, sent by which collector, what the
  meter answered, each retry, the final state. Append-only for everyone (a trigger refuses UPDATE
  and DELETE, as on ``reading``).

Grants: the editor role (billing, credit control, the CLI) queues and cancels; the writer role (the
collectors) claims commands and records their outcome. Both append to the audit. Plain tables on
both storage paths (nothing here depends on TimescaleDB).
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE meter_command (
    id             bigserial PRIMARY KEY,
    meter_id       integer NOT NULL REFERENCES meter (id),
    kind           text NOT NULL CHECK (kind IN ('disconnect', 'reconnect', 'clock_sync', 'demand_reset')),
    state          text NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'sent', 'confirmed', 'failed', 'expired', 'cancelled')),
    requested_by   text NOT NULL CHECK (requested_by <> ''),
    reason         text,
    work_order_id  bigint,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    not_before     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    attempts       integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    collector      text,
    sent_at        timestamptz,
    confirmed_at   timestamptz,
    finished_at    timestamptz,
    answer         jsonb,
    error          text,
    CHECK (state <> 'confirmed' OR confirmed_at IS NOT NULL)
);
CREATE INDEX meter_command_open_idx ON meter_command (meter_id, id) WHERE state IN ('queued', 'sent');
CREATE INDEX meter_command_meter_idx ON meter_command (meter_id, requested_at);
CREATE INDEX meter_command_work_order_idx ON meter_command (work_order_id) WHERE work_order_id IS NOT NULL;
COMMENT ON TABLE meter_command IS
    'Commands to meters (relay, clock sync, demand reset): queued by people or credit control, run by collectors.';
COMMENT ON COLUMN meter_command.work_order_id IS 'The work order this command belongs to (no foreign key).';
COMMENT ON COLUMN meter_command.answer IS
    'What the meter answered: the read-back (relay state, clock), per attempt detail is in meter_command_event.';
COMMENT ON COLUMN meter_command.collector IS 'The collector that took the command (set when sent).';

CREATE TABLE meter_command_event (
    id          bigserial PRIMARY KEY,
    command_id  bigint NOT NULL REFERENCES meter_command (id),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    state       text NOT NULL
                CHECK (state IN ('queued', 'sent', 'confirmed', 'failed', 'expired', 'cancelled')),
    actor       text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX meter_command_event_command_idx ON meter_command_event (command_id, id);
COMMENT ON TABLE meter_command_event IS
    'Audit of meter commands, append-only: every state change and attempt, by whom, and what the meter answered.';

CREATE FUNCTION meter_command_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'meter_command_event is append-only: % refused (the audit is never rewritten)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER meter_command_event_append_only BEFORE UPDATE OR DELETE ON meter_command_event
    FOR EACH ROW EXECUTE FUNCTION meter_command_event_append_only();

CREATE FUNCTION meter_command_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'meter_command rows are never deleted (cancel the command instead)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.state IN ('confirmed', 'failed', 'expired', 'cancelled') THEN
        RAISE EXCEPTION 'meter command % is % (final): it cannot change', OLD.id, OLD.state
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.meter_id <> OLD.meter_id OR NEW.kind <> OLD.kind OR NEW.requested_by <> OLD.requested_by
       OR NEW.requested_at <> OLD.requested_at THEN
        RAISE EXCEPTION 'meter command %: meter, kind and requester are fixed once queued', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.state <> OLD.state AND NOT (
           (OLD.state = 'queued' AND NEW.state IN ('sent', 'failed', 'expired', 'cancelled'))
        OR (OLD.state = 'sent' AND NEW.state IN ('queued', 'confirmed', 'failed', 'expired'))) THEN
        RAISE EXCEPTION 'meter command %: % -> % is not a valid transition', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.state IN ('confirmed', 'failed', 'expired', 'cancelled') AND NEW.finished_at IS NULL THEN
        NEW.finished_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER meter_command_transition BEFORE UPDATE OR DELETE ON meter_command
    FOR EACH ROW EXECUTE FUNCTION meter_command_transition();
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the queue and its audit; grant queueing to the editor and execution to the writer."""
    conn.execute(DDL.encode())
    writer, reader, editor = (sql.Identifier(r) for r in ctx.roles)
    for stmt in (
        # People, billing and credit control (editor): queue and cancel.
        "GRANT INSERT ON meter_command, meter_command_event TO {editor}",
        "GRANT UPDATE (state, error, answer, finished_at) ON meter_command TO {editor}",
        "GRANT USAGE ON SEQUENCE meter_command_id_seq, meter_command_event_id_seq TO {editor}",
        # Collectors (writer): claim, record each attempt, the answer and the outcome.
        "GRANT INSERT ON meter_command_event TO {writer}",
        "GRANT UPDATE (state, attempts, not_before, collector, sent_at, confirmed_at, finished_at, answer, error) "
        "ON meter_command TO {writer}",
        "GRANT USAGE ON SEQUENCE meter_command_event_id_seq TO {writer}",
        # Explicit SELECT too, should the default privileges of migration 0004 not apply to the owner.
        "GRANT SELECT ON meter_command, meter_command_event TO {writer}, {reader}, {editor}",
    ):
        conn.execute(sql.SQL(stmt).format(writer=writer, reader=reader, editor=editor))
