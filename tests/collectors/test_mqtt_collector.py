"""MQTT → spool → database, through a real Mosquitto and a real PostgreSQL."""

import json
import threading

import psycopg
import pytest

from collectors.config import CollectorConfig
from collectors.service import Collector
from releve.broker import MqttBroker
from tests.collectors.mqtt_helpers import (
    READINGS_PER_ROUND,
    SUBSCRIPTIONS,
    T0,
    publish,
    register_meters,
    traffic,
    wait_for_rows,
)

pytestmark = [pytest.mark.db, pytest.mark.mqtt]


def make_collector(db, broker, tmp_path, **mqtt_extra):
    config = CollectorConfig.model_validate(
        {
            "name": "test-collector",
            "spool_dir": str(tmp_path / "spool"),
            "seal_seconds": 0.2,
            "mqtt": {"client_id": "c1", "subscriptions": SUBSCRIPTIONS, **mqtt_extra},
        }
    )
    settings = db.settings.model_copy(update={"mqtt": db.settings.mqtt.model_copy(update={"url": broker.url})})
    return Collector(config, settings, db.url)


def test_every_message_lands_once_with_its_values_and_bad_ones_are_kept(db, mqtt_broker, tmp_path):
    register_meters(db.url)
    collector = make_collector(db, mqtt_broker, tmp_path)
    collector.start()
    try:
        assert collector.mqtt.wait_connected()
        publish(
            mqtt_broker.port,
            traffic(0, 20),
            raw=[("releve/E1/reading", b"{not json"), ("tele/sml-E3/SENSOR", b'{"Time": "now", "SML": {}}')],
        )
        assert wait_for_rows(db.url, 20 * READINGS_PER_ROUND) == 20 * READINGS_PER_ROUND
    finally:
        collector.stop()
    with db.connect() as conn:
        rows = dict(
            conn.execute(
                "SELECT m.serial || ' ' || c.code || ' ' || to_char(r.ts AT TIME ZONE 'UTC', 'HH24:MI'), r.value "
                "FROM reading_all r JOIN meter m ON m.id = r.meter_id JOIN channel c ON c.id = r.channel_id"
            ).fetchall()
        )
        dead = conn.execute("SELECT origin, reason FROM rejected_input ORDER BY id").fetchall()
    first = T0.strftime("%H:%M")
    assert rows[f"E1 1-0:1.8.0 {first}"] == 1000.0
    assert rows[f"E3 1-0:1.7.0 {first}"] == 400.0
    assert rows[f"W1 8-0:1.0.0 {first}"] == 40.0
    assert sorted(r for _, r in dead) == sorted(
        [
            "payload is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
            "Time 'now' is not an ISO 8601 time",
        ]
    )
    assert collector.mqtt.stats.acked == 20 * 4 + 2


def test_broker_restart_loses_nothing_and_doubles_nothing(db, tmp_path, service_tmp):
    register_meters(db.url)
    broker = MqttBroker(service_tmp / "broker")
    broker.start()
    collector = make_collector(db, broker, tmp_path)
    collector.start()
    try:
        assert collector.mqtt.wait_connected()
        publish(broker.port, traffic(0, 10))
        assert wait_for_rows(db.url, 10 * READINGS_PER_ROUND) == 10 * READINGS_PER_ROUND
        broker.restart()
        # Published while the collector is still reconnecting: the broker keeps them for its session.
        publish(broker.port, traffic(10, 20))
        assert wait_for_rows(db.url, 20 * READINGS_PER_ROUND, timeout=60) == 20 * READINGS_PER_ROUND
        assert collector.mqtt.stats.connects >= 2
    finally:
        collector.stop()
        broker.stop()


