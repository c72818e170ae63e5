"""Modbus pollers: TCP gateways and RTU serial lines, asyncio, one dead meter never stalls the rest.

A *link* is where requests go: a TCP gateway (a small pool of connections, each carrying one
request at a time, so ``max_connections`` bounds the gateway's concurrency; a *serialising* gateway,
an RS-485 bus behind TCP, gets one request at a time) or an RTU line (one serial port through
pyserial, one request at a time under a lock). On an RTU line every reply is checked against its
request — unit id, function, byte count, CRC, and nothing more on the wire — and after a timeout
or a reply that does not match, the line is drained (read until it has been silent for a while,
then the input buffer is reset), so a device that answers late is never taken as the answer to the
next request. Each meter's poll classes (``energy``, ``instant``, ``events`` …) run on their own
period with jitter; a poll's timestamp is taken when it starts.

A failed poll (timeout, connection error, CRC error, Modbus exception) counts against the meter and
backs it off exponentially (``backoff_base`` … ``backoff_max`` seconds). The backoff belongs to the
meter, not to a poll class: a meter's polls run one at a time and are skipped while it is backed
off, so a dead meter costs its line one timeout per backoff period (5, 10, 20 … s) whatever the
number of its poll classes. Modbus exception responses and values that fail to decode are kept as
dead letters with the meter and the cause.
Decoded values are expressed in their channel's unit and checked against what the device can
physically report (``collectors.plausibility``: range, sign, rate of change of an index); an
implausible value is a dead letter naming the meter, the register, the raw registers, the decoded
value and the rule, never a reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import serial
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import ExceptionResponse

from collectors.plan import ReadBlock, plan_reads
from collectors.plausibility import Guard, Implausible, judge_poll
from releve.model import EventKind, MeterEvent, Reading, Rejected, Source
from releve.profiles import EVENT_KINDS_BY_CODE, DeviceProfile, RegisterEntry, decode

log = logging.getLogger(__name__)

Sink = Callable[[Sequence[Reading], Sequence[MeterEvent], Sequence[Rejected]], None]

#: A link is shown connected while something on it answered within this many seconds.
CONNECTED_WITHIN_S = 120.0

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ReadError(Exception):
    """A request failed. ``kind`` is one of timeout, connection, crc, mismatch, exception, decode.

    ``mismatch``: an RTU reply that is not the answer to the request (another unit id, function or
    byte count, or more bytes than one reply), typically a device answering after its timeout.
    """

    def __init__(self, kind: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code  # the Modbus exception code, for kind ``exception``


@dataclass
class MeterHealth:
    """Per-meter communication health (what the control room sees)."""

    serial: str
    link: str
    polls: int = 0
    good: int = 0
    good_by_class: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    consecutive_failures: int = 0
    backoff_until: float = 0.0
    backoff_s: float = 0.0  # the last backoff period (0 once a poll succeeds)
    last_good: datetime | None = None
    last_error: str | None = None
    latency_ms: float | None = None

    @property
    def success_rate(self) -> float:
        return self.good / self.polls if self.polls else 0.0

    @property
    def backed_off(self) -> bool:
        return time.monotonic() < self.backoff_until


@dataclass
class MeterTarget:
    """One meter on a link: its unit id, profile, read plans per poll class and health."""

    serial: str
    unit: int
    profile: DeviceProfile
    health: MeterHealth
    plans: dict[str, list[ReadBlock]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)  # one poll of the meter at a time
    last_status: int | None = None
    last_event_counter: int | None = None

    @classmethod
    def build(cls, serial: str, unit: int, profile: DeviceProfile, link: str, max_filler: int = 16) -> MeterTarget:
        by_class: dict[str, list[RegisterEntry]] = {}
        for entry in profile.registers:
            by_class.setdefault(entry.poll_class, []).append(entry)
        plans = {name: plan_reads(entries, max_filler=max_filler) for name, entries in by_class.items()}
        return cls(serial, unit, profile, MeterHealth(serial, link), plans)


@dataclass(frozen=True)
class Operation:
    """A request other than a merged register read: a command's write or its read-back.

    ``function`` 1/2 (read ``count`` coils / discrete inputs: 0/1 each), 3/4 (read ``count``
    registers), 5 (write one coil: ``values`` = (0 or 1,)), 6 (write one register), 16 (write
    ``values`` to consecutive registers). Returns what was read (bits as 0/1), or the values written.
    """

    function: int
    address: int
    count: int = 1
    values: tuple[int, ...] = ()

    @property
    def what(self) -> str:
        if self.function in (5, 6, 16):
            return f"function {self.function} address {self.address} values {list(self.values)}"
        return f"function {self.function} address {self.address} count {self.count}"


class Link:
    """Where requests go. Subclasses implement ``_request`` (merged reads) and ``_operate`` (the rest)."""

    name: str

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self.requests = 0
        self.failures = 0
        self.last_answer: float | None = None  # time.monotonic() of the last answer from anything on the link

    @property
    def connected(self) -> bool | None:
        """Whether something answered on the link lately (None before the first request)."""
        if self.requests == 0:
            return None
        return self.last_answer is not None and time.monotonic() - self.last_answer < CONNECTED_WITHIN_S

    async def read(self, unit: int, block: ReadBlock) -> list[int]:
        """The registers of ``block`` from ``unit``, or ReadError saying why not."""
        self.requests += 1
        try:
            registers = await self._request(unit, block)
        except ReadError as exc:
            self.failures += 1
            if exc.kind in ("exception", "decode", "crc", "mismatch"):  # a reply came back: the link itself works
                self.last_answer = time.monotonic()
            elif exc.kind == "connection":  # refused or dropped: the link is down now, not in a while
                self.last_answer = None
            raise
        self.last_answer = time.monotonic()
        return registers

    async def _request(self, unit: int, block: ReadBlock) -> list[int]:
        raise NotImplementedError

    async def execute(self, unit: int, op: Operation) -> list[int]:
        """Run ``op`` (a write, or a read of bits or registers) on ``unit``; ReadError saying why not."""
        self.requests += 1
        try:
            return await self._operate(unit, op)
        except ReadError:
            self.failures += 1
            raise

    async def _operate(self, unit: int, op: Operation) -> list[int]:
        raise NotImplementedError

    def close(self) -> None:
        """Close connections."""

    @staticmethod
    async def _call_op(client: AsyncModbusTcpClient, unit: int, op: Operation) -> list[int]:
        what = op.what
        try:
            if op.function == 1:
                response = await client.read_coils(op.address, count=op.count, device_id=unit)
            elif op.function == 2:
                response = await client.read_discrete_inputs(op.address, count=op.count, device_id=unit)
            elif op.function == 3:
                response = await client.read_holding_registers(op.address, count=op.count, device_id=unit)
            elif op.function == 4:
                response = await client.read_input_registers(op.address, count=op.count, device_id=unit)
            elif op.function == 5:
                response = await client.write_coil(op.address, bool(op.values[0]), device_id=unit)
            elif op.function == 6:
                response = await client.write_register(op.address, op.values[0], device_id=unit)
            elif op.function == 16:
                response = await client.write_registers(op.address, list(op.values), device_id=unit)
            else:
                raise ValueError(f"function {op.function} is not supported")
        except ConnectionException as exc:
            raise ReadError("connection", f"{what}: connection failed: {exc}") from exc
        except ModbusIOException as exc:
            text = str(exc).lower()
            kind = "crc" if "crc" in text or "check" in text else "timeout"
            raise ReadError(kind, f"{what}: no valid response ({exc})") from exc
        except TimeoutError as exc:
            raise ReadError("timeout", f"{what}: timed out") from exc
        except ModbusException as exc:
            raise ReadError("timeout", f"{what}: {exc}") from exc
        if isinstance(response, ExceptionResponse) or response.isError():
            code = getattr(response, "exception_code", 0)
            name = EXCEPTION_NAMES.get(code, "unknown")
            raise ReadError("exception", f"{what}: Modbus exception {code} ({name})", code)
        if op.function in (1, 2):
            return [int(b) for b in response.bits[: op.count]]
        if op.function in (3, 4):
            return list(response.registers)
        return list(op.values)

    @classmethod
    async def _call(cls, client: AsyncModbusTcpClient, unit: int, block: ReadBlock) -> list[int]:
        """A merged read: the same request and error mapping as any operation, plus the count check."""
        op = Operation(4 if block.function == 4 else 3, block.address, block.count)
        registers = await cls._call_op(client, unit, op)
        if len(registers) != block.count:
            raise ReadError("decode", f"{op.what}: {len(registers)} registers in the response")
        return registers


class TcpGateway(Link):
    """A Modbus TCP gateway: ``max_connections`` connections, one request in flight on each.

    ``serialise``: the gateway forwards to an RS-485 bus and answers one request at a time, so the
    collector sends one at a time (one connection): requests queued inside the gateway would
    otherwise spend their timeout waiting for the others and fail spuriously.
    """

    def __init__(
        self, name: str, host: str, port: int, max_connections: int = 2, timeout: float = 2.0, serialise: bool = False
    ) -> None:
        super().__init__(name, timeout)
        self.host, self.port = host, port
        self.serialise = serialise
        self.max_connections = 1 if serialise else max_connections
        self._clients: list[AsyncModbusTcpClient] = []
        self._free: asyncio.Queue[AsyncModbusTcpClient] | None = None

    async def _request(self, unit: int, block: ReadBlock) -> list[int]:
        async with self._connected() as client:
            return await self._call(client, unit, block)

    async def _operate(self, unit: int, op: Operation) -> list[int]:
        async with self._connected() as client:
            return await self._call_op(client, unit, op)

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[AsyncModbusTcpClient]:
        """A connection of the pool, (re)connected, given back afterwards; ReadError if the gateway does not answer."""
        client = await self._take()
        try:
            if not client.connected and not await client.connect():
                raise ReadError("connection", f"gateway {self.host}:{self.port} does not answer")
            yield client
        finally:
            self._release(client)

    def _release(self, client: AsyncModbusTcpClient) -> None:
        assert self._free is not None
        self._free.put_nowait(client)

    async def _take(self) -> AsyncModbusTcpClient:
        if self._free is None:  # pymodbus clients belong to the loop that creates them: create them here
            self._free = asyncio.Queue()
            for i in range(self.max_connections):
                client = AsyncModbusTcpClient(
                    self.host,
                    port=self.port,
                    timeout=self.timeout,
                    retries=0,
                    reconnect_delay=0.5,
                    reconnect_delay_max=10,
                    name=f"{self.name}#{i}",
                )
                self._clients.append(client)
                self._free.put_nowait(client)
        return await self._free.get()

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _settle(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


def rtu_request(unit: int, block: ReadBlock) -> bytes:
    """The RTU frame of a read request: unit, function, address, count, CRC (pymodbus's CRC-16)."""
    return rtu_operation(unit, Operation(block.function, block.address, block.count))


def rtu_reply(unit: int, block: ReadBlock, data: bytes) -> list[int] | None:
    """The registers in ``data`` if it is exactly the reply to reading ``block`` from ``unit``.

    None while ``data`` is a correct beginning of that reply; ReadError ``mismatch`` when it is not
    the reply to this request (unit id, function, byte count, or bytes beyond one reply), ``crc``
    when the CRC is wrong, ``exception`` for a Modbus exception reply from this unit and function.
    """
    return rtu_operation_reply(unit, Operation(block.function, block.address, block.count), data)


def rtu_operation(unit: int, op: Operation) -> bytes:
    """The RTU frame of ``op``: reads of bits/registers, writes 05 (0xFF00 on), 06 and 16, with the CRC."""
    if op.function in (1, 2, 3, 4):
        body = struct.pack(">BBHH", unit, op.function, op.address, op.count)
    elif op.function == 5:
        body = struct.pack(">BBHH", unit, 5, op.address, 0xFF00 if op.values[0] else 0x0000)
    elif op.function == 6:
        body = struct.pack(">BBHH", unit, 6, op.address, op.values[0])
    elif op.function == 16:
        n = len(op.values)
        body = struct.pack(f">BBHHB{n}H", unit, 16, op.address, n, 2 * n, *op.values)
    else:
        raise ValueError(f"function {op.function} is not supported")
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


def rtu_operation_reply(unit: int, op: Operation, data: bytes) -> list[int] | None:
    """What ``data`` answers to ``op`` (as :meth:`Link.execute` returns it), None while incomplete.

    Reads of registers carry ``2 × count`` bytes; reads of bits ``ceil(count / 8)`` bytes, least
    significant bit first; writes 05 and 06 are echoed whole; 16 answers address and count. None
    while ``data`` is a correct beginning of the reply; ReadError ``mismatch`` when it is not the
    reply to this request (unit id, function, byte count, or bytes beyond one reply), ``crc`` when
    the CRC is wrong, ``exception`` (with its code) for a Modbus exception reply from this unit and
    function.
    """
    what = op.what
    if not data:
        return None
    if data[0] != unit:
        raise ReadError("mismatch", f"{what}: reply from unit {data[0]}, not {unit} ({data[:8].hex(' ')})")
    if len(data) < 2:
        return None
    function = data[1]
    if function == op.function | 0x80:
        need = 5
    elif function != op.function:
        raise ReadError("mismatch", f"{what}: reply to function {function & 0x7F}, not {op.function}")
    elif op.function in (1, 2, 3, 4):
        nbytes = (op.count + 7) // 8 if op.function in (1, 2) else 2 * op.count
        if len(data) < 3:
            return None
        if data[2] != nbytes:
            raise ReadError("mismatch", f"{what}: reply carries {data[2]} bytes, not {nbytes}")
        need = 5 + nbytes
    else:
        need = 8
    if len(data) < need:
        return None
    if len(data) > need:
        raise ReadError("mismatch", f"{what}: {len(data) - need} bytes more than one reply on the line")
    if FramerRTU.compute_CRC(data[: need - 2]) != int.from_bytes(data[need - 2 : need], "big"):
        raise ReadError("crc", f"{what}: CRC error in the reply ({data.hex(' ')})")
    if function & 0x80:
        code = data[2]
        raise ReadError("exception", f"{what}: Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})", code)
    if op.function in (3, 4):
        return list(struct.unpack(f">{op.count}H", data[3 : need - 2]))
    if op.function in (1, 2):
        bits = int.from_bytes(data[3 : need - 2], "little")
        return [bits >> i & 1 for i in range(op.count)]
    if data[: need - 2] != rtu_operation(unit, op)[: need - 2] and op.function in (5, 6):
        raise ReadError("mismatch", f"{what}: the echo differs from the request ({data.hex(' ')})")
    if op.function == 16 and struct.unpack(">HH", data[2:6]) != (op.address, len(op.values)):
        raise ReadError("mismatch", f"{what}: reply for another address or count ({data.hex(' ')})")
    return list(op.values)


class RtuLine(Link):
    """An RS-485 line on a serial port: one request at a time, whatever the number of meters.

    The port is opened with pyserial and read through the event loop. A request waits until the
    line has been silent for the RTU inter-frame gap (3.5 characters), discards stray bytes, sends,
    and accepts only the exact reply (see :func:`rtu_reply`), which must be followed by the gap
    too. After a timeout or a reply that does not match, the line is *drained*: read until silent
    for ``drain`` seconds (default: the timeout, at most ``4 × drain`` in all), then the input
    buffer is reset; ``late_bytes`` counts what was thrown away.
    """

    def __init__(
        self,
        name: str,
        port: str,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        timeout: float = 1.0,
        drain: float | None = None,
    ) -> None:
        super().__init__(name, timeout)
        self.port = port
        self.baudrate, self.parity, self.stopbits = baudrate, parity, stopbits
        self.drain = timeout if drain is None else drain
        bits = 1 + 8 + (parity != "N") + stopbits
        # Modbus over serial line, 2.5.1.1: 3.5 characters, a fixed 1.75 ms above 19200 baud.
        self.gap = 3.5 * bits / baudrate if baudrate <= 19200 else 0.00175
        self.late_bytes = 0
        self._serial: serial.Serial | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bool] | None = None
        self._last_byte = 0.0

    def _open(self) -> None:
        if self._serial is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            port = serial.Serial(
                self.port,
                baudrate=self.baudrate,
                parity=self.parity,
                stopbits=self.stopbits,
                bytesize=8,
                timeout=0,
                write_timeout=self.timeout,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ReadError("connection", f"serial port {self.port} cannot be opened: {exc}") from exc
        self._serial = port
        self._buffer.clear()
        self._loop.add_reader(port.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._serial is not None and self._loop is not None
        try:
            data = self._serial.read(4096)
        except (serial.SerialException, OSError) as exc:
            log.warning("serial port %s: %s; reopening at the next request", self.port, exc)
            self.close()
            if self._waiter is not None:
                _settle(self._waiter, True)
            return
        if data:
            self._buffer += data
            self._last_byte = self._loop.time()
            if self._waiter is not None:
                _settle(self._waiter, True)

    async def _wait_bytes(self, until: float) -> bool:
        """Wait for more bytes until loop time ``until``; False when none came."""
        assert self._loop is not None
        if until <= self._loop.time():
            return False
        waiter: asyncio.Future[bool] = self._loop.create_future()  # cheaper than wait_for on an Event
        self._waiter = waiter
        timer = self._loop.call_at(until, _settle, waiter, False)
        try:
            return await waiter and self._serial is not None
        finally:
            timer.cancel()
            self._waiter = None

    async def _silence(self, quiet: float, limit: float) -> None:
        """Return once no byte has arrived for ``quiet`` seconds (or ``limit`` seconds have passed)."""
        assert self._loop is not None
        started = self._loop.time()
        give_up = started + limit
        while self._serial is not None:
            until = min(max(self._last_byte, started) + quiet, give_up)
            if self._loop.time() >= until:
                return
            await self._wait_bytes(until)

    def _discard(self) -> int:
        thrown = len(self._buffer)
        self._buffer.clear()
        if self._serial is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                thrown += len(self._serial.read(4096))
                self._serial.reset_input_buffer()
        self.late_bytes += thrown
        return thrown

    async def _request(self, unit: int, block: ReadBlock) -> list[int]:
        what = f"function {block.function} address {block.address} count {block.count}"
        return await self._exchange(unit, rtu_request(unit, block), lambda data: rtu_reply(unit, block, data), what)

    async def _operate(self, unit: int, op: Operation) -> list[int]:
        return await self._exchange(
            unit, rtu_operation(unit, op), lambda data: rtu_operation_reply(unit, op, data), op.what
        )

    async def _exchange(
        self, unit: int, frame: bytes, parse: Callable[[bytes], list[int] | None], what: str
    ) -> list[int]:
        """Send ``frame`` under the line's lock and return what ``parse`` makes of the exact reply."""
        if self._lock is None:  # created in the polling loop (asyncio objects belong to one loop)
            self._lock = asyncio.Lock()
        async with self._lock:
            self._open()
            assert self._serial is not None and self._loop is not None
            if self._loop.time() - self._last_byte < self.gap:  # the inter-frame silence
                await self._silence(self.gap, self.timeout)
            if stray := self._discard():
                log.warning("line %s: %d stray bytes discarded before a request", self.name, stray)
            try:
                self._serial.write(frame)
            except (serial.SerialException, OSError) as exc:
                self.close()
                raise ReadError("connection", f"serial port {self.port}: {exc}") from exc
            try:
                return await self._receive(parse, what)
            except ReadError as exc:
                if exc.kind in ("timeout", "mismatch", "crc"):
                    await self._silence(self.drain, 4 * self.drain)
                    if thrown := self._discard():
                        log.warning(
                            "line %s: %d bytes drained after %s from unit %d (a late reply?)",
                            self.name,
                            thrown,
                            exc.kind,
                            unit,
                        )
                raise

    async def _receive(self, parse: Callable[[bytes], list[int] | None], what: str) -> list[int]:
        assert self._loop is not None
        deadline = self._loop.time() + self.timeout
        while True:
            registers = parse(bytes(self._buffer))
            if registers is not None:
                # A frame ends with a silence: bytes right behind it mean it was not this reply. The
                # silence counts from the reply's last byte, not from when it was parsed.
                if await self._wait_bytes(self._last_byte + self.gap):
                    parse(bytes(self._buffer))  # raises: bytes beyond one reply
                self._buffer.clear()
                return registers
            if self._serial is None:
                raise ReadError("connection", f"serial port {self.port} closed")
            if not await self._wait_bytes(deadline):
                if self._serial is None:
                    raise ReadError("connection", f"serial port {self.port} closed")
                raise ReadError("timeout", f"{what}: timed out ({len(self._buffer)} bytes received)")

    def close(self) -> None:
        if self._serial is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._serial.fileno())
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None


@dataclass
class PollSettings:
    """Periods per poll class, jitter, retries and backoff."""

    periods: dict[str, float] = field(default_factory=lambda: {"energy": 900.0, "instant": 60.0, "events": 60.0})
    default_period: float = 60.0
    jitter: float = 0.1
    retries: int = 1
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    align: bool = True
    first_poll_spread: float = 5.0


class Poller:
    """Polls every meter of every link on its poll classes' periods; hands results to ``sink``."""

    def __init__(self, links: Sequence[tuple[Link, Sequence[MeterTarget]]], sink: Sink, settings: PollSettings) -> None:
        self.links = list(links)
        self.sink = sink
        self.settings = settings
        self.polls = 0
        self.guard = Guard()  # plausibility of decoded values, with the memory the rate rules need

    @property
    def meters(self) -> list[MeterTarget]:
        return [m for _, meters in self.links for m in meters]

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        tasks = [
            asyncio.create_task(self._schedule(link, meter, poll_class, stop), name=f"{meter.serial}/{poll_class}")
            for link, meters in self.links
            for meter in meters
            for poll_class in meter.plans
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def period(self, poll_class: str) -> float:
        return self.settings.periods.get(poll_class, self.settings.default_period)

    async def _schedule(self, link: Link, meter: MeterTarget, poll_class: str, stop: asyncio.Event) -> None:
        period = self.period(poll_class)
        # A first poll soon after start (spread over a few seconds), then on the period's grid.
        await_first = random.uniform(0, min(period, self.settings.first_poll_spread))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), await_first)
        if stop.is_set():
            return
        if not meter.health.backed_off:
            await self.poll(link, meter, poll_class)
        now = time.time()
        next_at = math.floor(now / period) * period + period if self.settings.align else now + period
        while not stop.is_set():
            delay = next_at + random.uniform(0, self.settings.jitter * period) - time.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
            next_at += period
            if meter.health.backed_off:
                continue
            await self.poll(link, meter, poll_class)

    async def poll(self, link: Link, meter: MeterTarget, poll_class: str) -> bool:
        """One poll of one class of one meter (also usable on its own, e.g. for probing a device).

        A meter's polls run one at a time; a poll that finds its meter backed off (another class of
        it failed meanwhile) is skipped and returns False without counting, so the backoff grows
        one step per backoff period, not one step per poll class.
        """
        async with meter.lock:
            if meter.health.backed_off:
                return False
            return await self._poll(link, meter, poll_class)

    async def _poll(self, link: Link, meter: MeterTarget, poll_class: str) -> bool:
        health = meter.health
        ts = datetime.now(UTC)  # the poll's time: when it started
        started = time.monotonic()
        health.polls += 1
        self.polls += 1
        decoded: dict[RegisterEntry, float] = {}
        raw_of: dict[RegisterEntry, list[int]] = {}
        for block in meter.plans[poll_class]:
            registers: list[int] | None = None
            for attempt in range(self.settings.retries + 1):
                try:
                    registers = await link.read(meter.unit, block)
                    break
                except ReadError as exc:
                    health.errors[exc.kind] = health.errors.get(exc.kind, 0) + 1
                    if exc.kind == "exception" or attempt == self.settings.retries:
                        self._failed(link, meter, exc)
                        return False
                    health.retries += 1
            assert registers is not None
            for entry in block.entries:
                raw_of[entry] = block.slice(registers, entry)
                try:
                    decoded[entry] = decode(entry, raw_of[entry])
                except (ValueError, OverflowError) as exc:
                    origin = f"modbus {link.name} unit {meter.unit} ({meter.serial})"
                    reason = f"{entry.name}: cannot decode: {exc}"
                    self.sink([], [], [Rejected(origin, reason, repr(registers), Source.MODBUS)])
        values, implausible = judge_poll(self.guard, meter.serial, meter.profile, ts, decoded.items())
        refused = [
            self._refused(link, meter, entry, ts, raw_of[entry], decoded[entry], problem)
            for entry, problem in implausible.items()
        ]
        if refused:
            log.warning("%s: %d implausible value(s), first %s", refused[0].origin, len(refused), refused[0].reason)
        latency = (time.monotonic() - started) * 1000
        health.latency_ms = latency if health.latency_ms is None else 0.8 * health.latency_ms + 0.2 * latency
        health.good += 1
        health.good_by_class[poll_class] = health.good_by_class.get(poll_class, 0) + 1
        health.consecutive_failures = 0
        health.backoff_until = 0.0
        health.backoff_s = 0.0
        health.last_good = ts
        readings, events = self._interpret(meter, ts, values)
        self.sink(readings, events, refused)
        return True

    def _refused(
        self,
        link: Link,
        meter: MeterTarget,
        entry: RegisterEntry,
        ts: datetime,
        raw: list[int],
        value: float,
        problem: Implausible,
    ) -> Rejected:
        """The dead letter of an implausible value: meter, register, raw registers, decoded value, rule."""
        origin = f"modbus {link.name} unit {meter.unit} ({meter.serial})"
        where = {
            "meter": meter.serial,
            "model": meter.profile.model,
            "unit_id": meter.unit,
            "register": entry.name,
            "channel": entry.channel,
            "function": entry.function,
            "address": entry.address,
            "data_type": entry.data_type.value,
            "order": entry.order,
            "raw": raw,
            "decoded": value if math.isfinite(value) else repr(value),
            "unit": entry.unit,
            "ts": ts.isoformat(),
            "rule": problem.rule,
        }
        meter.health.errors["implausible"] = meter.health.errors.get("implausible", 0) + 1
        return Rejected(origin, f"{entry.name}: {problem}", json.dumps(where), Source.MODBUS)

    def _failed(self, link: Link, meter: MeterTarget, exc: ReadError) -> None:
        health = meter.health
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error = str(exc)
        backoff = min(self.settings.backoff_base * 2 ** (health.consecutive_failures - 1), self.settings.backoff_max)
        health.backoff_s = backoff
        health.backoff_until = time.monotonic() + backoff
        origin = f"modbus {link.name} unit {meter.unit} ({meter.serial})"
        log.warning("%s: %s; backing off %.0f s", origin, exc, backoff)
        if exc.kind in ("exception", "decode"):
            self.sink([], [], [Rejected(origin, str(exc), "", Source.MODBUS)])

    @staticmethod
    def _interpret(
        meter: MeterTarget, ts: datetime, values: dict[RegisterEntry, float]
    ) -> tuple[list[Reading], list[MeterEvent]]:
        readings: list[Reading] = []
        events: list[MeterEvent] = []
        by_channel = {entry.channel: value for entry, value in values.items()}
        for entry, value in values.items():
            if entry.kind == "status":
                continue  # values arrive checked and in their channel's unit (see _plausible)
            readings.append(Reading(meter.serial, entry.channel, ts, value, entry.channel_unit, Source.MODBUS))
        if "clock" in by_channel:
            offset = by_channel["clock"] - ts.timestamp()
            readings.append(Reading(meter.serial, "0-0:1.0.0", ts, round(offset, 3), "s", Source.MODBUS))
        if "status" in by_channel:
            status = int(by_channel["status"])
            previous = meter.last_status or 0
            for name, bit in meter.profile.status_bits.items():
                if status >> bit & 1 and not previous >> bit & 1:
                    events.append(MeterEvent(meter.serial, ts, EventKind(name), Source.MODBUS, {"status": status}))
            meter.last_status = status
        if "event_counter" in by_channel and "last_event_code" in by_channel:
            counter = int(by_channel["event_counter"])
            if counter != meter.last_event_counter and counter > 0:
                kind = EVENT_KINDS_BY_CODE.get(int(by_channel["last_event_code"]))
                when = by_channel.get("last_event_ts")
                if kind is not None:
                    event_ts = datetime.fromtimestamp(when, UTC) if when else ts
                    events.append(MeterEvent(meter.serial, event_ts, kind, Source.MODBUS, {"counter": counter}))
            meter.last_event_counter = counter
        return readings, events
