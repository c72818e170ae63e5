"""Collector benchmarks, each against a baseline measured in the same run.

1. Modbus TCP: full meter polls per second (every register of every poll class) against N simulated
   SDM630s behind G gateways answering with a realistic device delay, served by a simulator in its
   own process. The baseline is the honest one: a sequential poller that merges registers (what a
   careful script does: one loop per gateway, one request at a time, the same merged reads as
   Relevé's plan). Run twice: on gateways that answer requests in parallel, and on *serialising*
   gateways (RS-485 behind TCP: one request at a time, each after the device delay), where Relevé
   is configured with ``serialise = true``. Each Relevé figure is printed as a ratio against the
   sequential merged baseline on the same gateways.
2. Modbus RTU over pseudo-terminals paced at the baud rate: requests per second as a fraction of
   the wire-time bound (request and response frames, 10 bits a byte, each frame followed by the
   3.5-character silence that ends an RTU frame: no compliant line can do better), at 9600 and
   115200 baud. The frames-only bound (no silences) is printed too. The simulated wire delivers a
   frame's last byte at its baud rate's instant and its slave answers after the request's
   end-of-frame silence (``simulators.modbus.PtyBridge``). Baseline on the same line: a bare
   blocking master (no event loop), which also shows the slave's turnaround as a master sees it.
3. MQTT → database: each round is queued in Mosquitto on persistent sessions before anything
   timed starts (the publisher, a bare MQTT client pinned to a core of its own, has finished; the
   broker's queues are sized to the round and held in memory). Baselines on a round of their own:
   ``mosquitto_sub`` draining it, alone and two on a shared subscription (the broker's pace for
   one and two consumers, as far as a C client takes it), a bare paho client that only
   acknowledges (a Python client's limit; its first 100,000) and the collector's own client with
   nothing behind it (``BufferedClient``: the limit of one collector process's network side). Then
   the collector (``releve collect run`` as processes: spool fsync, acknowledge, decode to
   columns, the write path) with ``--workers 1`` and ``--workers 2`` (MQTT 5 shared
   subscription) alternated, ``--repeat`` rounds each, until every reading is in PostgreSQL: the
   steady rate (10 % → 90 % landed, at least 5 landings) as a ratio of the baselines, the load
   average as the round starts, the cores each side used in the steady window (collector
   processes, Mosquitto, PostgreSQL, other processes) and which side limits it.

Run: .venv/bin/python bench/collect.py [--meters 64] [--gateways 2] [--delay-ms 20] [--seconds 8]
     [--messages 400000] [--repeat 3] [--only tcp,rtu,mqtt]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymodbus.client import ModbusTcpClient

from bench.common import exit_on_sigterm
from collectors.modbus import MeterTarget, Poller, PollSettings, RtuLine, TcpGateway
from collectors.plan import plan_reads
from releve.profiles import load_profile


def fleet_config(
    meters: int,
    delay_ms: float,
    rtu_lines: int = 0,
    baudrate: int = 9600,
    per_line: int = 4,
    gateways: int = 1,
    serialise: bool = False,
) -> dict:
    return {
        "topology": {
            "transformers": 1,
            "customers_per_transformer": max(meters - 1, 1),
            "dmas": 0,
            "electricity_models": {"sdm630": 1.0},
        },
        "modbus": {
            "tcp_base_port": 0,
            "rtu_lines": rtu_lines,
            "devices_per_line": per_line,
            "devices_per_gateway": min(247, math.ceil(meters / gateways)),
            "response_delay_ms": delay_ms,
            "baudrate": baudrate,
            "serialise_gateways": serialise,
        },
        "mqtt": {"electricity_share": 0.0},
        "theft": {"rate": 0.0},
        "faults": {"rate": 0.0},
    }


def _serve(config: dict, out: mp.Queue, stop: mp.Event) -> None:
    from simulators.clock import SimClock
    from simulators.config import parse_fleet
    from simulators.engine import Simulation
    from simulators.modbus import BackgroundModbus

    sim = Simulation(parse_fleet(config, "bench fleet"))
    with BackgroundModbus(sim, SimClock(sim.start, speed=1)) as front:
        out.put(
            {
                "gateways": [(gw.host, gw.port, sorted(gw.store.units)) for gw in front.gateways],
                "lines": [(ln.path, sorted(ln.store.units)) for ln in front.lines],
            }
        )
        stop.wait()


class SimulatorProcess:
    def __init__(self, config: dict) -> None:
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        queue: mp.Queue = ctx.Queue()
        self.proc = ctx.Process(target=_serve, args=(config, queue, self.stop), daemon=True)
        self.proc.start()
        self.info = queue.get(timeout=60)

    def close(self) -> None:
        self.stop.set()
        self.proc.join(15)


# -- 1. Modbus TCP --------------------------------------------------------------------------------
async def releve_polls(gateways, seconds: float, connections: int, serialise: bool = False) -> tuple[int, int]:
    """(good meter polls, failed polls) of Relevé's poller in ``seconds``."""
    profile = load_profile("sdm630")
    links = []
    for host, port, units in gateways:
        link = TcpGateway(f"{host}:{port}", host, port, max_connections=connections, timeout=5.0, serialise=serialise)
        links.append((link, [MeterTarget.build(f"m{port}-{u}", u, profile, link.name) for u in units]))
    poller = Poller(links, lambda *a: None, PollSettings(retries=0, backoff_base=0.01, backoff_max=0.01))
    done = failed = 0
    stop_at = time.perf_counter() + seconds

    async def meter_loop(link, meter):
        nonlocal done, failed
        while time.perf_counter() < stop_at:
            ok = True
            for poll_class in meter.plans:
                ok = await poller.poll(link, meter, poll_class) and ok
            if time.perf_counter() > stop_at:
                break  # finished after the window: not counted (nor is the baseline's)
            done += ok
            failed += not ok
            if not ok:
                await asyncio.sleep(0.01)  # let the (tiny) backoff pass

    await asyncio.gather(*(meter_loop(link, m) for link, meters in links for m in meters))
    for link, _ in links:
        link.close()
    return done, failed


