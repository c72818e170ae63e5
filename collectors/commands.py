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
import contextlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import Connection

from collectors.config import CommandsConfig, compile_topic
from collectors.modbus import Link, MeterTarget, Operation, ReadError
from collectors.mqtt import broker_password
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


class MqttCommander:
    """Publishes commands to MQTT meters and waits for their acknowledgements (paho-mqtt 2, QoS 1)."""

    def __init__(self, config: CommandsConfig, broker: Any, client_id: str, ca_file: str = "") -> None:
        """``broker``: the settings' [mqtt] section (url, username, password source)."""
        self.config = config
        url = urlparse(broker.url or "mqtt://127.0.0.1:1883")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        self.ack_filter, self.ack_pattern = compile_topic(config.mqtt_ack_topic)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if broker.username:
            client.username_pw_set(broker.username, broker_password(broker))
        if url.scheme == "mqtts":
            client.tls_set(ca_certs=ca_file or None)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self.client = client
        self.connected = threading.Event()
        self._waiting: dict[tuple[str, int], tuple[asyncio.AbstractEventLoop, asyncio.Future[dict[str, Any]]]] = {}
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
            client.subscribe(self.ack_filter, qos=1)
            self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        match = self.ack_pattern.match(message.topic)
        if match is None:
            return
        try:
            body = json.loads(message.payload)
            key = (match.group("serial"), int(body["id"]))
        except (ValueError, KeyError, TypeError):
            log.warning("command acknowledgement on %s is not JSON with an id: %r", message.topic,
                        message.payload[:200])  # fmt: skip
            return
        with self._lock:
            waiting = self._waiting.pop(key, None)
        if waiting is None:
            log.info("acknowledgement of command %s from %s that nobody waits for (late?)", key[1], key[0])
            return
        loop, future = waiting
        loop.call_soon_threadsafe(_settle, future, body)

    async def execute(self, serial: str, cmd: mc.MeterCommand) -> Outcome:
        """Publish ``cmd`` to ``serial`` and wait for its acknowledgement."""
        if not self.connected.is_set():
            return Outcome("retry", error=f"MQTT broker {self.host}:{self.port} not connected")
        now = time.time()
        body: dict[str, Any] = {"id": cmd.id, "command": cmd.kind,
                                "ts": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")}
        if cmd.kind == "clock_sync":
            body["time"] = int(now)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        key = (serial, cmd.id)
        with self._lock:
            self._waiting[key] = (loop, future)
        topic = self.config.mqtt_topic.replace("{serial}", serial)
        try:
            info = self.client.publish(topic, json.dumps(body), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return Outcome("retry", error=f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
            try:
                ack = await asyncio.wait_for(future, self.config.mqtt_ack_timeout_s)
            except TimeoutError:
                return Outcome("retry", answer={"published": topic},
                               error=f"no acknowledgement on {self.config.mqtt_ack_topic.replace('{serial}', serial)} "
                                     f"within {self.config.mqtt_ack_timeout_s:g} s")  # fmt: skip
        finally:
            with self._lock:
                self._waiting.pop(key, None)
        return self.judge(cmd.kind, ack, now)

    @staticmethod
    def judge(kind: str, ack: dict[str, Any], sent_at: float) -> Outcome:
        """What an acknowledgement says about ``kind`` (pure: unit-tested)."""
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


def _settle(future: asyncio.Future[dict[str, Any]], body: dict[str, Any]) -> None:
    if not future.done():
        future.set_result(body)


class CommandRunner:
    """Takes queued commands of this collector's meters and executes them (see the module docstring)."""

    def __init__(self, name: str, config: CommandsConfig, settings: Settings, database_url: str,
                 modbus: Sequence[tuple[Link, Sequence[MeterTarget]]] = (),
                 mqtt_commander: MqttCommander | None = None) -> None:  # fmt: skip
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
        self._busy: set[int] = set()
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
            rows = conn.execute("SELECT id, serial FROM meter WHERE protocol = 'mqtt' AND NOT serial = ANY(%s)",
                                (serials,)).fetchall()  # fmt: skip
            found.update({int(i): s for i, s in rows})
        return found

    def _recover(self, conn: Connection) -> int:
        """Commands this collector had sent when it stopped go back to the queue (the meter may not have acted)."""
        rows = conn.execute("SELECT id FROM meter_command WHERE state = 'sent' AND collector = %s",
                            (self.name,)).fetchall()  # fmt: skip
        for (command_id,) in rows:
            mc.retry_later(conn, int(command_id), self.name, "the collector stopped while the command was in flight",
                           timedelta(0))  # fmt: skip
        return len(rows)

    def _due(self, conn: Connection) -> list[int]:
        ids = list(self._ids)
        expired = mc.expire_overdue(conn, self.name, ids)
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
        try:
            cmd: mc.MeterCommand | None = await self._db(mc.claim_next, meter_id, self.name)
            if cmd is None:
                return
            serial = self._ids[meter_id]
            log.info("meter command %d: %s %s (attempt %d, asked by %s)", cmd.id, cmd.kind, serial, cmd.attempts,
                     cmd.requested_by)  # fmt: skip
            try:
                outcome = await self.execute(serial, cmd)
            except Exception as exc:  # a bug must not leave the command 'sent' for ever
                log.exception("meter command %d failed unexpectedly", cmd.id)
                outcome = Outcome("retry", error=f"collector error: {exc!r}")
            await self._db(self._record, cmd, outcome)
        finally:
            self._busy.discard(meter_id)

    def _record(self, conn: Connection, cmd: mc.MeterCommand, outcome: Outcome) -> None:
        serial = cmd.serial
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
            mc.retry_later(conn, cmd.id, self.name, outcome.error or "unconfirmed", timedelta(seconds=delay),
                           outcome.answer)  # fmt: skip
            self.stats.retried += 1
            log.warning("meter command %d: %s %s not confirmed (%s); retry in %.0f s", cmd.id, cmd.kind, serial,
                        outcome.error, delay)  # fmt: skip
        self.stats.by_meter[serial] = self.stats.by_meter.get(serial, 0) + 1

    async def execute(self, serial: str, cmd: mc.MeterCommand) -> Outcome:
        """One attempt at ``cmd`` on ``serial``, over Modbus or MQTT."""
        target = self.targets.get(serial)
        if target is not None:
            link, meter = target
            return await execute_modbus(link, meter, cmd.kind)
        if self.mqtt is not None:
            return await self.mqtt.execute(serial, cmd)
        return Outcome("failed", error=f"collector {self.name} cannot reach meter {serial}")


async def execute_modbus(link: Link, meter: MeterTarget, kind: str) -> Outcome:
    """Write ``kind``'s register(s) as the meter's profile says, then read back until confirmed."""
    spec = meter.profile.commands.get(kind)
    if spec is None:
        able = ", ".join(sorted(meter.profile.commands)) or "none"
        return Outcome("failed", error=f"model {meter.profile.model} has no {kind} command in its profile "
                                       f"(it takes: {able})")  # fmt: skip
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
        answer: dict[str, Any] = {"link": where, "wrote": {"function": write.function, "address": write.address,
                                                           "values": words}}  # fmt: skip
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
                    return Outcome("retry", answer=answer, error=f"the read-back shows {value:g}, expected "
                                                                 f"{_expected(confirm, before)}")  # fmt: skip
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _expected(confirm: CommandConfirm, before: float | None) -> str:
    if confirm.expect == "clock":
        return f"the time written (± {confirm.tolerance_s:g} s)"
    if confirm.expect == "increment":
        return f"more than {before:g}" if before is not None else "an increment"
    return str(confirm.expect)
