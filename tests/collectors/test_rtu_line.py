"""RTU replies must match their request: frame checks, and a slave that answers after the timeout.

The slave is a real pymodbus serial server on a pseudo-terminal pair; the collector's RtuLine talks
to it through pyserial, as it would to a USB RS-485 adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import threading
from collections.abc import Iterator

import pytest
from pymodbus.framer import FramerRTU
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import SimData, SimDevice

from collectors.modbus import Operation, ReadError, RtuLine, rtu_operation, rtu_operation_reply, rtu_reply, rtu_request
from collectors.plan import ReadBlock
from simulators.modbus import PtyBridge


def block(address: int, count: int, function: int = 4) -> ReadBlock:
    return ReadBlock(function, address, count, ())


def frame(*body: int) -> bytes:
    data = bytes(body)
    return data + FramerRTU.compute_CRC(data).to_bytes(2, "big")


# -- the frame check, on its own ------------------------------------------------------------------
def test_a_request_frame_is_the_textbook_one():
    assert rtu_request(1, block(0, 2)).hex() == "01040000000271cb"


def test_the_exact_reply_gives_its_registers_and_every_prefix_waits_for_more():
    reply = frame(7, 4, 4, 0x12, 0x34, 0xAB, 0xCD)
    assert rtu_reply(7, block(0, 2), reply) == [0x1234, 0xABCD]
    for cut in range(len(reply)):
        assert rtu_reply(7, block(0, 2), reply[:cut]) is None


@pytest.mark.parametrize(
    ("data", "kind", "says"),
    [
        (frame(8, 4, 4, 0, 1, 0, 2), "mismatch", "unit 8"),  # another unit answered
        (frame(7, 3, 4, 0, 1, 0, 2), "mismatch", "function 3"),  # the answer to another function
        (frame(7, 4, 6, 0, 1, 0, 2, 0, 3), "mismatch", "6 bytes"),  # the answer to another count
        (frame(7, 4, 4, 0, 1, 0, 2) + b"\x07", "mismatch", "1 bytes more"),  # two frames run together
        (frame(7, 4, 4, 0, 1, 0, 2)[:-1] + b"\x00", "crc", "CRC"),
        (frame(7, 0x84, 2), "exception", "exception 2 (illegal data address)"),
    ],
)
def test_a_reply_that_is_not_the_answer_to_the_request_is_refused(data, kind, says):
    with pytest.raises(ReadError) as caught:
        rtu_reply(7, block(0, 2), data)
    assert caught.value.kind == kind
    assert says in str(caught.value)


# -- a slave that answers late, on a pty ----------------------------------------------------------
class LateSlave:
    """Unit 1 whose register ``a`` holds ``1000 + a``; the first request is answered after ``late_s``.

    Requests are answered one at a time, as a single device does.
    """

    def __init__(self, late_s: float, then_s: float) -> None:
        self.delays = [late_s]
        self.then_s = then_s
        self.answered: list[tuple[int, int]] = []
        self._lock: asyncio.Lock | None = None

    def device_ids(self) -> list[int]:
        return [1]

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> list[int]:  # noqa: N802
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            await asyncio.sleep(self.delays.pop(0) if self.delays else self.then_s)
            self.answered.append((address, count))
            return [1000 + a for a in range(address, address + count)]

    async def async_setValues(self, *args: object) -> None:  # noqa: N802
        return None


@contextlib.contextmanager
def serve(slave: LateSlave) -> Iterator[tuple[str, PtyBridge]]:
    """Serve ``slave`` on a pty pair from a thread of its own; yield the client end's path and the pair."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    bridge = PtyBridge()

    async def start() -> tuple[ModbusSerialServer, asyncio.Task[None]]:
        server = ModbusSerialServer(
            SimDevice(0, simdata=[SimData(0)]), port=bridge.server_path, baudrate=9600, ignore_missing_devices=True
        )
        server.context = slave  # type: ignore[assignment]
        bridge.attach(loop)
        task = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0.2)  # the server opens its port asynchronously
        return server, task

    server, task = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield bridge.client_path, bridge
    finally:

        async def stop() -> None:
            with contextlib.suppress(Exception):
                await server.shutdown()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            bridge.close(loop)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_late_reply_is_drained_not_taken_for_the_next_request():
    # Timeline: A is sent at 0 and times out at 0.6; the slave answers A at 0.9. A line that sent B
    # at 0.6 would take A's reply (same unit, function and byte count, valid CRC) for B's.
    slave = LateSlave(late_s=0.9, then_s=0.05)
    with serve(slave) as (path, _):

        async def exchange() -> tuple[ReadError, list[int], list[int], int]:
            line = RtuLine("late", path, baudrate=9600, timeout=0.6)
            try:
                with pytest.raises(ReadError) as timed_out:
                    await line.read(1, block(0, 2))
                b = await line.read(1, block(10, 2))
                c = await line.read(1, block(20, 2))
                return timed_out.value, b, c, line.late_bytes
            finally:
                line.close()

        timed_out, b, c, late_bytes = asyncio.run(exchange())
    assert timed_out.kind == "timeout"
    assert b == [1010, 1011] and c == [1020, 1021]
    assert late_bytes == len(frame(1, 4, 4, 0, 0, 0, 0))  # A's reply arrived late and was thrown away
    assert slave.answered == [(0, 2), (10, 2), (20, 2)]