def sequential_merged_polls(gateways, seconds: float) -> int:
    """The baseline: one sequential loop per gateway (gateways side by side), merged reads, sync pymodbus."""
    profile = load_profile("sdm630")
    by_class: dict[str, list] = {}
    for entry in profile.registers:
        by_class.setdefault(entry.poll_class, []).append(entry)
    blocks = [b for entries in by_class.values() for b in plan_reads(entries)]  # the same requests as Relevé's
    counts = [0] * len(gateways)
    stop_at = time.perf_counter() + seconds

    def loop(k: int, host: str, port: int, units: list[int]) -> None:
        client = ModbusTcpClient(host, port=port, timeout=5)
        client.connect()
        while time.perf_counter() < stop_at:
            for unit in units:
                ok = True
                for b in blocks:
                    read = client.read_input_registers if b.function == 4 else client.read_holding_registers
                    ok = not read(b.address, count=b.count, device_id=unit).isError() and ok
                if time.perf_counter() > stop_at:
                    break  # finished after the window: not counted
                counts[k] += ok
        client.close()

    threads = [threading.Thread(target=loop, args=(k, *gw)) for k, gw in enumerate(gateways)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def bench_tcp(meters: int, gateways_n: int, delay_ms: float, seconds: float) -> None:
    profile = load_profile("sdm630")
    by_class: dict[str, list] = {}
    for entry in profile.registers:
        by_class.setdefault(entry.poll_class, []).append(entry)
    requests = sum(len(plan_reads(entries)) for entries in by_class.values())
    for serialise in (False, True):
        sim = SimulatorProcess(fleet_config(meters, delay_ms, gateways=gateways_n, serialise=serialise))
        try:
            gateways = sim.info["gateways"]
            n = sum(len(u) for *_, u in gateways)
            kind = "serialising (one request at a time, RS-485 behind TCP)" if serialise else "parallel"
            print(
                f"\n1{'b' if serialise else 'a'}. Modbus TCP, {kind} gateways: {n} simulated SDM630s on "
                f"{len(gateways)} gateways, {delay_ms:.0f} ms device delay, {seconds:.0f} s each "
                f"({len(profile.registers)} values per meter = {requests} merged requests)"
            )
            base = sequential_merged_polls(gateways, seconds) / seconds
            print(f"   baseline: sequential poller, merged reads, one loop per gateway  {base:>8.1f} meter polls/s")
            runs = [(1, True)] if serialise else [(4, False), (16, False)]
            if serialise:
                runs.append((4, False))  # what happens when the setting is forgotten
            for connections, serial in runs:
                good, failed = asyncio.run(releve_polls(gateways, seconds, connections, serialise=serial))
                rate = good / seconds
                what = "serialise = true" if serial else f"{connections:>2} connections/gateway"
                print(
                    f"   Relevé poller, {what:<22}                        {rate:>8.1f} meter polls/s"
                    f"   = {rate / base:5.2f} x sequential merged ({failed} failed polls)"
                )
        finally:
            sim.close()


# -- 2. Modbus RTU ---------------------------------------------------------------------------------
def wire_time(count: int, baud: int, silences: bool = True) -> float:
    """Seconds a read of ``count`` registers occupies the line: request (8 bytes) and response (5 + 2n),
    with ``silences`` each followed by the RTU end-of-frame silence (3.5 characters; 1.75 ms above 19200 baud)."""
    gap = 3.5 * 10.0 / baud if baud <= 19200 else 0.00175
    return (8 + 5 + 2 * count) * 10.0 / baud + (2 * gap if silences else 0.0)


async def rtu_rate(path: str, units: list[int], baud: int, seconds: float) -> tuple[float, float, float]:
    """Relevé's RtuLine: (requests/s, fraction of the compliant bound, fraction of the frames-only bound)."""
    profile = load_profile("sdm630")
    line = RtuLine("bench", path, baudrate=baud, timeout=2.0)
    meters = [MeterTarget.build(f"r{u}", u, profile, "bench") for u in units]
    poller = Poller([(line, meters)], lambda *a: None, PollSettings(retries=0))
    busy = frames = 0.0
    requests = 0
    stop_at = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < stop_at:
        for meter in meters:
            for poll_class, blocks in meter.plans.items():
                if await poller.poll(line, meter, poll_class):
                    requests += len(blocks)
                    busy += sum(wire_time(b.count, baud) for b in blocks)
                    frames += sum(wire_time(b.count, baud, silences=False) for b in blocks)
    elapsed = time.perf_counter() - t0
    line.close()
    return requests / elapsed, busy / elapsed, frames / elapsed


def bare_master_rate(path: str, units: list[int], baud: int, seconds: float) -> tuple[float, float, float]:
    """Baseline: the plainest master there is, on the same line — (requests/s, fraction of the bound, turnaround ms).

    Blocking I/O, no event loop: write the request, read until the reply's expected length, check it,
    then wait the 3.5-character silence counted from the reply's last byte (``select`` with a
    microsecond timeout), and send the next one. The same merged reads as Relevé's plan. What it
    loses against the bound is the line's own: the slave's turnaround beyond the silence and the
    machine's wake-up latency; the median turnaround (the reply's last byte minus the request's
    write minus both frames' bytes) is returned in milliseconds.
    """
    import select
    import statistics

    import serial

    from collectors.modbus import rtu_reply, rtu_request

    profile = load_profile("sdm630")
    blocks = [b for plan in MeterTarget.build("bare", 1, profile, "bare").plans.values() for b in plan]
    gap = 3.5 * 10.0 / baud if baud <= 19200 else 0.00175
    byte = 10.0 / baud
    port = serial.Serial(path, baudrate=baud, timeout=0)
    fd = port.fileno()
    busy = 0.0
    requests = 0
    turnaround: list[float] = []
    stop_at = time.perf_counter() + seconds
    t0 = time.perf_counter()
    try:
        while time.perf_counter() < stop_at:
            for unit in units:
                for b in blocks:
                    os.write(fd, rtu_request(unit, b))
                    sent = time.perf_counter()
                    need, data = 5 + 2 * b.count, b""
                    while len(data) < need:
                        if not select.select([fd], [], [], 2.0)[0]:
                            raise RuntimeError(f"bare master: unit {unit} did not answer")
                        data += os.read(fd, 4096)
                    last = time.perf_counter()
                    if rtu_reply(unit, b, data) is None:
                        raise RuntimeError("bare master: incomplete reply")
                    turnaround.append(last - sent - (8 + need) * byte)
                    while (rest := last + gap - time.perf_counter()) > 0:
                        if select.select([fd], [], [], rest)[0]:
                            raise RuntimeError("bare master: bytes after the reply")
                    requests += 1
                    busy += wire_time(b.count, baud)
    finally:
        port.close()
    elapsed = time.perf_counter() - t0
    return requests / elapsed, busy / elapsed, statistics.median(turnaround) * 1000


def bench_rtu(seconds: float) -> None:
    print(
        "\n2. Modbus RTU on a pty paced at the baud rate, 4 SDM630s on one line, sequential polls; the bound:"
        " request and reply frames, each followed by the 3.5-character silence (the simulated slave answers"
        " at the end of that silence, or later)"
    )
    for baud in (9600, 115200):
        sim = SimulatorProcess(fleet_config(5, 0.0, rtu_lines=1, baudrate=baud))
        try:
            path, units = sim.info["lines"][0]
            base, base_fraction, turnaround = bare_master_rate(path, units, baud, seconds)
            rate, fraction, frames = asyncio.run(rtu_rate(path, units, baud, seconds))
            gap = 3.5 * 10.0 / baud if baud <= 19200 else 0.00175
            print(
                f"   {baud:>6} baud, baseline: a bare blocking master  {base:7.1f} requests/s = {base_fraction:5.1%}"
                f" of the wire-time bound (the slave's turnaround as it sees it: {turnaround:.2f} ms,"
                f" the silence alone {gap * 1000:.2f} ms)"
            )
            print(
                f"   {baud:>6} baud, Relevé RtuLine                 {rate:7.1f} requests/s = {fraction:5.1%}"
                f" of the wire-time bound ({frames:5.1%} of frames alone) = {rate / base:4.2f} x the bare master"
            )
        finally:
            sim.close()


# -- 3. MQTT -> database ---------------------------------------------------------------------------
TOPIC = "bench{round}/{serial}/reading"


def _session(port: int, client_id: str, topic_filter: str) -> None:
    """Open a persistent MQTT 5 session subscribed to ``topic_filter`` and leave: the broker queues for it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    client.subscribe(topic_filter, qos=1)
    if not subscribed.wait(10):
        raise RuntimeError(f"broker did not confirm the subscription of {client_id}")
    client.disconnect()
    client.loop_stop()


def _varint(n: int) -> bytes:
    """MQTT's variable byte integer (a packet's remaining length)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RuntimeError("the broker closed the publisher's connection")
        data += chunk
    return data