def test_database_down_mid_run_loses_nothing_and_doubles_nothing(tmp_path, service_tmp, mqtt_broker):
    """A server of the test's own, stopped while messages keep arriving, then started again."""
    from releve import migrate
    from releve.pgserver import PostgresServer
    from releve.settings import Settings
    from tests.conftest import MigratedDatabase

    root = service_tmp
    server = PostgresServer(root / "data", durable=False)
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE down_test")
        url = server.url("down_test")
        db = MigratedDatabase.__new__(MigratedDatabase)
        db.url, db.settings = url, Settings(database={"url": url, "role_prefix": "down_test"})
        migrate.upgrade(url, db.settings)
        register_meters(url)
        collector = make_collector(db, mqtt_broker, tmp_path)
        collector.start()
        try:
            assert collector.mqtt.wait_connected()
            publish(mqtt_broker.port, traffic(0, 10))
            assert wait_for_rows(url, 10 * READINGS_PER_ROUND) == 10 * READINGS_PER_ROUND
            server.stop()
            publish(mqtt_broker.port, traffic(10, 20))  # acknowledged: they are safe in the spool
            threading.Event().wait(2.0)
            assert collector.spool.size > 0
            server.start()
            publish(mqtt_broker.port, traffic(20, 30))
            assert wait_for_rows(url, 30 * READINGS_PER_ROUND, timeout=90) == 30 * READINGS_PER_ROUND
        finally:
            collector.stop()
        assert collector.spool.size == 0
    finally:
        server.stop()


def test_collectors_in_one_shared_group_split_a_topic_and_land_each_message_once(db, mqtt_broker, tmp_path):
    register_meters(db.url)
    collectors = []
    for k in range(2):
        config = CollectorConfig.model_validate(
            {
                "name": f"shared-{k}",
                "spool_dir": str(tmp_path / f"spool{k}"),
                "seal_seconds": 0.2,
                "mqtt": {"client_id": f"shared-{k}", "shared_group": "collectors", "subscriptions": SUBSCRIPTIONS},
            }
        )
        settings = db.settings.model_copy(update={"mqtt": db.settings.mqtt.model_copy(update={"url": mqtt_broker.url})})
        collectors.append(Collector(config, settings, db.url))
    for c in collectors:
        c.start()
    try:
        assert all(c.mqtt.wait_connected() for c in collectors)
        publish(mqtt_broker.port, traffic(0, 30))
        assert wait_for_rows(db.url, 30 * READINGS_PER_ROUND) == 30 * READINGS_PER_ROUND
    finally:
        for c in collectors:
            c.stop()
    received = [c.mqtt.stats.received for c in collectors]
    assert sum(received) == 30 * 4  # each message went to exactly one member of the group
    assert min(received) > 0  # and both members took a share


