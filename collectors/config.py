"""The collector configuration file (TOML): where the spool is, what to subscribe to, what to poll.

Validated at load: a mistake fails with the file, the field and the problem. See
``collectors/collector.example.toml`` and docs/collectors.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from releve.validation import describe, read_toml


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
    profile: str = Field(
        "", description="Device profile of the meters on this topic: their values are checked against its limits."
    )

    @field_validator("topic")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        compile_topic(value)
        return value

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        return _check_profile(value) if value else value


def _check_profile(value: str) -> str:
    from releve.profiles import ProfileError, load_profile

    try:
        load_profile(value)
    except ProfileError as exc:
        raise ValueError(str(exc)) from exc
    return value


class MqttSource(_Model):
    """The MQTT subscriber. Broker URL and credentials come from the settings' [mqtt] section."""

    client_id: str = Field("releve-collector", description="Stable id: the broker keeps the session under it.")
    shared_group: str = Field("", description="Non-empty: subscribe as $share/<group>/… (MQTT 5 shared).")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, description="How long the broker keeps our session.")
    keepalive_s: int = Field(30, ge=5)
    ca_file: str = Field("", description="CA bundle for mqtts:// (empty: the system's).")
    subscriptions: list[Subscription] = Field(min_length=1)


class ModbusMeter(_Model):
    """A meter behind a gateway or on a line."""

    serial: str = Field(min_length=1, description="The meter's serial in Relevé's registry.")
    unit: int = Field(ge=1, le=247, description="Modbus unit id (slave address).")
    profile: str = Field(description="Device profile: a shipped model name (sdm630) or a .toml path.")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        return _check_profile(value)


class _Link(_Model):
    name: str = Field(min_length=1)
    timeout_s: float = Field(2.0, gt=0, le=60)
    meters: list[ModbusMeter] = Field(min_length=1)

    @field_validator("meters")
    @classmethod
    def _unique_units(cls, meters: list[ModbusMeter]) -> list[ModbusMeter]:
        units = [m.unit for m in meters]
        if len(units) != len(set(units)):
            raise ValueError("two meters share a unit id")
        return meters


class TcpGatewayConfig(_Link):
    """A Modbus TCP gateway (or a TCP meter) and the meters behind it."""

    host: str
    port: int = Field(502, ge=1, le=65535)
    max_connections: int = Field(2, ge=1, le=32, description="Concurrent requests to this gateway.")
    serialise: bool = Field(
        False,
        description="The gateway fronts an RS-485 bus and answers one request at a time: send one at a "
        "time (one connection; max_connections is then ignored), so no request waits inside the gateway "
        "and times out behind the others.",
    )


class RtuLineConfig(_Link):
    """An RS-485 line on a serial port and the meters on it."""

    port: str = Field(description="Serial device, e.g. /dev/ttyUSB0.")
    baudrate: int = Field(9600, ge=300, le=921600)
    parity: str = Field("N", pattern="^[NEO]$")
    stopbits: int = Field(1, ge=1, le=2)
    timeout_s: float = Field(1.0, gt=0, le=60)
    drain_s: float | None = Field(
        None,
        gt=0,
        le=60,
        description="After a timeout or a reply that does not match its request, read the line until it "
        "has been silent this long, then flush it (default: timeout_s), so a late reply is never taken "
        "for the next request's.",
    )


