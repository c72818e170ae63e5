"""Executing queued meter commands (``releve.meter_commands``) for the meters a collector reaches.

Every ``check_every_s`` the runner expires overdue commands of its meters, then takes each meter's
next due command (one per meter at a time, in order; ``FOR UPDATE SKIP LOCKED``, so two collectors
never take the same one) and executes it:

- **Modbus** (TCP gateway or RTU line, through the same link as the polls, so an RTU line's lock
  keeps one request on the wire; under the meter's own lock, so it does not interleave with its
  polls): the write the device profile declares (function 05, 06 or 16), a pause of ``settle_s``,
  then the read-back until it shows the requested state (relay register, the clock within its
  tolerance, the demand-reset counter one higher) or ``confirm_within_s`` passes.
- **MQTT** (meters registered with protocol ``mqtt``): a JSON command published with QoS 1 on
  ``mqtt_topic`` (``{"id", "command", "ts"}``, plus ``"time"`` for a clock sync), then the meter's
  acknowledgement on ``mqtt_ack_topic`` (``{"id", "result": "ok"|"error", "error", "relay":
  "open"|"closed", "clock", "demand_resets"}``) within ``mqtt_ack_timeout_s``; its state must be
  the one asked for.

Outcomes: the read-back matches → ``confirmed`` with the meter's answer; the meter refuses (a Modbus
exception, an error acknowledgement) or the profile has no such command → ``failed`` with the reason;
a timeout, a lost connection or a read-back that does not match yet → back to ``queued`` with a
delay of ``retry_base_s × 2^(attempts-1)`` (at most ``retry_max_s``), until ``max_attempts`` sends
(then ``failed``) or ``expires_at`` (then ``expired``). Every step is in ``meter_command_event``.
A command this collector had sent when it stopped is put back in the queue at its next start.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import Connection

from collectors.config import CommandsConfig
from collectors.modbus import Link, MeterTarget, Operation, ReadError
from collectors.mqtt import prepare_client
from releve import db
from releve import meter_commands as mc
from releve.profiles import CommandConfirm, decode
from releve.settings import Settings

log = logging.getLogger(__name__)

#: Modbus exceptions that mean "not now" rather than "no": acknowledge (5), busy (6), gateway path
#: unavailable (10), gateway target device failed to respond (11). The command is retried.
TRANSIENT_EXCEPTIONS = frozenset({5, 6, 10, 11})

#: Relay kinds -> the state an MQTT meter reports once it has obeyed.
MQTT_RELAY_STATE = {"disconnect": "open", "reconnect": "closed"}


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: ``confirmed``, ``failed`` or ``retry`` (transient), with what the meter said."""

    state: str
    answer: dict[str, Any] | None = None
    error: str | None = None


def confirmed_by(confirm: CommandConfirm, value: float, before: float | None, now: float) -> bool:
    """Whether a read-back ``value`` shows the command done (``before``: the counter before the write)."""
    if confirm.expect == "clock":
        return abs(value - now) <= confirm.tolerance_s
    if confirm.expect == "increment":
        if before is None:
            return False
        bits = 16 * confirm.count if confirm.function in (3, 4) else 1
        return (int(value) - int(before)) % (1 << bits) >= 1
    return int(value) == confirm.expect


@dataclass
class CommandStats:
    """Counters for health, logs and tests."""

    confirmed: int = 0
    failed: int = 0
    retried: int = 0
    expired: int = 0
    by_meter: dict[str, int] = field(default_factory=dict)


#: MQTT command dialects, chosen per meter from its registry address (``{"uri": "mqtt://<style>/<serial>"}``).
DIALECTS = ("json", "tasmota", "ttn")

#: LoRaWAN downlink (f_port 2): one byte, 0 = cut the supply (open the relay, close the valve), 1 = restore.
TTN_PORT = 2
TTN_CODES = {"disconnect": 0, "reconnect": 1}


def dialect_of(address: Any) -> str:
    """The command dialect of an MQTT meter from its ``meter.address`` (json when it does not say)."""
    uri = address.get("uri", "") if isinstance(address, dict) else ""
    if isinstance(uri, str) and uri.startswith("mqtt://"):
        style = uri[len("mqtt://") :].split("/", 1)[0]
        if style in DIALECTS:
            return style
    return "json"


