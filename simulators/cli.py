"""``releve simulate``: live meter simulators and history backfill.

``releve simulate run --fleet F`` serves the fleet live — Modbus TCP gateways, Modbus RTU lines on
pseudo-terminals and an MQTT publisher — on a simulated clock running ``speed`` times faster than
the wall clock; it prints what listens where and stops cleanly on Ctrl-C.
``releve simulate backfill --days N --out DIR`` writes N days of history as CSV files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simulators.config import FleetError, load_fleet

EPILOG = """\
The fleet file (TOML) sets counts per model, topology, theft/fault rates, seed, ports and speed;
every key is optional. See simulators/fleet.example.toml and docs/simulators.md.

examples:
  releve simulate backfill --fleet simulators/fleet.example.toml --days 30 --out var/sim
  releve simulate run --fleet simulators/fleet.example.toml --mqtt mqtt://127.0.0.1:1883
  releve simulate run --fleet simulators/fleet.example.toml --list csv   # which model at which unit id
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` command and its subcommands."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulated meters: live Modbus/MQTT servers, history backfill",
        description=(__doc__ or "").replace("``", "'"),  # plain text: no reStructuredText markup in --help
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="simulate_command", metavar="SUBCOMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="serve the fleet live over Modbus TCP, Modbus RTU (pty) and MQTT",
        description="Serve the fleet live until Ctrl-C.",
    )
    run.add_argument("--fleet", type=Path, help="fleet TOML file (default: built-in small fleet)")
    run.add_argument("--mqtt", help="broker URL mqtt://host:port (default: fleet file, then settings)")
    run.add_argument("--no-mqtt", action="store_true", help="do not publish over MQTT")
    run.add_argument("--speed", type=float, help="simulated seconds per wall second (fleet default 96)")
    run.add_argument("--start", help="simulated start instant, ISO-8601 (default: the fleet start)")
    run.add_argument(
        "--run-dir",
        type=Path,
        default=Path("var/sim"),
        help="where stable symlinks to the RTU pseudo-terminals go (default var/sim)",
    )
    run.add_argument("--duration", type=float, default=0.0, help="stop after this many wall seconds")
    run.add_argument(
        "--list",
        choices=("json", "csv"),
        dest="list_format",
        help="print which model answers at which unit id (and where), then exit without serving; "
        "a running simulator writes the same listing to RUN_DIR/units.json and units.csv",
    )
    run.set_defaults(func=run_command)

    fill = sub.add_parser(
        "backfill",
        help="write N days of history as CSV files",
        description="Write N days of fleet history as CSV files (see docs/simulators.md).",
    )
    fill.add_argument("--fleet", type=Path, help="fleet TOML file (default: built-in small fleet)")
    fill.add_argument("--days", type=float, required=True, help="days of history from the fleet start")
    fill.add_argument("--out", type=Path, required=True, help="output directory")
    fill.add_argument("--no-progress", action="store_true", help="no progress bar")
    fill.set_defaults(func=backfill_command)


def _fleet(args: argparse.Namespace) -> Any:
    from releve.cli import CommandError

    try:
        return load_fleet(args.fleet)
    except FleetError as exc:
        raise CommandError(str(exc)) from exc


def backfill_command(args: argparse.Namespace, settings: Any) -> int:
    """Run ``releve simulate backfill``."""
    from simulators.backfill import backfill
    from simulators.engine import Simulation

    config = _fleet(args)
    if args.days <= 0:
        from releve.cli import CommandError

        raise CommandError("--days must be positive")
    sim = Simulation(config)
    summary = backfill(sim, args.days, args.out, progress=not args.no_progress)
    print(
        f"{summary.meters} meters, {summary.days:g} days: {summary.register_rows} register reads, "
        f"{summary.interval_rows} interval values, {summary.events} events, {summary.labels} labels "
        f"in {summary.seconds:.1f} s -> {args.out}"
    )
    return 0


def run_command(args: argparse.Namespace, settings: Any) -> int:
    """Run ``releve simulate run``."""
    from releve.cli import CommandError

    config = _fleet(args)
    if args.speed is not None:
        config.speed = args.speed
    start = config.start
    if args.start:
        try:
            start = datetime.fromisoformat(args.start)
        except ValueError as exc:
            raise CommandError(f"--start: {exc}") from exc
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
        if start < config.start:
            raise CommandError(f"--start {start.isoformat()} is before the fleet start {config.start.isoformat()}")
    if args.list_format:
        from simulators.engine import Simulation
        from simulators.modbus import listing_csv, unit_listing

        rows = unit_listing(Simulation(config))
        sys.stdout.write(json.dumps(rows, indent=1) + "\n" if args.list_format == "json" else listing_csv(rows))
        return 0
    mqtt_url = None if args.no_mqtt else (args.mqtt or getattr(settings.mqtt, "url", "") or config.mqtt.url)
    try:
        return asyncio.run(_serve(config, start, mqtt_url, args.run_dir, args.duration))
    except OSError as exc:
        raise CommandError(str(exc)) from exc


async def _serve(config: Any, start: datetime, mqtt_url: str | None, run_dir: Path, duration: float) -> int:
    from simulators.clock import SimClock
    from simulators.engine import Simulation
    from simulators.modbus import ModbusFrontEnd
    from simulators.mqtt import MqttPublisher

    if not logging.getLogger("releve").isEnabledFor(logging.DEBUG):
        # pymodbus logs every request to a silent unit as an error; a comm-loss fault is expected here.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    sim = Simulation(config)
    clock = SimClock(start, config.speed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    front = ModbusFrontEnd(sim, clock, run_dir=run_dir)
    await front.start()
    publisher = None
    tasks = []
    try:
        for line in front.describe():
            print(line)
        as_json, _ = front.write_listing(run_dir)
        print(f"unit listing (model at each unit id): {as_json} and {as_json.with_suffix('.csv')}")
        if mqtt_url and any(m.transport == "mqtt" for m in sim.meters):
            publisher = MqttPublisher(sim, clock, mqtt_url)
            try:
                await asyncio.to_thread(publisher.connect)
            except OSError as exc:
                raise OSError(f"MQTT broker {mqtt_url}: {exc}") from exc
            tasks.append(asyncio.create_task(publisher.run(stop)))
            print(
                f"mqtt publisher -> {mqtt_url}: {len(publisher.meters)} meters every {config.mqtt.publish_every_s:g} s"
            )
        print(f"simulated clock from {start.isoformat()} at x{config.speed:g}; Ctrl-C stops", flush=True)
        if duration > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
        else:
            await stop.wait()
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        if publisher is not None:
            publisher.close()
        await front.stop()
        print("simulators stopped", file=sys.stderr, flush=True)
    return 0