class ModbusSource(_Model):
    """The Modbus pollers."""

    periods: dict[str, float] = Field(
        default_factory=lambda: {"energy": 900.0, "instant": 60.0, "events": 60.0},
        description="Seconds between polls, per poll class of the profiles.",
    )
    default_period_s: float = Field(60.0, gt=0, description="For poll classes not listed in periods.")
    jitter: float = Field(0.1, ge=0, le=0.5, description="Random delay, as a fraction of the period.")
    retries: int = Field(1, ge=0, le=5, description="Immediate retries of a failed request.")
    backoff_base_s: float = Field(5.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    max_filler: int = Field(16, ge=0, le=120, description="Unwanted registers allowed inside one merged read.")
    gateways: list[TcpGatewayConfig] = Field(default_factory=list)
    lines: list[RtuLineConfig] = Field(default_factory=list)


class PlausibilityConfig(_Model):
    """How decoded values are checked against what meters can physically report."""

    rate_factor: float = Field(
        1.0,
        ge=1,
        le=10000,
        description="Multiplies every profile's max_rise_per_hour: 1 for real meters, the simulator's speed "
        "when collecting from a simulator running faster than the wall clock.",
    )


class CommandsConfig(_Model):
    """Commands to meters (releve.meter_commands): this collector runs those of the meters it reaches."""

    enabled: bool = Field(True, description="Execute queued commands for this collector's meters.")
    check_every_s: float = Field(2.0, gt=0, le=300, description="How often the queue is looked at.")
    max_attempts: int = Field(5, ge=1, le=100, description="Sends before a command that never confirms fails.")
    retry_base_s: float = Field(10.0, gt=0, description="First delay before a retry; doubles each attempt.")
    retry_max_s: float = Field(300.0, gt=0, description="Longest delay between retries.")
    mqtt_topic: str = Field(
        "releve/{serial}/command", description="Where commands to MQTT meters are published ({serial})."
    )
    mqtt_ack_topic: str = Field(
        "releve/{serial}/command/ack", description="Where MQTT meters acknowledge them, with their state."
    )
    mqtt_ack_timeout_s: float = Field(15.0, gt=0, le=3600, description="How long to wait for an acknowledgement.")
    tasmota_topic: str = Field(
        "cmnd/sml-{serial}/POWER", description="Tasmota meters (registry uri mqtt://tasmota/…): relay ON/OFF here."
    )
    tasmota_ack_topic: str = Field("stat/sml-{serial}/POWER", description="… and Tasmota answers its state here.")
    ttn_downlink_topic: str = Field(
        "v3/releve-water@ttn/devices/water-{serial}/down/push",
        description="LoRaWAN meters (uri mqtt://ttn/…): downlinks are pushed to The Things Stack here …",
    )
    ttn_uplink_topic: str = Field(
        "v3/releve-water@ttn/devices/water-{serial}/up",
        description="… and the state is confirmed by the device's next uplinks here.",
    )
    ttn_confirm_timeout_s: float = Field(
        1800.0, gt=0, le=86400, description="A class A device reports in its next uplinks: wait this long."
    )

    @field_validator(
        "mqtt_topic", "mqtt_ack_topic", "tasmota_topic", "tasmota_ack_topic", "ttn_downlink_topic", "ttn_uplink_topic"
    )
    @classmethod
    def _serial_template(cls, value: str) -> str:
        if "{serial}" not in value or "+" in value or "#" in value:
            raise ValueError("a command topic names one meter: it needs {serial} and no wildcard")
        compile_topic(value)
        return value


class CollectorConfig(_Model):
    """A collector process."""

    name: str = Field("collector", description="Shown in logs, health and the ingest batch origin.")
    spool_dir: Path = Field(Path("var/spool"), description="Durable store-and-forward directory.")
    spool_max_mb: int = Field(1024, ge=1, description="Spool size bound; warns from 80 %.")
    seal_seconds: float = Field(1.0, gt=0, description="Spooled data reaches the database within about this.")
    health_every_s: float = Field(10.0, gt=0, description="How often health is written to the database.")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Serve Prometheus /metrics here (0: any).")
    mqtt: MqttSource | None = None
    modbus: ModbusSource | None = None
    plausibility: PlausibilityConfig = Field(default_factory=PlausibilityConfig)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)


def load_config(path: Path) -> CollectorConfig:
    """Read and validate a collector configuration file (TOML; JSON when it ends in ``.json``, as the demo writes)."""
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read the collector configuration: {exc}") from exc
    else:
        data = read_toml(path, ConfigError)
    try:
        return CollectorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from exc


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
            patterns.append("".join(re.escape(p) if k % 2 == 0 else f"(?P<{p}>[^/]+)" for k, p in enumerate(parts)))
        else:
            if "+" in level or "#" in level:
                raise ValueError(f"topic template {template!r}: wildcard inside level {level!r}")
            filters.append(level)
            patterns.append(re.escape(level))
    return "/".join(filters), re.compile("^" + "/".join(patterns) + "$")