def round_messages(r: int, messages: int, meters: int, t0: str) -> Iterator[tuple[bytes, bytes]]:
    """(topic, payload) of round ``r``: meter ``k % meters`` sends its two readings every 15 minutes from ``t0``.

    The payload is what ``json.dumps`` makes of Relevé's plain JSON message, written as text.
    """
    start = datetime.fromisoformat(t0)
    stamps = [(start + timedelta(minutes=15 * i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(-(-messages // meters))]
    topics = [TOPIC.format(round=r, serial=f"MQ{m:05d}").encode() for m in range(meters)]
    for k in range(messages):
        m = k % meters
        yield (
            topics[m],
            (
                f'{{"meter": "MQ{m:05d}", "ts": "{stamps[k // meters]}", "readings": ['
                f'{{"channel": "1-0:1.8.0", "value": {100 + k}, "unit": "kWh"}}, '
                '{"channel": "1-0:1.7.0", "value": 400.0, "unit": "W"}]}'
            ).encode(),
        )


def _publish(port: int, r: int, messages: int, meters: int, t0: str, cpu: int | None, window: int = 20_000) -> None:
    """Publish round ``r`` (QoS 1) on a bare MQTT 3.1.1 connection and return once the broker has acknowledged all.

    Not paho: at ≈ 5,000 messages/s a Python client took minutes to queue a million messages. The
    packets are built as bytes and written 2,000 to a system call, a thread counts the PUBACKs, and
    at most ``window`` (< 65,535) are unacknowledged, so no 16-bit message id is reused while in
    flight (paho refuses such a publish: ``ERR_QUEUE_SIZE``, and the message is never sent).
    """
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # the publisher keeps to its core (it is done before collectors start)
    sock = socket.create_connection(("127.0.0.1", port))
    client_id = f"bench-pub{r}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id  # clean session, 60 s
    sock.sendall(b"\x10" + _varint(len(body)) + body)
    if _recv_exact(sock, 4) != b"\x20\x02\x00\x00":
        raise RuntimeError("the broker refused the publisher's connection")
    acked = 0
    broken: list[str] = []
    cond = threading.Condition()

    def read_acks() -> None:
        nonlocal acked
        rest = b""
        while acked < messages:
            data = sock.recv(1 << 16)
            if not data:
                broken.append("connection closed")
                break
            data = rest + data
            n = len(data) // 4
            rest = data[4 * n :]
            if data[0 : 4 * n : 4] != b"\x40" * n:  # PUBACK: 0x40, length 2, message id
                broken.append("a packet that is not a PUBACK")
                break
            with cond:
                acked += n
                cond.notify_all()
        with cond:
            cond.notify_all()

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    chunk: list[bytes] = []
    for k, (topic, payload) in enumerate(round_messages(r, messages, meters, t0)):
        head = len(topic).to_bytes(2, "big") + topic + (k % 65535 + 1).to_bytes(2, "big")
        chunk.append(b"\x32" + _varint(len(head) + len(payload)) + head + payload)
        if len(chunk) == 2_000 or k == messages - 1:
            with cond:
                if not cond.wait_for(lambda k=k: k + 1 - acked <= window or broken, timeout=300) or broken:
                    raise RuntimeError(f"publisher: {acked:,} of {k + 1:,} acknowledged ({', '.join(broken)})")
            sock.sendall(b"".join(chunk))
            chunk.clear()
    with cond:
        cond.wait_for(lambda: acked >= messages or broken, timeout=600)
    if acked < messages:
        raise RuntimeError(f"publisher: the broker acknowledged {acked:,} of {messages:,} ({', '.join(broken)})")
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()


def _paho_drain(port: int, client_id: str, topic_filter: str, expected: int, out: mp.Queue, fast: bool = False) -> None:
    """Baseline: a bare paho client taking the queued messages, acknowledging each, doing nothing else.

    ``fast``: the collector's own client (``collectors.mqtt.BufferedClient``: read buffer, QoS 1 fast
    path, acknowledgements 32 at a time) with no spool, no decoding and no database behind it.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from collectors.mqtt import BufferedClient

    done = threading.Event()
    count = 0
    mids: list[int] = []

    def on_message(client, userdata, msg):
        nonlocal count
        count += 1
        if count >= expected:
            done.set()

    def on_raw(topic: bytes, payload: bytes, mid: int) -> None:
        nonlocal count
        count += 1
        mids.append(mid)
        if len(mids) >= 32 or count >= expected:
            client.ack_many(mids)
            mids.clear()
        if count >= expected:
            done.set()

    if fast:
        client = BufferedClient(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        client.on_raw_publish = on_raw
    else:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    started = time.perf_counter()
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    done.wait(300)
    out.put((count, time.perf_counter() - started))
    client.disconnect()
    client.loop_stop()


def _landed(conn, origin: str) -> int:
    """Readings the collector ``origin`` (and its workers, ``origin-w<k>``) has landed so far."""
    row = conn.execute(
        "SELECT coalesce(sum(n_inserted), 0) FROM ingest_batch WHERE origin = %s OR origin LIKE %s",
        (origin, origin + "-w%"),
    ).fetchone()
    return int(row[0]) if row else 0


class CpuProbe:
    """CPU seconds (user + system) so far of what a round runs on, to say which side is busy.

    The collector processes (this bench's Python children), Mosquitto, the PostgreSQL server (its
    postmaster and live children: the forwarders' backends, the WAL writer, the checkpointer), this
    bench's own process (it polls the database), and the whole machine (other users' work too).
    """

    def __init__(self, broker_pid: int, pg_port: int | None) -> None:
        import psutil

        self._psutil = psutil
        self.me = psutil.Process()
        self.broker = psutil.Process(broker_pid)
        self.pg = None
        if pg_port is not None:
            with contextlib.suppress(psutil.Error):
                for c in psutil.net_connections("tcp"):
                    if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == pg_port and c.pid:
                        self.pg = psutil.Process(c.pid)
                        break

    def _cpu(self, proc) -> float:
        try:
            t = proc.cpu_times()
        except self._psutil.Error:
            return 0.0
        return t.user + t.system

    def sample(self) -> dict[str, float]:
        psutil = self._psutil
        children = []
        with contextlib.suppress(psutil.Error):
            children = [p for p in self.me.children(recursive=True) if p.pid != self.broker.pid]
        pg = math.nan
        if self.pg is not None:
            with contextlib.suppress(psutil.Error):
                pg = self._cpu(self.pg) + sum(self._cpu(c) for c in self.pg.children())
        machine = psutil.cpu_times()
        return {
            "collectors": sum(self._cpu(p) for p in children),
            "mosquitto": self._cpu(self.broker),
            "postgres": pg,
            "bench": self._cpu(self.me),
            "machine": machine.user
            + machine.system
            + machine.nice
            + getattr(machine, "softirq", 0.0)
            + getattr(machine, "irq", 0.0),
        }


def _collect_round(
    url: str, settings, broker_url: str, spool: Path, r: int, workers: int, expected: int, probe: CpuProbe | None
) -> tuple[float, float, int, int, dict[str, float], float]:
    """Start ``workers`` collector processes on the queued round ``r``.

    Returns (steady s, total s, readings landed, landings seen in the steady window, CPU seconds
    used in the steady window by what ``probe`` watches, seconds between the workers' last
    landings): the steady window runs from 10 % to 90 % landed; the landings are the polls that
    saw the count move.
    """
    from collectors.config import CollectorConfig
    from collectors.service import run_workers

    settings = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"url": broker_url})})
    name = f"bench-r{r:02d}"
    config = CollectorConfig.model_validate(
        {
            "name": name,
            "spool_dir": str(spool / name),
            "seal_seconds": 0.5,
            "mqtt": {
                "client_id": f"bench-c{r}",
                "shared_group": f"g{r}" if workers > 1 else "",
                "subscriptions": [{"topic": TOPIC.format(round=r, serial="{serial}")}],
            },
        }
    )
    stop = threading.Event()
    result: list[int] = []
    started = time.perf_counter()
    runner = threading.Thread(target=lambda: result.append(run_workers(config, settings, url, workers, stop)))
    runner.start()
    marks: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}
    landed = 0
    moves = 0
    import psycopg

    # Polled every 20 ms on one connection: the steady window (10 % → 90 %) must span many polls
    # for its rate to mean anything.
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while landed < expected and time.perf_counter() - started < 900:
                time.sleep(0.02)
                before, landed = landed, _landed(conn, name)
                now = time.perf_counter()
                if landed != before and "10" in marks and "90" not in marks:
                    moves += 1
                for mark in ("10", "90"):
                    if landed >= int(mark) / 100 * expected and mark not in marks:
                        marks[mark] = now
                        if probe is not None:
                            cpu[mark] = probe.sample()
            total = time.perf_counter() - started
            # Each member of a shared group is dealt its share of the queue: one that starts or runs
            # behind leaves the end of the round to itself alone.
            ends = [
                row[0]
                for row in conn.execute(
                    "SELECT extract(epoch FROM max(received_at)) FROM ingest_batch"
                    " WHERE origin = %s OR origin LIKE %s GROUP BY origin",
                    (name, name + "-w%"),
                )
            ]
            apart = float(max(ends) - min(ends)) if len(ends) > 1 else 0.0
    finally:  # stopped by a SIGTERM too (exit_on_sigterm): the collector processes stop with the bench
        stop.set()
        runner.join()
    steady = marks.get("90", total) - marks.get("10", 0.0)
    used = {k: cpu["90"][k] - cpu["10"][k] for k in cpu["90"]} if "10" in cpu and "90" in cpu else {}
    return steady, total, landed, moves, used, apart


def _mosquitto_sub(port: int, client_id: str, topic_filter: str, count: int, timeout: float) -> subprocess.Popen:
    """``mosquitto_sub`` resuming the persistent session ``client_id`` until ``count`` messages (a line each)."""
    return subprocess.Popen(
        [
            *("mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-q", "1", "-c", "-i", client_id),
            *("-x", "3600", "-t", topic_filter, "-C", str(count), "-W", str(int(timeout)), "-F", "."),
        ],
        stdout=subprocess.PIPE,
    )


def _drained(proc: subprocess.Popen, count: int, what: str) -> None:
    out, _ = proc.communicate()
    got = out.count(b"\n")
    if got < count:
        raise RuntimeError(
            f"{what} received {got:,} of {count:,} queued messages: the broker did not hold the round whole"
        )


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


def bench_mqtt(messages: int, repeat: int, meters: int = 500) -> None:
    from bench.common import bench_database
    from releve.broker import MqttBroker

    readings = 2 * messages
    paho_messages = min(messages, PAHO_MESSAGES)
    print(
        f"\n3. MQTT -> database: {messages:,} JSON messages (2 readings each) from {meters} meters, QoS 1, per round;"
        f" each round queued in Mosquitto on persistent sessions before its consumers start (the publisher,"
        f" pinned to its own core, has finished: it shares nothing with what is timed); --workers 1 and 2"
        f" alternated, {repeat} rounds each; 'load' is the 1- and 5-minute load average as the round starts"
    )
    broker_dir = Path(tempfile.mkdtemp(prefix="releve-bench-mqtt-"))
    broker_dir.chmod(0o755)
    spool = Path(tempfile.mkdtemp(prefix="releve-bench-spool-"))
    rounds = 2 * repeat
    span = timedelta(minutes=15 * -(-messages // meters), days=1)  # each round's readings apart from the others'
    now = datetime.now(UTC).replace(microsecond=0)
    cpus = sorted(os.sched_getaffinity(0))
    ctx = mp.get_context("spawn")  # daemon children: a stopped bench does not wait for them

    def publish(r: int) -> float:
        started = time.perf_counter()
        t0 = (now - span * (rounds + 1 - r)).isoformat()
        pub = ctx.Process(
            target=_publish,
            args=(broker.port, r, messages, meters, t0, cpus[-1] if len(cpus) > 1 else None),
            daemon=True,
        )
        pub.start()
        pub.join()
        if pub.exitcode != 0:
            raise RuntimeError(f"the publisher of round {r} failed (exit {pub.exitcode})")
        return time.perf_counter() - started

    try:
        # Queues sized to a round, in memory: a million queued messages saved every second (the
        # embedded broker's autosave_interval 1) would have the broker's one thread time its saves.
        with (
            MqttBroker(broker_dir / "b", max_queued_messages=messages + 1_000, persistence=False) as broker,
            bench_database() as (url, settings, _),
        ):
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.cursor().executemany(
                    "INSERT INTO meter (serial, commodity, model, unit, protocol) "
                    "VALUES (%s, 'electricity', 'b', 'kWh', 'mqtt')",
                    [(f"MQ{i:05d}",) for i in range(meters)],
                )
            pg_port = psycopg.conninfo.conninfo_to_dict(url).get("port")
            probe = None
            with contextlib.suppress(ImportError):
                assert broker._proc is not None
                probe = CpuProbe(broker._proc.pid, int(pg_port) if pg_port else None)

            # Baselines on round 0: what the broker and a bare client can do with the same queue.
            topic0 = TOPIC.format(round=0, serial="+")
            for cid in ("bench-drain-sub", "bench-drain-paho", "bench-drain-buffered"):
                _session(broker.port, cid, topic0)
            for cid in ("bench-drain-2a", "bench-drain-2b"):
                _session(broker.port, cid, f"$share/drain2/{topic0}")
            secs = publish(0)
            print(f"   queued {messages:,} messages in {secs:.1f} s ({messages / secs:,.0f}/s, not timed below)")
            sub_rate = {}
            if shutil.which("mosquitto_sub"):
                load = _load()
                started = time.perf_counter()
                _drained(
                    _mosquitto_sub(broker.port, "bench-drain-sub", topic0, messages, 600), messages, "mosquitto_sub"
                )
                sub_rate[1] = messages / (time.perf_counter() - started)
                print(
                    f"   baseline, broker limit: mosquitto_sub (C) drains the queue   {sub_rate[1]:>9,.0f} messages/s"
                    f" = {2 * sub_rate[1]:>9,.0f} readings/s  ({load})"
                )
                load = _load()
                half = messages // 2  # a shared subscription deals the queue out in turn
                started = time.perf_counter()
                procs = [
                    _mosquitto_sub(broker.port, cid, f"$share/drain2/{topic0}", half, 600)
                    for cid in ("bench-drain-2a", "bench-drain-2b")
                ]
                for proc in procs:
                    _drained(proc, half, "a shared mosquitto_sub")
                sub_rate[2] = 2 * half / (time.perf_counter() - started)
                print(
                    f"   baseline, broker limit for two: 2 x mosquitto_sub, shared     {sub_rate[2]:>9,.0f} messages/s"
                    f" = {2 * sub_rate[2]:>9,.0f} readings/s  ({load})"
                )
            out: mp.Queue = ctx.Queue()
            load = _load()
            drain = ctx.Process(
                target=_paho_drain, args=(broker.port, "bench-drain-paho", topic0, paho_messages, out), daemon=True
            )
            drain.start()
            got, secs = out.get(timeout=700)
            drain.join()
            paho_rate = got / secs
            print(
                f"   baseline, Python client limit: bare paho, ack only            {paho_rate:>9,.0f} messages/s"
                f" = {2 * paho_rate:>9,.0f} readings/s  (first {paho_messages:,}; {load})"
            )
            load = _load()
            drain = ctx.Process(
                target=_paho_drain,
                args=(broker.port, "bench-drain-buffered", topic0, messages, out, True),
                daemon=True,
            )
            drain.start()
            got, secs = out.get(timeout=700)
            drain.join()
            buffered_rate = got / secs
            print(
                f"   baseline, the collector's client alone (BufferedClient)      {buffered_rate:>9,.0f} messages/s"
                f" = {2 * buffered_rate:>9,.0f} readings/s ({buffered_rate / paho_rate:.2f} x bare paho; {load})"
            )

            # The broker delivers at least as fast as the fastest drain of the same queue (mosquitto_sub
            # prints each message and acknowledges one per write: the collector's client can be faster).
            broker_pace = {w: max(sub_rate.get(w, 0.0), buffered_rate) for w in (1, 2)}
            rates: dict[int, list[float]] = {1: [], 2: []}
            for r in range(1, rounds + 1):
                workers = 1 if r % 2 else 2
                topic = TOPIC.format(round=r, serial="+")
                if workers == 1:
                    _session(broker.port, f"bench-c{r}", topic)
                else:
                    for cid in (f"bench-c{r}", f"bench-c{r}-w1"):
                        _session(broker.port, cid, f"$share/g{r}/{topic}")
                publish(r)
                time.sleep(2)  # the publisher's and the broker's burst out of the load average's way
                load = _load()
                steady, total, landed, moves, cpu, apart = _collect_round(
                    url, settings, broker.url, spool, r, workers, readings, probe
                )
                # The forwarder lands a spool segment at a time: a round that lands 10 % → 90 % in a few
                # batches has no steady rate to speak of, and then the whole round's rate, start-up
                # included, is the honest figure.
                whole = not (landed >= readings and steady > 0 and moves >= MIN_LANDINGS)
                rate = landed / total if whole else 0.8 * readings / steady
                if not whole:
                    rates[workers].append(rate)
                print(
                    f"   round {r}, Relevé collector --workers {workers}: {landed:,} of {readings:,} readings in "
                    f"PostgreSQL, {total:.1f} s with start-up; "
                    + (
                        f"whole round (landed in under {MIN_LANDINGS} steps) "
                        if whole
                        else f"steady ({moves} landings) "
                    )
                    + f"{rate:,.0f} readings/s ({rate / 2:,.0f} messages/s) "
                    f"= {rate / 2 / buffered_rate:.2f} x its client alone"
                    + f", {rate / 2 / broker_pace[workers]:.2f} x the broker's pace for {workers}"
                    + f"  ({load})"
                )
                print(
                    f"      {_limit(rate / 2, workers, broker_pace[workers], buffered_rate, cpu, steady)}"
                    + (f"; the workers' last landings {apart:.1f} s apart" if workers > 1 else "")
                )
            if rates[1] and rates[2]:
                one, two = statistics.median(rates[1]), statistics.median(rates[2])
                print(
                    f"   median steady rate: --workers 1 {one:,.0f}, --workers 2 {two:,.0f} readings/s"
                    f" = {two / one:.2f} x ({len(rates[1])} and {len(rates[2])} rounds;"
                    f" --workers 1 {min(rates[1]):,.0f}–{max(rates[1]):,.0f},"
                    f" --workers 2 {min(rates[2]):,.0f}–{max(rates[2]):,.0f})"
                )
    finally:  # a SIGTERM too (exit_on_sigterm): nothing left in TMPDIR
        shutil.rmtree(spool, ignore_errors=True)
        shutil.rmtree(broker_dir, ignore_errors=True)


def _limit(
    messages_s: float, workers: int, broker_s: float, client_s: float, cpu: dict[str, float], wall: float
) -> str:
    """Which side limits a round, and the CPU each side used in its steady window (cores = CPU s / wall s)."""
    cores = os.cpu_count() or 1
    used = ""
    busy = 0.0
    if cpu and wall > 0:
        busy = cpu["machine"] / wall
        used = (
            f"; cores busy in the steady window: collector processes {cpu['collectors'] / wall:.2f},"
            f" mosquitto {cpu['mosquitto'] / wall:.2f}, postgres {cpu['postgres'] / wall:.2f},"
            f" this bench's polling {cpu['bench'] / wall:.2f}, other processes"
            f" {(cpu['machine'] - sum(v for k, v in cpu.items() if k != 'machine')) / wall:.2f};"
            f" the machine {busy:.2f} of {cores}"
        )
    if messages_s >= 0.8 * broker_s:
        return f"broker-limited (≥ 0.8 x the fastest drain of the broker's queue by {workers} client(s)){used}"
    if busy >= 0.9 * cores:
        return f"machine-limited (every core busy: the collectors share them with the broker, PostgreSQL and the rest){used}"
    if messages_s >= 0.8 * client_s * workers:
        return f"client-limited (the MQTT client's pace per process){used}"
    return f"collector-limited{used}"


#: Landings (database polls that saw the count move) a steady window needs to give a rate.
MIN_LANDINGS = 5
#: The bare paho baseline takes this many of the queued messages (at ≈ 6,000/s a million would take minutes).
PAHO_MESSAGES = 100_000


def main() -> int:
    exit_on_sigterm()  # a SIGTERM stops the simulators, the broker and the throwaway server
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=64)
    parser.add_argument("--gateways", type=int, default=2, help="TCP gateways the meters are spread over")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--messages",
        type=int,
        default=400_000,
        help="MQTT messages per round, queued whole in the broker before the round starts",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="MQTT rounds of --workers 1 and of --workers 2 (alternated)"
    )
    parser.add_argument("--only", default="tcp,rtu,mqtt", help="comma-separated subset of tcp,rtu,mqtt")
    args = parser.parse_args()
    if args.messages < 1 or args.repeat < 1:
        parser.error("--messages and --repeat must be at least 1")
    only = set(args.only.split(","))
    if "tcp" in only:
        bench_tcp(args.meters, args.gateways, args.delay_ms, args.seconds)
    if "rtu" in only:
        bench_rtu(args.seconds)
    if "mqtt" in only:
        bench_mqtt(args.messages, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
