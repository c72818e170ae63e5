"""Theft ranking: runs, their ranked candidates, and what inspections found.

``theft_run`` records each ranking with its parameters; ``theft_candidate`` the ranked list with
score, expected value, reasons in words, evidence (JSON) and the model inputs, so that an
inspection outcome becomes a training label with the features the meter had when it was listed.
``theft_inspection`` holds visit outcomes (fraud, meter fault, nothing, no access) per campaign;
outcomes are appended, never rewritten (a second visit is a new row).

The editor role writes runs, candidates and outcomes; the reader role reads them.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE theft_run (
    id            bigserial PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL DEFAULT current_user,
    source        text NOT NULL,                   -- 'database' or the input file
    parameters    jsonb NOT NULL DEFAULT '{}'::jsonb,
    period_from   date,
    period_to     date,
    n_meters      integer NOT NULL DEFAULT 0,
    n_candidates  integer NOT NULL DEFAULT 0,
    n_labels      integer NOT NULL DEFAULT 0,      -- outcomes the supervised model learnt from
    model         text NOT NULL DEFAULT 'unsupervised'
);

CREATE TABLE theft_candidate (
    run_id          bigint NOT NULL REFERENCES theft_run (id),
    rank            integer NOT NULL CHECK (rank > 0),
    serial          text NOT NULL,
    meter_id        integer REFERENCES meter (id),
    area            text NOT NULL DEFAULT '',
    commodity       text NOT NULL DEFAULT '',
    customer_class  text NOT NULL DEFAULT '',
    latitude        double precision,
    longitude       double precision,
    risk            double precision NOT NULL,
    expected_value  double precision NOT NULL,
    unbilled_energy double precision NOT NULL,
    signal          text NOT NULL,
    reasons         jsonb NOT NULL CHECK (jsonb_typeof(reasons) = 'array' AND jsonb_array_length(reasons) > 0),
    evidence        jsonb NOT NULL,
    inputs          jsonb NOT NULL,                -- model inputs at ranking time (labels reuse them)
    PRIMARY KEY (run_id, serial),
    UNIQUE (run_id, rank)
);
CREATE INDEX theft_candidate_serial_idx ON theft_candidate (serial);
COMMENT ON COLUMN theft_candidate.reasons IS 'Reasons in words, strongest first; never empty.';

CREATE TABLE theft_inspection (
    id           bigserial PRIMARY KEY,
    run_id       bigint NOT NULL,
    serial       text NOT NULL,
    campaign     text NOT NULL DEFAULT '',
    result       text NOT NULL CHECK (result IN ('fraud', 'meter_fault', 'nothing', 'no_access')),
    visited_at   timestamptz NOT NULL DEFAULT now(),
    recorded_by  text NOT NULL DEFAULT current_user,
    note         text NOT NULL DEFAULT '',
    FOREIGN KEY (run_id, serial) REFERENCES theft_candidate (run_id, serial)
);
CREATE INDEX theft_inspection_serial_idx ON theft_inspection (serial, visited_at);
CREATE INDEX theft_inspection_campaign_idx ON theft_inspection (campaign);
COMMENT ON TABLE theft_inspection IS
    'Visit outcomes; labels for the supervised model (fraud = 1; meter_fault, nothing = 0; no_access unused).';
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the theft tables and grant the editor role its work."""
    conn.execute(DDL.encode())
    editor = sql.Identifier(ctx.roles[2])
    for statement in (
        "GRANT INSERT ON theft_run, theft_candidate, theft_inspection TO {}",
        "GRANT UPDATE (n_candidates, n_labels, model) ON theft_run TO {}",
        "GRANT USAGE ON SEQUENCE theft_run_id_seq, theft_inspection_id_seq TO {}",
    ):
        conn.execute(sql.SQL(statement).format(editor))
