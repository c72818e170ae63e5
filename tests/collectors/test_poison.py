"""Issue 12: no payload and no spool segment can wedge the database path, and a refusal raises an alarm.

On a real Mosquitto and a real PostgreSQL: a NUL byte, a 1 MB payload and binary garbage each end
in dead letters (byte for byte) while the readings around them land; a segment the database refuses
is quarantined, the rest drains, and the alarm shows in ``/metrics``, ``link_health`` (what the
control room reads) and ``releve collect status``.
"""

import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from collectors.config import CollectorConfig
from collectors.service import Collector
from collectors.spool import Spool
from releve.model import EventKind, MeterEvent, Reading, Source
from tests.collectors.mqtt_helpers import (
    READINGS_PER_ROUND,
    SUBSCRIPTIONS,
    publish,
    register_meters,
    traffic,
    wait_for_rows,
)

pytestmark = [pytest.mark.db, pytest.mark.mqtt]

NUL = b'{"meter": "E1", "ts": "2026-01-01T00:00:00Z", "readings": []\x00}'
ONE_MB = b"[" + b"1," * 499_998 + b"11]"  # 1,000,000 bytes of valid JSON that is not an object
BINARY = bytes(range(256)) * 64


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_nul_huge_and_binary_payloads_are_dead_letters_and_the_readings_around_them_land(db, mqtt_broker, tmp_path):
    assert len(ONE_MB) == 1_000_000
    register_meters(db.url)
    config = CollectorConfig.model_validate(
        {
            "name": "poison",
            "spool_dir": str(tmp_path / "spool"),
            "seal_seconds": 0.2,
            "metrics_port": 0,
            "mqtt": {"client_id": "poison", "subscriptions": SUBSCRIPTIONS},
        }
    )
    settings = db.settings.model_copy(update={"mqtt": db.settings.mqtt.model_copy(update={"url": mqtt_broker.url})})
    collector = Collector(config, settings, db.url)
    collector.start()
    try:
        assert collector.mqtt.wait_connected()
        publish(mqtt_broker.port, traffic(0, 5))
        publish(
            mqtt_broker.port,
            [],
            raw=[("releve/E1/reading", NUL), ("releve/E2/reading", ONE_MB), ("tele/sml-E3/SENSOR", BINARY)],
        )
        publish(mqtt_broker.port, traffic(5, 10))
        assert wait_for_rows(db.url, 10 * READINGS_PER_ROUND) == 10 * READINGS_PER_ROUND
        with db.connect() as conn:
            assert wait_for(lambda: conn.execute("SELECT count(*) FROM rejected_input").fetchone()[0] == 3)
        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{collector.metrics.port}/metrics", timeout=5).read().decode()
        )
    finally:
        collector.stop()
    with db.connect() as conn:
        dead = {
            origin: (reason, text, raw)
            for origin, reason, text, raw in conn.execute(
                "SELECT origin, reason, payload, payload_bytes FROM rejected_input"
            ).fetchall()
        }
    assert set(dead) == {"mqtt releve/E1/reading", "mqtt releve/E2/reading", "mqtt tele/sml-E3/SENSOR"}
    reason, text, raw = dead["mqtt releve/E1/reading"]
    assert raw == NUL and reason.startswith("payload is not JSON") and text.endswith("[]\\x00}")
    reason, text, raw = dead["mqtt releve/E2/reading"]
    assert raw == ONE_MB and reason == "payload is JSON list, expected an object"
    assert len(text) < 70_000 and "1,000,000 bytes in all" in text  # the readable rendering is cut, the bytes are not
    reason, text, raw = dead["mqtt tele/sml-E3/SENSOR"]
    assert raw == BINARY and "\\xff" in text and "\\x00" in text
    assert collector.spool.quarantined() == []
    assert 'releve_spool_alarm{collector="poison"} 0' in metrics
    assert collector.mqtt.stats.acked == 10 * 4 + 3


def test_a_refused_segment_is_quarantined_the_rest_drains_and_the_alarm_shows_everywhere(db, tmp_path):
    db.add_meters(["E1"])
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    spool.append([Reading("E1", "1-0:1.8.0", t0, 1.0, "kWh", Source.MODBUS)])
    spool.seal()
    # jsonb cannot hold \u0000: the database refuses this event whatever is retried.
    spool.append(events=[MeterEvent("E1", t0, EventKind.METER_COVER_OPEN, Source.MQTT, {"raw": "\x00"})])
    spool.seal()
    spool.append([Reading("E1", "1-0:1.8.0", t0 + timedelta(minutes=15), 2.0, "kWh", Source.MODBUS)])
    spool.seal()
    spool.close()
    config = CollectorConfig.model_validate(
        {
            "name": "quarantine-test",
            "spool_dir": str(spool_dir),
            "seal_seconds": 0.2,
            "health_every_s": 0.3,
            "metrics_port": 0,
        }
    )
    collector = Collector(config, db.settings, db.url)
    collector.start()
    try:
        assert wait_for(lambda: collector.spool.sealed() == [] and collector.spool.quarantined())
        assert wait_for_rows(db.url, 2) == 2
        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{collector.metrics.port}/metrics", timeout=5).read().decode()
        )
    finally:
        collector.stop()
    assert 'releve_spool_alarm{collector="quarantine-test"} 1' in metrics
    assert 'releve_spool_quarantined_segments{collector="quarantine-test"} 1' in metrics
    assert 'releve_forwarder_refused_records_total{collector="quarantine-test"} 1' in metrics
    with db.connect() as conn:
        kind, failures, connected, alarm = conn.execute(
            "SELECT kind, failures, connected, alarm FROM link_health WHERE collector = 'quarantine-test'"
        ).fetchone()
    assert (kind, failures, connected) == ("spool", 1, True)
    assert "1 spool segment(s) quarantined" in alarm and "22P05" in alarm

    path = tmp_path / "c.toml"
    path.write_text(f'name = "quarantine-test"\nspool_dir = "{spool_dir}"\n')
    env = {
        **os.environ,
        "RELEVE_DATABASE__URL": db.url,
        "RELEVE_DATABASE__ROLE_PREFIX": db.settings.database.role_prefix,
    }
    status = subprocess.run(
        [sys.executable, "-m", "releve.cli", "collect", "status", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert status.returncode == 1, status.stderr
    assert "ALARM quarantine" in status.stdout and "22P05" in status.stdout
    assert "ALARM spool: 1 spool segment(s) quarantined" in status.stdout

    # Once the cause is fixed: requeue, which refuses while the collector holds the spool.
    requeue = [sys.executable, "-m", "releve.cli", "collect", "requeue", "-c", str(path)]
    running = Spool(spool_dir)
    try:
        refused = subprocess.run(requeue, capture_output=True, text=True, env=env)
    finally:
        running.close()
    assert refused.returncode == 1 and "stop the collector first" in refused.stderr
    done = subprocess.run(requeue, capture_output=True, text=True, env=env, check=True)
    assert done.stdout.startswith("requeued ")
    assert len(list(spool_dir.glob("*.seg"))) == 1 and not list((spool_dir / "quarantine").glob("*.seg"))
    status = subprocess.run(
        [sys.executable, "-m", "releve.cli", "collect", "status", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "ALARM quarantine" not in status.stdout
