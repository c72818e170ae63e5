"""A collector process: MQTT subscriber and Modbus pollers feeding one durable spool and forwarder."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from collectors.commands import CommandRunner, MqttCommander
from collectors.config import CollectorConfig, ModbusSource
from collectors.forward import Forwarder
from collectors.health import HealthWriter, MetricsServer, Sources
from collectors.modbus import Link, MeterTarget, Poller, PollSettings, RtuLine, TcpGateway
from collectors.mqtt import MqttCollector
from collectors.spool import Spool, SpoolFullError
from releve.model import MeterEvent, Reading, Rejected
from releve.profiles import load_profile
from releve.settings import Settings

log = logging.getLogger(__name__)


def build_poller(source: ModbusSource, sink: PollSink) -> Poller:
    """Links and meters as the configuration describes them."""
    links: list[tuple[Link, list[MeterTarget]]] = []
    for gw in source.gateways:
        link: Link = TcpGateway(gw.name, gw.host, gw.port, gw.max_connections, gw.timeout_s, gw.serialise)
        links.append(
            (
                link,
                [
                    MeterTarget.build(m.serial, m.unit, load_profile(m.profile), gw.name, source.max_filler)
                    for m in gw.meters
                ],
            )
        )
    for line in source.lines:
        link = RtuLine(line.name, line.port, line.baudrate, line.parity, line.stopbits, line.timeout_s, line.drain_s)
        links.append(
            (
                link,
                [
                    MeterTarget.build(m.serial, m.unit, load_profile(m.profile), line.name, source.max_filler)
                    for m in line.meters
                ],
            )
        )
    settings = PollSettings(
        periods=dict(source.periods),
        default_period=source.default_period_s,
        jitter=source.jitter,
        retries=source.retries,
        backoff_base=source.backoff_base_s,
        backoff_max=source.backoff_max_s,
    )
    return Poller(links, sink, settings)


class PollSink:
    """Where poll results go: straight into the spool, durable before the poll counts as done."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.dropped = 0

    def __call__(self, readings: Sequence[Reading], events: Sequence[MeterEvent], rejected: Sequence[Rejected]) -> None:
        try:
            self.spool.append(readings, events, rejected, sync=True)
        except SpoolFullError as exc:
            self.dropped += len(readings)
            log.error("poll results not stored: %s", exc)


