"""MQTT messages spooled raw and decoded in the forwarder give what decoding in the callback gave."""

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.config import CollectorConfig
from collectors.mqtt import MqttCollector
from collectors.spool import RawMessage, Spool, decode_raw, decode_record, is_raw
from releve.settings import MqttSettings

SUBS = [
    {"topic": "releve/{serial}/reading"},
    {"topic": "local/{serial}/reading", "options": {"timezone": "Europe/Paris"}},
    {"topic": "tele/sml-{serial}/SENSOR", "decoder": "tasmota", "options": {"timezone": "UTC"}},
]


def collector(tmp_path, name="c"):
    config = CollectorConfig.model_validate(
        {"name": "t", "spool_dir": str(tmp_path / "s"), "mqtt": {"client_id": "t", "subscriptions": SUBS}}
    )
    return MqttCollector(config.mqtt, MqttSettings(), Spool(tmp_path / name))


#: Plain messages, then every shape the fast path must hand to the full decoder.
MESSAGES = [
    ("releve/E1/reading", b'{"ts": "2026-03-01T00:00:00Z", "readings": [{"channel": "1-0:1.8.0", "value": 10.5}]}'),
    (
        "releve/E1/reading",
        b'{"ts": "2026-03-01T00:15:00+00:00", "readings": [{"channel": "1-0:1.8.0", "value": 11, '
        b'"unit": "kWh"}, {"channel": "1-0:1.7.0", "value": 2.5, "unit": "kW"}]}',
    ),
    ("releve/E1/reading", b'{"ts": "2026-03-01T00:30:00Z", "readings": [{"channel": "1-0:1.8.0", "value": 5}]}'),
    (
        "releve/E1/reading",
        b'{"ts": "2026-03-01T00:45:00Z", "readings": [{"channel": "1-0:1.8.0", "value": 12000, "unit": "Wh"}]}',
    ),
    ("releve/E2/reading", b'{"ts": "2026-03-01T00:00:00", "readings": [{"channel": "1-0:1.8.0", "value": 1}]}'),
    ("local/E2/reading", b'{"ts": "2026-03-01T01:00:00", "readings": [{"channel": "1-0:1.8.0", "value": 1}]}'),
    ("releve/E2/reading", b'{"ts": "2026-03-01T02:00:00Z", "kind": "magnetic_field", "code": 7}'),
    ("releve/E2/reading", b"{not json"),
    ("releve/E2/reading", b"\xff\xfe"),
    ("releve/E2/reading", b"[1, 2]"),
    ("releve/E2/reading", b'{"ts": "2026-03-01T03:00:00Z", "readings": []}'),
    ("releve/E2/reading", b'{"ts": "2026-03-01T03:00:00Z", "readings": [{"value": 1}]}'),
    ("releve/E2/reading", b'{"ts": "2026-03-01T03:00:00Z", "readings": [{"channel": "1-0:1.8.0", "value": true}]}'),
    ("releve/E2/reading", b'{"ts": "2026-03-01T03:00:00Z", "readings": [{"channel": "1-0:1.8.0", "value": "1"}]}'),
    (
        "releve/E2/reading",
        b'{"ts": "2026-03-01T03:00:00Z", "readings": [{"channel": "1-0:1.8.0", "value": 1, "unit": 3}]}',
    ),
    ("releve/E2/reading", b'{"ts": "2026-03-01T03:00:00Z", "readings": [{"channel": "1-0:1.8.0", "value": -4}]}'),
    (
        "releve/E2/reading",
        b'{"ts": "2026-03-01T03:00:00Z", "readings": [{"channel": "1-0:1.8.0", "value": 1, "unit": "m3"}]}',
    ),
    ("releve/E2/reading", b'{"ts": "yesterday", "readings": [{"channel": "1-0:1.8.0", "value": 1}]}'),
    ("releve/E2/reading", b'{"ts": "0001-01-01T00:00:00+01:00", "readings": [{"channel": "1-0:1.8.0", "value": 1}]}'),
    ("tele/sml-E3/SENSOR", b'{"Time": "2026-03-01T04:00:00", "SML": {"Total_in": 100.5, "Power_curr": 300}}'),
    ("tele/sml-E3/SENSOR", b'{"Time": "now", "SML": {}}'),
    ("nobody/listens/here", b"{}"),
]


def per_message(c, messages):
    """What the old path stored: ``decode`` in the callback, message by message."""
    rows, events, dead = [], [], []
    for k, (topic, payload) in enumerate(messages):
        readings, evs, rej = c.decode(topic, payload)
        rows += [(k, r.meter, r.channel, r.ts, r.value, r.unit) for r in readings]
        events += [(k, e) for e in evs]
        dead += [(k, x.origin, x.reason, x.payload) for x in rej]
    return rows, events, dead


