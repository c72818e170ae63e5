"""``releve collect …``: run a collector, show its state, probe a meter's byte/word order."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from releve.settings import Settings

if TYPE_CHECKING:
    from collectors.config import CollectorConfig


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
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="MQTT: N collector processes splitting the subscriptions over an MQTT 5 shared "
        "subscription (group: mqtt.shared_group, else the collector's name); each keeps its own "
        "session and spool (<spool_dir>/worker-<k>); Modbus polling stays in the first (1)",
    )
    run.set_defaults(func=cmd_run)
    status = actions.add_parser(
        "status",
        help="spool backlog, quarantine, alarms and health per link and meter",
        description="Show the spool's backlog and quarantine (read from disk) and the health the collector last "
        "wrote to the database. Exit status 1 when an alarm is raised (segments quarantined, spool not draining) "
        "or the database cannot be reached, else 0. Without --config, the collector that `releve demo` runs in "
        "this folder (var/releve-demo.json names its configuration).",
    )
    status.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="collector configuration (TOML); default: the collector of the demo running here",
    )
    status.add_argument("--worst", type=int, default=10, help="how many failing meters to list (10)")
    status.set_defaults(func=cmd_status)
    requeue = actions.add_parser(
        "requeue",
        help="move quarantined spool segments back to drain again",
        description="Move segments from <spool_dir>/quarantine back into the spool, once what made the database "
        "refuse them is fixed; the collector lands them when it starts. The collector must be stopped (the spool "
        "is locked while it runs). Without SEGMENT names, every quarantined segment is requeued.",
    )
    requeue.add_argument("--config", "-c", type=Path, required=True, help="collector configuration (TOML)")
    requeue.add_argument("segments", nargs="*", metavar="SEGMENT", help="file names as `collect status` lists them")
    requeue.set_defaults(func=cmd_requeue)
    probe = actions.add_parser(
        "probe",
        help="find a meter's byte/word order: read its known registers, decode them every way",
        description="Read the multi-register values of a device profile from one meter, decode each in every "
        "byte/word order (ABCD, CDAB, BADC, DCBA), judge each value against the profile's limits and name the "
        "order whose values make sense. Exit 0: an order was named; 1: none (or several) makes sense, or the "
        "meter did not answer; 2: bad arguments.",
    )
    probe.add_argument(
        "target",
        metavar="HOST[:PORT]",
        help="Modbus TCP gateway or meter (port 502 by default), or a serial port (/dev/ttyUSB0) for Modbus RTU",
    )
    probe.add_argument("--unit", type=int, required=True, help="Modbus unit id (slave address) 1..247")
    probe.add_argument("--model", required=True, help="device profile: a shipped model name (sdm630) or a .toml path")
    probe.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each reply (2)")
    probe.add_argument("--baudrate", type=int, default=9600, help="RTU: line speed (9600)")
    probe.add_argument("--parity", choices=("N", "E", "O"), default="N", help="RTU: parity (N)")
    probe.add_argument("--stopbits", type=int, choices=(1, 2), default=1, help="RTU: stop bits (1)")
    probe.set_defaults(func=cmd_probe)


def _load(path: Path) -> CollectorConfig:
    """The collector configuration at ``path``; what is wrong with it becomes a command error (exit 1)."""
    from collectors.config import ConfigError, load_config
    from releve.cli import CommandError

    try:
        return load_config(path)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc


def _spool_dirs(config: CollectorConfig) -> list[Path]:
    """The collector's spool and, after ``run --workers N``, each worker's (``<spool_dir>/worker-<k>``)."""
    return [Path(config.spool_dir), *sorted(Path(config.spool_dir).glob("worker-*"))]


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run a collector in the foreground."""
    from collectors.service import Collector
    from releve.db import database_url

    config = _load(args.config)
    if args.workers < 1:
        print(f"releve collect run: --workers {args.workers} must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and config.mqtt is None:
        print(f"releve collect run: --workers needs an [mqtt] section in {args.config}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.workers > 1:
        from collectors.service import run_workers

        print(
            f"collector {config.name}: {args.workers} workers, spool {config.spool_dir}; Ctrl-C stops", file=sys.stderr
        )
        return run_workers(config, settings, database_url(settings), args.workers, stop)
    collector = Collector(config, settings, database_url(settings))
    print(f"collector {config.name}: spool {config.spool_dir}; Ctrl-C stops", file=sys.stderr)
    collector.run_until(stop)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the spool's backlog and quarantine and the collector's health as last written to the database."""
    from collectors.forward import quarantine_summary
    from collectors.spool import quarantined
    from releve import db

    path = args.config or _demo_collector_config()
    config = _load(path)
    if args.config is None:
        print(f"collector {config.name} of the demo ({path})")
    alarm = False
    for spool_dir in _spool_dirs(config):
        segments = sorted(spool_dir.glob("*.seg")) + sorted(spool_dir.glob("*.open"))
        size = sum(p.stat().st_size for p in segments)
        print(
            f"spool {spool_dir}: {len(segments)} segment(s), {size:,} bytes "
            f"({100 * size / (config.spool_max_mb * 1024 * 1024):.1f} % of the bound)"
        )
        held = quarantined(spool_dir)
        alarm = alarm or bool(held)
        if held:
            print(
                f"ALARM quarantine {spool_dir / 'quarantine'}: {len(held)} segment(s) the database "
                "refused (once the cause is fixed: `releve collect requeue`, collector stopped)"
            )
            print(quarantine_summary(held))
    try:
        with db.connect(db.database_url(settings), role=db.reader_role(settings)) as conn:
            links = conn.execute(
                """SELECT link, kind, meters, requests, failures, connected, updated_at, alarm FROM link_health
                   WHERE collector = %s ORDER BY link""",
                (config.name,),
            ).fetchall()
            meters = conn.execute(
                """SELECT serial, link, good, failures, consecutive_failures, last_good, last_error FROM comm_health
                   WHERE collector = %s ORDER BY consecutive_failures DESC, failures DESC, serial LIMIT %s""",
                (config.name, args.worst),
            ).fetchall()
            implausible = conn.execute(
                """SELECT serial, link, (errors->>'implausible')::bigint AS n FROM comm_health
                   WHERE collector = %s AND errors ? 'implausible' ORDER BY n DESC, serial LIMIT %s""",
                (config.name, args.worst),
            ).fetchall()
            serials = [
                m.serial
                for link in (config.modbus.gateways + config.modbus.lines if config.modbus else [])
                for m in link.meters
            ]
            commands = conn.execute(
                """SELECT count(*) FILTER (WHERE c.state = 'queued'), count(*) FILTER (WHERE c.state = 'sent'),
                          min(c.requested_at) FILTER (WHERE c.state = 'queued')
                   FROM meter_command c JOIN meter m ON m.id = c.meter_id
                   WHERE c.state IN ('queued', 'sent') AND (c.collector = %s OR m.serial = ANY(%s)
                         OR (%s AND m.protocol = 'mqtt'))""",
                (config.name, serials, config.mqtt is not None),
            ).fetchone()
    except Exception as exc:
        print(f"health: database not reachable ({str(exc).strip().splitlines()[0]})", file=sys.stderr)
        return 1
    if commands is not None:
        queued, sent, oldest = commands
        since = f" (oldest queued {oldest:%Y-%m-%d %H:%M:%S})" if oldest else ""
        print(f"meter commands: {queued} queued, {sent} sent{since} — `releve command list --open`")
    if not links:
        print(f"health: nothing written yet by collector {config.name!r}")
        return 1 if alarm else 0
    print(f"{'link':<14}{'kind':<6}{'meters':>7}{'requests':>10}{'failures':>10}  updated")
    for link, kind, n, req, fail, connected, updated, _ in links:
        state = "" if connected is None else (" connected" if connected else " DISCONNECTED")
        print(f"{link:<14}{kind:<6}{n:>7}{req:>10}{fail:>10}  {updated:%Y-%m-%d %H:%M:%S}{state}")
    for link, *_, link_alarm in links:
        if link_alarm:
            alarm = True
            print(f"ALARM {link}: {link_alarm}")
    print(f"\nmeters with the most failures (worst {args.worst}):")
    for serial, link, good, fail, streak, last_good, error in meters:
        seen = f"{last_good:%Y-%m-%d %H:%M}" if last_good else "never"
        print(
            f"  {serial:<14}{link:<12} good {good:<7} failed {fail:<6} streak {streak:<4} last good {seen}"
            + (f"  ({error})" if streak and error else "")
        )
    if implausible:  # they answer, so they never show as failing: their values are what is wrong
        print("\nmeters whose values were refused as implausible (see rejected_input; `releve collect probe`):")
        for serial, link, n in implausible:
            print(f"  {serial:<14}{link:<12} {n} value(s) refused")
    return 1 if alarm else 0


def _demo_collector_config() -> Path:
    """The configuration of the collector the demo in this folder runs (or a CommandError saying there is none)."""
    from releve import demostate
    from releve.cli import CommandError

    state = demostate.read()
    if state is None or not state.collector_config:
        raise CommandError(f"--config is required: no demo has written {demostate.state_file()} in this folder")
    return Path(state.collector_config)


def cmd_requeue(args: argparse.Namespace, settings: Settings) -> int:
    """Move quarantined segments back into the spool (collector stopped)."""
    from collectors.spool import Spool, quarantined
    from releve.cli import CommandError

    config = _load(args.config)
    spools = _spool_dirs(config)
    held = {Path(e["path"]).name: d for d in spools for e in quarantined(d)}
    unknown = [n for n in args.segments if n not in held]
    if unknown:
        raise CommandError(f"not quarantined under {config.spool_dir}: {', '.join(unknown)}")
    moved: list[str] = []
    for spool_dir in spools:
        names = [n for n in args.segments if held[n] == spool_dir]
        if (args.segments and not names) or not quarantined(spool_dir):
            continue
        try:
            spool = Spool(spool_dir, max_bytes=config.spool_max_mb * 1024 * 1024)
        except RuntimeError as exc:  # the collector is running
            raise CommandError(f"{exc} (stop the collector first)" if "in use" in str(exc) else str(exc)) from exc
        try:
            moved += spool.requeue(names)
        finally:
            spool.close()
    for name in moved:
        print(f"requeued {name}")
    if not moved:
        print(f"quarantine of {config.spool_dir} is empty")
    return 0


def cmd_probe(args: argparse.Namespace, settings: Settings) -> int:
    """Print each order's reading of the profile's registers and name the one that makes sense."""
    from collectors.modbus import ReadError
    from collectors.probe import make_link, probe, render
    from releve.profiles import ProfileError, load_profile

    if not 1 <= args.unit <= 247:
        print(f"releve collect probe: --unit {args.unit} is outside 1..247", file=sys.stderr)
        return 2
    if not 0 < args.timeout <= 60:
        print(f"releve collect probe: --timeout {args.timeout} is outside (0, 60] seconds", file=sys.stderr)
        return 2
    try:
        profile = load_profile(args.model)
        link = make_link(args.target, args.timeout, args.baudrate, args.parity, args.stopbits)
    except (ProfileError, ValueError) as exc:
        print(f"releve collect probe: {exc}", file=sys.stderr)
        return 2
    if not any(e.count > 1 and e.kind != "status" for e in profile.registers):
        print(f"releve collect probe: {profile.model} has no multi-register values: no order to find", file=sys.stderr)
        return 2
    try:
        result = probe(link, args.unit, profile)
    except ReadError as exc:
        print(f"releve collect probe: {args.target} unit {args.unit}: {exc}", file=sys.stderr)
        return 1
    print(render(result))
    return 0 if result.found else 1
