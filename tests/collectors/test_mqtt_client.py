"""The paho client settings both MQTT users (collector, commander) take from ``[mqtt]``: address, login, TLS."""

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collectors.mqtt import prepare_client
from releve.settings import MqttSettings


def _client() -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test", protocol=mqtt.MQTTv5)


def test_no_url_is_the_local_broker_without_login_or_tls(monkeypatch):
    monkeypatch.delenv("RELEVE_MQTT_PASSWORD", raising=False)
    client = _client()
    assert prepare_client(client, MqttSettings()) == ("127.0.0.1", 1883)
    assert client.username is None
    client.tls_set()  # not configured yet: this first call is accepted


def test_mqtts_turns_tls_on_at_8883_and_logs_in_with_the_password_file(tmp_path):
    (tmp_path / "password").write_text("from-the-file\n")
    broker = MqttSettings(
        url="mqtts://broker.example", username="collector", password_env="", password_file=str(tmp_path / "password")
    )
    client = _client()
    assert prepare_client(client, broker) == ("broker.example", 8883)
    assert (client.username, client.password) == ("collector", "from-the-file")
    with pytest.raises(ValueError, match="already"):  # TLS is configured already
        client.tls_set()


def test_an_explicit_port_and_the_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("RELEVE_MQTT_PASSWORD", "from-the-env")
    client = _client()
    assert prepare_client(client, MqttSettings(url="mqtt://10.0.0.5:1884", username="u")) == ("10.0.0.5", 1884)
    assert client.password == "from-the-env"