def columnar(c, messages):
    out = c.decode_raw([RawMessage(t, p, 0.0) for t, p in messages])
    f = out.frame
    rows = [
        (
            int(out.row_message[i]),
            f.meters[f.meter_idx[i]],
            f.channels[f.channel_idx[i]],
            f.ts[i].astype(datetime).replace(tzinfo=UTC),
            float(f.value[i]),
            f.units[f.unit_idx[i]],
        )
        for i in range(len(f))
    ]
    return rows, out.events, [(k, x.origin, x.reason, x.payload) for k, x in out.rejected]


def test_decoding_in_the_forwarder_keeps_every_reading_event_and_dead_letter_of_decoding_in_the_callback(tmp_path):
    old = per_message(collector(tmp_path, "a"), MESSAGES)
    new = columnar(collector(tmp_path, "b"), MESSAGES)
    assert new == old
    rows, events, dead = new
    assert len(rows) >= 6 and len(events) == 1 and len(dead) >= 12  # the cases above are all exercised
    assert any("(backwards)" in d[2] for d in dead) and any("(unit)" in d[2] for d in dead)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["E1", "E2"]),
            st.integers(0, 20),
            st.floats(-10, 1e6, allow_nan=False),
            st.sampled_from(["kWh", "Wh", "", "W"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_the_plausibility_memory_judges_a_stream_the_same_way_in_either_path(tmp_path_factory, stream):
    messages = []
    for serial, quarter, value, unit in stream:
        body = (
            f'{{"ts": "2026-03-01T{quarter // 4:02d}:{15 * (quarter % 4):02d}:00Z", '
            f'"readings": [{{"channel": "1-0:1.8.0", "value": {value!r}, "unit": "{unit}"}}]}}'
        )
        messages.append((f"releve/{serial}/reading", body.encode()))
    tmp = tmp_path_factory.mktemp("p")
    assert columnar(collector(tmp, "b"), messages) == per_message(collector(tmp, "a"), messages)


def test_raw_records_keep_topic_and_payload_byte_for_byte_beside_json_records(tmp_path):
    spool = Spool(tmp_path)
    payload = bytes(range(256))
    spool.append_raw("releve/é/reading", payload, 1_700_000_000.25)
    spool.append(rejected=[])  # nothing: no record
    spool.seal()
    [segment] = spool.sealed()
    [record] = spool.records(segment)
    assert is_raw(record)
    assert decode_raw(record) == RawMessage("releve/é/reading", payload, 1_700_000_000.25)
    with pytest.raises(ValueError, match="raw MQTT record"):
        decode_record(record)
    with pytest.raises(ValueError, match="too short"):
        decode_raw(record[:5])


def test_an_empty_batch_decodes_to_an_empty_frame(tmp_path):
    out = collector(tmp_path).decode_raw([])
    assert len(out.frame) == 0 and out.row_message.dtype == np.int32


def publish_packet(topic: bytes, mid: int, props: bytes, payload: bytes) -> bytes:
    return len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + bytes([len(props)]) + props + payload


@pytest.mark.parametrize("props", [b"", b"\x03\x00\x10application/json", b"\x01\x01"])  # content type, format
def test_the_fast_publish_path_hands_over_topic_payload_and_mid_whatever_the_properties(props):
    import paho.mqtt.client as mqtt

    from collectors.mqtt import BufferedClient

    client = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id="x", protocol=mqtt.MQTTv5, manual_ack=True)
    got = []
    client.on_raw_publish = lambda topic, payload, mid: got.append((topic, payload, mid))
    payload = b'{"a": 1}' + bytes(range(200))
    client._in_packet = {"command": 0x32, "packet": publish_packet(b"releve/E1/reading", 513, props, payload)}
    assert client._handle_publish() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [(b"releve/E1/reading", payload, 513)]


def test_a_publish_the_fast_path_cannot_read_goes_to_paho():
    import paho.mqtt.client as mqtt

    from collectors.mqtt import BufferedClient

    client = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id="x", protocol=mqtt.MQTTv5, manual_ack=True)
    fast, slow = [], []
    client.on_raw_publish = lambda *a: fast.append(a)
    client.on_message = lambda c, u, msg: slow.append((msg.topic, msg.payload, msg.qos))
    client._in_packet = {"command": 0x30, "packet": publish_packet(b"t/q0", 0, b"", b"x")[:6] + b"\x00x"}  # QoS 0
    client._handle_publish()
    client._in_packet = {"command": 0x32, "packet": publish_packet(b"t/cut", 7, b"\x03\x00\x10app", b"")[:-1]}
    with pytest.raises(Exception):  # noqa: B017, PT011 - paho's own verdict on a malformed packet
        client._handle_publish()
    assert fast == [] and slow == [("t/q0", b"x", 0)]
