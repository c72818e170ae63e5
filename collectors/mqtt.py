"""The MQTT subscriber: topic templates → decoders → the spool, acknowledged only once durable.

paho-mqtt 2.x with MQTT 5: QoS 1, a persistent session (``clean_start=False`` and a session
expiry, so the broker keeps what arrives while we are away), ``manual_ack`` so a message is
acknowledged only after its readings are fsync'ed into the spool, automatic reconnection with a
bounded backoff, and optional shared subscriptions (``$share/<group>/<filter>``) so several
collectors split one topic. TLS for ``mqtts://`` URLs; the password comes from the environment
variable or the file the settings name, and is never logged.

The network thread does as little as it can: each message goes to the spool as received
(``Spool.append_raw``: no JSON decoded, nothing re-encoded) and is acknowledged once the spool is
fsync'ed. The forwarder decodes a whole segment at once with ``decode_raw``: Relevé's plain JSON
straight to columns (no ``Reading`` objects), other decoders message by message; the unit,
zone and plausibility checks and the dead letters are the same either way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MessageType
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from collectors.config import MqttSource, compile_topic
from collectors.decoders import DecodeError, Decoder, Message, decode_json, get_decoder
from collectors.forward import RawDecoded
from collectors.plausibility import Guard, Limits, check_readings, check_value, value_limits
from collectors.spool import RawMessage, Spool, SpoolFullError
from ingest import ReadingFrame
from ingest.frame import READ_TYPES
from releve.model import CHANNELS, MeterEvent, Reading, Rejected, Source
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


def prepare_client(client: mqtt.Client, broker: MqttSettings, ca_file: str = "") -> tuple[str, int]:
    """Set ``client``'s login, TLS and reconnect backoff for ``broker``; return the (host, port) to connect to.

    ``broker.url`` defaults to ``mqtt://127.0.0.1:1883``; ``mqtts://`` (port 8883 by default) turns TLS on,
    trusting ``ca_file`` (empty: the system's CAs).
    """
    url = urlparse(broker.url or "mqtt://127.0.0.1:1883")
    if broker.username:
        client.username_pw_set(broker.username, broker_password(broker))
    if url.scheme == "mqtts":
        client.tls_set(ca_certs=ca_file or None)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return url.hostname or "127.0.0.1", url.port or (8883 if url.scheme == "mqtts" else 1883)


_PUBACK = struct.Struct("!BBH")
PUBACK = int(MessageType.PUBACK)


class _BufferedSocket:
    """The broker connection with a read buffer.

    paho reads each packet's first byte, then its length a byte at a time, then its body: three or
    more system calls per message, which was most of what a bare paho client spends. Reading up to
    64 kB at once and serving paho from memory makes it one system call per many messages.
    ``pending()`` tells paho's loop that buffered bytes are waiting (as it asks of TLS sockets), so it
    does not block in ``select`` while a packet is already here. Everything else is the socket's.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._data):
            self._data = self._sock.recv(max(bufsize, 1 << 16))  # raises as the socket does (would block, TLS)
            self._pos = 0
        out = self._data[self._pos : self._pos + bufsize]
        self._pos += len(out)
        return out

    def buffered(self) -> int:
        return len(self._data) - self._pos

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return self.buffered() + inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BufferedClient(mqtt.Client):
    """paho's client, reading the broker's connection through a buffer (see ``_BufferedSocket``).

    With ``on_raw_publish`` set (and MQTT 5, ``manual_ack``), a QoS 1 PUBLISH goes straight to it as
    ``(topic bytes, payload, mid)``: no ``MQTTMessage``, no parsed properties (Relevé uses none, and
    announces no topic alias maximum, so the broker sends none), no filter matching. Anything else —
    QoS 0 or 2, an empty topic, a packet that does not parse — takes paho's own path.
    """

    on_raw_publish: Callable[[bytes, bytes, int], None] | None = None

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        callback = self.on_raw_publish
        command, packet = self._in_packet["command"], self._in_packet["packet"]
        if callback is None or (command & 0x06) != 0x02 or not self._manual_ack or self._protocol != mqtt.MQTTv5:
            return super()._handle_publish()
        try:
            n = int.from_bytes(packet[0:2], "big")
            pos = 2 + n
            mid = int.from_bytes(packet[pos : pos + 2], "big")
            pos += 2
            length = shift = 0
            while True:  # the properties' length, a variable byte integer
                byte = packet[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if n == 0 or shift > 28 or pos + length > len(packet):
                raise ValueError("not a plain PUBLISH")
            topic, payload = bytes(packet[2 : 2 + n]), bytes(packet[pos + length :])
        except (IndexError, ValueError):
            return super()._handle_publish()  # paho judges it (MalformedPacket, topic alias, …)
        callback(topic, payload, mid)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return sock if self._transport == "websockets" else _BufferedSocket(sock)

    def ack_many(self, mids: Sequence[int]) -> None:
        """Acknowledge QoS 1 messages (``manual_ack``) in one write rather than one (and a wake-up) each.

        The same PUBACK packets ``ack`` sends (MQTT 5 allows the two-byte form for success),
        concatenated.
        """
        if mids:
            self._packet_queue(PUBACK, b"".join(_PUBACK.pack(PUBACK, 2, mid) for mid in mids), 0, 1)

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        """Handle every packet already buffered, not one per turn of the loop."""
        rc = super().loop_read(max_packets)
        while (
            rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            and isinstance(self._sock, _BufferedSocket)
            and self._sock.buffered()
        ):
            rc = super().loop_read(max_packets)
        return rc


@dataclass(frozen=True)
class _Route:
    topic_filter: str
    pattern: re.Pattern[str]
    decode: Decoder
    options: dict[str, Any]
    qos: int
    profile: DeviceProfile | None = None
    limits: dict[str, Limits] = field(default_factory=dict)  # per channel, filled as channels are seen

    def channel_limits(self, channel: str) -> Limits:
        found = self.limits.get(channel)
        if found is None:
            found = value_limits(self.profile, channel)
            if len(self.limits) < 4096:  # bounded: channel names come from payloads
                self.limits[channel] = found
        return found


@dataclass
class MqttStats:
    """Counters for health and tests."""

    received: int = 0
    decoded: int = 0  # messages decoded by the forwarder (received ones wait in the spool until then)
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

    def __init__(
        self, source: MqttSource, broker: MqttSettings, spool: Spool, ack_interval: float = 0.05, ack_batch: int = 32
    ) -> None:
        self.source = source
        self.spool = spool
        self.ack_interval = ack_interval
        self.ack_batch = ack_batch  # this many waiting: fsync and acknowledge now (group commit)
        self.stats = MqttStats()
        self.guard = Guard()  # plausibility of decoded values, with the memory the rate rules need
        self._routes: list[_Route] = []
        for sub in source.subscriptions:
            topic_filter, pattern = compile_topic(sub.topic)
            if source.shared_group:
                topic_filter = f"$share/{source.shared_group}/{topic_filter}"
            profile = load_profile(sub.profile) if sub.profile else None
            self._routes.append(_Route(topic_filter, pattern, get_decoder(sub.decoder), sub.options, sub.qos, profile))
        client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=source.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.host, self.port = prepare_client(client, broker, source.ca_file)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_raw_publish = self._on_raw_publish
        self.client = client
        self._pending: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
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
        self._wake.set()
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
        log.info(
            "MQTT connected to %s:%d (session present: %s)",
            self.host,
            self.port,
            getattr(flags, "session_present", "?"),
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode, props: object
    ) -> None:
        self.stats.connected = False
        if not self._stop.is_set():
            log.warning("MQTT connection to %s:%d lost (%s); reconnecting", self.host, self.port, reason)

    def _on_raw_publish(self, topic: bytes, payload: bytes, mid: int) -> None:
        """A QoS 1 message (``BufferedClient``'s fast path): spooled as received, acknowledged once durable."""
        self.stats.received += 1
        now = time.time()
        name = topic.decode("utf-8", "replace")  # MQTT requires UTF-8 topics
        try:
            self.spool.append_raw(name, payload, now, sync=False)
        except SpoolFullError as exc:
            self.stats.not_stored += 1
            log.error("MQTT message on %s not stored, left unacknowledged: %s", name, exc)
            return
        self.stats.last_message = datetime.fromtimestamp(now, UTC)
        with self._lock:
            self._pending.append((mid, 1))
            if len(self._pending) >= self.ack_batch:
                self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.stats.received += 1
        now = time.time()
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # MQTT requires UTF-8 topics; keep the bytes we got
            topic = msg._topic.decode("utf-8", "replace")
        try:
            self.spool.append_raw(topic, bytes(msg.payload), now, sync=False)
        except SpoolFullError as exc:
            self.stats.not_stored += 1
            log.error("MQTT message on %s not stored, left unacknowledged: %s", topic, exc)
            return
        self.stats.last_message = datetime.fromtimestamp(now, UTC)
        if msg.qos > 0:
            with self._lock:
                self._pending.append((msg.mid, msg.qos))
                if len(self._pending) >= self.ack_batch:
                    self._wake.set()

    # -- decoding (the forwarder's thread) ----------------------------------------------------------
    def decode_raw(self, messages: Sequence[RawMessage]) -> RawDecoded:
        """Decode spooled messages to columns, with the checks and dead letters of ``decode``.

        Relevé's plain JSON decoder runs inline to columns; a payload it would refuse, an event, and
        every other decoder go through ``decode`` message by message, so the outcome is the same.
        """
        meters: dict[str, int] = {}
        channels: dict[str, int] = {}
        units: dict[str, int] = {}
        m_idx: list[int] = []
        c_idx: list[int] = []
        u_idx: list[int] = []
        us: list[int] = []
        values: list[float] = []
        rows: list[int] = []
        read_types: list[int] = []
        quality: list[int] = []
        out = RawDecoded(
            ReadingFrame(
                [],
                np.zeros(0, np.int32),
                [],
                np.zeros(0, np.int32),
                np.zeros(0, "datetime64[us]"),
                np.zeros(0),
                [],
                np.zeros(0, np.int32),
                Source.MQTT,
            ),
            np.zeros(0, np.int32),
        )
        n_readings = 0

        def add(
            k: int, serial: str, channel: str, stamp: int, value: float, unit: str, rt: int = 0, q: int = 0
        ) -> None:
            m_idx.append(meters.setdefault(serial, len(meters)))
            c_idx.append(channels.setdefault(channel, len(channels)))
            u_idx.append(units.setdefault(unit, len(units)))
            us.append(stamp)
            values.append(value)
            rows.append(k)
            read_types.append(rt)
            quality.append(q)

        rt_index = {rt: i for i, rt in enumerate(READ_TYPES)}
        for k, msg in enumerate(messages):
            self.stats.decoded += 1
            route, fields = self._route(msg.topic)
            plain = _plain_json(msg.payload, fields, route.options) if route and route.decode is decode_json else None
            if route is not None and plain is not None:
                serial, ts, items = plain
                stamp = (ts - _EPOCH) // _MICROSECOND
                problems = []
                for channel, value, unit in items:
                    value, unit, problem = check_value(
                        self.guard, serial, channel, ts, value, unit, route.channel_limits(channel)
                    )
                    if problem is None:
                        add(k, serial, channel, stamp, value, unit)
                        n_readings += 1
                    else:
                        problems.append(problem)
                if problems:
                    why = "refused values: " + "; ".join(problems)
                    out.rejected.append((k, self._dead(msg.topic, msg.payload, why)))
                continue
            readings, events, rejected = self.decode(msg.topic, msg.payload)
            for r in readings:
                if r.source is Source.MQTT:
                    add(
                        k,
                        r.meter,
                        r.channel,
                        (r.ts - _EPOCH) // _MICROSECOND,
                        r.value,
                        r.unit,
                        rt_index[r.read_type],
                        r.quality,
                    )
                else:
                    out.other.append((k, r))
            n_readings += len(readings)
            out.events += [(k, e) for e in events]
            out.rejected += [(k, x) for x in rejected]
        if rows:
            out.frame = ReadingFrame(
                list(meters),
                np.array(m_idx, np.int32),
                list(channels),
                np.array(c_idx, np.int32),
                np.array(us, np.int64).astype("datetime64[us]"),
                np.array(values, np.float64),
                list(units),
                np.array(u_idx, np.int32),
                Source.MQTT,
                np.array(read_types, np.int8),
                np.array(quality, np.int16),
            )
            out.row_message = np.array(rows, np.int32)
        self.stats.readings += n_readings
        self.stats.serials.update(meters)  # meters heard from: the link's meter count in the control room
        self.stats.serials.update(r.meter for _, r in out.other)
        self.stats.events += len(out.events)
        self.stats.rejected += len(out.rejected)
        return out

    def _route(self, topic: str) -> tuple[_Route | None, dict[str, str]]:
        for route in self._routes:
            match = route.pattern.match(topic)
            if match is not None:
                return route, match.groupdict()
        return None, {}

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
        self.client.ack_many([mid for mid, qos in pending if qos == 1])  # … then acknowledged
        for mid, qos in pending:
            if qos != 1:
                self.client.ack(mid, qos)
        self.stats.acked += len(pending)

    def _ack_loop(self) -> None:
        """Group commit: one fsync for what arrived meanwhile, every ``ack_interval`` or ``ack_batch`` messages.

        The broker sends only so many unacknowledged messages (its in-flight window); acknowledging
        as soon as a batch is durable keeps the window open instead of waiting out the interval.
        """
        while not self._stop.is_set():
            self._wake.wait(self.ack_interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._flush_acks()
            except Exception:
                log.exception("acknowledging MQTT messages failed")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JSON = json.JSONDecoder().decode
_MICROSECOND = timedelta(microseconds=1)


def _plain_json(
    payload: bytes, fields: dict[str, str], options: dict[str, Any]
) -> tuple[str, datetime, list[tuple[str, float, str]]] | None:
    """A reading message in Relevé's plain JSON, or None for anything ``decode_json`` must judge.

    Pure (no plausibility memory touched): None sends the message through the full decoder, which
    then refuses it with its reason, or decodes an event or a zoned local time.
    """
    try:
        body = _JSON(payload.decode())
    except ValueError:  # not UTF-8, not JSON
        return None
    if type(body) is not dict or "kind" in body:
        return None
    serial = fields.get("serial") or body.get("meter")
    text = body.get("ts")
    items = body.get("readings")
    if not serial or type(text) is not str or type(items) is not list or not items:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if ts.tzinfo is None:
            return None
        ts = ts.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    out: list[tuple[str, float, str]] = []
    for item in items:
        if type(item) is not dict or "channel" not in item:
            return None
        channel = str(item["channel"])
        unit = item.get("unit") or (CHANNELS[channel].unit if channel in CHANNELS else "")
        value = item.get("value")
        if type(unit) is not str or (type(value) is not float and type(value) is not int):
            return None
        out.append((channel, float(value), unit))
    return str(serial), ts, out
