"""Simulator benchmarks.

1. Modbus TCP throughput: one simulator process serving a gateway of SDM630s; pymodbus async clients
   in this process read 80 input registers (an SDM630-sized block) as fast as they can, over 1..N
   connections, without and with a realistic per-device response delay.
2. Backfill: the largest fleet whose year of 15-minute history is written as CSV in under a minute
   (and how fast the engine alone computes it, without CSV).

Run: .venv/bin/python bench/simulator.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from simulators.backfill import backfill
from simulators.config import parse_fleet
from simulators.engine import Simulation

UNITS = 32


def _serve(port_queue: mp.Queue, stop: mp.Event, delay_ms: float) -> None:
    from simulators.clock import SimClock
    from simulators.modbus import BackgroundModbus

    cfg = parse_fleet(
        {
            "topology": {
                "transformers": 1,
                "customers_per_transformer": UNITS - 1,
                "dmas": 0,
                "electricity_models": {"sdm630": 1.0},
            },
            "modbus": {"tcp_base_port": 0, "rtu_lines": 0, "devices_per_gateway": 247, "response_delay_ms": delay_ms},
            "mqtt": {"electricity_share": 0.0},
            "theft": {"rate": 0.0},
            "faults": {"rate": 0.0},
        }
    )
    sim = Simulation(cfg)
    clock = SimClock(sim.start, speed=96)
    with BackgroundModbus(sim, clock) as front:
        gw = front.gateways[0]
        port_queue.put(gw.port)
        stop.wait()


async def _hammer(port: int, connections: int, seconds: float) -> tuple[int, int]:
    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5) for _ in range(connections)]
    for c in clients:
        await c.connect()
    done = 0
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(n: int, client: AsyncModbusTcpClient) -> None:
        nonlocal done, errors
        unit = 1 + n % UNITS
        while time.perf_counter() < stop_at:
            rr = await client.read_input_registers(0, count=80, device_id=unit)
            if rr.isError():
                errors += 1
            done += 1
            unit = 1 + unit % UNITS

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(clients)))
    for c in clients:
        c.close()
    return done, errors


def bench_modbus(seconds: float, delay_ms: float, connection_counts: list[int]) -> None:
    ctx = mp.get_context("spawn")
    port_queue: mp.Queue = ctx.Queue()
    stop = ctx.Event()
    proc = ctx.Process(target=_serve, args=(port_queue, stop, delay_ms), daemon=True)
    proc.start()
    try:
        port = port_queue.get(timeout=30)
        asyncio.run(_hammer(port, 1, 0.5))  # warm-up
        for connections in connection_counts:
            done, errors = asyncio.run(_hammer(port, connections, seconds))
            print(
                f"  delay {delay_ms:5.0f} ms  {connections:3d} connections: {done / seconds:8.0f} requests/s"
                f"  ({done} reads of 80 registers, {errors} errors)",
                flush=True,
            )
    finally:
        stop.set()
        proc.join(10)


def _fleet(meters: int):  # meters ≈ transformers × 25
    transformers = max(1, round(meters / 25))
    return parse_fleet(
        {"topology": {"transformers": transformers, "customers_per_transformer": 24, "dmas": 0}, "horizon_days": 365}
    )


def backfill_seconds(meters: int, days: float) -> tuple[float, float, int, int]:
    """(CSV backfill seconds, engine-only seconds, actual meters, rows) for a year."""
    sim = Simulation(_fleet(meters))
    t0 = time.perf_counter()
    for _ in sim.blocks(days):
        pass
    engine = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="releve-bench-"))
    try:
        summary = backfill(Simulation(_fleet(meters)), days, out, progress=False)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return summary.seconds, engine, summary.meters, summary.rows


def bench_backfill(days: float, budget: float, quick: bool) -> None:
    probe = 50
    seconds, engine, n, rows = backfill_seconds(probe, days)
    print(
        f"  {n:6d} meters: CSV backfill {seconds:6.1f} s ({rows / seconds / 1e6:.2f} M rows/s), "
        f"engine only {engine:5.2f} s",
        flush=True,
    )
    best = (n, seconds, rows) if seconds < budget else None
    guess = int(probe * budget / seconds * 0.92)
    tried = set()
    for _ in range(1 if quick else 3):
        if guess in tried or guess < 25:
            break
        tried.add(guess)
        seconds, engine, n, rows = backfill_seconds(guess, days)
        print(
            f"  {n:6d} meters: CSV backfill {seconds:6.1f} s ({rows / seconds / 1e6:.2f} M rows/s), "
            f"engine only {engine:5.2f} s",
            flush=True,
        )
        if seconds < budget and (best is None or n > best[0]):
            best = (n, seconds, rows)
        guess = int(n * budget / seconds * (0.97 if seconds < budget else 0.93))
    if best is not None:
        n, seconds, rows = best
        print(
            f"=> largest fleet with a year of 15-minute history as CSV in under {budget:.0f} s: {n} meters "
            f"({rows:,} rows in {seconds:.1f} s, {rows / seconds / 1e6:.2f} M rows/s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else 5.0
    print("1. Modbus TCP: one simulator process, 80-register reads from pymodbus async clients in another process")
    bench_modbus(seconds, 0.0, [1, 8, 32])
    bench_modbus(seconds, 20.0, [8, 32, 128])
    print("2. Backfill of 365 days at 15 minutes (register reads + interval values, CSV)")
    bench_backfill(365.0, 60.0, args.quick)


if __name__ == "__main__":
    main()
