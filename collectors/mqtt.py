"""The MQTT subscriber: topic templates → decoders → the spool, acknowledged only once durable.

paho-mqtt 2.x with MQTT 5: QoS 1, a persistent session (``clean_start=False`` and a session
expiry, so the broker keeps what arrives while we are away), ``manual_ack`` so a message is
acknowledged only after its readings are fsync'ed into the spool, automatic reconnection with a
bounded backoff, and optional shared subscriptions (``$share/<group>/<filter>``) so several
collectors split one topic. TLS for ``mqtts://`` URLs; the password comes from the environment
variable or the file the settings name, and is never logged.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from collectors.config import MqttSource, compile_topic
from collectors.decoders import DecodeError, Decoder, Message, get_decoder
from collectors.plausibility import Guard, check_readings
from collectors.spool import Spool, SpoolFullError
from releve.model import MeterEvent, Reading, Rejected, Source
from releve.profiles import DeviceProfile, load_profile
from releve.settings import MqttSettings

log = logging.getLogger(__name__)


def broker_password(settings: MqttSettings) -> str | None:
    """The broker password from the named environment variable or file (None when neither is set)."""
    if settings.password_env and os.environ.get(settings.password_env):
        return os.environ[settings.password_env]
    if settings.password_file:
        return Path(settings.password_file).read_text().strip()
    return None


@dataclass(frozen=True)
class _Route:
    topic_filter: str
    pattern: re.Pattern[str]
    decode: Decoder
    options: dict[str, Any]
    qos: int
    profile: DeviceProfile | None = None


@dataclass
class MqttStats:
    """Counters for health and tests."""

    received: int = 0
    readings: int = 0
    events: int = 0
    rejected: int = 0
    acked: int = 0
    not_stored: int = 0
    connects: int = 0
    connected: bool = False
    last_message: datetime | None = None
    errors: dict[str, int] = field(default_factory=dict)
    serials: set[str] = field(default_factory=set)  # meters heard from on this session


class MqttCollector:
    """Subscribes, decodes, spools, acknowledges."""

    def __init__(self, source: MqttSource, broker: MqttSettings, spool: Spool, ack_interval: float = 0.05) -> None:
        self.source = source
        self.spool = spool
        self.ack_interval = ack_interval
        self.stats = MqttStats()
        self.guard = Guard()  # plausibility of decoded values, with the memory the rate rules need
        self._routes: list[_Route] = []
        for sub in source.subscriptions:
            topic_filter, pattern = compile_topic(sub.topic)
            if source.shared_group:
                topic_filter = f"$share/{source.shared_group}/{topic_filter}"
            profile = load_profile(sub.profile) if sub.profile else None
            self._routes.append(
                _Route(topic_filter, pattern, get_decoder(sub.decoder), sub.options, sub.qos, profile)
            )
        url = urlparse(broker.url or "mqtt://127.0.0.1:1883")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=source.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if broker.username:
            client.username_pw_set(broker.username, broker_password(broker))
        if url.scheme == "mqtts":
            client.tls_set(ca_certs=source.ca_file or None)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        self._pending: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._acker = threading.Thread(target=self._ack_loop, name="mqtt-ack", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start acknowledging."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.source.session_expiry_s
        self.client.connect_async(
            self.host, self.port, keepalive=self.source.keepalive_s, clean_start=False, properties=props
        )
        self.client.loop_start()
        self._acker.start()

    def stop(self) -> None:
        """Acknowledge what is durable, then disconnect (the broker keeps our session)."""
        self._stop.set()
        self._acker.join()
        self._flush_acks()
        self.client.disconnect()
        self.client.loop_stop()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Block until subscribed (True) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.stats.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.stats.connected

    # -- callbacks (paho's network thread) ---------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode, props: object
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        self.stats.connects += 1
        client.subscribe([(r.topic_filter, SubscribeOptions(qos=r.qos)) for r in self._routes])
        self.stats.connected = True
        log.info("MQTT connected to %s:%d (session present: %s)", self.host, self.port,
                 getattr(flags, "session_present", "?"))  # fmt: skip

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode, props: object
    ) -> None:
        self.stats.connected = False
        if not self._stop.is_set():
            log.warning("MQTT connection to %s:%d lost (%s); reconnecting", self.host, self.port, reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.stats.received += 1
        self.stats.last_message = datetime.now(UTC)
        readings, events, rejected = self.decode(msg.topic, bytes(msg.payload))
        try:
            self.spool.append(readings, events, rejected, sync=False)
        except SpoolFullError as exc:
            self.stats.not_stored += 1
            log.error("MQTT message on %s not stored, left unacknowledged: %s", msg.topic, exc)
            return
        self.stats.readings += len(readings)
        self.stats.serials.update(r.meter for r in readings)
        self.stats.events += len(events)
        self.stats.rejected += len(rejected)
        if msg.qos > 0:
            with self._lock:
                self._pending.append((msg.mid, msg.qos))

    def decode(self, topic: str, payload: bytes) -> tuple[list[Reading], list[MeterEvent], list[Rejected]]:
        """Route and decode one message; a failure becomes a dead letter, never an exception."""
        for route in self._routes:
            match = route.pattern.match(topic)
            if match is None:
                continue
            try:
                out = route.decode(Message(topic, payload, match.groupdict(), route.options))
                readings, problems = check_readings(self.guard, out.readings, route.profile)
            except DecodeError as exc:
                return [], [], [self._dead(topic, payload, str(exc))]
            except Exception as exc:  # a decoder bug must not stop the collector
                log.exception("decoder failed on %s", topic)
                return [], [], [self._dead(topic, payload, f"decoder error: {exc!r}")]
            if not problems:
                return readings, out.events, []
            return readings, out.events, [self._dead(topic, payload, "refused values: " + "; ".join(problems))]
        return [], [], [self._dead(topic, payload, "no subscription template matches this topic")]

    def _dead(self, topic: str, payload: bytes, reason: str) -> Rejected:
        self.stats.errors[reason.split(":")[0]] = self.stats.errors.get(reason.split(":")[0], 0) + 1
        log.warning("MQTT payload on %s rejected: %s", topic, reason)
        return Rejected(f"mqtt {topic}", reason, payload, Source.MQTT)  # the bytes as received

    # -- acknowledgements ---------------------------------------------------------------------------
    def _flush_acks(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        self.spool.sync()  # durable first …
        for mid, qos in pending:  # … then acknowledged
            self.client.ack(mid, qos)
        self.stats.acked += len(pending)

    def _ack_loop(self) -> None:
        while not self._stop.wait(self.ack_interval):
            try:
                self._flush_acks()
            except Exception:
                log.exception("acknowledging MQTT messages failed")
