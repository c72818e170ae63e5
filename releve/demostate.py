"""Where a running ``releve demo`` is, so every other ``releve`` command in the same folder uses it.

``releve demo`` writes ``var/releve-demo.json`` in the working folder (``$RELEVE_DEMO_STATE`` names
another file): its process id, its database URL and the embedded server's data directory, its MQTT
broker, and the collector configuration it runs. :func:`apply` reads that file for every command
(except ``demo`` itself) when ``database.url`` is not set, so ``releve db status``, ``vee``, ``theft``,
``bill`` and ``collect status`` talk to the demo's database instead of starting a second, empty
embedded server. While the demo is stopped, they use the demo's embedded data directory (its server
is started on it as usual), so what the demo loaded stays visible.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from releve.settings import Settings

DEFAULT_FILE = Path("var/releve-demo.json")


def state_file() -> Path:
    """The state file of this working folder."""
    return Path(os.environ.get("RELEVE_DEMO_STATE") or DEFAULT_FILE)


@dataclass
class DemoState:
    """What a demo wrote about itself when it came up."""

    pid: int
    database_url: str
    database_data_dir: str = ""  # the embedded server's data directory; empty for an external database
    mqtt_url: str = ""
    collector_config: str = ""  # a JSON collector configuration (``releve collect status -c`` reads it)
    dashboard: str = ""
    data_dir: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def running(self) -> bool:
        """Whether the process that wrote this state is still alive."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by someone else
            return True
        return True


def write(state: DemoState, path: Path | None = None) -> Path:
    """Write the state atomically (readers never see half a file); mode 0600, it names a password file."""
    path = path or state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(state), fh, indent=2)
    tmp.replace(path)
    return path


def read(path: Path | None = None) -> DemoState | None:
    """The state in this folder, or None when there is none (or it cannot be read)."""
    path = path or state_file()
    try:
        data = json.loads(path.read_text())
        return DemoState(**data)
    except (OSError, ValueError, TypeError):
        return None


def mark_stopped(path: Path | None = None) -> None:
    """Called by the demo as it stops: keep the data directory, forget the live URLs."""
    path = path or state_file()
    state = read(path)
    if state is None:
        return
    state.pid = 0
    state.database_url = state.mqtt_url = state.dashboard = ""
    write(state, path)


def apply(settings: Settings) -> DemoState | None:
    """Point ``settings`` at the demo of this folder when nothing else is configured; return the state used."""
    if settings.database.url:
        return None
    state = read()
    if state is None:
        return None
    if state.pid and state.running() and state.database_url:
        settings.database.url = state.database_url
        if not settings.mqtt.url and state.mqtt_url:
            settings.mqtt.url = state.mqtt_url
        return state
    if state.database_data_dir and "data_dir" not in settings.database.model_fields_set:
        settings.database.data_dir = Path(state.database_data_dir)
        return state
    return None
