"""The collector as users run it (`releve collect run`), killed with SIGKILL mid-stream and restarted."""

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from tests.collectors.mqtt_helpers import READINGS_PER_ROUND, publish, register_meters, traffic, wait_for_rows

pytestmark = [pytest.mark.db, pytest.mark.mqtt]

CONFIG = """
name = "proc-collector"
spool_dir = "{spool}"
seal_seconds = 0.2

[mqtt]
client_id = "proc-collector-1"

[[mqtt.subscriptions]]
topic = "releve/{{serial}}/reading"
decoder = "json"

[[mqtt.subscriptions]]
topic = "tele/sml-{{serial}}/SENSOR"
decoder = "tasmota"
options = {{ timezone = "UTC" }}

[[mqtt.subscriptions]]
topic = "v3/{{app}}/devices/water-{{serial}}/up"
decoder = "ttn"
"""


def start(config, env):
    return subprocess.Popen(
        [sys.executable, "-m", "releve.cli", "collect", "run", "-c", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(db, mqtt_broker, tmp_path):
    register_meters(db.url)
    config = tmp_path / "collector.toml"
    config.write_text(CONFIG.format(spool=tmp_path / "spool"))
    env = {
        **os.environ,
        "RELEVE_DATABASE__URL": db.url,
        "RELEVE_DATABASE__ROLE_PREFIX": db.settings.database.role_prefix,
        "RELEVE_MQTT__URL": mqtt_broker.url,
    }
    proc = start(config, env)
    try:
        # Until the collector has subscribed once, the broker keeps nothing for it: repeat the first
        # rounds until they land (repeats are duplicates and must land once).
        for _ in range(30):
            publish(mqtt_broker.port, traffic(0, 5))
            if wait_for_rows(db.url, 5 * READINGS_PER_ROUND, timeout=1.0) == 5 * READINGS_PER_ROUND:
                break
        assert wait_for_rows(db.url, 5 * READINGS_PER_ROUND) == 5 * READINGS_PER_ROUND

        def stream():
            for k in range(5, 65, 5):
                publish(mqtt_broker.port, traffic(k, k + 5))
                time.sleep(0.2)

        publisher = threading.Thread(target=stream)
        publisher.start()
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to flush, ack or clean up
        proc.wait()
        time.sleep(0.5)
        proc = start(config, env)
        publisher.join()
        total = 65 * READINGS_PER_ROUND
        assert wait_for_rows(db.url, total, timeout=60) == total
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    with psycopg.connect(db.url) as conn:
        inserted = conn.execute("SELECT sum(n_inserted) FROM ingest_batch").fetchone()[0]
    assert inserted == 65 * READINGS_PER_ROUND
