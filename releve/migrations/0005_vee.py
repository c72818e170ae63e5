"""Validation, estimation and editing (VEE): versions, exceptions, the review queue and the validated series.

Raw ``reading`` rows never change. Every estimate, edit, accepted suggestion or adjustment is a new
row in ``reading_version`` (append-only, like ``reading``), carrying the NEM12 quality flag, method
and reason codes, who made it, when, and the value and version it replaced. ``vee_exception`` is
the review queue (its status is the only thing that changes). ``reading_freeze`` is the billed
marker billing sets: a correction to frozen data is recorded as an adjustment, not a new value.
``validated_reading`` is the one view billing and dashboards read.

The editor role (validation work) may insert versions, exceptions and runs, move exceptions through
the review workflow and keep the watermark; it can change nothing else.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE vee_run (
    id            bigserial PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    from_batch    bigint NOT NULL,
    to_batch      bigint NOT NULL,
    n_series      integer NOT NULL DEFAULT 0,
    n_reads       bigint NOT NULL DEFAULT 0,
    n_exceptions  integer NOT NULL DEFAULT 0,
    n_estimates   integer NOT NULL DEFAULT 0,
    run_by        text NOT NULL DEFAULT current_user
);

-- Batches validated (ids below the watermark can commit late: they are picked up by the next run).
CREATE TABLE vee_batch (
    batch_id  bigint PRIMARY KEY,
    run_id    bigint NOT NULL REFERENCES vee_run (id)
);

-- Per-meter local time zone for day-based interval rules (default: the run's --tz, UTC).
CREATE TABLE meter_timezone (
    meter_id  integer PRIMARY KEY REFERENCES meter (id),
    tz        text NOT NULL
);

-- The incremental watermark: ingest_batch ids up to batch_id have been validated.
CREATE TABLE vee_watermark (
    name        text PRIMARY KEY,
    batch_id    bigint NOT NULL,
    run_id      bigint REFERENCES vee_run (id),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vee_exception (
    id            bigserial PRIMARY KEY,
    meter_id      integer NOT NULL REFERENCES meter (id),
    channel_id    smallint NOT NULL REFERENCES channel (id),
    ts            timestamptz NOT NULL,
    rule          text NOT NULL,
    severity      text NOT NULL CHECK (severity IN ('error', 'warning', 'info')),
    value         double precision,
    usage         double precision,
    usage_lo      double precision,
    usage_hi      double precision,
    read_lo       double precision,
    read_hi       double precision,
    suggestions   double precision[] NOT NULL DEFAULT '{}',
    message       text NOT NULL,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    run_id        bigint REFERENCES vee_run (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL DEFAULT 'open'
                  CHECK (status IN ('open', 'accepted', 'edited', 'rejected', 'superseded', 'noted')),
    resolved_by   text,
    resolved_at   timestamptz,
    note          text,
    version_id    bigint,
    UNIQUE (meter_id, channel_id, ts, rule)
);
CREATE INDEX vee_exception_open_idx ON vee_exception (meter_id, ts) WHERE status = 'open';
COMMENT ON TABLE vee_exception IS 'Review queue: one row per rule that fired on a read; info rows are born noted.';

-- Every value that is not the raw read: estimates, edits, accepted suggestions, adjustments.
-- Version 0 is the raw reading itself; versions count up per (meter, channel, instant).
CREATE TABLE reading_version (
    id              bigserial PRIMARY KEY,
    meter_id        integer NOT NULL REFERENCES meter (id),
    channel_id      smallint NOT NULL REFERENCES channel (id),
    ts              timestamptz NOT NULL,
    version         integer NOT NULL CHECK (version > 0),
    value           double precision,
    quality         char(1) NOT NULL CHECK (quality IN ('A', 'E', 'F', 'S', 'N', 'V')),
    method          smallint,
    reason          smallint,
    kind            text NOT NULL CHECK (kind IN ('estimate', 'edit', 'suggestion', 'adjustment')),
    replaced_value  double precision,
    replaced_version integer NOT NULL DEFAULT 0,
    exception_id    bigint REFERENCES vee_exception (id),
    comment         text NOT NULL DEFAULT '',
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    run_id          bigint REFERENCES vee_run (id),
    UNIQUE (meter_id, channel_id, ts, version)
);
COMMENT ON COLUMN reading_version.kind IS
    'adjustment: a correction to billed (frozen) data, for the next bill; the billed value stays.';

CREATE FUNCTION reading_version_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'reading_version is append-only: % refused (add a new version instead)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER reading_version_append_only BEFORE UPDATE OR DELETE ON reading_version
    FOR EACH ROW EXECUTE FUNCTION reading_version_append_only();

-- Billed data is frozen: billing records up to which instant a meter's channel was billed.
CREATE TABLE reading_freeze (
    id          bigserial PRIMARY KEY,
    meter_id    integer NOT NULL REFERENCES meter (id),
    channel_id  smallint REFERENCES channel (id),         -- NULL: every channel of the meter
    frozen_to   timestamptz NOT NULL,
    frozen_at   timestamptz NOT NULL DEFAULT now(),
    frozen_by   text NOT NULL DEFAULT current_user,
    reference   text NOT NULL DEFAULT ''                  -- the bill
);
CREATE INDEX reading_freeze_meter_idx ON reading_freeze (meter_id, frozen_to);

CREATE FUNCTION reading_is_frozen(m integer, ch smallint, at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM reading_freeze f
                   WHERE f.meter_id = m AND (f.channel_id IS NULL OR f.channel_id = ch) AND at <= f.frozen_to)
$$;

-- The current (latest, non-adjustment) version per instant.
CREATE VIEW reading_current_version AS
SELECT DISTINCT ON (meter_id, channel_id, ts) *
FROM reading_version
WHERE kind <> 'adjustment'
ORDER BY meter_id, channel_id, ts, version DESC;

-- What billing and dashboards read: the final value per meter, channel and instant. A version wins
-- over the raw read, except a gap estimate (it replaced nothing) once the real read has landed.
-- Two UNION ALL branches (raw reads with their current version; versions with no raw read) so that
-- a filter on meter_id / ts reaches the indexes of both tables.
CREATE VIEW validated_reading AS
SELECT x.meter_id, x.channel_id, x.ts,
       CASE WHEN x.use_version THEN x.v_value ELSE x.raw_value END AS value,
       CASE WHEN NOT x.use_version THEN 'actual'
            WHEN x.kind = 'estimate' THEN 'estimated'
            WHEN x.quality_v = 'A' THEN 'actual'
            ELSE 'edited' END AS quality,
       CASE WHEN x.use_version THEN x.quality_v ELSE 'A' END AS quality_flag,
       CASE WHEN x.use_version THEN x.method END AS method,
       CASE WHEN x.use_version THEN x.reason END AS reason,
       CASE WHEN x.use_version THEN x.version ELSE 0 END AS version,
       x.raw_value, x.read_type,
       EXISTS (SELECT 1 FROM vee_exception e
               WHERE e.meter_id = x.meter_id AND e.channel_id = x.channel_id AND e.ts = x.ts
                 AND e.status = 'open' AND e.severity <> 'info') AS under_review
FROM (
    SELECT r.meter_id, r.channel_id, r.ts, r.value AS raw_value, rt.name AS read_type,
           v.value AS v_value, v.kind, v.quality AS quality_v, v.method, v.reason, v.version,
           v.id IS NOT NULL AND NOT (v.kind = 'estimate' AND v.replaced_value IS NULL) AS use_version
    FROM reading r
    JOIN channel c ON c.id = r.channel_id AND c.kind IN ('register', 'interval')
    LEFT JOIN read_type rt ON rt.id = r.read_type_id
    LEFT JOIN reading_current_version v
           ON v.meter_id = r.meter_id AND v.channel_id = r.channel_id AND v.ts = r.ts
    UNION ALL
    SELECT v.meter_id, v.channel_id, v.ts, NULL, NULL, v.value, v.kind, v.quality, v.method, v.reason, v.version,
           true
    FROM reading_current_version v
    WHERE NOT EXISTS (SELECT 1 FROM reading r
                      WHERE r.meter_id = v.meter_id AND r.channel_id = v.channel_id AND r.ts = v.ts)
) x;
COMMENT ON VIEW validated_reading IS
    'Final value per meter, channel and instant: raw (actual) or the latest estimate/edit.';

-- Who changed what, from what, and why.
CREATE VIEW reading_audit AS
SELECT v.meter_id, m.serial, c.code AS channel, v.ts, v.version, v.kind, v.quality, v.method, v.reason,
       v.replaced_version, v.replaced_value, v.value, v.created_by, v.created_at, v.comment,
       e.rule, e.message AS exception
FROM reading_version v
JOIN meter m ON m.id = v.meter_id
JOIN channel c ON c.id = v.channel_id
LEFT JOIN vee_exception e ON e.id = v.exception_id;
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the VEE tables and views and grant the editor role its work."""
    conn.execute(DDL.encode())
    editor = sql.Identifier(ctx.roles[2])
    for statement in (
        "GRANT INSERT ON vee_run, vee_exception, reading_version, vee_watermark, vee_batch TO {}",
        "GRANT UPDATE (finished_at, n_series, n_reads, n_exceptions, n_estimates) ON vee_run TO {}",
        "GRANT UPDATE (status, resolved_by, resolved_at, note, version_id) ON vee_exception TO {}",
        "GRANT UPDATE (batch_id, run_id, updated_at) ON vee_watermark TO {}",
        "GRANT USAGE ON SEQUENCE vee_run_id_seq, vee_exception_id_seq, reading_version_id_seq TO {}",
    ):
        conn.execute(sql.SQL(statement).format(editor))