class Collector:
    """Starts and stops everything a collector configuration describes."""

    def __init__(self, config: CollectorConfig, settings: Settings, database_url: str) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir, max_bytes=config.spool_max_mb * 1024 * 1024)
        self.forwarder = Forwarder(
            self.spool, database_url, settings, origin=config.name, seal_seconds=config.seal_seconds
        )
        self.mqtt = MqttCollector(config.mqtt, settings.mqtt, self.spool) if config.mqtt else None
        self.poller = build_poller(config.modbus, PollSink(self.spool)) if config.modbus else None
        if self.mqtt:
            self.mqtt.guard.rate_factor = config.plausibility.rate_factor
            self.forwarder.raw_decoder = self.mqtt.decode_raw  # MQTT messages are spooled raw, decoded on landing
        if self.poller:
            self.poller.guard.rate_factor = config.plausibility.rate_factor
        self.commands: CommandRunner | None = None
        if config.commands.enabled and (self.poller or self.mqtt):
            commander = None
            if config.mqtt is not None:
                commander = MqttCommander(
                    config.commands, settings.mqtt, f"{config.mqtt.client_id}-commands", config.mqtt.ca_file
                )
            self.commands = CommandRunner(
                config.name,
                config.commands,
                settings,
                database_url,
                self.poller.links if self.poller else (),
                commander,
            )
        sources = Sources(config.name, self.spool, self.forwarder, self.poller, self.mqtt, self.commands)
        self.health = HealthWriter(sources, database_url, settings, config.health_every_s)
        self.metrics = MetricsServer(sources, config.metrics_port) if config.metrics_port is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_polling: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start forwarding, then the sources."""
        self.forwarder.start()
        self.health.start()
        if self.metrics:
            self.metrics.start()
        if self.mqtt:
            self.mqtt.start()
        if self.commands and self.commands.mqtt:
            self.commands.mqtt.start()
        if self.poller or self.commands:
            ready = threading.Event()
            self._thread = threading.Thread(target=self._poll_thread, args=(ready,), name="modbus", daemon=True)
            self._thread.start()
            ready.wait()

    def _poll_thread(self, ready: threading.Event) -> None:
        """The event loop of the Modbus links: polls and meter commands share it (and an RTU line's lock)."""

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop_polling = asyncio.Event()
            ready.set()
            jobs = []
            if self.poller is not None:
                jobs.append(self.poller.run(self._stop_polling))
            if self.commands is not None:
                jobs.append(self.commands.run(self._stop_polling))
            try:
                await asyncio.gather(*jobs)
            finally:
                for link, _ in self.poller.links if self.poller else ():
                    link.close()

        asyncio.run(main())

    def stop(self) -> None:
        """Stop the sources, then land what is spooled (what cannot land stays on disk)."""
        if self.mqtt:
            self.mqtt.stop()
        if self.commands and self.commands.mqtt:
            self.commands.mqtt.stop()
        if self._thread is not None and self._loop is not None and self._stop_polling is not None:
            self._loop.call_soon_threadsafe(self._stop_polling.set)
            self._thread.join()
        if self.metrics:
            self.metrics.stop()
        self.forwarder.stop(drain=True)
        self.health.stop()
        self.spool.close()

    def run_until(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()


# -- several worker processes --------------------------------------------------------------------
def worker_config(config: CollectorConfig, k: int, n: int) -> CollectorConfig:
    """The configuration of worker ``k`` of ``n`` (``releve collect run --workers n``).

    Worker 0 is the collector as configured (its spool, its Modbus sources, its metrics port) but
    subscribes in the shared group; workers 1… are MQTT only, each with its own persistent session
    (``<client_id>-w<k>``, stable across restarts), spool (``<spool_dir>/worker-<k>``) and health
    name (``<name>-w<k>``). The shared group is ``mqtt.shared_group``, or the collector's name.
    """
    if config.mqtt is None:
        raise ValueError("--workers needs an [mqtt] section: workers split MQTT subscriptions between them")
    if n == 1:
        return config
    mqtt = config.mqtt.model_copy(update={"shared_group": config.mqtt.shared_group or config.name})
    if k == 0:
        return config.model_copy(update={"mqtt": mqtt})
    mqtt = mqtt.model_copy(update={"client_id": f"{config.mqtt.client_id}-w{k}"})
    return config.model_copy(
        update={
            "name": f"{config.name}-w{k}",
            "spool_dir": Path(config.spool_dir) / f"worker-{k}",
            "mqtt": mqtt,
            "modbus": None,
            "metrics_port": None,
        }
    )


def _worker(config: CollectorConfig, settings: Settings, database_url: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    Collector(config, settings, database_url).run_until(stop)


def run_workers(config: CollectorConfig, settings: Settings, database_url: str, n: int, stop: threading.Event) -> int:
    """Run ``n`` collector processes (see ``worker_config``) until ``stop``; 1 if one of them died."""
    configs = [worker_config(config, k, n) for k in range(n)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(c, settings, database_url), name=c.name) for c in configs]
    for proc in procs:
        proc.start()
    failed = False
    while not stop.wait(0.5):
        dead = [p for p in procs if not p.is_alive()]
        if dead:
            failed = True
            log.error(
                "collector worker(s) %s stopped (exit %s); stopping the others",
                ", ".join(p.name for p in dead),
                ", ".join(str(p.exitcode) for p in dead),
            )
            break
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.join()
        failed = failed or proc.exitcode not in (0, None)
    return 1 if failed else 0
