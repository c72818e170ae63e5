"""MQTT values checked at the edge, through a real Mosquitto into a real PostgreSQL: zones, units, limits."""

from __future__ import annotations

import json

import pytest

from collectors.config import CollectorConfig
from collectors.service import Collector
from releve.model import UNITS
from tests.collectors.mqtt_helpers import publish, wait_for_rows

pytestmark = [pytest.mark.db, pytest.mark.mqtt]


def reading(serial: str, ts: str, channel: str, value: object, unit: str) -> tuple[str, dict]:
    return f"releve/{serial}/reading", {
        "meter": serial,
        "ts": ts,
        "readings": [{"channel": channel, "value": value, "unit": unit}],
    }


def test_zones_units_and_limits_are_enforced_before_the_spool(db, mqtt_broker, tmp_path):
    db.add_meters(["E1", "E2"])
    db.add_meters(["W1"], commodity="water", unit="m3")
    config = CollectorConfig.model_validate(
        {
            "name": "edge",
            "spool_dir": str(tmp_path / "spool"),
            "seal_seconds": 0.2,
            "mqtt": {
                "client_id": "edge",
                "subscriptions": [
                    {"topic": "releve/{serial}/reading", "decoder": "json", "profile": "sdm120"},
                    {"topic": "site/{serial}/reading", "decoder": "json"},
                    {"topic": "tele/sml-{serial}/SENSOR", "decoder": "tasmota"},  # no options.timezone
                ],
            },
        }
    )
    settings = db.settings.model_copy(update={"mqtt": db.settings.mqtt.model_copy(update={"url": mqtt_broker.url})})
    collector = Collector(config, settings, db.url)
    collector.start()
    good = [
        reading("E1", "2026-03-01T10:00:00Z", "1-0:1.8.0", 7183079, "Wh"),  # stored as 7183.079 kWh
        reading("E1", "2026-03-01T10:15:00+01:00", "1-0:1.8.0", 7183.2, "kWh"),  # 09:15 UTC: older, range only
        reading("E1", "2026-03-01T10:30:00Z", "1-0:32.7.0", 0.2301, "kV"),  # 230.1 V
        (
            "site/W1/reading",
            {
                "meter": "W1",
                "ts": "2026-03-01T10:00:00Z",
                "readings": [{"channel": "8-0:1.0.0", "value": 412337, "unit": "l"}],
            },
        ),
    ]
    bad = [
        reading("E1", "2026-03-01T10:45:00", "1-0:1.8.0", 7183.3, "kWh"),  # no zone
        reading("E1", "2026-03-01T11:00:00Z", "1-0:1.8.0", 12.0, "m3"),  # volume on an energy channel
        reading("E1", "2026-03-01T11:00:00Z", "1-0:1.8.0", 7500.0, "kWh"),  # +317 kWh in an hour: 46 kWh/h at most
        reading("E2", "2026-03-01T11:00:00Z", "1-0:31.7.0", 2.4e14, "A"),  # the sdm120 carries 200 A at most
        reading("E2", "2026-03-01T11:00:00Z", "1-0:1.8.0", -4.3e23, "kWh"),
        (
            "site/W1/reading",
            {
                "meter": "W1",
                "ts": "2026-03-01T11:00:00Z",
                "readings": [{"channel": "8-0:1.0.0", "value": 1.0, "unit": "KWH"}],
            },
        ),
        ("tele/sml-E2/SENSOR", {"Time": "2026-03-01T11:00:00", "SML": {"Total_in": 10.0}}),
    ]
    try:
        assert collector.mqtt.wait_connected()
        publish(mqtt_broker.port, good + bad)
        assert wait_for_rows(db.url, 4) == 4
    finally:
        collector.stop()
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT m.serial, c.code, to_char(r.ts AT TIME ZONE 'UTC', 'HH24:MI'), r.value, u.code FROM reading_all r "
            "JOIN meter m ON m.id = r.meter_id JOIN channel c ON c.id = r.channel_id JOIN unit u ON u.id = r.unit_id "
            "ORDER BY 1, 2, 3"
        ).fetchall()
        dead = conn.execute("SELECT origin, reason, payload FROM rejected_input ORDER BY id").fetchall()
    assert rows == [
        ("E1", "1-0:1.8.0", "09:15", 7183.2, "kWh"),
        ("E1", "1-0:1.8.0", "10:00", 7183.079, "kWh"),
        ("E1", "1-0:32.7.0", "10:30", pytest.approx(230.1), "V"),
        ("W1", "8-0:1.0.0", "10:00", 412.337, "m3"),
    ]
    reasons = sorted(reason for _, reason, _ in dead)
    assert len(dead) == len(bad)
    expected = sorted(
        [
            "ts '2026-03-01T10:45:00' has no time zone: send an offset (Z, +01:00) or name the device's zone in the "
            "subscription's options.timezone",
            "refused values: E1 1-0:1.8.0: (unit) 'm3' (volume) cannot be converted to 'kWh' (active energy)",
            "refused values: E1 1-0:1.8.0: (rate) rose 316.921 kWh in 3600 s since 7183.08 kWh (2026-03-01T10:00:00+00:00): "
            "more than the 46 kWh per hour the meter allows",
            "refused values: E2 1-0:31.7.0: (range) 2.4e+14 A is above the highest possible 200 A",
            "refused values: E2 1-0:1.8.0: (sign) -4.3e+23 kWh is negative, which this value cannot be",
            "refused values: W1 8-0:1.0.0: (unit) unknown unit 'KWH'; known: " + ", ".join(UNITS),
            "Time '2026-03-01T11:00:00' has no time zone: send an offset (Z, +01:00) or name the device's zone in the "
            "subscription's options.timezone",
        ]
    )
    assert reasons == expected
    # each dead letter keeps its payload whole, as published, and names the topic
    assert sorted(json.dumps(json.loads(p), sort_keys=True) for _, _, p in dead) == sorted(
        json.dumps(body, sort_keys=True) for _, body in bad
    )
    assert {origin for origin, _, _ in dead} == {f"mqtt {topic}" for topic, _ in bad}
