"""``releve demo``: the whole platform on its embedded defaults (the wiring is in :mod:`demo.run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from releve.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``releve demo`` to the ``releve`` parser."""
    p = sub.add_parser(
        "demo",
        help="run the whole platform on embedded defaults: database, broker, simulated fleet, collector, dashboards",
        description="Start an embedded PostgreSQL and MQTT broker, a simulated fleet with theft and faults, load "
        "its history, serve it live over Modbus TCP, RTU and MQTT to a collector, validate, rank theft suspects, "
        "bill, and serve the dashboards. Data is kept in --data-dir between starts.",
    )
    p.add_argument("--data-dir", type=Path, default=Path("var/demo"), help="where everything is kept (var/demo)")
    p.add_argument("--fresh", action="store_true", help="delete the data directory and start over")
    p.add_argument("--meters", type=int, default=300, help="approximate fleet size (300)")
    p.add_argument("--days", type=int, default=90, help="days of history to backfill at first start (90)")
    p.add_argument("--port", type=int, default=8050, help="dashboard port (8050)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    p.add_argument(
        "--faults-every",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="inject a live fault (gateway down, silent line, tamper, voltage sag) this often; 0: none (120)",
    )
    p.add_argument(
        "--faults-last", type=float, default=600.0, metavar="SECONDS", help="how long each live fault lasts (600)"
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the demo. Its wiring imports every package, so it loads only when the demo runs (not for --help)."""
    from demo.run import DemoOptions, run_demo

    options = DemoOptions(
        data_dir=args.data_dir,
        fresh=args.fresh,
        meters=args.meters,
        days=args.days,
        port=args.port,
        duration=args.duration,
        faults_every=args.faults_every,
        faults_last=args.faults_last,
    )
    return run_demo(options, settings)
