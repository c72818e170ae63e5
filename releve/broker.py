"""An MQTT broker of Relevé's own: Mosquitto when installed, else an in-process amqtt broker.

Used by the test suite (a throwaway broker on a free port) and by ``releve demo``. Mosquitto is
the broker utilities run; amqtt (pip-installable, pure Python, about 1,100 QoS-1 messages/s) is
the fallback on machines without it, so nothing has to be installed by hand.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from releve.pgserver import free_port


class BrokerError(RuntimeError):
    """The broker could not start; the message says why."""


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise BrokerError(f"MQTT broker did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


class MqttBroker:
    """A broker on 127.0.0.1:``port`` with persistence in ``data_dir`` (Mosquitto) or in memory.

    ``max_queued_messages`` is per client session (each member of a shared group has its own): the
    default is what docs/operations.md asks of a production broker. ``persistence=False`` keeps
    sessions and queues in memory only (they survive a client's absence, not a broker restart):
    with ``autosave_interval 1`` Mosquitto writes its whole store every second, in its one thread,
    which a bench queueing a million messages would time instead of the broker's delivery.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int = 0,
        prefer: str = "mosquitto",
        max_queued_messages: int = 100_000,
        persistence: bool = True,
    ) -> None:
        if max_queued_messages < 1:
            raise ValueError("max_queued_messages must be at least 1 (Mosquitto 2.0 reads 0 as no limit)")
        self.max_queued_messages = max_queued_messages
        self.persistence = persistence
        self.port = port or free_port()
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="releve-mqtt-"))
            data_dir.chmod(0o755)
        self.data_dir = Path(data_dir)
        self.kind = "mosquitto" if prefer == "mosquitto" and shutil.which("mosquitto") else "amqtt"
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stop_amqtt: threading.Event | None = None

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:port."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the broker and return once it accepts connections."""
        if self.kind == "mosquitto":
            self._start_mosquitto()
        else:
            self._start_amqtt()
        _wait_for_port(self.port)

    def _start_mosquitto(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        lines = [
            "per_listener_settings false",  # must come first: one set of rules for every listener
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.data_dir}/",
            # What docs/operations.md asks of an external broker: sessions and queues persist and
            # survive a restart, a collector that is away loses nothing below 100 000 messages,
            # and batched acknowledgements are not throttled by a small in-flight window.
            "autosave_interval 1",
            "persistent_client_expiration 14d",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",
            "max_packet_size 2097152",
            "queue_qos0_messages false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            # Mosquitto drops root privileges to this user; it must own the persistence directory.
            user = "mosquitto" if _has_user("mosquitto") else "nobody"
            lines.append(f"user {user}")
            account = pwd.getpwnam(user)
            for parent in self.data_dir.resolve().parents:
                if not parent.stat().st_mode & 0o001:
                    raise BrokerError(
                        f"{parent} is not traversable by user {user}: Mosquitto could not persist its "
                        "sessions there; choose another directory"
                    )
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)
            os.chmod(self.data_dir, 0o755)  # noqa: S103 - the broker user must traverse it
        conf.write_text("\n".join(lines) + "\n")
        log_file = (self.data_dir / "mosquitto.log").open("ab")
        self._proc = subprocess.Popen(
            [shutil.which("mosquitto") or "mosquitto", "-c", str(conf)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        time.sleep(0.05)
        if self._proc.poll() is not None:
            raise BrokerError(f"mosquitto exited at start; see {self.data_dir / 'mosquitto.log'}")

    def _start_amqtt(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise BrokerError("neither mosquitto nor the amqtt package is installed") from exc
        import asyncio
        import logging

        logging.getLogger("amqtt").setLevel(logging.CRITICAL)  # it logs every probe connection
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
            "topic-check": {"enabled": False},
        }
        stop = threading.Event()
        self._stop_amqtt = stop

        def run() -> None:
            async def main() -> None:
                broker = Broker(config)
                await broker.start()
                while not stop.is_set():
                    await asyncio.sleep(0.1)
                await broker.shutdown()

            asyncio.run(main())

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the broker (its persistence directory stays for a restart)."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._stop_amqtt is not None and self._thread is not None:
            self._stop_amqtt.set()
            self._thread.join(10)
            self._thread = None

    def restart(self) -> None:
        """Stop and start again on the same port, keeping persisted sessions and messages."""
        self.stop()
        self.start()

    def __enter__(self) -> MqttBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
