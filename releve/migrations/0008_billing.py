"""Billing: bill runs, bills with their determinants and lines, tenant-change cases, prepaid vending.

A bill's lines are a JSON array in ``bill.lines`` (exact decimal strings; one row written per bill),
given back as rows by the ``bill_line`` view.

Bills are never edited in place. A bill is ``issued`` or ``held`` (for review, with its reasons);
a held bill is replaced by the next run of its cycle (``superseded``); an issued bill is final and,
when its validated data changes later, is ``cancelled`` by a ``cancel`` bill (negated amounts) and
replaced by a ``rebill``. Billed readings are frozen in ``reading_freeze`` (0005).

Billing writes as the **editor** role: this migration grants it INSERT on the billing tables and
on ``reading_freeze``, and UPDATE only on the columns a workflow moves (a bill's status, a tenant
case's resolution). The reader and writer roles (and the theft module) can SELECT everything,
``prepaid_check`` included (consumption without vending is a theft signal).
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE bill_run (
    id            bigserial PRIMARY KEY,
    cycle         text NOT NULL,
    period_start  date NOT NULL,
    period_end    date NOT NULL,
    issue_date    date NOT NULL,
    tariff_file   text NOT NULL DEFAULT '',
    tariff_sha256 text NOT NULL DEFAULT '',
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    n_accounts    integer NOT NULL DEFAULT 0,
    n_issued      integer NOT NULL DEFAULT 0,
    n_held        integer NOT NULL DEFAULT 0,
    n_unchanged   integer NOT NULL DEFAULT 0,
    n_rebilled    integer NOT NULL DEFAULT 0,
    n_prepaid     integer NOT NULL DEFAULT 0,
    n_skipped     integer NOT NULL DEFAULT 0,
    run_by        text NOT NULL DEFAULT current_user
);

CREATE TABLE bill (
    id              bigserial PRIMARY KEY,
    run_id          bigint NOT NULL REFERENCES bill_run (id),
    account_id      integer NOT NULL REFERENCES account (id),
    cycle           text NOT NULL,
    period_start    date NOT NULL,
    period_end      date NOT NULL,
    days            integer NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('regular', 'rebill', 'cancel')),
    status          text NOT NULL CHECK (status IN ('issued', 'held', 'superseded', 'cancelled')),
    hold_reasons    text[] NOT NULL DEFAULT '{}',
    replaces_bill_id bigint REFERENCES bill (id),
    tariff_code     text NOT NULL,
    commodity       text NOT NULL,
    unit            text NOT NULL,
    consumption     numeric NOT NULL,
    subtotal        numeric NOT NULL,
    tax             numeric NOT NULL,
    total           numeric NOT NULL,
    currency        text NOT NULL,
    issue_date      date,
    due_date        date,
    fingerprint     text NOT NULL,
    lines           jsonb NOT NULL DEFAULT '[]'::jsonb,
    details         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bill_account_idx ON bill (account_id, period_end);
CREATE INDEX bill_run_idx ON bill (run_id);
-- At most one live (issued or held, not a cancel) bill per account and period.
CREATE UNIQUE INDEX bill_live_idx ON bill (account_id, period_end)
    WHERE status IN ('issued', 'held') AND kind <> 'cancel';
COMMENT ON TABLE bill IS 'Bills; never edited except status (held->superseded, issued->cancelled).';

-- What was billed from which meter: one row per meter segment (several across a meter exchange).
CREATE TABLE bill_determinant (
    bill_id         bigint NOT NULL REFERENCES bill (id),
    seq             smallint NOT NULL,
    meter_id        integer NOT NULL REFERENCES meter (id),
    channel_id      smallint NOT NULL REFERENCES channel (id),
    start_at        timestamptz NOT NULL,
    end_at          timestamptz NOT NULL,
    start_index     numeric NOT NULL,
    end_index       numeric NOT NULL,
    start_quality   text NOT NULL,
    end_quality     text NOT NULL,
    multiplier      numeric NOT NULL,
    consumption     numeric NOT NULL,
    tou             jsonb NOT NULL DEFAULT '{}'::jsonb,
    max_demand      numeric,
    PRIMARY KEY (bill_id, seq)
);

-- The lines of a bill live in bill.lines (one JSON array, amounts as exact decimal strings: one row
-- written per bill, not one per line); this view gives them back as rows.
CREATE VIEW bill_line AS
SELECT b.id AS bill_id, (l.n - 1)::smallint AS seq, l.e->>'code' AS code, l.e->>'description' AS description,
       (l.e->>'quantity')::numeric AS quantity, l.e->>'unit' AS unit, (l.e->>'rate')::numeric AS rate,
       (l.e->>'amount')::numeric AS amount
FROM bill b, jsonb_array_elements(b.lines) WITH ORDINALITY AS l(e, n);

-- Water change of occupant: the 5 m3 rule, proof, and the 15-day default.
CREATE TABLE tenant_case (
    id                      bigserial PRIMARY KEY,
    service_point_id        integer NOT NULL REFERENCES service_point (id),
    account_id              integer NOT NULL REFERENCES account (id),   -- the newcomer's
    predecessor_account_id  integer REFERENCES account (id),
    move_out_index          numeric NOT NULL,
    move_out_date           date NOT NULL,
    move_in_index           numeric NOT NULL,
    move_in_date            date NOT NULL,
    difference              numeric NOT NULL,
    tolerance               numeric NOT NULL,
    status                  text NOT NULL CHECK (status IN ('accepted', 'open', 'proven', 'defaulted')),
    opened_on               date NOT NULL,
    proof_due               date NOT NULL,
    proof_index             numeric,
    proof_date              date,
    proof_document          text,
    start_index             numeric,      -- where the subscription starts, once decided
    start_date              date,
    resolved_on             date,
    notice                  text,
    created_by              text NOT NULL DEFAULT current_user,
    UNIQUE (account_id)
);

-- Prepaid: imported vending records, and the per-cycle comparison with consumption.
CREATE TABLE vending (
    id          bigserial PRIMARY KEY,
    account_id  integer NOT NULL REFERENCES account (id),
    meter_id    integer REFERENCES meter (id),
    vended_at   timestamptz NOT NULL,
    units       numeric,
    amount      numeric,
    token       text NOT NULL UNIQUE,
    source      text NOT NULL DEFAULT '',
    imported_at timestamptz NOT NULL DEFAULT now(),
    CHECK (units IS NOT NULL OR amount IS NOT NULL)
);
CREATE INDEX vending_account_idx ON vending (account_id, vended_at);

CREATE TABLE prepaid_check (
    account_id      integer NOT NULL REFERENCES account (id),
    meter_id        integer REFERENCES meter (id),
    period_start    date NOT NULL,
    period_end      date NOT NULL,
    run_id          bigint NOT NULL REFERENCES bill_run (id),
    consumption     numeric,
    vended          numeric NOT NULL,
    opening_balance numeric NOT NULL,
    closing_balance numeric,
    flagged         boolean NOT NULL,
    reason          text NOT NULL DEFAULT '',
    checked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, period_end)
);
COMMENT ON TABLE prepaid_check IS
    'Prepaid consumption vs vended credit per cycle; flagged = consumption without vending (theft signal).';
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the billing tables and grant the editor role (billing's role) its work."""
    conn.execute(DDL.encode())
    editor = sql.Identifier(ctx.roles[2])
    for statement in (
        "GRANT INSERT ON bill_run, bill, bill_determinant, tenant_case, vending, prepaid_check, reading_freeze TO {}",
        "GRANT UPDATE (finished_at, n_accounts, n_issued, n_held, n_unchanged, n_rebilled, n_prepaid, n_skipped) "
        "ON bill_run TO {}",
        "GRANT UPDATE (status) ON bill TO {}",
        "GRANT UPDATE (status, proof_index, proof_date, proof_document, start_index, start_date, resolved_on, "
        "notice) ON tenant_case TO {}",
        "GRANT UPDATE (run_id, consumption, vended, opening_balance, closing_balance, flagged, reason, checked_at) "
        "ON prepaid_check TO {}",
        "GRANT USAGE ON SEQUENCE bill_run_id_seq, bill_id_seq, tenant_case_id_seq, vending_id_seq, "
        "reading_freeze_id_seq TO {}",
    ):
        conn.execute(sql.SQL(statement).format(editor))
