"""Chaos, bounded and on the loopback: a sequence-numbered publisher while the collector is SIGKILLed and
the broker restarted, Modbus meters polled by the same collector all along.

Every sequence number must be in the database exactly once, every MQTT reading labelled ``mqtt`` and
every polled reading labelled ``modbus`` (segments mix both; a segment used to take the source of
its first reading).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest

from simulators.clock import SimClock
from simulators.config import parse_fleet
from simulators.engine import Simulation
from simulators.modbus import BackgroundModbus

pytestmark = [pytest.mark.db, pytest.mark.mqtt]

MESSAGES = 400  # sequence numbers 0..399, about 100 per second
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
FROZEN = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def fleet():
    return Simulation(
        parse_fleet(
            {
                "seed": 5,
                "horizon_days": 30,
                "start": "2026-03-01T00:00:00Z",
                "topology": {"transformers": 1, "customers_per_transformer": 4, "dmas": 1, "customers_per_dma": 1},
                "modbus": {"tcp_base_port": 0, "rtu_lines": 0, "devices_per_gateway": 8},
                "mqtt": {"electricity_share": 0.0},
                "theft": {"rate": 0.0},
                "faults": {"rate": 0.0},
            },
            "chaos fleet",
        )
    )


def config_toml(spool, gateways):
    text = f'''name = "chaos"
spool_dir = "{spool}"
seal_seconds = 0.2
health_every_s = 0.3

[mqtt]
client_id = "chaos-collector"

[[mqtt.subscriptions]]
topic = "releve/{{serial}}/reading"
decoder = "json"

[modbus]
periods = {{ energy = 1.0, instant = 1.0, events = 1.0 }}
jitter = 0.0
retries = 0
'''
    for name, host, port, meters in gateways:
        text += f'\n[[modbus.gateways]]\nname = "{name}"\nhost = "{host}"\nport = {port}\ntimeout_s = 1.0\n'
        for serial, unit, profile in meters:
            text += f'[[modbus.gateways.meters]]\nserial = "{serial}"\nunit = {unit}\nprofile = "{profile}"\n'
    return text


def message(seq):
    ts = (T0 + timedelta(minutes=seq)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(
        {"meter": "SEQ1", "ts": ts, "readings": [{"channel": "1-0:1.8.0", "value": seq, "unit": "kWh"}]}
    ).encode()


class Publisher(threading.Thread):
    """QoS 1 on a persistent session: what the broker had not acknowledged is sent again after a restart."""

    def __init__(self, port):
        super().__init__(name="seq-publisher", daemon=True)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="seq-publisher", clean_session=False)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.mids = []
        self.acked = set()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self.acked.add(mid)

    def run(self):
        for seq in range(MESSAGES):
            # While the broker is away paho queues the message (rc "not connected") and sends it on reconnect.
            self.mids.append(self.client.publish("releve/SEQ1/reading", message(seq), qos=1).mid)
            time.sleep(0.01)

    def wait_all_published(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.acked.issuperset(self.mids):
            time.sleep(0.1)
        return len(self.acked.intersection(self.mids))

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def query(url, sql, args=()):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except psycopg.OperationalError:
            pass
        time.sleep(0.2)
    return False


def start(config, env):
    return subprocess.Popen(
        [sys.executable, "-m", "releve.cli", "collect", "run", "-c", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_sigkill_and_broker_restart_keep_every_sequence_number_once_with_its_source(db, mqtt_broker, tmp_path):
    sim = fleet()
    polled = [m for m in sim.meters if m.transport == "tcp"][:4]
    assert polled
    with db.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, %s, %s, %s, %s)",
            [(m.serial, m.commodity.value, m.model, m.unit, "modbus-tcp") for m in polled]
            + [("SEQ1", "electricity", "t", "kWh", "mqtt")],
        )
    clock = SimClock(FROZEN)
    clock.freeze(FROZEN)
    wanted = {m.serial for m in polled}
    with BackgroundModbus(sim, clock) as front:
        gateways = []
        for i, gw in enumerate(front.gateways):
            meters = [
                (sim.meters[m].serial, u, sim.meters[m].model)
                for u, m in sorted(gw.store.units.items())
                if sim.meters[m].serial in wanted
            ]
            if meters:
                gateways.append((f"gw{i}", gw.host, gw.port, meters))
        config = tmp_path / "chaos.toml"
        config.write_text(config_toml(tmp_path / "spool", gateways))
        env = {
            **os.environ,
            "RELEVE_DATABASE__URL": db.url,
            "RELEVE_DATABASE__ROLE_PREFIX": db.settings.database.role_prefix,
            "RELEVE_MQTT__URL": mqtt_broker.url,
        }
        proc = start(config, env)
        publisher = None
        try:
            # Subscribed once: from then on the broker keeps the collector's messages while it is away.
            assert wait_until(
                lambda: query(db.url, "SELECT connected FROM link_health WHERE link = 'mqtt'") == [(True,)], 60
            ), "the collector never subscribed"
            publisher = Publisher(mqtt_broker.port)
            publisher.start()
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGKILL)  # mid-stream: no flush, no ack, no seal
            proc.wait()
            time.sleep(0.5)
            proc = start(config, env)
            time.sleep(1.0)
            mqtt_broker.restart()  # both the publisher and the collector lose the broker mid-stream
            publisher.join(60)
            assert publisher.wait_all_published(60) == MESSAGES
            seq = "SELECT count(*) FROM reading_all r JOIN meter m ON m.id = r.meter_id WHERE m.serial = 'SEQ1'"
            assert wait_until(lambda: query(db.url, seq)[0][0] >= MESSAGES, 120)
            time.sleep(1.0)  # a duplicate, if any, would land now
        finally:
            if publisher is not None:
                publisher.close()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    values = [
        v
        for (v,) in query(
            db.url,
            "SELECT r.value FROM reading_all r JOIN meter m ON m.id = r.meter_id WHERE m.serial = 'SEQ1' ORDER BY r.value",
        )
    ]
    assert values == [float(k) for k in range(MESSAGES)]  # every sequence number, once
    labels = dict(
        query(
            db.url,
            """SELECT m.serial, array_agg(DISTINCT s.name ORDER BY s.name)
                                   FROM reading_all r JOIN meter m ON m.id = r.meter_id
                                   JOIN reading_source s ON s.id = r.source_id GROUP BY m.serial""",
        )
    )
    assert labels.pop("SEQ1") == ["mqtt"]
    assert labels and all(sources == ["modbus"] for sources in labels.values()), labels
    assert query(db.url, "SELECT count(*) FROM reading_conflict") == [(0,)]
    assert query(db.url, "SELECT count(*) FROM rejected_input") == [(0,)]
    assert not list((tmp_path / "spool").glob("*.seg"))
