"""A collector process: its sources (MQTT now, Modbus pollers alongside) feeding one spool and forwarder."""

from __future__ import annotations

import logging
import threading

from collectors.config import CollectorConfig
from collectors.forward import Forwarder
from collectors.mqtt import MqttCollector
from collectors.spool import Spool
from releve.settings import Settings

log = logging.getLogger(__name__)


class Collector:
    """Starts and stops everything a collector configuration describes."""

    def __init__(self, config: CollectorConfig, settings: Settings, database_url: str) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir, max_bytes=config.spool_max_mb * 1024 * 1024)
        self.forwarder = Forwarder(
            self.spool, database_url, settings, origin=config.name, seal_seconds=config.seal_seconds
        )
        self.mqtt = MqttCollector(config.mqtt, settings.mqtt, self.spool) if config.mqtt else None

    def start(self) -> None:
        """Start forwarding, then the sources."""
        self.forwarder.start()
        if self.mqtt:
            self.mqtt.start()

    def stop(self) -> None:
        """Stop the sources, then land what is spooled (what cannot land stays on disk)."""
        if self.mqtt:
            self.mqtt.stop()
        self.forwarder.stop(drain=True)
        self.spool.close()

    def run_until(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()
