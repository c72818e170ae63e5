"""Collection health: per meter and per link, to the database and as Prometheus metrics.

``HealthWriter`` upserts ``comm_health`` and ``link_health`` every few seconds (health is state, not
raw data: it is overwritten). If the database is down the write is skipped — the spool, not health,
is what must survive. ``MetricsServer`` serves the same figures in Prometheus text format when the
configuration gives ``metrics_port``.

Besides one ``link_health`` row per gateway, serial line and MQTT session, a collector writes one
row of kind ``spool`` (link ``spool``): requests = segments landed, failures = segments in
quarantine, connected = whether the database takes what the forwarder sends, and ``alarm`` set
when segments were quarantined or the spool has not drained for ``stall_alarm_s`` — what the
control room and ``releve collect status`` show.

Both read a collector's parts (spool, forwarder, poller, MQTT session, command runner), handed to
them as :class:`Sources` by the service that built them; this module does not know the service.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from releve import db
from releve.settings import Settings

if TYPE_CHECKING:
    from collectors.commands import CommandRunner
    from collectors.forward import Forwarder
    from collectors.modbus import Poller
    from collectors.mqtt import MqttCollector
    from collectors.spool import Spool

log = logging.getLogger(__name__)


def _backoff_until(monotonic_deadline: float) -> datetime | None:
    remaining = monotonic_deadline - time.monotonic()
    return datetime.now(UTC) + timedelta(seconds=remaining) if remaining > 0 else None


@dataclass(frozen=True)
class Sources:
    """What a collector's health is read from: its name and the parts it runs (None: not configured)."""

    name: str
    spool: Spool
    forwarder: Forwarder
    poller: Poller | None = None
    mqtt: MqttCollector | None = None
    commands: CommandRunner | None = None