def test_the_simulators_mqtt_meters_land_with_the_values_they_published(db, mqtt_broker, tmp_path):
    from datetime import UTC, datetime

    from simulators.clock import SimClock
    from simulators.config import parse_fleet
    from simulators.engine import Simulation
    from simulators.mqtt import MqttPublisher

    sim = Simulation(
        parse_fleet(
            {
                "seed": 3,
                "start": "2026-03-01T00:00:00Z",
                "horizon_days": 20,
                "topology": {"transformers": 1, "customers_per_transformer": 12, "dmas": 1, "customers_per_dma": 5},
                "mqtt": {"electricity_share": 0.5},
                "theft": {"rate": 0.0},
                "faults": {"rate": 0.0},
            },
            "mqtt test fleet",
        )
    )
    with db.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, %s, %s, %s, 'mqtt')",
            [(m.serial, m.commodity.value, m.model, m.unit) for m in sim.meters],
        )
    config = CollectorConfig.model_validate(
        {
            "name": "sim-mqtt",
            "spool_dir": str(tmp_path / "spool"),
            "seal_seconds": 0.2,
            "mqtt": {
                "client_id": "sim-mqtt",
                "subscriptions": [
                    {"topic": "releve/{serial}/reading"},
                    {"topic": "tele/sml-{serial}/SENSOR", "decoder": "tasmota", "options": {"timezone": "UTC"}},
                    {"topic": "v3/{app}/devices/water-{serial}/up", "decoder": "ttn"},
                ],
            },
        }
    )
    settings = db.settings.model_copy(update={"mqtt": db.settings.mqtt.model_copy(update={"url": mqtt_broker.url})})
    collector = Collector(config, settings, db.url)
    collector.start()
    at = [datetime(2026, 3, 5, h, 0, tzinfo=UTC) for h in (8, 9, 10)]
    clock = SimClock(at[0])
    publisher = MqttPublisher(sim, clock, mqtt_broker.url)
    try:
        assert collector.mqtt.wait_connected()
        publisher.connect()
        sent = []
        for ts in at:
            messages = publisher.messages(ts)
            publisher.publish(messages)
            sent += messages
        styles = {m.mqtt_style for m in publisher.meters}
        assert {"json", "tasmota", "ttn"} <= styles
        expected = {}
        for topic, body in sent:
            for r in collector.mqtt.decode(topic, json.dumps(body).encode())[0]:
                expected[(r.meter, r.channel, r.ts)] = r.value
        assert wait_for_rows(db.url, len(expected)) == len(expected)
    finally:
        publisher.close()
        collector.stop()
    with db.connect() as conn:
        stored = {
            (m, c, t): v
            for m, c, t, v in conn.execute(
                "SELECT m.serial, c.code, r.ts, r.value FROM reading_all r JOIN meter m ON m.id = r.meter_id "
                "JOIN channel c ON c.id = r.channel_id"
            ).fetchall()
        }
        rejected = conn.execute("SELECT count(*) FROM rejected_input").fetchone()[0]
    assert stored == expected and rejected == 0
    # and the values are what the simulator showed: the JSON meters' import register at 09:00
    json_meter = next(m for m in publisher.meters if m.mqtt_style == "json")
    shown = sim.values_at(json_meter.index, at[1])[json_meter.import_channel]
    assert stored[(json_meter.serial, json_meter.import_channel, at[1])] == pytest.approx(shown, abs=1e-3)


def test_collect_run_workers_split_a_topic_over_processes_and_land_each_message_once(db, mqtt_broker, tmp_path):
    from collectors.service import run_workers, worker_config

    register_meters(db.url)
    config = CollectorConfig.model_validate(
        {
            "name": "workers",
            "spool_dir": str(tmp_path / "spool"),
            "seal_seconds": 0.2,
            "health_every_s": 0.5,
            "mqtt": {"client_id": "workers", "subscriptions": SUBSCRIPTIONS},
        }
    )
    second = worker_config(config, 1, 2)
    assert (second.mqtt.client_id, second.mqtt.shared_group, second.spool_dir) == (
        "workers-w1",
        "workers",
        tmp_path / "spool" / "worker-1",
    )
    settings = db.settings.model_copy(update={"mqtt": db.settings.mqtt.model_copy(update={"url": mqtt_broker.url})})
    stop = threading.Event()
    result = []
    runner = threading.Thread(target=lambda: result.append(run_workers(config, settings, db.url, 2, stop)))
    runner.start()
    try:
        with psycopg.connect(db.url) as conn:  # both workers have written their health: both are subscribed
            for _ in range(300):
                if (
                    conn.execute("SELECT count(*) FROM link_health WHERE kind = 'mqtt' AND connected").fetchone()[0]
                    == 2
                ):
                    break
                conn.commit()
                threading.Event().wait(0.1)
        publish(mqtt_broker.port, traffic(0, 30))
        assert wait_for_rows(db.url, 30 * READINGS_PER_ROUND, timeout=60) == 30 * READINGS_PER_ROUND
    finally:
        stop.set()
        runner.join()
    assert result == [0]
    with psycopg.connect(db.url) as conn:
        origins = dict(conn.execute("SELECT origin, sum(n_inserted) FROM ingest_batch GROUP BY 1").fetchall())
    assert set(origins) == {"workers", "workers-w1"} and all(n > 0 for n in origins.values())  # both took a share
