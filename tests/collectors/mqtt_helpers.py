"""Publishing test traffic to a real broker and waiting for it in the real database."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)

SUBSCRIPTIONS = [
    {"topic": "releve/{serial}/reading", "decoder": "json"},
    {"topic": "releve/{serial}/event", "decoder": "json"},
    {"topic": "tele/sml-{serial}/SENSOR", "decoder": "tasmota", "options": {"timezone": "UTC"}},
    {"topic": "v3/{app}/devices/water-{serial}/up", "decoder": "ttn"},
]


def json_message(serial: str, k: int) -> tuple[str, dict]:
    ts = (T0 + timedelta(minutes=15 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"releve/{serial}/reading", {
        "meter": serial,
        "ts": ts,
        "readings": [
            {"channel": "1-0:1.8.0", "value": 1000 + k * 0.25, "unit": "kWh"},
            {"channel": "1-0:32.7.0", "value": 230.0 + (k % 7), "unit": "V"},
        ],
    }


def tasmota_message(serial: str, k: int) -> tuple[str, dict]:
    ts = (T0 + timedelta(minutes=15 * k)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"tele/sml-{serial}/SENSOR", {"Time": ts, "SML": {"Total_in": 500 + k * 0.5, "Power_curr": 400 + k}}


def ttn_message(serial: str, k: int) -> tuple[str, dict]:
    ts = (T0 + timedelta(minutes=15 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"v3/app@ttn/devices/water-{serial}/up", {
        "end_device_ids": {"device_id": f"water-{serial}"},
        "received_at": ts,
        "uplink_message": {"decoded_payload": {"volume_m3": 40 + k * 0.01, "alarms": {"leak": False}}},
    }


def traffic(k_from: int, k_to: int) -> list[tuple[str, dict]]:
    """Messages for rounds [k_from, k_to): 2 JSON meters (2 readings each), 1 Tasmota (2), 1 TTN (1)."""
    out = []
    for k in range(k_from, k_to):
        out += [json_message("E1", k), json_message("E2", k), tasmota_message("E3", k), ttn_message("W1", k)]
    return out


READINGS_PER_ROUND = 2 + 2 + 2 + 1
METERS = {"E1": "electricity", "E2": "electricity", "E3": "electricity", "W1": "water"}


def publish(port: int, messages: list[tuple[str, dict]], raw: list[tuple[str, bytes]] = ()) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.monotonic_ns()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(t, json.dumps(b), qos=1) for t, b in messages]
    infos += [client.publish(t, b, qos=1) for t, b in raw]
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def wait_for_rows(url: str, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url) as conn:
                n = conn.execute("SELECT count(*) FROM reading_all").fetchone()[0]
        except psycopg.OperationalError:
            n = -1
        if n >= expected:
            time.sleep(0.5)  # anything beyond would be a duplicate: give it a chance to show
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FROM reading_all").fetchone()[0]
        time.sleep(0.1)
    return n


def register_meters(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for serial, commodity in METERS.items():
            conn.execute(
                "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, %s, 't', %s, 'mqtt')",
                (serial, commodity, "kWh" if commodity == "electricity" else "m3"),
            )
