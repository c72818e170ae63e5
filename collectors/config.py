"""The collector configuration file (TOML): where the spool is, what to subscribe to, what to poll.

Validated at load: a mistake fails with the file, the field and the problem. See
``collectors/collector.example.toml`` and docs/collectors.md.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """The collector configuration is invalid; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Subscription(_Model):
    """One MQTT topic template and the decoder for its payloads."""

    topic: str = Field(description="Topic template; {serial} (and any {name}) capture one level, # ends it.")
    decoder: str = Field("json", description="json | tasmota | ttn | package.module:function")
    qos: int = Field(1, ge=0, le=1)
    options: dict[str, Any] = Field(default_factory=dict, description="Decoder options (timezone, fields, …).")

    @field_validator("topic")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        compile_topic(value)
        return value


class MqttSource(_Model):
    """The MQTT subscriber. Broker URL and credentials come from the settings' [mqtt] section."""

    client_id: str = Field("releve-collector", description="Stable id: the broker keeps the session under it.")
    shared_group: str = Field("", description="Non-empty: subscribe as $share/<group>/… (MQTT 5 shared).")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, description="How long the broker keeps our session.")
    keepalive_s: int = Field(30, ge=5)
    ca_file: str = Field("", description="CA bundle for mqtts:// (empty: the system's).")
    subscriptions: list[Subscription] = Field(min_length=1)


class CollectorConfig(_Model):
    """A collector process."""

    name: str = Field("collector", description="Shown in logs, health and the ingest batch origin.")
    spool_dir: Path = Field(Path("var/spool"), description="Durable store-and-forward directory.")
    spool_max_mb: int = Field(1024, ge=1, description="Spool size bound; warns from 80 %.")
    seal_seconds: float = Field(1.0, gt=0, description="Spooled data reaches the database within about this.")
    mqtt: MqttSource | None = None


def load_config(path: Path) -> CollectorConfig:
    """Read and validate a collector configuration file."""
    try:
        with Path(path).open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return CollectorConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc


_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def compile_topic(template: str) -> tuple[str, re.Pattern[str]]:
    """MQTT filter and matching regex for a topic template, e.g. ``tele/sml-{serial}/SENSOR``."""
    levels = template.split("/")
    filters, patterns = [], []
    for i, level in enumerate(levels):
        if level == "#":
            if i != len(levels) - 1:
                raise ValueError(f"topic template {template!r}: '#' must be the last level")
            filters.append("#")
            patterns.append(".*")
            break
        if level == "+":
            filters.append("+")
            patterns.append("[^/]+")
        elif _PLACEHOLDER.search(level):
            if "+" in level or "#" in level:
                raise ValueError(f"topic template {template!r}: wildcards cannot share a level with {{…}}")
            filters.append("+")
            parts = _PLACEHOLDER.split(level)
            patterns.append(
                "".join(re.escape(p) if k % 2 == 0 else f"(?P<{p}>[^/]+)" for k, p in enumerate(parts))
            )
        else:
            if "+" in level or "#" in level:
                raise ValueError(f"topic template {template!r}: wildcard inside level {level!r}")
            filters.append(level)
            patterns.append(re.escape(level))
    return "/".join(filters), re.compile("^" + "/".join(patterns) + "$")