class HealthWriter:
    """Writes a collector's health to the database every ``every`` seconds."""

    def __init__(self, sources: Sources, url: str, settings: Settings, every: float = 10.0) -> None:
        self.sources = sources
        self.url = url
        self.settings = settings
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.write_once()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.write_once()

    def write_once(self) -> bool:
        """One upsert of every meter and link; False (and a log line) if the database is unreachable."""
        c = self.sources
        name = c.name
        meters: list[tuple[object, ...]] = []
        links: list[tuple[object, ...]] = []
        if c.poller is not None:
            for link, targets in c.poller.links:
                kind = "rtu" if type(link).__name__ == "RtuLine" else "tcp"
                links.append(
                    (
                        name,
                        link.name,
                        kind,
                        link.requests,
                        link.failures,
                        len(targets),
                        link.connected,
                        c.spool.size,
                        None,
                    )
                )
                for t in targets:
                    h = t.health
                    meters.append(
                        (
                            name,
                            h.serial,
                            h.link,
                            h.polls,
                            h.good,
                            h.failures,
                            h.retries,
                            json.dumps(h.errors),
                            h.consecutive_failures,
                            _backoff_until(h.backoff_until),
                            h.last_good,
                            h.last_error,
                            h.latency_ms,
                        )
                    )
        if c.mqtt is not None:
            s = c.mqtt.stats
            links.append(
                (name, "mqtt", "mqtt", s.received, s.rejected, len(s.serials), s.connected, c.spool.size, None)
            )
        f = c.forwarder
        links.append(
            (
                name,
                "spool",
                "spool",
                f.landed_segments,
                len(c.spool.quarantined()),
                0,
                f.database_ok,
                c.spool.size,
                f.alarm(),
            )
        )
        try:
            with db.connect(self.url, role=db.writer_role(self.settings)) as conn, conn.cursor() as cur:
                cur.executemany(
                    """INSERT INTO comm_health (collector, serial, link, polls, good, failures, retries, errors,
                           consecutive_failures, backoff_until, last_good, last_error, latency_ms, updated_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
                       ON CONFLICT (collector, serial) DO UPDATE SET link = EXCLUDED.link, polls = EXCLUDED.polls,
                           good = EXCLUDED.good, failures = EXCLUDED.failures, retries = EXCLUDED.retries,
                           errors = EXCLUDED.errors, consecutive_failures = EXCLUDED.consecutive_failures,
                           backoff_until = EXCLUDED.backoff_until,
                           last_good = coalesce(EXCLUDED.last_good, comm_health.last_good),
                           last_error = EXCLUDED.last_error, latency_ms = EXCLUDED.latency_ms, updated_at = now()""",
                    meters,
                )
                cur.executemany(
                    """INSERT INTO link_health (collector, link, kind, requests, failures, meters, connected,
                                                spool_bytes, alarm, updated_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())
                       ON CONFLICT (collector, link) DO UPDATE SET kind = EXCLUDED.kind,
                           requests = EXCLUDED.requests, failures = EXCLUDED.failures, meters = EXCLUDED.meters,
                           connected = EXCLUDED.connected, spool_bytes = EXCLUDED.spool_bytes,
                           alarm = EXCLUDED.alarm, updated_at = now()""",
                    links,
                )
                conn.commit()
            return True
        except Exception as exc:
            log.info("health not written (%s)", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            return False


def prometheus_text(collector: Sources) -> str:
    """The collector's counters in Prometheus exposition format."""
    name = collector.name
    f = collector.forwarder
    held = collector.spool.quarantined()
    lines = [
        "# HELP releve_spool_bytes Bytes waiting in the store-and-forward spool.",
        "# TYPE releve_spool_bytes gauge",
        f'releve_spool_bytes{{collector="{name}"}} {collector.spool.size}',
        "# HELP releve_forwarded_readings_total Readings landed in the database.",
        "# TYPE releve_forwarded_readings_total counter",
        f'releve_forwarded_readings_total{{collector="{name}"}} {f.landed_rows}',
        "# HELP releve_spool_quarantined_segments Spool segments the database refused, held for a person.",
        "# TYPE releve_spool_quarantined_segments gauge",
        f'releve_spool_quarantined_segments{{collector="{name}"}} {len(held)}',
        "# HELP releve_spool_quarantined_bytes Bytes held in the spool's quarantine.",
        "# TYPE releve_spool_quarantined_bytes gauge",
        f'releve_spool_quarantined_bytes{{collector="{name}"}} {sum(int(e["bytes"]) for e in held)}',
        "# HELP releve_forwarder_refused_records_total Spool records the database refused (quarantined).",
        "# TYPE releve_forwarder_refused_records_total counter",
        f'releve_forwarder_refused_records_total{{collector="{name}"}} {f.refused_records}',
        "# HELP releve_forwarder_failing_seconds How long the spool has not drained (0 when it drains).",
        "# TYPE releve_forwarder_failing_seconds gauge",
        f'releve_forwarder_failing_seconds{{collector="{name}"}} {f.failing_seconds():.1f}',
        "# HELP releve_spool_alarm 1 when the spool needs a person (quarantine, or not draining).",
        "# TYPE releve_spool_alarm gauge",
        f'releve_spool_alarm{{collector="{name}"}} {int(f.alarm() is not None)}',
    ]
    if collector.poller is not None:
        lines += [
            "# HELP releve_meter_polls_total Polls per meter and outcome.",
            "# TYPE releve_meter_polls_total counter",
        ]
        for _, targets in collector.poller.links:
            for t in targets:
                h = t.health
                labels = f'collector="{name}",link="{h.link}",meter="{h.serial}"'
                lines.append(f'releve_meter_polls_total{{{labels},outcome="good"}} {h.good}')
                lines.append(f'releve_meter_polls_total{{{labels},outcome="failed"}} {h.failures}')
    if collector.mqtt is not None:
        s = collector.mqtt.stats
        lines += [
            "# HELP releve_mqtt_messages_total MQTT messages received.",
            "# TYPE releve_mqtt_messages_total counter",
            f'releve_mqtt_messages_total{{collector="{name}"}} {s.received}',
            "# HELP releve_mqtt_connected Whether the MQTT session is up.",
            "# TYPE releve_mqtt_connected gauge",
            f'releve_mqtt_connected{{collector="{name}"}} {int(s.connected)}',
        ]
    if collector.commands is not None:
        c = collector.commands.stats
        lines += [
            "# HELP releve_meter_commands_total Meter command attempts by outcome (retried: back in the queue).",
            "# TYPE releve_meter_commands_total counter",
        ]
        for outcome in ("confirmed", "failed", "retried", "expired"):
            lines.append(f'releve_meter_commands_total{{collector="{name}",outcome="{outcome}"}} {getattr(c, outcome)}')
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` on 127.0.0.1:``port`` (or the given host)."""

    def __init__(self, collector: Sources, port: int, host: str = "127.0.0.1") -> None:
        outer = collector

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = prometheus_text(outer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
