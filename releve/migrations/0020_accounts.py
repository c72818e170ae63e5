"""What follows a bill: the account ledger, credit control, field work orders and account closure.

- ``ledger_entry``: immutable money movements per account, in ``numeric``. ``book`` is ``account``
  (what the customer owes: positive = debit, negative = credit), ``deposit`` (security held: a paid
  deposit is negative) or ``litigation`` (debt handed over). An entry is never updated or deleted
  (a trigger refuses it, even for the owner); a mistake is undone by a ``reversal`` entry pointing at
  it (``reverses_id``, unique: an entry is reversed at most once). ``source_key`` makes every posting
  idempotent (``bill:<id>``, ``payment:<source>:<reference>``, ``credit:<case>:<step>`` …).
- ``payment_arrangement`` + ``arrangement_instalment``: payment plans; a missed instalment breaks one.
- ``indigent_registration``: the indigent register behind ``customer.indigent``.
- ``dispute``: disputes and complaints; an open one holds collection and disconnection.
- ``credit_run``, ``credit_case``, ``credit_action``: the credit-control runs, one case per account
  in arrears, one row per step taken (unique per account and day: a run is idempotent per day).
- ``work_order`` + ``work_order_event`` (append-only): every field intervention, with its timers.
- ``account_closure``: forced termination and closure cases (the Benin utility's rule).
- ``account_activity`` (view): the ledger and the prepaid vending records in one statement view.

Billing (the editor role) may INSERT into all of them and UPDATE only the columns a workflow moves
(statuses, resolutions, timers); it may also set ``customer.indigent``, record an installation's
removal and new installations (meter exchange), and keep rejected payment lines in
``rejected_input``. Nothing here depends on TimescaleDB: plain tables on either storage path.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE ledger_entry (
    id              bigserial PRIMARY KEY,
    account_id      integer NOT NULL REFERENCES account (id),
    book            text NOT NULL DEFAULT 'account' CHECK (book IN ('account', 'deposit', 'litigation')),
    kind            text NOT NULL CHECK (kind IN ('bill', 'payment', 'deposit', 'adjustment', 'refund', 'penalty',
                                                  'charge', 'reversal', 'deposit_offset', 'litigation')),
    amount          numeric NOT NULL CHECK (amount <> 0),
    effective_date  date NOT NULL,
    due_date        date,
    reference       text NOT NULL DEFAULT '',
    source_key      text UNIQUE,
    reverses_id     bigint UNIQUE REFERENCES ledger_entry (id),
    bill_id         bigint REFERENCES bill (id),
    note            text NOT NULL DEFAULT '',
    posted_at       timestamptz NOT NULL DEFAULT now(),
    posted_by       text NOT NULL DEFAULT current_user
);
CREATE INDEX ledger_entry_account_idx ON ledger_entry (account_id, effective_date, id);
COMMENT ON TABLE ledger_entry IS
    'Immutable money movements (positive = the customer owes more); corrections are reversal entries.';

CREATE FUNCTION append_only_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: row % cannot be changed or deleted (post a new row, e.g. a reversal)',
        TG_TABLE_NAME, OLD.id;
END $$;
CREATE TRIGGER ledger_entry_immutable BEFORE UPDATE OR DELETE ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION append_only_row();

CREATE VIEW account_activity AS
SELECT e.account_id, e.effective_date, e.posted_at, e.book, e.kind, e.amount, e.due_date, e.reference, e.note,
       e.id AS entry_id, NULL::bigint AS vending_id, NULL::numeric AS units
FROM ledger_entry e
UNION ALL
SELECT v.account_id, (v.vended_at AT TIME ZONE 'UTC')::date, v.vended_at, 'prepaid', 'vending', v.amount, NULL,
       v.token, v.source, NULL, v.id, v.units
FROM vending v;
COMMENT ON VIEW account_activity IS
    'Ledger entries and prepaid vending in one view (vending is paid up front: book prepaid, not owed).';

CREATE TABLE payment_arrangement (
    id          bigserial PRIMARY KEY,
    account_id  integer NOT NULL REFERENCES account (id),
    created_on  date NOT NULL,
    total       numeric NOT NULL CHECK (total > 0),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'kept', 'broken', 'cancelled')),
    closed_on   date,
    reason      text NOT NULL DEFAULT '',
    created_by  text NOT NULL DEFAULT current_user
);
CREATE UNIQUE INDEX payment_arrangement_active_idx ON payment_arrangement (account_id) WHERE status = 'active';

CREATE TABLE arrangement_instalment (
    arrangement_id  bigint NOT NULL REFERENCES payment_arrangement (id),
    seq             smallint NOT NULL,
    due_date        date NOT NULL,
    amount          numeric NOT NULL CHECK (amount > 0),
    PRIMARY KEY (arrangement_id, seq)
);

CREATE TABLE indigent_registration (
    id            bigserial PRIMARY KEY,
    customer_id   integer NOT NULL REFERENCES customer (id),
    registered_on date NOT NULL,
    expires_on    date,
    evidence      text NOT NULL,
    ended_on      date,
    end_reason    text,
    registered_by text NOT NULL DEFAULT current_user
);
CREATE UNIQUE INDEX indigent_registration_live_idx ON indigent_registration (customer_id) WHERE ended_on IS NULL;

CREATE TABLE dispute (
    id           bigserial PRIMARY KEY,
    account_id   integer NOT NULL REFERENCES account (id),
    kind         text NOT NULL CHECK (kind IN ('dispute', 'complaint')),
    received_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    description  text NOT NULL,
    amount       numeric,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'upheld', 'rejected', 'withdrawn')),
    closed_at    timestamptz,
    resolution   text,
    recorded_by  text NOT NULL DEFAULT current_user
);
CREATE INDEX dispute_open_idx ON dispute (account_id) WHERE status = 'open';

CREATE TABLE work_order (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('inspection', 'meter_exchange', 'meter_check', 'disconnect',
                                                  'reconnect', 'reading_anomaly', 'fault', 'removal')),
    status          text NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'assigned', 'awaiting_command', 'done', 'cancelled')),
    account_id      integer REFERENCES account (id),
    meter_id        integer REFERENCES meter (id),
    service_point_id integer REFERENCES service_point (id),
    source          text NOT NULL,
    source_key      text UNIQUE,
    priority        smallint NOT NULL DEFAULT 3,
    route_order     integer,
    description     text NOT NULL DEFAULT '',
    assignee        text,
    reported_at     timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    routing_minutes integer,               -- service-level target: assigned within this many minutes
    routed_at       timestamptz,
    due_at          timestamptz,
    completed_at    timestamptz,
    outcome         text,
    outcome_details jsonb NOT NULL DEFAULT '{}'::jsonb,
    command_id      bigint,
    created_by      text NOT NULL DEFAULT current_user
);
CREATE INDEX work_order_open_idx ON work_order (kind, status) WHERE status NOT IN ('done', 'cancelled');
CREATE INDEX work_order_meter_idx ON work_order (meter_id);

CREATE TABLE work_order_event (
    id            bigserial PRIMARY KEY,
    work_order_id bigint NOT NULL REFERENCES work_order (id),
    at            timestamptz NOT NULL DEFAULT now(),
    event         text NOT NULL,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    by_user       text NOT NULL DEFAULT current_user
);
CREATE INDEX work_order_event_order_idx ON work_order_event (work_order_id, id);
CREATE TRIGGER work_order_event_immutable BEFORE UPDATE OR DELETE ON work_order_event
    FOR EACH ROW EXECUTE FUNCTION append_only_row();

CREATE TABLE credit_run (
    id          bigserial PRIMARY KEY,
    run_date    date NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    config_file text NOT NULL DEFAULT '',
    n_accounts  integer NOT NULL DEFAULT 0,
    n_actions   integer NOT NULL DEFAULT 0,
    n_held      integer NOT NULL DEFAULT 0,
    run_by      text NOT NULL DEFAULT current_user
);

CREATE TABLE credit_case (
    id            bigserial PRIMARY KEY,
    account_id    integer NOT NULL REFERENCES account (id),
    opened_on     date NOT NULL,
    closed_on     date,
    last_step     smallint NOT NULL DEFAULT 0,     -- steps taken so far (0 = none)
    disconnected  boolean NOT NULL DEFAULT false,
    close_reason  text
);
CREATE UNIQUE INDEX credit_case_open_idx ON credit_case (account_id) WHERE closed_on IS NULL;

CREATE TABLE credit_action (
    id            bigserial PRIMARY KEY,
    run_id        bigint NOT NULL REFERENCES credit_run (id),
    case_id       bigint REFERENCES credit_case (id),
    account_id    integer NOT NULL REFERENCES account (id),
    action_date   date NOT NULL,
    step          text NOT NULL,
    action        text NOT NULL CHECK (action IN ('notice', 'disconnect', 'reconnect', 'terminate', 'close',
                                                  'litigation', 'arrangement_broken', 'exempt')),
    channel       text NOT NULL DEFAULT '',
    overdue       numeric NOT NULL DEFAULT 0,
    oldest_due    date,
    charge_entry_id bigint REFERENCES ledger_entry (id),
    work_order_id bigint REFERENCES work_order (id),
    message       text NOT NULL DEFAULT '',
    UNIQUE (account_id, action_date, step)
);

CREATE TABLE account_closure (
    id             bigserial PRIMARY KEY,
    account_id     integer NOT NULL REFERENCES account (id),
    reason         text NOT NULL CHECK (reason IN ('two_unpaid_bills', 'broken_arrangement', 'unpaid_penalty')),
    terminated_on  date NOT NULL,
    manual_due     date NOT NULL,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'litigation')),
    closed_on      date,
    deposit_offset numeric NOT NULL DEFAULT 0,
    litigation_amount numeric NOT NULL DEFAULT 0,
    work_order_id  bigint REFERENCES work_order (id),
    note           text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX account_closure_open_idx ON account_closure (account_id) WHERE status = 'open';

-- Work orders and closures look up a meter's or service point's current installation one at a time.
CREATE INDEX IF NOT EXISTS installation_meter_idx ON installation (meter_id, installed_at);
CREATE INDEX IF NOT EXISTS installation_service_point_idx ON installation (service_point_id, installed_at);
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the tables and grant the editor role (billing's role) its work."""
    conn.execute(DDL.encode())
    writer, reader, editor = (sql.Identifier(r) for r in ctx.roles)
    tables = (
        "ledger_entry",
        "payment_arrangement",
        "arrangement_instalment",
        "indigent_registration",
        "dispute",
        "work_order",
        "work_order_event",
        "credit_run",
        "credit_case",
        "credit_action",
        "account_closure",
    )
    for statement in (
        "GRANT INSERT ON " + ", ".join(tables) + " TO {e}",
        "GRANT USAGE ON SEQUENCE "
        + ", ".join(f"{t}_id_seq" for t in tables if t != "arrangement_instalment")
        + ", installation_id_seq, rejected_input_id_seq TO {e}",
        "GRANT UPDATE (status, closed_on, reason) ON payment_arrangement TO {e}",
        "GRANT UPDATE (ended_on, end_reason) ON indigent_registration TO {e}",
        "GRANT UPDATE (status, closed_at, resolution) ON dispute TO {e}",
        "GRANT UPDATE (status, assignee, routed_at, due_at, completed_at, outcome, outcome_details, command_id, "
        "route_order, priority) ON work_order TO {e}",
        "GRANT UPDATE (n_accounts, n_actions, n_held) ON credit_run TO {e}",
        "GRANT UPDATE (closed_on, last_step, disconnected, close_reason) ON credit_case TO {e}",
        "GRANT UPDATE (status, closed_on, deposit_offset, litigation_amount, work_order_id, note) "
        "ON account_closure TO {e}",
        "GRANT UPDATE (indigent) ON customer TO {e}",
        "GRANT UPDATE (closed_on) ON account TO {e}",
        "GRANT INSERT ON installation TO {e}",
        "GRANT UPDATE (removed_at, removal_index, reason) ON installation TO {e}",
        "GRANT INSERT ON rejected_input TO {e}",
        "GRANT SELECT ON " + ", ".join(tables) + ", account_activity TO {w}, {r}, {e}",
    ):
        conn.execute(sql.SQL(statement).format(e=editor, w=writer, r=reader))
