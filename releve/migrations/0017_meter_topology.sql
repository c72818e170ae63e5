-- Where each meter is, one row per meter, for the control room's fleet state (dashboards/queries_base.py).
--
-- The fleet state groups 100,000 meters by area, line and whether they have coordinates. Deriving that
-- from the registry on every view joined meter to its open installation, the service point, the area it
-- feeds and parsed each address into its line: most of the query's CPU. meter_topology holds the result,
-- kept exact by triggers on the tables it derives from, in the same transaction that writes them: a meter
-- added or changed, an installation opened, moved or closed, a service point moved to another area or
-- new coordinates, an area given another feeder meter. Nothing refreshes it and it never lags.
--
-- line is the meter's line as its address says it (the address without the unit: what follows the last
-- "/" dropped; else its MQTT topic; else its protocol). A collector that reports the meter names its own
-- link, which the control room prefers: that part changes with every poll and stays in comm_health.

CREATE TABLE meter_topology (
    meter_id    integer PRIMARY KEY REFERENCES meter (id) ON DELETE CASCADE,
    serial      text NOT NULL,
    commodity   text NOT NULL,
    protocol    text NOT NULL,
    line        text NOT NULL,
    area_id     integer,             -- the open installation's service point's area, else the area it feeds
    latitude    double precision,    -- the service point's, else the fed area's
    longitude   double precision
);
COMMENT ON TABLE meter_topology IS
    'Per meter: area, line, coordinates; derived from meter, installation, service_point and area, kept by triggers.';

-- The area a meter feeds, found by an index probe (a registry change touches a few meters: no scan of every area).
CREATE INDEX area_feeder_meter_idx ON area (feeder_meter_id) WHERE feeder_meter_id IS NOT NULL;

-- Recompute the rows of these meters from the registry (a meter that no longer exists has none: the
-- foreign key's cascade removed it). Owned by the schema owner and run with its rights, so that whoever
-- may write the registry keeps this table right without being granted it.
CREATE FUNCTION meter_topology_refresh(ids integer[]) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    INSERT INTO meter_topology AS t (meter_id, serial, commodity, protocol, line, area_id, latitude, longitude)
    SELECT m.id, m.serial, m.commodity, m.protocol,
           coalesce(CASE WHEN strpos(m.address->>'uri', '/') > 0
                         THEN left(m.address->>'uri', length(m.address->>'uri') - strpos(reverse(m.address->>'uri'), '/'))
                         ELSE m.address->>'uri' END,
                    m.address->>'topic', m.protocol),
           coalesce(sp.area_id, fa.id), coalesce(sp.latitude, fa.latitude), coalesce(sp.longitude, fa.longitude)
    FROM meter m
    LEFT JOIN installation i ON i.meter_id = m.id AND i.removed_at IS NULL
    LEFT JOIN service_point sp ON sp.id = i.service_point_id
    LEFT JOIN LATERAL (SELECT a.id, a.latitude, a.longitude FROM area a WHERE a.feeder_meter_id = m.id
                       ORDER BY a.id LIMIT 1) fa ON true
    WHERE m.id = ANY (ids)
    ON CONFLICT (meter_id) DO UPDATE SET
        serial = EXCLUDED.serial, commodity = EXCLUDED.commodity, protocol = EXCLUDED.protocol, line = EXCLUDED.line,
        area_id = EXCLUDED.area_id, latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude
    WHERE (t.serial, t.commodity, t.protocol, t.line, t.area_id, t.latitude, t.longitude)
          IS DISTINCT FROM (EXCLUDED.serial, EXCLUDED.commodity, EXCLUDED.protocol, EXCLUDED.line,
                            EXCLUDED.area_id, EXCLUDED.latitude, EXCLUDED.longitude)
$$;

-- Statement-level triggers with transition tables: a bulk load of 100,000 installations recomputes the
-- 100,000 meters once, not row by row. PostgreSQL allows transition tables on one event per trigger, so
-- each table has one trigger per event, all calling the function below, which reads the meters touched
-- from whichever of new_rows / old_rows the event has.
CREATE FUNCTION meter_topology_follow() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    ids integer[];
BEGIN
    IF TG_TABLE_NAME = 'meter' THEN
        ids := ARRAY(SELECT id FROM new_rows);
    ELSIF TG_TABLE_NAME = 'installation' THEN
        IF TG_OP = 'INSERT' THEN
            ids := ARRAY(SELECT meter_id FROM new_rows);
        ELSIF TG_OP = 'DELETE' THEN
            ids := ARRAY(SELECT meter_id FROM old_rows);
        ELSE
            ids := ARRAY(SELECT meter_id FROM new_rows UNION SELECT meter_id FROM old_rows);
        END IF;
    ELSIF TG_TABLE_NAME = 'service_point' THEN
        ids := ARRAY(SELECT i.meter_id FROM installation i JOIN new_rows n ON n.id = i.service_point_id
                     WHERE i.removed_at IS NULL);
    ELSIF TG_TABLE_NAME = 'area' THEN
        IF TG_OP = 'INSERT' THEN
            ids := ARRAY(SELECT feeder_meter_id FROM new_rows WHERE feeder_meter_id IS NOT NULL);
        ELSIF TG_OP = 'DELETE' THEN
            ids := ARRAY(SELECT feeder_meter_id FROM old_rows WHERE feeder_meter_id IS NOT NULL);
        ELSE
            ids := ARRAY(SELECT feeder_meter_id FROM new_rows WHERE feeder_meter_id IS NOT NULL
                         UNION SELECT feeder_meter_id FROM old_rows WHERE feeder_meter_id IS NOT NULL);
        END IF;
    END IF;
    IF cardinality(ids) > 0 THEN
        PERFORM meter_topology_refresh(ids);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER meter_topology_meter_insert AFTER INSERT ON meter
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meter_topology_follow();
CREATE TRIGGER meter_topology_meter_update AFTER UPDATE ON meter
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meter_topology_follow();
CREATE TRIGGER meter_topology_installation_insert AFTER INSERT ON installation
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meter_topology_follow();
CREATE TRIGGER meter_topology_installation_update AFTER UPDATE ON installation
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION meter_topology_follow();
CREATE TRIGGER meter_topology_installation_delete AFTER DELETE ON installation
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION meter_topology_follow();
CREATE TRIGGER meter_topology_service_point_update AFTER UPDATE ON service_point
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meter_topology_follow();
CREATE TRIGGER meter_topology_area_insert AFTER INSERT ON area
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION meter_topology_follow();
CREATE TRIGGER meter_topology_area_update AFTER UPDATE ON area
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION meter_topology_follow();
CREATE TRIGGER meter_topology_area_delete AFTER DELETE ON area
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION meter_topology_follow();

-- The meters registered before this migration.
SELECT meter_topology_refresh(ARRAY(SELECT id FROM meter));
