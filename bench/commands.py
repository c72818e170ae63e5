"""Mass disconnection: confirmed relay commands per second, against a baseline measured in the same run.

A credit-control run can disconnect hundreds of meters at once. N simulated SDM630s behind G TCP
gateways (a device delay of ``--delay-ms``), served by a simulator in its own process; N disconnect
commands queued in a throwaway PostgreSQL; Relevé's collector runner executes them (claim, write,
settle, read-back, record, audit) until every one is confirmed. The baseline is what a careful
script does without a queue: for each meter in turn, the same write, the same settle time, the same
read-back — no database at all. Both are printed as confirmed commands per second, Relevé's as a
ratio to the baseline. The meters are reconnected between the two runs.

Run: .venv/bin/python bench/commands.py [--meters 64] [--gateways 2] [--delay-ms 20] [--connections 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymodbus.client import AsyncModbusTcpClient

from bench.collect import SimulatorProcess, fleet_config
from bench.common import bench_database
from collectors.commands import CommandRunner
from collectors.config import CommandsConfig
from collectors.modbus import MeterTarget, TcpGateway
from releve import db
from releve import meter_commands as mc
from releve.profiles import load_profile


async def baseline(gateways, kind: str) -> float:
    """Seconds for a sequential script to write and confirm ``kind`` on every meter."""
    spec = load_profile("sdm630").commands[kind]
    started = time.perf_counter()
    for host, port, units in gateways:
        client = AsyncModbusTcpClient(host, port=port, timeout=5)
        await client.connect()
        for unit in units:
            await client.write_register(spec.write.address, spec.write.registers(0)[0], device_id=unit)
            await asyncio.sleep(spec.settle_s)
            reply = await client.read_input_registers(spec.confirm.address, count=1, device_id=unit)
            assert reply.registers == [spec.confirm.expect], (unit, reply.registers)
        client.close()
    return time.perf_counter() - started


async def releve(gateways, url: str, settings, connections: int, kind: str) -> tuple[float, int]:
    """(seconds, confirmed) for Relevé's runner to execute ``kind`` queued for every meter."""
    profile = load_profile("sdm630")
    links = []
    serials = []
    for host, port, units in gateways:
        link = TcpGateway(f"{host}:{port}", host, port, max_connections=connections, timeout=5.0)
        meters = [MeterTarget.build(f"B{port}-{u}", u, profile, link.name) for u in units]
        serials += [m.serial for m in meters]
        links.append((link, meters))
    with db.connect(url, autocommit=True) as conn:
        ids = [mc.queue_command(conn, s, kind, "bench") for s in serials]
    runner = CommandRunner("bench", CommandsConfig(check_every_s=0.05), settings, url, links)
    started = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    with db.connect(url, autocommit=True) as conn:
        while True:
            await runner.cycle(tasks)
            await asyncio.sleep(0.05)
            left = conn.execute(
                "SELECT count(*) FROM meter_command WHERE id = ANY(%s) AND state IN ('queued', 'sent')", (ids,)
            ).fetchone()[0]
            if left == 0:
                break
        confirmed = conn.execute(
            "SELECT count(*) FROM meter_command WHERE id = ANY(%s) AND state = 'confirmed'", (ids,)
        ).fetchone()[0]
    elapsed = time.perf_counter() - started
    await asyncio.gather(*tasks)
    for link, _ in links:
        link.close()
    return elapsed, confirmed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=64)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=4, help="connections per gateway for Relevé")
    args = parser.parse_args()
    sim = SimulatorProcess(fleet_config(args.meters, args.delay_ms, gateways=args.gateways))
    try:
        gateways = sim.info["gateways"]
        n = sum(len(units) for _, _, units in gateways)
        with bench_database() as (url, settings, where):
            with db.connect(url, autocommit=True) as conn, conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO meter (serial, commodity, model, unit, protocol) "
                    "VALUES (%s, 'electricity', 'sdm630', 'kWh', 'modbus-tcp')",
                    [(f"B{port}-{u}",) for _, port, units in gateways for u in units],
                )
            base_s = asyncio.run(baseline(gateways, "disconnect"))
            asyncio.run(baseline(gateways, "reconnect"))
            took, confirmed = asyncio.run(releve(gateways, url, settings, args.connections, "disconnect"))
    finally:
        sim.close()
    base_rate, rate = n / base_s, confirmed / took
    print(
        f"mass disconnection of {n} SDM630s on {len(gateways)} gateways, {args.delay_ms:g} ms device delay "
        f"(database: {where})"
    )
    print(f"  baseline, sequential write + settle + read-back:  {base_rate:7.1f} confirmed/s ({base_s:.1f} s)")
    print(
        f"  Relevé runner, queue -> confirmed + audit, {args.connections} conn/gateway: {rate:7.1f} confirmed/s "
        f"({took:.1f} s, {confirmed}/{n} confirmed) = {rate / base_rate:.1f} x baseline"
    )
    return 0 if confirmed == n else 1


if __name__ == "__main__":
    sys.exit(main())
