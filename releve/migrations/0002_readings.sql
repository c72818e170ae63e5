-- Raw data: readings, events, conflicts and rejected input. The reading table itself is created by
-- the storage migration that follows (a TimescaleDB hypertable or monthly partitions).

CREATE TABLE channel (
    id           smallserial PRIMARY KEY,
    code         text NOT NULL UNIQUE,              -- OBIS-style, e.g. 1-0:1.8.0
    kind         text NOT NULL CHECK (kind IN ('register', 'interval', 'instant')),
    unit         text NOT NULL,
    interval_s   integer CHECK (interval_s > 0),
    description  text NOT NULL DEFAULT ''
);

CREATE TABLE unit (
    id    smallserial PRIMARY KEY,
    code  text NOT NULL UNIQUE
);

CREATE TABLE reading_source (
    id    smallint PRIMARY KEY,
    name  text NOT NULL UNIQUE
);

CREATE TABLE read_type (
    id    smallint PRIMARY KEY,
    name  text NOT NULL UNIQUE
);

-- One row per landed batch. A batch key seen twice (a spool replayed after a crash) is skipped
-- whole: batch-level idempotency costs one index probe per batch.
CREATE TABLE ingest_batch (
    id            bigserial PRIMARY KEY,
    batch_key     uuid NOT NULL UNIQUE,
    origin        text NOT NULL DEFAULT '',
    received_at   timestamptz NOT NULL DEFAULT now(),
    min_ts        timestamptz,
    max_ts        timestamptz,
    n_rows        integer NOT NULL DEFAULT 0,
    n_inserted    integer NOT NULL DEFAULT 0,
    n_duplicates  integer NOT NULL DEFAULT 0,
    n_conflicts   integer NOT NULL DEFAULT 0,
    n_rejected    integer NOT NULL DEFAULT 0,
    n_events      integer NOT NULL DEFAULT 0
);

-- A value that differs from the one already stored for the same meter, channel and instant.
-- Never silently overwritten: kept here for a person (or VEE) to decide.
CREATE TABLE reading_conflict (
    id              bigserial PRIMARY KEY,
    meter_id        integer NOT NULL,
    channel_id      smallint NOT NULL,
    ts              timestamptz NOT NULL,
    stored_value    double precision,
    new_value       double precision NOT NULL,
    unit_id         smallint NOT NULL,
    source_id       smallint NOT NULL,
    read_type_id    smallint NOT NULL,
    quality         smallint NOT NULL DEFAULT 0,
    batch_id        bigint NOT NULL REFERENCES ingest_batch (id),
    received_at     timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'accepted', 'rejected'))
);
CREATE INDEX reading_conflict_meter_idx ON reading_conflict (meter_id, ts);

CREATE TABLE meter_event (
    meter_id     integer NOT NULL,
    ts           timestamptz NOT NULL,
    kind         text NOT NULL,
    code         integer,                           -- DLMS/IDIS event code where one exists
    source_id    smallint NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at  timestamptz NOT NULL DEFAULT now(),
    batch_id     bigint NOT NULL REFERENCES ingest_batch (id),
    PRIMARY KEY (meter_id, ts, kind)
);
CREATE INDEX meter_event_ts_idx ON meter_event (ts);

-- Dead letters: input that could not be accepted, kept whole with where it came from and why.
CREATE TABLE rejected_input (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    source       text NOT NULL,
    origin       text NOT NULL,
    reason       text NOT NULL,
    payload      text NOT NULL,
    batch_key    uuid
);
CREATE INDEX rejected_input_received_idx ON rejected_input (received_at);
