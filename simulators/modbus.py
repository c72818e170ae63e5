"""Modbus front-ends: TCP gateways and RTU lines on pseudo-terminals, both pymodbus async servers.

Each server answers for many unit ids (``device_id``); a request for a unit is answered with the
registers of that unit's simulated meter, encoded with its device profile, for the simulated clock's
"now". A request that reaches outside the meter's register map (per function code, from its lowest
to its highest mapped register) is answered with Modbus exception 02, illegal data address; reserved
registers inside the map read 0, as on real meters. A unit in a communication-loss episode does not
answer (RTU: silence; TCP gateway: Modbus exception 0x0B, "gateway target device failed to
respond"); a unit in a slow-device episode, or any unit when ``response_delay_ms`` is set, answers
late. With ``serialise_gateways`` a TCP gateway answers one request at a time, as a gateway in front
of an RS-485 bus does: requests queue behind each other's device delay.

RTU lines are pairs of pseudo-terminals bridged in-process (what ``socat pty pty`` does): the server
opens one end's path, clients open the other's, and RTU frames cross unchanged. The client end's path
is what :class:`RtuLine` calls ``path``; a stable symlink to it is made when a run directory is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import os
import selectors
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice

from releve.pgserver import free_port
from releve.profiles import decode, encode
from simulators.clock import SimClock
from simulators.engine import Simulation

log = logging.getLogger("releve.simulators.modbus")


class FleetDatastore:
    """The pymodbus server context of one gateway or line: unit id -> simulated meter.

    pymodbus calls ``async_getValues``/``async_setValues``/``device_ids``; registers are computed
    on every request so they follow the simulated clock. Writes are accepted only where the meter's
    profile declares a command (``[commands]``: relay, clock, demand reset) and with a value that
    command knows; anything else is refused: exception 01 for a function the meter does not write
    with, 02 for a register it does not write, 03 for a value the command does not take.
    """

    def __init__(self, sim: Simulation, clock: SimClock, units: dict[int, int], serialise: bool = False) -> None:
        """Serve ``units`` (unit id -> meter index) of ``sim`` at ``clock``'s time.

        ``serialise``: answer one request at a time (an RS-485 bus behind the server).
        """
        self.sim = sim
        self.clock = clock
        self.units = units
        self.serialise = serialise
        self.requests = 0
        self.refused = 0  # requests answered with exception 02
        self.in_flight = 0  # requests being answered now (at most 1 when serialised)
        self.max_in_flight = 0
        self._serials = {m: sim.meters[m].profile.serial_registers(int(sim.meters[m].serial)) for m in units.values()}
        self._maps = {m: self._register_map(m) for m in units.values()}
        self._bus: asyncio.Lock | None = None
        self._echo: dict[tuple[int, int, int], list[int] | list[bool]] = {}  # what pymodbus reads back after 05/06
        self.writes = 0  # writes accepted

    def _register_map(self, meter: int) -> dict[int, tuple[int, int]]:
        """Function code -> (first, last + 1) address of the meter's mapped registers."""
        spans: dict[int, tuple[int, int]] = {}
        profile = self.sim.meters[meter].profile
        used: list[tuple[int, int, int]] = [(e.function, e.address, e.address + e.count) for e in profile.registers]
        used += [(fc, address, address + 1) for fc, address in self._serials[meter]]
        used += [(fc, a, a + 1) for fc, addresses in profile.command_registers().items() for a in addresses]
        for fc, lo, hi in used:
            first, last = spans.get(fc, (lo, hi))
            spans[fc] = (min(first, lo), max(last, hi))
        return spans

    def mapped(self, meter: int, function: int, address: int, count: int) -> bool:
        """Whether every register of the request lies inside the meter's register map."""
        span = self._maps[meter].get(function)
        return span is not None and span[0] <= address and address + count <= span[1]

    def device_ids(self) -> list[int]:
        """Unit ids served."""
        return list(self.units)

    def registers(self, meter: int, function: int, address: int, count: int) -> list[int]:
        """Registers ``address .. address+count-1`` of ``function`` as the meter shows them now."""
        spec = self.sim.meters[meter]
        values = self.sim.values_at(meter, self.clock.now())
        wanted = range(address, address + count)
        out: dict[int, int] = {}
        for entry in spec.profile.registers:
            if entry.function != function or entry.address + entry.count <= address or entry.address >= wanted.stop:
                continue
            value = values.get(entry.channel)
            if value is None:
                continue
            try:
                regs = encode(entry, value)
            except ValueError:  # a value the register cannot hold: the meter shows all ones
                regs = [0xFFFF] * entry.count
            for i, reg in enumerate(regs):
                out[entry.address + i] = reg
        for (fc, reg_address), reg in self._serials[meter].items():
            if fc == function:
                out[reg_address] = reg
        out.update(self._command_registers(meter, function))
        return [out.get(a, 0) for a in wanted]

    def _command_registers(self, meter: int, function: int) -> dict[int, int]:
        """The read-backs of the meter's commands: relay state and demand-reset counter (clock: in the map)."""
        out: dict[int, int] = {}
        commands = self.sim.meters[meter].profile.commands
        now = self.clock.now()
        for kind, spec in commands.items():
            c = spec.confirm
            if c.function != function:
                continue
            if kind in ("disconnect", "reconnect"):
                out[c.address] = int(self.sim.relay_closed(meter, now))
            elif kind == "demand_reset":
                for i, reg in enumerate(encode(c.entry, self.sim.controls.demand_resets(meter) % 65536)):
                    out[c.address + i] = reg
        return out

    def write(self, meter: int, function: int, address: int, values: list[int] | list[bool]) -> ExcCodes | None:
        """Apply a write to ``meter`` if one of its profile's commands is this write; else the exception."""
        words = [int(v) for v in values]
        now = self.clock.now()
        for kind, spec in self.sim.meters[meter].profile.commands.items():
            w = spec.write
            if w.function != function or w.address != address:
                continue
            if w.value == "clock":
                if len(words) != len(w.registers(0)):
                    return ExcCodes.ILLEGAL_VALUE
                entry = spec.confirm.entry if spec.confirm.function in (3, 4) else None
                if entry is None:
                    return ExcCodes.ILLEGAL_VALUE
                self.sim.set_clock(meter, now, decode(entry, words))
                return None
            if words != w.registers(0):
                continue  # another command on the same register (relay on/off) may take this value
            if kind in ("disconnect", "reconnect"):
                self.sim.set_relay(meter, now, closed=kind == "reconnect")
            elif kind == "demand_reset":
                self.sim.controls.reset_demand(meter)
            return None
        writes = [s.write for s in self.sim.meters[meter].profile.commands.values()]
        if any(w.function == function and w.address == address for w in writes):
            return ExcCodes.ILLEGAL_VALUE  # the register is there, the value is not one it takes
        if any(w.function == function for w in writes):
            return ExcCodes.ILLEGAL_ADDRESS  # this function writes elsewhere on this meter
        return ExcCodes.ILLEGAL_FUNCTION

    async def async_getValues(  # noqa: N802 - pymodbus's name
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        """Answer a read (function 3 or 4) for ``device_id``."""
        meter = self.units.get(device_id)
        if meter is None:
            raise NoSuchIdException(f"no simulated meter at unit {device_id}")
        if func_code in (5, 6):  # pymodbus reads back what was just written to echo it
            return self._echo.pop((device_id, func_code, address), [0] * count)
        if not self.serialise:
            return await self._answer(device_id, meter, func_code, address, count)
        if self._bus is None:  # made in the serving loop
            self._bus = asyncio.Lock()
        async with self._bus:
            return await self._answer(device_id, meter, func_code, address, count)

    async def _answer(
        self, device_id: int, meter: int, func_code: int, address: int, count: int
    ) -> list[int] | ExcCodes:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._device(device_id, meter, func_code, address, count)
        finally:
            self.in_flight -= 1

    async def _device(
        self, device_id: int, meter: int, func_code: int, address: int, count: int
    ) -> list[int] | ExcCodes:
        now = self.clock.now()
        delay = self.sim.response_delay(meter, now)
        if not self.sim.available(meter, now):
            await asyncio.sleep(delay)
            raise NoSuchIdException(f"unit {device_id} is in a communication loss")
        if delay > 0:
            await asyncio.sleep(delay)
        if func_code not in (1, 2, 3, 4):
            return ExcCodes.ILLEGAL_FUNCTION
        self.requests += 1
        if not self.mapped(meter, func_code, address, count):
            self.refused += 1
            return ExcCodes.ILLEGAL_ADDRESS
        if func_code in (1, 2):
            return [bool(v) for v in self.registers(meter, func_code, address, count)]
        return self.registers(meter, func_code, address, count)

    async def async_setValues(  # noqa: N802 - pymodbus's name
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        """A write (05, 06, 16): applied when the meter's profile declares it as a command."""
        meter = self.units.get(device_id)
        if meter is None:
            raise NoSuchIdException(f"no simulated meter at unit {device_id}")
        now = self.clock.now()
        delay = self.sim.response_delay(meter, now)
        if not self.sim.available(meter, now):
            await asyncio.sleep(delay)
            raise NoSuchIdException(f"unit {device_id} is in a communication loss")
        if delay > 0:
            await asyncio.sleep(delay)
        refused = self.write(meter, func_code, address, values)
        if refused is None:
            self.writes += 1
            self._echo[(device_id, func_code, address)] = values
            log.info(
                "unit %d (%s): function %d at %d <- %s",
                device_id,
                self.sim.meters[meter].serial,
                func_code,
                address,
                [int(v) for v in values],
            )
        return refused


def _install(server: ModbusTcpServer | ModbusSerialServer, store: FleetDatastore) -> None:
    # pymodbus only calls async_getValues/async_setValues/device_ids on its context.
    server.context = store  # type: ignore[assignment]


@dataclass
class TcpGateway:
    """One Modbus TCP server answering for several unit ids."""

    host: str
    port: int
    store: FleetDatastore
    server: ModbusTcpServer | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class RtuLine:
    """One RS-485 line on a pseudo-terminal pair; clients open ``path``."""

    number: int
    path: str
    server_path: str
    store: FleetDatastore
    baudrate: int
    server: ModbusSerialServer | None = None
    task: asyncio.Task[None] | None = None
    fds: list[int] = field(default_factory=list)


class PtyBridge:
    """Two pseudo-terminals whose master ends are copied into each other (``socat pty pty``).

    With ``baudrate``, the pair models an RS-485 wire (8N1, 10 bits a byte): a frame's last byte
    arrives ``len × byte time`` after its first could start, never earlier, and a reply (server to
    client) starts no earlier than the 3.5-character silence after the request's last byte, the
    end-of-frame silence a compliant RTU slave waits for before it answers (1.75 ms above 19200
    baud). Bytes are copied by a thread of the bridge's own that sleeps to the instant a frame is
    due: an event loop's timers wake up to a millisecond late (epoll rounds timeouts up), which
    made the simulated wire slower than its baud rate. Without ``baudrate`` bytes cross at once.
    """

    def __init__(self, baudrate: int | None = None) -> None:
        """Open both pairs, in raw mode."""
        self.byte_time = 10.0 / baudrate if baudrate else 0.0
        self.silence = (3.5 * self.byte_time if baudrate <= 19200 else 0.00175) if baudrate else 0.0
        self.a_master, self.a_slave = os.openpty()
        self.b_master, self.b_slave = os.openpty()
        for fd in (self.a_slave, self.b_slave):
            tty.setraw(fd)
        self.server_path = os.ttyname(self.a_slave)
        self.client_path = os.ttyname(self.b_slave)
        for fd in (self.a_master, self.b_master):
            os.set_blocking(fd, False)
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._closing = False

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start copying bytes both ways (``loop`` is not used: the bridge copies in a thread of its own)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"pty-bridge {self.client_path}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for fd in (self.a_master, self.b_master, self._wake_r):
            selector.register(fd, selectors.EVENT_READ)
        peer = {self.a_master: self.b_master, self.b_master: self.a_master}
        busy_until = {self.a_master: 0.0, self.b_master: 0.0}  # when each direction's last byte arrives
        due: list[tuple[float, int, bytes]] = []  # (instant, destination, bytes), in order per direction
        try:
            while not self._closing:
                timeout = None
                if due:  # wake a little early (timeouts round up to the millisecond), then sleep the rest
                    timeout = max(0.0, min(d[0] for d in due) - time.monotonic() - 0.001)
                for key, _ in selector.select(timeout):
                    src = key.fd
                    if src == self._wake_r:
                        continue
                    try:
                        data = os.read(src, 4096)
                    except (BlockingIOError, OSError):
                        continue
                    if not self.byte_time:
                        self._write(peer[src], data)
                        continue
                    now = time.monotonic()
                    start = max(now, busy_until[src])
                    if src == self.a_master:  # the slave answers after the request's end-of-frame silence
                        start = max(start, busy_until[self.b_master] + self.silence)
                    busy_until[src] = start + len(data) * self.byte_time
                    due.append((busy_until[src], peer[src], data))
                if due:
                    rest = min(d[0] for d in due) - time.monotonic()
                    if 0 < rest <= 0.001:
                        time.sleep(rest)  # in this thread only: nothing else waits on it
                    now = time.monotonic()
                    for item in [d for d in due if d[0] <= now]:
                        due.remove(item)
                        self._write(item[1], item[2])
        finally:
            selector.close()

    @staticmethod
    def _write(dst: int, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst, data)

    def close(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Stop copying and close every descriptor."""
        self._closing = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for fd in (self.a_master, self.a_slave, self.b_master, self.b_slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class ModbusFrontEnd:
    """All Modbus servers of a fleet: TCP gateways and RTU lines, in the running event loop."""

    def __init__(self, sim: Simulation, clock: SimClock, run_dir: Path | None = None) -> None:
        """Group the fleet's Modbus meters by gateway and by line."""
        self.sim = sim
        self.clock = clock
        self.run_dir = run_dir
        self.gateways: list[TcpGateway] = []
        self.lines: list[RtuLine] = []
        self._bridges: list[PtyBridge] = []
        cfg = sim.config.modbus
        by_gateway: dict[int, dict[int, int]] = {}
        by_line: dict[int, dict[int, int]] = {}
        for meter in sim.meters:
            if meter.transport == "tcp":
                by_gateway.setdefault(meter.gateway, {})[meter.unit_id] = meter.index
            elif meter.transport == "rtu":
                by_line.setdefault(meter.line, {})[meter.unit_id] = meter.index
        for number, units in sorted(by_gateway.items()):
            port = cfg.tcp_base_port + number if cfg.tcp_base_port else free_port()
            self.gateways.append(TcpGateway(cfg.host, port, FleetDatastore(sim, clock, units, cfg.serialise_gateways)))
        self._line_units = by_line

    async def start(self) -> None:
        """Start every server and return once they accept requests."""
        loop = asyncio.get_running_loop()
        for gw in self.gateways:
            gw.server = ModbusTcpServer(_placeholder(), address=(gw.host, gw.port), ignore_missing_devices=False)
            _install(gw.server, gw.store)
            gw.task = asyncio.create_task(gw.server.serve_forever(), name=f"modbus-tcp-{gw.port}")
        for number, units in sorted(self._line_units.items()):
            bridge = PtyBridge(self.sim.config.modbus.baudrate if self.sim.config.modbus.wire_timing else None)
            bridge.attach(loop)
            self._bridges.append(bridge)
            path = bridge.client_path
            if self.run_dir is not None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                link = self.run_dir / f"rtu-line{number}"
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
                link.symlink_to(path)
            store = FleetDatastore(self.sim, self.clock, units)
            line = RtuLine(number, path, bridge.server_path, store, self.sim.config.modbus.baudrate)
            line.server = ModbusSerialServer(
                _placeholder(),
                port=bridge.server_path,
                baudrate=line.baudrate,
                parity="N",
                ignore_missing_devices=True,
            )
            _install(line.server, store)
            line.task = asyncio.create_task(line.server.serve_forever(), name=f"modbus-rtu-{number}")
            self.lines.append(line)
        await self._wait_ready()

    async def take_down(self, gateway: TcpGateway) -> None:
        """Stop one gateway's server (a gateway losing power): its port refuses connections until :meth:`bring_up`."""
        server, task = gateway.server, gateway.task
        gateway.server = gateway.task = None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.shutdown()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def bring_up(self, gateway: TcpGateway) -> None:
        """Serve a gateway taken down again, on the same port."""
        if gateway.server is not None:
            return
        gateway.server = ModbusTcpServer(
            _placeholder(), address=(gateway.host, gateway.port), ignore_missing_devices=False
        )
        _install(gateway.server, gateway.store)
        gateway.task = asyncio.create_task(gateway.server.serve_forever(), name=f"modbus-tcp-{gateway.port}")
        await self._wait_ready([gateway])

    async def _wait_ready(self, gateways: list[TcpGateway] | None = None, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        for gw in self.gateways if gateways is None else gateways:
            while True:
                try:
                    _, writer = await asyncio.open_connection(gw.host, gw.port)
                except OSError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                break
        await asyncio.sleep(0.1)  # serial servers open their port asynchronously

    async def stop(self) -> None:
        """Stop every server and close the pseudo-terminals."""
        for srv in [*(g.server for g in self.gateways), *(ln.server for ln in self.lines)]:
            if srv is not None:
                with contextlib.suppress(Exception):
                    await srv.shutdown()
        for task in [*(g.task for g in self.gateways), *(ln.task for ln in self.lines)]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        loop = asyncio.get_running_loop()
        for bridge in self._bridges:
            bridge.close(loop)
        self._bridges.clear()

    def describe(self) -> list[str]:
        """One line per server: where it listens, which units it serves and which model answers at each."""
        out = []
        for gw in self.gateways:
            out.append(
                f"modbus tcp {gw.host}:{gw.port} units {_ranges(gw.store.device_ids())} "
                f"({_models(self.sim, gw.store.units)})"
            )
        for line in self.lines:
            out.append(
                f"modbus rtu {line.path} ({line.baudrate} 8N1) units {_ranges(line.store.device_ids())} "
                f"({_models(self.sim, line.store.units)})"
            )
        return out

    def listing(self) -> list[dict[str, Any]]:
        """Every served unit with where it answers: see :func:`unit_listing`."""
        endpoints: dict[tuple[str, int], str] = {}
        for number, gw in enumerate(self.gateways):
            endpoints[("tcp", number)] = f"{gw.host}:{gw.port}"
        for line in self.lines:
            endpoints[("rtu", line.number)] = line.path
        return unit_listing(self.sim, endpoints)

    def write_listing(self, run_dir: Path) -> tuple[Path, Path]:
        """Write ``units.json`` and ``units.csv`` (see :func:`unit_listing`) into ``run_dir``."""
        rows = self.listing()
        run_dir.mkdir(parents=True, exist_ok=True)
        as_json, as_csv = run_dir / "units.json", run_dir / "units.csv"
        as_json.write_text(json.dumps(rows, indent=1) + "\n")
        as_csv.write_text(listing_csv(rows))
        return as_json, as_csv


LISTING_FIELDS = ("transport", "endpoint", "unit", "serial", "model", "manufacturer", "commodity", "role")


def unit_listing(sim: Simulation, endpoints: dict[tuple[str, int], str] | None = None) -> list[dict[str, Any]]:
    """Which model answers at which unit id, for every Modbus meter of ``sim`` (and the MQTT ones).

    ``endpoints`` maps (transport, gateway or line number) to where it listens; without it the
    addresses come from the fleet file (``host:tcp_base_port+N``; ``host:0`` when ports are picked
    at start; ``rtu-line<N>`` for the pty symlink in the run directory). MQTT meters have no unit:
    their endpoint is their topic style.
    """
    cfg = sim.config.modbus
    rows = []
    for meter in sim.meters:
        if meter.transport == "tcp":
            default = f"{cfg.host}:{cfg.tcp_base_port + meter.gateway if cfg.tcp_base_port else 0}"
            endpoint = (endpoints or {}).get(("tcp", meter.gateway), default)
            unit: int | None = meter.unit_id
        elif meter.transport == "rtu":
            endpoint = (endpoints or {}).get(("rtu", meter.line), f"rtu-line{meter.line}")
            unit = meter.unit_id
        else:
            endpoint, unit = f"mqtt/{meter.mqtt_style}", None
        profile = meter.profile
        rows.append(
            {
                "transport": meter.transport,
                "endpoint": endpoint,
                "unit": unit,
                "serial": meter.serial,
                "model": meter.model,
                "manufacturer": profile.manufacturer,
                "commodity": meter.commodity.value,
                "role": meter.role,
            }
        )
    return rows


def listing_csv(rows: list[dict[str, Any]]) -> str:
    """The listing as CSV with a header (an MQTT meter's unit is empty)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LISTING_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in LISTING_FIELDS})
    return out.getvalue()


def _models(sim: Simulation, units: dict[int, int]) -> str:
    by_model: dict[str, list[int]] = {}
    for unit, meter in units.items():
        by_model.setdefault(sim.meters[meter].model, []).append(unit)
    return "; ".join(f"{model} {_ranges(ids)}" for model, ids in sorted(by_model.items()))


def _placeholder() -> SimDevice:
    """A one-register device to construct a pymodbus server; replaced by a FleetDatastore."""
    return SimDevice(0, simdata=[SimData(0)])


def _ranges(ids: list[int]) -> str:
    ids = sorted(ids)
    if not ids:
        return "-"
    parts, lo, prev = [], ids[0], ids[0]
    for i in [*ids[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{lo}" if lo == prev else f"{lo}-{prev}")
        if i is not None:
            lo = prev = i
    return ",".join(parts)


class BackgroundModbus:
    """A :class:`ModbusFrontEnd` served from its own thread and event loop (tests, benchmarks, notebooks).

    ``with BackgroundModbus(sim, clock) as front: ...`` starts every server, yields the front-end
    (``front.gateways``, ``front.lines``) and stops them on exit.
    """

    def __init__(self, sim: Simulation, clock: SimClock, run_dir: Path | None = None) -> None:
        """Prepare the servers of ``sim``; nothing listens until :meth:`start`."""
        self.front = ModbusFrontEnd(sim, clock, run_dir)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the servers run in (coroutines touching them are run there)."""
        return self._loop

    def start(self) -> ModbusFrontEnd:
        """Start the loop thread and the servers; return once they accept requests."""
        self._thread = threading.Thread(target=self._loop.run_forever, name="releve-sim-modbus", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.front.start(), self._loop).result(15)
        return self.front

    def stop(self) -> None:
        """Stop the servers and the loop thread."""
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.front.stop(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._thread = None

    def __enter__(self) -> ModbusFrontEnd:
        """Start; see :meth:`start`."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop; see :meth:`stop`."""
        self.stop()
