"""``releve collect …``: run a collector, show its state."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from releve.settings import Settings


def register(sub: Any) -> None:
    """Add ``collect`` to the ``releve`` parser."""
    p = sub.add_parser("collect", help="collect readings from meters (Modbus TCP/RTU, MQTT)")
    actions = p.add_subparsers(dest="collect_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="run a collector until Ctrl-C or SIGTERM",
        description="Run the collector described by a configuration file (see collectors/collector.example.toml). "
        "Readings go to a durable spool first and drain to the database; nothing is lost while the database "
        "or the broker is down.",
    )
    run.add_argument("--config", "-c", type=Path, required=True, help="collector configuration (TOML)")
    run.set_defaults(func=cmd_run)
    status = actions.add_parser("status", help="show what a collector's spool holds")
    status.add_argument("--config", "-c", type=Path, required=True, help="collector configuration (TOML)")
    status.set_defaults(func=cmd_status)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run a collector in the foreground."""
    from collectors.config import ConfigError, load_config
    from collectors.service import Collector
    from releve.cli import CommandError
    from releve.db import database_url

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    collector = Collector(config, settings, database_url(settings))
    print(f"collector {config.name}: spool {config.spool_dir}; Ctrl-C stops", file=sys.stderr)
    collector.run_until(stop)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the spool's backlog."""
    from collectors.config import ConfigError, load_config
    from releve.cli import CommandError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc
    segments = sorted(Path(config.spool_dir).glob("*.seg")) + sorted(Path(config.spool_dir).glob("*.open"))
    size = sum(p.stat().st_size for p in segments)
    print(f"spool {config.spool_dir}: {len(segments)} segment(s), {size:,} bytes "
          f"({100 * size / (config.spool_max_mb * 1024 * 1024):.1f} % of the bound)")  # fmt: skip
    return 0
