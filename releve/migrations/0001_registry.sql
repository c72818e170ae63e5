-- The registry: what is installed where, and who pays for it.
CREATE EXTENSION IF NOT EXISTS btree_gist;  -- exclusion constraints on installation periods

CREATE TABLE area (
    id                  serial PRIMARY KEY,
    code                text NOT NULL UNIQUE,
    kind                text NOT NULL CHECK (kind IN ('transformer', 'dma')),
    commodity           text NOT NULL CHECK (commodity IN ('electricity', 'water')),
    name                text NOT NULL DEFAULT '',
    parent_id           integer REFERENCES area (id),
    feeder_meter_id     integer,            -- the feeder (transformer) or bulk (DMA inlet) meter
    technical_loss_pct  numeric(5, 2) NOT NULL DEFAULT 0 CHECK (technical_loss_pct BETWEEN 0 AND 100),
    latitude            double precision,
    longitude           double precision,
    CHECK (kind = 'transformer' AND commodity = 'electricity' OR kind = 'dma' AND commodity = 'water')
);
COMMENT ON TABLE area IS 'Transformers (electricity) and district metered areas (water): the unit of energy balance.';

CREATE TABLE meter (
    id                  serial PRIMARY KEY,
    serial              text NOT NULL UNIQUE,
    commodity           text NOT NULL CHECK (commodity IN ('electricity', 'water')),
    model               text NOT NULL,
    unit                text NOT NULL,
    multiplier          numeric NOT NULL DEFAULT 1 CHECK (multiplier > 0),
    register_digits     smallint CHECK (register_digits BETWEEN 1 AND 12),
    register_width_bits smallint CHECK (register_width_bits IN (16, 32, 64)),
    protocol            text NOT NULL CHECK (protocol IN ('modbus-tcp', 'modbus-rtu', 'mqtt', 'manual', 'import')),
    address             jsonb NOT NULL DEFAULT '{}'::jsonb,
    import_only         boolean NOT NULL DEFAULT true,
    prepaid             boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN meter.register_digits IS 'Digits on the register display: it rolls over at 10^digits.';
COMMENT ON COLUMN meter.register_width_bits IS 'Width of the Modbus counter: it rolls over at 2^bits.';
COMMENT ON COLUMN meter.address IS 'Protocol address: {"host","port","unit"} (TCP), {"line","unit"} (RTU), {"topic"} (MQTT).';

ALTER TABLE area ADD CONSTRAINT area_feeder_meter_fk FOREIGN KEY (feeder_meter_id) REFERENCES meter (id);

CREATE TABLE service_point (
    id              serial PRIMARY KEY,
    code            text NOT NULL UNIQUE,
    commodity       text NOT NULL CHECK (commodity IN ('electricity', 'water')),
    customer_class  text NOT NULL DEFAULT 'residential',
    area_id         integer REFERENCES area (id),
    address         text NOT NULL DEFAULT '',
    latitude        double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude       double precision CHECK (longitude BETWEEN -180 AND 180)
);
CREATE INDEX service_point_area_idx ON service_point (area_id);

CREATE TABLE customer (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    phone       text,
    indigent    boolean NOT NULL DEFAULT false
);

CREATE TABLE account (
    id                serial PRIMARY KEY,
    number            text NOT NULL UNIQUE,
    customer_id       integer NOT NULL REFERENCES customer (id),
    service_point_id  integer NOT NULL REFERENCES service_point (id),
    billing_cycle     text NOT NULL DEFAULT 'A',
    tariff_code       text NOT NULL DEFAULT '',
    prepaid           boolean NOT NULL DEFAULT false,
    opened_on         date NOT NULL,
    closed_on         date,
    CHECK (closed_on IS NULL OR closed_on >= opened_on)
);
CREATE INDEX account_service_point_idx ON account (service_point_id);

-- Which meter hung at which service point when. The old meter's removal index and the new one's
-- install index are both kept, so consumption across an exchange is computed, not guessed.
CREATE TABLE installation (
    id                serial PRIMARY KEY,
    meter_id          integer NOT NULL REFERENCES meter (id),
    service_point_id  integer NOT NULL REFERENCES service_point (id),
    installed_at      timestamptz NOT NULL,
    removed_at        timestamptz,
    install_index     double precision NOT NULL DEFAULT 0,
    removal_index     double precision,
    reason            text NOT NULL DEFAULT '',
    CHECK (removed_at IS NULL OR removed_at > installed_at),
    CHECK ((removed_at IS NULL) = (removal_index IS NULL)),
    EXCLUDE USING gist (meter_id WITH =, tstzrange(installed_at, removed_at) WITH &&),
    EXCLUDE USING gist (service_point_id WITH =, tstzrange(installed_at, removed_at) WITH &&)
);
