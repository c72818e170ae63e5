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