def test_a_reply_to_another_request_is_refused_and_the_line_recovers():
    # While the slave takes 0.6 s over B, a frame for another request (unit 1, function 4, but three
    # registers) crosses the wire at 0.1 s: the line refuses it at once, drains B's own reply, which
    # is late by then, and the next request gets its own answer.
    slave = LateSlave(late_s=0.6, then_s=0.0)
    with serve(slave) as (path, bridge):

        async def exchange() -> tuple[ReadError, list[int], int]:
            line = RtuLine("wrong", path, baudrate=9600, timeout=1.0, drain=0.8)
            try:
                task = asyncio.ensure_future(line.read(1, block(30, 2)))
                await asyncio.sleep(0.1)
                os.write(bridge.a_slave, frame(1, 4, 6, *struct.pack(">3H", 1, 2, 3)))  # the slave's side
                with pytest.raises(ReadError) as refused:
                    await task
                after = await line.read(1, block(40, 2))
                return refused.value, after, line.late_bytes
            finally:
                line.close()

        refused, after, late_bytes = asyncio.run(exchange())
    assert refused.kind == "mismatch" and "6 bytes" in str(refused)
    assert after == [1040, 1041]
    assert late_bytes >= len(frame(1, 4, 4, 0, 0, 0, 0))  # B's own reply, late by then, was drained


# -- command frames: writes 05/06/16 and reads of coils, checked like the reads ----------------------
def test_write_frames_are_the_textbook_ones():
    assert rtu_operation(1, Operation(5, 0, 1, (1,))).hex() == "01050000ff008c3a"  # coil 0 on
    assert rtu_operation(1, Operation(6, 1, 1, (3,))).hex() == "010600010003980b"
    assert rtu_operation(1, Operation(16, 1, 2, (0x000A, 0x0102))) == frame(1, 16, 0, 1, 0, 2, 4, 0, 0x0A, 1, 2)


def test_write_replies_are_echoes_and_coil_reads_give_bits():
    single = Operation(6, 600, 1, (0,))
    echo = rtu_operation(7, single)
    assert rtu_operation_reply(7, single, echo) == [0]
    for cut in range(len(echo)):
        assert rtu_operation_reply(7, single, echo[:cut]) is None
    many = Operation(16, 300, 1, (1,))
    assert rtu_operation_reply(7, many, frame(7, 16, 1, 44, 0, 1)) == [1]
    coils = Operation(1, 0, 10)
    assert rtu_operation_reply(7, coils, frame(7, 1, 2, 0b00000101, 0b10)) == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]


@pytest.mark.parametrize(
    ("op", "data", "kind", "says"),
    [
        ((6, 600, 1, (0,)), frame(7, 6, 2, 88, 0, 1), "mismatch", "the echo differs"),  # wrote 1, not 0
        ((16, 300, 1, (1,)), frame(7, 16, 1, 45, 0, 1), "mismatch", "another address or count"),
        ((5, 0, 1, (0,)), frame(7, 0x85, 2), "exception", "exception 2 (illegal data address)"),
        ((1, 0, 1, ()), frame(7, 1, 2, 0, 0), "mismatch", "2 bytes, not 1"),
        ((6, 600, 1, (0,)), frame(7, 3, 2, 0, 0), "mismatch", "function 3"),
    ],
)
def test_a_command_reply_that_does_not_answer_the_request_is_refused(op, data, kind, says):
    with pytest.raises(ReadError) as caught:
        rtu_operation_reply(7, Operation(*op), data)
    assert caught.value.kind == kind
    assert says in str(caught.value)
    if kind == "exception":
        assert caught.value.code == 2
