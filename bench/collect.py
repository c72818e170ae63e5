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
3. MQTT → database: the messages are queued in Mosquitto on persistent sessions before anything
   timed starts (the publisher, pinned to a core of its own, has finished). Baselines on the same
   queue: ``mosquitto_sub`` draining it (the broker's limit), a bare paho client that only
   acknowledges (a Python client's limit) and the collector's own client with nothing behind it
   (``BufferedClient``: the limit of one collector process's network side). Then the collector (``releve collect run`` as
   processes: spool fsync, acknowledge, decode to columns, the write path) with ``--workers 1`` and
   ``--workers 2`` (MQTT 5 shared subscription) until every reading is in PostgreSQL; the steady
   rate (10 % → 90 % landed) as a ratio of each baseline, and which side limits it.

Run: .venv/bin/python bench/collect.py [--meters 64] [--gateways 2] [--delay-ms 20] [--seconds 8]
     [--messages 40000] [--only tcp,rtu,mqtt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
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


def _publish(port: int, rounds: list[tuple[int, int, str]], meters: int, cpu: int | None) -> None:
    """Publish every round's messages (QoS 1) and wait for the broker to take them all."""
    import paho.mqtt.client as mqtt

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # the publisher keeps to its core (it is done before collectors start)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for r, messages, t0 in rounds:
        start = datetime.fromisoformat(t0)
        infos = []
        for k in range(messages):
            serial = f"MQ{k % meters:05d}"
            ts = (start + timedelta(minutes=15 * (k // meters))).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {
                "meter": serial,
                "ts": ts,
                "readings": [
                    {"channel": "1-0:1.8.0", "value": 100 + k, "unit": "kWh"},
                    {"channel": "1-0:1.7.0", "value": 400.0, "unit": "W"},
                ],
            }
            infos.append(client.publish(TOPIC.format(round=r, serial=serial), json.dumps(body), qos=1))
            if len(infos) == 20_000:
                # Message ids are 16 bits: more than 65,535 unacknowledged messages would reuse one
                # (paho refuses it, ERR_QUEUE_SIZE), so the broker acknowledges each 20,000 first.
                for info in infos:
                    info.wait_for_publish(300)
                infos.clear()
        for info in infos:
            info.wait_for_publish(300)
    client.loop_stop()
    client.disconnect()


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
    """Readings the collector ``origin`` has landed so far (its batches' inserted rows)."""
    row = conn.execute(
        "SELECT coalesce(sum(n_inserted), 0) FROM ingest_batch WHERE origin LIKE %s", (origin + "%",)
    ).fetchone()
    return int(row[0]) if row else 0


def _collect_round(
    url: str, settings, broker_url: str, spool: Path, r: int, workers: int, expected: int, group: str
) -> tuple[float, float, int, int]:
    """Start ``workers`` collector processes on the queued round ``r``.

    Returns (steady s, total s, readings landed, landings seen in the steady window): the steady
    window runs from 10 % to 90 % landed; the landings are the polls that saw the count move.
    """
    from collectors.config import CollectorConfig
    from collectors.service import run_workers

    settings = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"url": broker_url})})
    name = f"bench{r}"
    config = CollectorConfig.model_validate(
        {
            "name": name,
            "spool_dir": str(spool / name),
            "seal_seconds": 0.5,
            "mqtt": {
                "client_id": f"bench-c{r}",
                "shared_group": group,
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
    landed = 0
    moves = 0
    import psycopg

    # Polled every 20 ms on one connection: a round lands in a second or two on a quiet machine, and
    # the steady window (10 % → 90 %) must span many polls for its rate to mean anything.
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while landed < expected and time.perf_counter() - started < 600:
                time.sleep(0.02)
                before, landed = landed, _landed(conn, name)
                now = time.perf_counter()
                if landed != before and "10" in marks and "90" not in marks:
                    moves += 1
                if landed >= 0.1 * expected:
                    marks.setdefault("10", now)
                if landed >= 0.9 * expected:
                    marks.setdefault("90", now)
        total = time.perf_counter() - started
    finally:  # stopped by a SIGTERM too (exit_on_sigterm): the collector processes stop with the bench
        stop.set()
        runner.join()
    steady = marks.get("90", total) - marks.get("10", 0.0)
    return steady, total, landed, moves


def bench_mqtt(messages: int, meters: int = 500) -> None:
    from bench.common import bench_database
    from releve.broker import MqttBroker

    readings = 2 * messages
    print(
        f"\n3. MQTT -> database: {messages:,} JSON messages (2 readings each) from {meters} meters, QoS 1, per run;"
        f" queued in Mosquitto on persistent sessions before any consumer starts (the publisher, pinned to"
        f" its own core, has finished: it shares nothing with what is timed)"
    )
    broker_dir = Path(tempfile.mkdtemp(prefix="releve-bench-mqtt-"))
    broker_dir.chmod(0o755)
    spool = Path(tempfile.mkdtemp(prefix="releve-bench-spool-"))
    try:
        with MqttBroker(broker_dir / "b") as broker, bench_database() as (url, settings, _):
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.cursor().executemany(
                    "INSERT INTO meter (serial, commodity, model, unit, protocol) "
                    "VALUES (%s, 'electricity', 'b', 'kWh', 'mqtt')",
                    [(f"MQ{i:05d}",) for i in range(meters)],
                )
            # Sessions first (so the broker queues for them), then every message.
            topic1 = TOPIC.format(round=1, serial="+")
            _session(broker.port, "bench-drain-sub", topic1)
            _session(broker.port, "bench-drain-paho", topic1)
            _session(broker.port, "bench-drain-buffered", topic1)
            _session(broker.port, "bench-c1", topic1)
            for cid in ("bench-c2", "bench-c2-w1"):
                _session(broker.port, cid, f"$share/bench2/{TOPIC.format(round=2, serial='+')}")
            now = datetime.now(UTC).replace(microsecond=0)
            rounds = [
                (1, messages, (now - timedelta(days=60)).isoformat()),
                (2, messages, (now - timedelta(days=30)).isoformat()),
            ]
            cpus = sorted(os.sched_getaffinity(0))
            ctx = mp.get_context("spawn")  # daemon children: a stopped bench does not wait for them
            started = time.perf_counter()
            pub = ctx.Process(
                target=_publish, args=(broker.port, rounds, meters, cpus[-1] if len(cpus) > 1 else None), daemon=True
            )
            pub.start()
            pub.join()
            print(f"   queued {2 * messages:,} messages in {time.perf_counter() - started:.1f} s (not timed below)")

            # Baselines on the same queued messages (round 1): what the broker and a bare client can do.
            sub_rate = None
            if shutil.which("mosquitto_sub"):
                started = time.perf_counter()
                subprocess.run(
                    [
                        "mosquitto_sub",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(broker.port),
                        "-V",
                        "mqttv5",
                        "-q",
                        "1",
                        "-c",
                        "-i",
                        "bench-drain-sub",
                        "-x",
                        "3600",
                        "-t",
                        topic1,
                        "-C",
                        str(messages),
                    ],
                    stdout=subprocess.DEVNULL,
                    check=True,
                    timeout=600,
                )
                sub_rate = messages / (time.perf_counter() - started)
                print(
                    f"   baseline, broker limit: mosquitto_sub (C) drains the queue   {sub_rate:>9,.0f} messages/s"
                    f" = {2 * sub_rate:>9,.0f} readings/s"
                )
            out: mp.Queue = ctx.Queue()
            drain = ctx.Process(
                target=_paho_drain, args=(broker.port, "bench-drain-paho", topic1, messages, out), daemon=True
            )
            drain.start()
            got, secs = out.get(timeout=700)
            drain.join()
            paho_rate = got / secs
            print(
                f"   baseline, Python client limit: bare paho, ack only            {paho_rate:>9,.0f} messages/s"
                f" = {2 * paho_rate:>9,.0f} readings/s"
            )
            drain = ctx.Process(
                target=_paho_drain, args=(broker.port, "bench-drain-buffered", topic1, messages, out, True), daemon=True
            )
            drain.start()
            got, secs = out.get(timeout=700)
            drain.join()
            buffered_rate = got / secs
            print(
                f"   baseline, the collector's client alone (BufferedClient)      {buffered_rate:>9,.0f} messages/s"
                f" = {2 * buffered_rate:>9,.0f} readings/s ({buffered_rate / paho_rate:.2f} x bare paho)"
            )

            for r, workers in ((1, 1), (2, 2)):
                steady, total, landed, moves = _collect_round(
                    url, settings, broker.url, spool, r, workers, readings, "bench2" if workers > 1 else ""
                )
                # The forwarder lands a spool segment at a time: a round that lands 10 % → 90 % in a few
                # batches has no steady rate to speak of (it read 4 x mosquitto_sub's pace once), and then the
                # whole round's rate, start-up included, is the honest figure.
                whole = not (landed >= readings and steady > 0 and moves >= MIN_LANDINGS)
                rate = landed / total if whole else 0.8 * readings / steady
                # Which side limits: the broker (mosquitto_sub's pace), a Python MQTT client per process (the
                # buffered drain's pace, times the processes), or the collector's own work.
                if sub_rate and rate / 2 >= 0.8 * sub_rate:
                    limit = "broker-limited"
                elif rate / 2 >= 0.8 * buffered_rate * workers:
                    limit = "client-limited (the MQTT client's pace per process)"
                else:
                    limit = "collector-limited"
                print(
                    f"   Relevé collector, --workers {workers}: {landed:,} of {readings:,} readings in PostgreSQL, "
                    f"{total:.1f} s with start-up; "
                    + (f"whole round (landed in under {MIN_LANDINGS} steps) " if whole else "steady ")
                    + f"{rate:,.0f} readings/s ({rate / 2:,.0f} messages/s) "
                    f"= {rate / 2 / paho_rate:.2f} x bare paho, {rate / 2 / buffered_rate:.2f} x its client alone"
                    + (f", {rate / 2 / sub_rate:.2f} x mosquitto_sub" if sub_rate else "")
                    + f": {limit}"
                )
    finally:  # a SIGTERM too (exit_on_sigterm): nothing left in TMPDIR
        shutil.rmtree(spool, ignore_errors=True)
        shutil.rmtree(broker_dir, ignore_errors=True)


#: Landings (database polls that saw the count move) a steady window needs to give a rate.
MIN_LANDINGS = 5
#: Messages per MQTT round: a round is queued whole in the broker (see ``main``).
MAX_MESSAGES = 60_000


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
        default=40_000,
        help="MQTT messages per run (at most 60,000: a round is queued whole in the broker)",
    )
    parser.add_argument("--only", default="tcp,rtu,mqtt", help="comma-separated subset of tcp,rtu,mqtt")
    args = parser.parse_args()
    if not 0 < args.messages <= MAX_MESSAGES:
        # Each round is queued whole for every session before anything drains it. The embedded broker
        # (releve/broker.py) did not hold every message of 80,000 and 100,000 message rounds for
        # mosquitto_sub, which then waited 10 minutes for them; 60,000 went through.
        parser.error(f"--messages must be between 1 and {MAX_MESSAGES:,} (a round is queued whole in the broker)")
    only = set(args.only.split(","))
    if "tcp" in only:
        bench_tcp(args.meters, args.gateways, args.delay_ms, args.seconds)
    if "rtu" in only:
        bench_rtu(args.seconds)
    if "mqtt" in only:
        bench_mqtt(args.messages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
