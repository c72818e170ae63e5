-- Citus-ready keys: the distribution column (meter_id) in every primary and unique key of the tables
-- keyed by meter (docs/scaling.md, the Citus path; releve/shards.py lists them in DISTRIBUTED).
-- Five tables had a serial id alone as their key: reading_conflict, vee_exception, reading_version,
-- reading_freeze and reading_adjustment. Their primary key becomes (meter_id, id), reading_adjustment's
-- unique version becomes (meter_id, version_id), and the foreign keys between them become composite
-- (a version, its exception, its freeze and its rebill row are of the same meter, so on the same shard).
-- The ids stay unique on one server (each is still drawn from its own sequence); a plain index on id
-- keeps the lookups by id alone (the review queue, the rebill queue) as fast as before. The ON CONFLICT
-- targets of these tables (vee_exception's (meter_id, channel_id, ts, rule)) are untouched.

ALTER TABLE reading_version DROP CONSTRAINT reading_version_exception_id_fkey;
ALTER TABLE reading_adjustment
    DROP CONSTRAINT reading_adjustment_version_id_fkey,
    DROP CONSTRAINT reading_adjustment_freeze_id_fkey,
    DROP CONSTRAINT reading_adjustment_version_id_key;

ALTER TABLE reading_conflict DROP CONSTRAINT reading_conflict_pkey, ADD PRIMARY KEY (meter_id, id);
ALTER TABLE vee_exception DROP CONSTRAINT vee_exception_pkey, ADD PRIMARY KEY (meter_id, id);
ALTER TABLE reading_version DROP CONSTRAINT reading_version_pkey, ADD PRIMARY KEY (meter_id, id);
ALTER TABLE reading_freeze DROP CONSTRAINT reading_freeze_pkey, ADD PRIMARY KEY (meter_id, id);
ALTER TABLE reading_adjustment DROP CONSTRAINT reading_adjustment_pkey, ADD PRIMARY KEY (meter_id, id),
    ADD CONSTRAINT reading_adjustment_version_key UNIQUE (meter_id, version_id);

CREATE INDEX reading_conflict_id_idx ON reading_conflict (id);
CREATE INDEX vee_exception_id_idx ON vee_exception (id);
CREATE INDEX reading_version_id_idx ON reading_version (id);
CREATE INDEX reading_freeze_id_idx ON reading_freeze (id);
CREATE INDEX reading_adjustment_id_idx ON reading_adjustment (id);
CREATE INDEX reading_adjustment_version_idx ON reading_adjustment (version_id);

ALTER TABLE reading_version ADD CONSTRAINT reading_version_exception_fkey
    FOREIGN KEY (meter_id, exception_id) REFERENCES vee_exception (meter_id, id);
ALTER TABLE reading_adjustment
    ADD CONSTRAINT reading_adjustment_version_fkey
        FOREIGN KEY (meter_id, version_id) REFERENCES reading_version (meter_id, id),
    ADD CONSTRAINT reading_adjustment_freeze_fkey
        FOREIGN KEY (meter_id, freeze_id) REFERENCES reading_freeze (meter_id, id);
