"""The billed-period freeze enforced in the database, the two-year prescription, and estimated reads.

Before this migration the freeze of billed reads (``reading_freeze``) lived in application code only:
a direct ``INSERT`` of a ``reading_version`` as the editor role could change a billed value. Now a
trigger on ``reading_version`` refuses, for a frozen instant:

- any version that is not an ``adjustment`` (an adjustment leaves the billed value in force and is
  billed by a rebill);
- an adjustment that does not say who makes it (``created_by``; the reason, ``comment``, is copied
  to the rebill queue, "no reason given" when empty);
- any correction of a read more than two years before the correction date (prescription).

Every accepted adjustment of a frozen read opens a row in ``reading_adjustment``: the rebill queue
(the freeze and bill reference it reopens, the version, who, why). Billing closes the row
(``status`` → ``rebilled`` / ``dismissed``). The trigger functions are ``SECURITY DEFINER``: the
editor inserts versions and cannot forge or skip the queue row.

``validated_reading`` now says when a raw read is the utility's own estimate (``read_type`` =
'estimate'): ``quality`` 'estimated', ``quality_flag`` 'E' (NEM12 forward estimated), where VEE's
substitutes are 'S' and person-made values 'F'. A new last column ``estimated_by`` names who
estimated: 'utility' (raw estimate), 'vee' (substitute or gap fill), NULL otherwise.

Plain PostgreSQL and TimescaleDB take the same path: ``reading_version`` and the new table are plain
tables on both.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
-- Corrections of billed data may not reach back more than two years before the correction date.
CREATE FUNCTION reading_is_prescribed(at timestamptz, corrected_on timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT at < corrected_on - interval '2 years'
$$;
COMMENT ON FUNCTION reading_is_prescribed(timestamptz, timestamptz) IS
    'A read older than two years before the correction date is prescribed: it cannot be corrected.';

-- The rebill queue: one row per adjustment of a billed (frozen) read.
CREATE TABLE reading_adjustment (
    id              bigserial PRIMARY KEY,
    version_id      bigint NOT NULL UNIQUE REFERENCES reading_version (id),
    meter_id        integer NOT NULL REFERENCES meter (id),
    channel_id      smallint NOT NULL REFERENCES channel (id),
    ts              timestamptz NOT NULL,
    value           double precision,
    replaced_value  double precision,
    freeze_id       bigint REFERENCES reading_freeze (id),
    reference       text NOT NULL DEFAULT '',     -- the bill the freeze came from
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    comment         text NOT NULL,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'rebilled', 'dismissed')),
    resolved_by     text,
    resolved_at     timestamptz,
    bill_id         bigint
);
CREATE INDEX reading_adjustment_open_idx ON reading_adjustment (meter_id, ts) WHERE status = 'open';
COMMENT ON TABLE reading_adjustment IS
    'Adjustments of billed reads, each opening a rebill; written by a trigger on reading_version only.';

CREATE FUNCTION reading_version_freeze() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    f reading_freeze%ROWTYPE;
BEGIN
    SELECT * INTO f FROM reading_freeze
    WHERE meter_id = NEW.meter_id AND (channel_id IS NULL OR channel_id = NEW.channel_id) AND NEW.ts <= frozen_to
    ORDER BY frozen_to DESC, id DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    IF NEW.kind <> 'adjustment' THEN
        RAISE EXCEPTION 'reading of meter % channel % at % is billed (frozen to % by %): a correction must be '
                        'an adjustment (kind ''adjustment''), not %', NEW.meter_id, NEW.channel_id, NEW.ts,
                        f.frozen_to, coalesce(nullif(f.reference, ''), 'billing'), NEW.kind
            USING ERRCODE = 'check_violation', HINT = 'an adjustment opens a rebill; the billed value stays';
    END IF;
    IF coalesce(btrim(NEW.created_by), '') = '' THEN
        RAISE EXCEPTION 'adjustment of billed reading (meter % channel % at %) must say who makes it (created_by)',
                        NEW.meter_id, NEW.channel_id, NEW.ts
            USING ERRCODE = 'check_violation';
    END IF;
    IF reading_is_prescribed(NEW.ts, coalesce(NEW.created_at, now())) THEN
        RAISE EXCEPTION 'prescribed: reading of meter % channel % at % is more than 2 years before the correction '
                        'date % and cannot be corrected', NEW.meter_id, NEW.channel_id, NEW.ts,
                        coalesce(NEW.created_at, now())::date
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reading_version_freeze BEFORE INSERT ON reading_version
    FOR EACH ROW EXECUTE FUNCTION reading_version_freeze();

CREATE FUNCTION reading_version_open_rebill() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    f reading_freeze%ROWTYPE;
BEGIN
    SELECT * INTO f FROM reading_freeze
    WHERE meter_id = NEW.meter_id AND (channel_id IS NULL OR channel_id = NEW.channel_id) AND NEW.ts <= frozen_to
    ORDER BY frozen_to DESC, id DESC LIMIT 1;
    IF FOUND THEN
        INSERT INTO reading_adjustment (version_id, meter_id, channel_id, ts, value, replaced_value, freeze_id,
                                        reference, created_by, created_at, comment)
        VALUES (NEW.id, NEW.meter_id, NEW.channel_id, NEW.ts, NEW.value, NEW.replaced_value, f.id, f.reference,
                NEW.created_by, NEW.created_at, coalesce(nullif(btrim(NEW.comment), ''), 'no reason given'));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER reading_version_open_rebill AFTER INSERT ON reading_version
    FOR EACH ROW WHEN (NEW.kind = 'adjustment') EXECUTE FUNCTION reading_version_open_rebill();

-- The validated series says when a raw read is the utility's own estimate.
CREATE OR REPLACE VIEW validated_reading AS
SELECT x.meter_id, x.channel_id, x.ts,
       CASE WHEN x.use_version THEN x.v_value ELSE x.raw_value END AS value,
       CASE WHEN NOT x.use_version THEN CASE WHEN x.read_type = 'estimate' THEN 'estimated' ELSE 'actual' END
            WHEN x.kind = 'estimate' THEN 'estimated'
            WHEN x.quality_v = 'A' THEN CASE WHEN x.read_type = 'estimate' THEN 'estimated' ELSE 'actual' END
            ELSE 'edited' END AS quality,
       CASE WHEN x.use_version THEN x.quality_v WHEN x.read_type = 'estimate' THEN 'E' ELSE 'A' END AS quality_flag,
       CASE WHEN x.use_version THEN x.method END AS method,
       CASE WHEN x.use_version THEN x.reason END AS reason,
       CASE WHEN x.use_version THEN x.version ELSE 0 END AS version,
       x.raw_value, x.read_type,
       EXISTS (SELECT 1 FROM vee_exception e
               WHERE e.meter_id = x.meter_id AND e.channel_id = x.channel_id AND e.ts = x.ts
                 AND e.status = 'open' AND e.severity <> 'info') AS under_review,
       CASE WHEN x.use_version AND x.kind = 'estimate' THEN 'vee'
            WHEN (NOT x.use_version OR x.quality_v = 'A') AND x.read_type = 'estimate' THEN 'utility' END
           AS estimated_by
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
    'Final value per meter, channel and instant: raw (actual, or the utility''s estimate) or the latest VEE '
    'estimate / edit. quality_flag A actual, E utility estimate, S VEE substitute, F person-made.';
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Freeze trigger, prescription, rebill queue; validated_reading marks the utility's estimates."""
    conn.execute(DDL.encode())
    writer, reader, editor = (sql.Identifier(r) for r in ctx.roles)
    for role in (writer, reader, editor):
        conn.execute(sql.SQL("GRANT SELECT ON reading_adjustment, validated_reading TO {}").format(role))
    conn.execute(
        sql.SQL("GRANT UPDATE (status, resolved_by, resolved_at, bill_id) ON reading_adjustment TO {}").format(editor)
    )
