import shutil
import time

import paho.mqtt.client as mqtt
import pytest

from releve.broker import MqttBroker


def roundtrip(broker: MqttBroker) -> list[bytes]:
    got: list[bytes] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.subscribe("t/#", qos=1)
    time.sleep(0.3)
    client.publish("t/1", b"reading", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    client.loop_stop()
    client.disconnect()
    return got


@pytest.mark.mqtt
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto not installed")
def test_mosquitto_broker_delivers_qos1_messages(service_tmp):
    with MqttBroker(service_tmp / "m") as broker:
        assert broker.kind == "mosquitto"
        assert roundtrip(broker) == [b"reading"]


@pytest.mark.mqtt
def test_embedded_fallback_broker_delivers_qos1_messages(tmp_path):
    with MqttBroker(tmp_path / "a", prefer="amqtt") as broker:
        assert broker.kind == "amqtt"
        assert roundtrip(broker) == [b"reading"]


def _queue_for_offline_session(broker: MqttBroker, messages: int) -> int:
    """Subscribe a persistent session, leave, publish ``messages``, come back: how many it is given."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    def session() -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="queued", protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        client.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        return client

    sub = session()
    sub.loop_start()
    sub.subscribe("q/#", qos=1)
    time.sleep(0.3)
    sub.disconnect()
    sub.loop_stop()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    for info in [pub.publish(f"q/{k}", b"m", qos=1) for k in range(messages)]:
        info.wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()
    got: list[bytes] = []
    sub = session()
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.loop_start()
    deadline = time.monotonic() + 5
    while len(got) < messages and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # nothing more comes
    sub.disconnect()
    sub.loop_stop()
    return len(got)


@pytest.mark.mqtt
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto not installed")
@pytest.mark.parametrize("persistence", [True, False])
def test_a_session_is_queued_up_to_max_queued_messages_and_no_further(service_tmp, persistence):
    """The per-session bound is the one given (the bench sizes it to a round); memory-only sessions queue too."""
    with MqttBroker(service_tmp / "small", max_queued_messages=50, persistence=persistence) as broker:
        assert _queue_for_offline_session(broker, 80) == 50
    with MqttBroker(service_tmp / "large", max_queued_messages=1_000, persistence=persistence) as broker:
        assert _queue_for_offline_session(broker, 80) == 80
    conf = (service_tmp / "small" / "mosquitto.conf").read_text().splitlines()
    assert f"persistence {'true' if persistence else 'false'}" in conf


def test_max_queued_messages_must_bound_the_queue():
    with pytest.raises(ValueError, match="at least 1"):
        MqttBroker(max_queued_messages=0)