def supply_state(kind: str, decoded: dict[str, Any]) -> bool | None:
    """From a LoRaWAN ``decoded_payload``: True when it shows what ``kind`` asked for, None if it says nothing."""
    if "relay" in decoded:
        return decoded["relay"] == MQTT_RELAY_STATE[kind]
    if "valve" in decoded:
        return decoded["valve"] == ("closed" if kind == "disconnect" else "open")
    return None


@dataclass
class _Wait:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome]
    judge: Any  # (payload bytes) -> Outcome | None


class MqttCommander:
    """Sends commands to MQTT meters and waits for what confirms them (paho-mqtt 2, QoS 1).

    Three dialects, by the meter's registry address: ``json`` (a command topic and an
    acknowledgement topic carrying the meter's state), ``tasmota`` (``ON``/``OFF`` on its POWER
    command topic, its state back on ``stat/…/POWER``) and ``ttn`` (a LoRaWAN downlink pushed to
    The Things Stack; a class A device hears it after one of its uplinks and shows its new state in
    the following ones, so the confirmation is the first uplink that shows it). The topic to wait
    on is subscribed before the command is published and dropped after.
    """

    def __init__(self, config: CommandsConfig, broker: Any, client_id: str, ca_file: str = "") -> None:
        """``broker``: the settings' [mqtt] section (url, username, password source)."""
        self.config = config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.host, self.port = prepare_client(client, broker, ca_file)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client
        self.connected = threading.Event()
        self._waits: dict[str, list[_Wait]] = {}
        self._subacks: dict[int, threading.Event] = {}
        self._early: set[int] = set()  # SUBACKs that arrived before their waiter registered
        self._lock = threading.Lock()

    def start(self) -> None:
        """Connect in the background (paho reconnects on its own)."""
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            with self._lock:
                topics = list(self._waits)
            for topic in topics:  # a reconnection: the waits still need their topics
                client.subscribe(topic, qos=1)
            self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._lock:
            done = self._subacks.pop(mid, None)
            if done is None:
                self._early.add(mid)
        if done is not None:
            done.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            waits = list(self._waits.get(message.topic, ()))
        for wait in waits:
            try:
                outcome = wait.judge(message.payload)
            except Exception as exc:  # a payload we cannot read: log it, keep waiting
                log.warning("meter command: cannot read %r on %s: %s", message.payload[:200], message.topic, exc)
                continue
            if outcome is not None:
                wait.loop.call_soon_threadsafe(_settle, wait.future, outcome)

    async def _exchange(
        self, topic: str, payload: str, wait_topic: str, judge: Any, timeout: float, silence: str, sent: dict[str, Any]
    ) -> Outcome:
        """Subscribe to ``wait_topic``, publish, and wait until ``judge`` makes an outcome of a message there."""
        if not self.connected.is_set():
            return Outcome("retry", error=f"MQTT broker {self.host}:{self.port} not connected")
        loop = asyncio.get_running_loop()
        wait = _Wait(loop, loop.create_future(), judge)
        with self._lock:
            first = wait_topic not in self._waits
            self._waits.setdefault(wait_topic, []).append(wait)
        try:
            if first:
                suback = threading.Event()
                rc, mid = self.client.subscribe(wait_topic, qos=1)
                with self._lock:
                    if mid is not None and mid in self._early:  # the SUBACK beat us here
                        self._early.discard(mid)
                        suback.set()
                    elif mid is not None:
                        self._subacks[mid] = suback
                if rc != mqtt.MQTT_ERR_SUCCESS or not await asyncio.to_thread(suback.wait, 10.0):
                    return Outcome("retry", error=f"could not subscribe to {wait_topic}")
            info = self.client.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return Outcome("retry", error=f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
            try:
                outcome = await asyncio.wait_for(wait.future, timeout)
            except TimeoutError:
                return Outcome("retry", answer={"published": sent}, error=silence)
            return Outcome(outcome.state, {**(outcome.answer or {}), "published": sent}, outcome.error)
        finally:
            with self._lock:
                waits = self._waits.get(wait_topic, [])
                if wait in waits:
                    waits.remove(wait)
                last = not waits
                if last:
                    self._waits.pop(wait_topic, None)
            if last:
                self.client.unsubscribe(wait_topic)

    async def execute(self, serial: str, cmd: mc.MeterCommand, dialect: str = "json") -> Outcome:
        """Send ``cmd`` to ``serial`` in its ``dialect`` and wait for what confirms it."""
        cfg = self.config
        if dialect in ("tasmota", "ttn") and cmd.kind not in MQTT_RELAY_STATE:
            return Outcome("failed", error=f"{dialect} meters take relay commands only, not {cmd.kind}")
        now = time.time()
        if dialect == "tasmota":
            word = "OFF" if cmd.kind == "disconnect" else "ON"
            ack = cfg.tasmota_ack_topic.replace("{serial}", serial)

            def tasmota(payload: bytes) -> Outcome | None:
                state = payload.decode("utf-8", "replace").strip().upper()
                if state not in ("ON", "OFF"):
                    return None
                answer = {"power": state}
                if state == word:
                    return Outcome("confirmed", answer=answer)
                return Outcome("retry", answer=answer, error=f"the meter reports POWER {state}, not {word}")

            topic = cfg.tasmota_topic.replace("{serial}", serial)
            return await self._exchange(
                topic,
                word,
                ack,
                tasmota,
                cfg.mqtt_ack_timeout_s,
                f"no POWER state on {ack} within {cfg.mqtt_ack_timeout_s:g} s",
                {"topic": topic, "payload": word},
            )
        if dialect == "ttn":
            raw = bytes([TTN_CODES[cmd.kind]])
            down = {
                "downlinks": [
                    {
                        "f_port": TTN_PORT,
                        "frm_payload": base64.b64encode(raw).decode("ascii"),
                        "priority": "HIGH",
                        "confirmed": True,
                    }
                ]
            }
            up = cfg.ttn_uplink_topic.replace("{serial}", serial)

            def ttn(payload: bytes) -> Outcome | None:
                decoded = json.loads(payload).get("uplink_message", {}).get("decoded_payload", {})
                shown = supply_state(cmd.kind, decoded)
                if not shown:  # an uplink from before the device heard the downlink: wait for the next
                    return None
                state = {k: decoded[k] for k in ("relay", "valve", "meter_time") if k in decoded}
                return Outcome("confirmed", answer={"uplink": state})

            topic = cfg.ttn_downlink_topic.replace("{serial}", serial)
            return await self._exchange(
                topic,
                json.dumps(down),
                up,
                ttn,
                cfg.ttn_confirm_timeout_s,
                f"no uplink on {up} showed the new state within {cfg.ttn_confirm_timeout_s:g} s",
                {"topic": topic, "frm_payload": raw.hex()},
            )
        body: dict[str, Any] = {
            "id": cmd.id,
            "command": cmd.kind,
            "ts": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        }
        if cmd.kind == "clock_sync":
            body["time"] = int(now)
        ack = cfg.mqtt_ack_topic.replace("{serial}", serial)

        def acknowledged(payload: bytes) -> Outcome | None:
            answer = json.loads(payload)
            if not isinstance(answer, dict) or answer.get("id") != cmd.id:
                return None  # another command's acknowledgement
            return self.judge(cmd.kind, answer, now)

        topic = cfg.mqtt_topic.replace("{serial}", serial)
        return await self._exchange(
            topic,
            json.dumps(body),
            ack,
            acknowledged,
            cfg.mqtt_ack_timeout_s,
            f"no acknowledgement on {ack} within {cfg.mqtt_ack_timeout_s:g} s",
            {"topic": topic, "payload": body},
        )

    @staticmethod
    def judge(kind: str, ack: dict[str, Any], sent_at: float) -> Outcome:
        """What a JSON acknowledgement says about ``kind`` (pure: unit-tested)."""
        if ack.get("result") != "ok":
            return Outcome("failed", answer=ack, error=f"the meter refused: {ack.get('error') or ack.get('result')}")
        if kind in MQTT_RELAY_STATE:
            want = MQTT_RELAY_STATE[kind]
            if ack.get("relay") != want:
                return Outcome("retry", answer=ack, error=f"the meter reports relay {ack.get('relay')!r}, not {want!r}")
        if kind == "clock_sync":
            clock = ack.get("clock")
            if not isinstance(clock, (int, float)) or abs(clock - time.time()) > 10 + (time.time() - sent_at):
                return Outcome("retry", answer=ack, error=f"the meter reports clock {clock!r}, not the time sent")
        return Outcome("confirmed", answer=ack)


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


class CommandRunner:
    """Takes queued commands of this collector's meters and executes them (see the module docstring)."""

    def __init__(
        self,
        name: str,
        config: CommandsConfig,
        settings: Settings,
        database_url: str,
        modbus: Sequence[tuple[Link, Sequence[MeterTarget]]] = (),
        mqtt_commander: MqttCommander | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.settings = settings
        self.database_url = database_url
        self.targets: dict[str, tuple[Link, MeterTarget]] = {m.serial: (link, m) for link, ms in modbus for m in ms}
        self.mqtt = mqtt_commander
        self.stats = CommandStats()
        self._conn: Connection | None = None
        self._db_lock = asyncio.Lock()
        self._ids: dict[int, str] = {}  # meter id -> serial, for the meters this collector reaches
        self._ids_refresh = 0.0
        self._dialects: dict[str, str] = {}  # MQTT meter serial -> json | tasmota | ttn
        self._busy: set[int] = set()  # meters with an attempt under way
        self._in_flight: set[int] = set()  # their commands (not expired under their feet)
        self._unrecorded: list[tuple[mc.MeterCommand, Outcome]] = []
        self._recovered = False

    # -- database (psycopg is blocking: each call runs in a worker thread, one at a time) ------------
    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.database_url, role=db.writer_role(self.settings), autocommit=True)
        return self._conn

    async def _db(self, fn: Any, *args: Any) -> Any:
        async with self._db_lock:

            def call() -> Any:
                try:
                    return fn(self._connection(), *args)
                except Exception:
                    if self._conn is not None and self._conn.closed:
                        self._conn = None
                    raise

            return await asyncio.to_thread(call)

    def _load_meters(self, conn: Connection) -> dict[int, str]:
        serials = list(self.targets)
        rows = conn.execute("SELECT id, serial FROM meter WHERE serial = ANY(%s)", (serials,)).fetchall()
        found = {int(i): s for i, s in rows}
        if self.mqtt is not None:
            rows = conn.execute(
                "SELECT id, serial, address FROM meter WHERE protocol = 'mqtt' AND NOT serial = ANY(%s)", (serials,)
            ).fetchall()
            found.update({int(i): s for i, s, _ in rows})
            self._dialects = {s: dialect_of(address) for _, s, address in rows}
        return found

    def _recover(self, conn: Connection) -> int:
        """Commands this collector had sent when it stopped go back to the queue (the meter may not have acted)."""
        rows = conn.execute(
            "SELECT id FROM meter_command WHERE state = 'sent' AND collector = %s", (self.name,)
        ).fetchall()
        for (command_id,) in rows:
            mc.retry_later(
                conn, int(command_id), self.name, "the collector stopped while the command was in flight", timedelta(0)
            )
        return len(rows)

    def _due(self, conn: Connection) -> list[int]:
        ids = list(self._ids)
        expired = mc.expire_overdue(conn, self.name, ids, list(self._in_flight))
        self.stats.expired += len(expired)
        rows = conn.execute(
            "SELECT DISTINCT meter_id FROM meter_command WHERE meter_id = ANY(%s) AND state = 'queued' "
            "AND not_before <= now() AND expires_at > now()",
            (ids,),
        ).fetchall()
        return [int(r[0]) for r in rows]

    # -- the loop ------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Check the queue every ``check_every_s`` until ``stop`` is set; never ends on an error."""
        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            try:
                await self.cycle(tasks)
            except Exception as exc:  # the database away, a bug: log, carry on
                log.warning("meter commands: %s; trying again in %.0f s", exc, self.config.check_every_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.check_every_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._conn is not None:
            self._conn.close()

    async def cycle(self, tasks: set[asyncio.Task[None]] | None = None) -> None:
        """One look at the queue: expire, then start the next command of every meter that has one due."""
        while self._unrecorded:  # outcomes the database could not take last time, first
            cmd, outcome = self._unrecorded[0]
            try:
                await self._db(self._record, cmd, outcome)
            except psycopg.OperationalError:
                raise  # still away: try again next cycle
            except Exception:  # refused for good: keep it in the log rather than block the queue
                log.exception("meter command %d: outcome %s could not be recorded", cmd.id, outcome)
            self._unrecorded.pop(0)
            self._in_flight.discard(cmd.id)
            self._busy.discard(cmd.meter_id)
        if not self._ids or time.monotonic() >= self._ids_refresh:  # meters registered since are picked up
            self._ids = await self._db(self._load_meters)
            self._ids_refresh = time.monotonic() + 30.0
        if not self._recovered:
            if n := await self._db(self._recover):
                log.warning("meter commands: %d command(s) in flight at the last stop put back in the queue", n)
            self._recovered = True
        for meter_id in await self._db(self._due):
            if meter_id in self._busy:
                continue
            self._busy.add(meter_id)
            task = asyncio.create_task(self._one(meter_id), name=f"command/{self._ids[meter_id]}")
            if tasks is not None:
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                await task

    async def _one(self, meter_id: int) -> None:
        cmd: mc.MeterCommand | None = None
        try:
            cmd = await self._db(mc.claim_next, meter_id, self.name)
            if cmd is None:
                return
            self._in_flight.add(cmd.id)
            serial = self._ids[meter_id]
            log.info(
                "meter command %d: %s %s (attempt %d, asked by %s)",
                cmd.id,
                cmd.kind,
                serial,
                cmd.attempts,
                cmd.requested_by,
            )
            try:
                outcome = await self.execute(serial, cmd)
            except Exception as exc:  # a bug must not leave the command 'sent' for ever
                log.exception("meter command %d failed unexpectedly", cmd.id)
                outcome = Outcome("retry", error=f"collector error: {exc!r}")
            try:
                await self._db(self._record, cmd, outcome)
            except Exception as exc:  # the database went away: keep the outcome, record it at a later cycle
                log.warning("meter command %d: outcome not recorded yet (%s); will try again", cmd.id, exc)
                self._unrecorded.append((cmd, outcome))
                cmd = None  # stays in flight (and the meter busy) until recorded
        except Exception as exc:  # the claim failed (database away): nothing was sent
            log.warning("meter %s: no command taken: %s", self._ids.get(meter_id), exc)
        finally:
            if cmd is not None or not any(c.meter_id == meter_id for c, _ in self._unrecorded):
                self._busy.discard(meter_id)
            if cmd is not None:
                self._in_flight.discard(cmd.id)

    def _record(self, conn: Connection, cmd: mc.MeterCommand, outcome: Outcome) -> None:
        serial = cmd.serial
        now = mc.command_status(conn, cmd.id)
        if now.state != "sent":  # finished meanwhile (expired by another collector): keep the answer anyway
            mc.record_event(
                conn,
                cmd.id,
                now.state,
                self.name,
                late_outcome=outcome.state,
                answer=outcome.answer,
                error=outcome.error,
            )
            log.warning("meter command %d was %s before its outcome (%s) came back", cmd.id, now.state, outcome.state)
            return
        if outcome.state == "confirmed":
            mc.confirm(conn, cmd.id, self.name, outcome.answer or {})
            self.stats.confirmed += 1
            log.info("meter command %d: %s %s confirmed: %s", cmd.id, cmd.kind, serial, outcome.answer)
        elif outcome.state == "failed" or cmd.attempts >= self.config.max_attempts:
            error = outcome.error or "failed"
            if outcome.state != "failed":
                error = f"gave up after {cmd.attempts} attempt(s): {error}"
            mc.fail(conn, cmd.id, self.name, error, outcome.answer)
            self.stats.failed += 1
            log.warning("meter command %d: %s %s failed: %s", cmd.id, cmd.kind, serial, error)
        else:
            delay = min(self.config.retry_base_s * 2 ** (cmd.attempts - 1), self.config.retry_max_s)
            mc.retry_later(
                conn, cmd.id, self.name, outcome.error or "unconfirmed", timedelta(seconds=delay), outcome.answer
            )
            self.stats.retried += 1
            log.warning(
                "meter command %d: %s %s not confirmed (%s); retry in %.0f s",
                cmd.id,
                cmd.kind,
                serial,
                outcome.error,
                delay,
            )
        self.stats.by_meter[serial] = self.stats.by_meter.get(serial, 0) + 1

    async def execute(self, serial: str, cmd: mc.MeterCommand) -> Outcome:
        """One attempt at ``cmd`` on ``serial``, over Modbus or MQTT."""
        target = self.targets.get(serial)
        if target is not None:
            link, meter = target
            return await execute_modbus(link, meter, cmd.kind)
        if self.mqtt is not None:
            return await self.mqtt.execute(serial, cmd, self._dialects.get(serial, "json"))
        return Outcome("failed", error=f"collector {self.name} cannot reach meter {serial}")


async def execute_modbus(link: Link, meter: MeterTarget, kind: str) -> Outcome:
    """Write ``kind``'s register(s) as the meter's profile says, then read back until confirmed."""
    spec = meter.profile.commands.get(kind)
    if spec is None:
        able = ", ".join(sorted(meter.profile.commands)) or "none"
        return Outcome(
            "failed", error=f"model {meter.profile.model} has no {kind} command in its profile (it takes: {able})"
        )
    confirm = spec.confirm
    read_back = Operation(confirm.function, confirm.address, confirm.count)

    async def read() -> float:
        words = await link.execute(meter.unit, read_back)
        return float(words[0]) if confirm.function in (1, 2) else decode(confirm.entry, words)

    where = f"{link.name} unit {meter.unit}"
    async with meter.lock:  # not in the middle of one of the meter's polls
        try:
            before = await read() if confirm.expect == "increment" else None
            now = time.time()
            words = spec.write.registers(now)
            write = Operation(spec.write.function, spec.write.address, len(words), tuple(words))
            await link.execute(meter.unit, write)
        except ReadError as exc:
            refusal: dict[str, Any] = {"link": where, "error_kind": exc.kind}
            if exc.kind == "exception" and exc.code not in TRANSIENT_EXCEPTIONS:  # the meter answered, and said no
                return Outcome("failed", answer=refusal, error=f"the meter refused the write: {exc}")
            return Outcome("retry", answer=refusal, error=f"write not acknowledged: {exc}")
        answer: dict[str, Any] = {
            "link": where,
            "wrote": {"function": write.function, "address": write.address, "values": words},
        }
        if before is not None:
            answer["before"] = before
        await asyncio.sleep(spec.settle_s)
        deadline = time.monotonic() + spec.confirm_within_s
        value: float | None = None
        while True:
            try:
                value = await read()
            except ReadError as exc:
                answer["read_back_error"] = str(exc)
                if exc.kind == "exception" and exc.code not in TRANSIENT_EXCEPTIONS:
                    return Outcome("failed", answer=answer, error=f"the read-back was refused: {exc}")
                if time.monotonic() >= deadline:
                    return Outcome("retry", answer=answer, error=f"no read-back: {exc}")
            else:
                answer["read_back"] = {"function": confirm.function, "address": confirm.address, "value": value}
                if confirmed_by(confirm, value, before, time.time()):
                    return Outcome("confirmed", answer=answer)
                if time.monotonic() >= deadline:
                    return Outcome(
                        "retry",
                        answer=answer,
                        error=f"the read-back shows {value:g}, expected {_expected(confirm, before)}",
                    )
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _expected(confirm: CommandConfirm, before: float | None) -> str:
    if confirm.expect == "clock":
        return f"the time written (± {confirm.tolerance_s:g} s)"
    if confirm.expect == "increment":
        return f"more than {before:g}" if before is not None else "an increment"
    return str(confirm.expect)
