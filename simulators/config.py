"""The fleet file: one TOML document describing what to simulate, validated with pydantic.

Every key has a default, so an empty file is a valid (small) fleet. ``simulators/fleet.example.toml``
shows every key with a comment; :func:`load_fleet` raises :class:`FleetError` naming the file, the
key and the problem.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from releve.profiles import ProfileError, load_profile
from releve.validation import describe, read_toml
from simulators.injections import FAULT_KINDS, THEFT_KINDS  # the kinds a fleet file may ask for


class FleetError(Exception):
    """The fleet file is invalid; the message names the file, the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopologyConfig(_Section):
    """How many areas and how many customers hang off each."""

    transformers: int = Field(default=2, ge=0, description="Electricity areas (one feeder meter each).")
    customers_per_transformer: int = Field(default=10, ge=1)
    dmas: int = Field(default=1, ge=0, description="Water district metered areas (one bulk meter each).")
    customers_per_dma: int = Field(default=8, ge=1)
    technical_loss_min: float = Field(default=0.03, ge=0, le=0.5, description="Losses share at light load.")
    technical_loss_max: float = Field(default=0.08, ge=0, le=0.5, description="Losses share at peak load.")
    feeder_model: str = "sdm630"
    bulk_model: str = "water-ultrasonic"
    commercial_share: float = Field(default=0.15, ge=0, le=1, description="Share of commercial customers.")
    electricity_models: dict[str, float] = Field(
        default_factory=lambda: {"sdm120": 0.4, "sdm630": 0.2, "gen-int32cdab": 0.2, "gen-counter16": 0.2},
        description="Customer meter models and their weights.",
    )
    water_model: str = "water-ultrasonic"
    latitude: float = 48.85
    longitude: float = 2.35

    @model_validator(mode="after")
    def _models_exist(self) -> TopologyConfig:
        names = [self.feeder_model, self.bulk_model, self.water_model, *self.electricity_models]
        for name in names:
            try:
                load_profile(name)
            except ProfileError as exc:
                raise ValueError(f"model {name!r}: {exc}") from exc
        if self.technical_loss_max < self.technical_loss_min:
            raise ValueError("technical_loss_max is below technical_loss_min")
        if not self.electricity_models or min(self.electricity_models.values()) < 0:
            raise ValueError("electricity_models needs at least one model with a weight >= 0")
        return self


class InjectionConfig(_Section):
    """Share of customer meters that get one episode, and which kinds (with weights)."""

    rate: float = Field(default=0.1, ge=0, le=1)
    kinds: dict[str, float] = Field(default_factory=dict, description="Kind -> weight; empty: all kinds.")
    min_days: float = Field(default=2.0, gt=0, description="Shortest episode.")
    max_days: float = Field(default=10.0, gt=0, description="Longest episode.")


class ConsumptionConfig(_Section):
    """Consumption levels and variability."""

    residential_kwh_per_day: float = Field(default=9.0, gt=0)
    commercial_kwh_per_day: float = Field(default=60.0, gt=0)
    water_litres_per_day: float = Field(default=350.0, gt=0)
    noise: float = Field(default=0.25, ge=0, le=2, description="Log-normal sigma of interval noise.")
    seasonality: float = Field(default=0.25, ge=0, le=0.9, description="Winter/summer swing (electricity).")
    vacancy_rate: float = Field(default=0.1, ge=0, le=1, description="Share of customers with a vacancy.")


class ModbusConfig(_Section):
    """Modbus front-ends: TCP gateways and RTU lines on pseudo-terminals."""

    host: str = "127.0.0.1"
    tcp_base_port: int = Field(default=5020, ge=0, le=65535, description="0: pick free ports.")
    devices_per_gateway: int = Field(default=32, ge=1, le=247)
    rtu_lines: int = Field(default=1, ge=0, description="Pseudo-terminal RS-485 lines.")
    devices_per_line: int = Field(default=4, ge=1, le=247)
    baudrate: int = 9600
    wire_timing: bool = Field(default=True, description="RTU bytes cross the pty at the baud rate's pace.")
    response_delay_ms: float = Field(default=0.0, ge=0, description="Delay of every device.")
    serialise_gateways: bool = Field(
        default=False, description="TCP gateways answer one request at a time (RS-485 behind TCP)."
    )
    slow_delay_ms: float = Field(default=1500.0, ge=0, description="Delay of a 'slow_device' fault.")


class MqttConfig(_Section):
    """MQTT publisher: which meters publish, in which payload styles, how often."""

    url: str = Field(default="mqtt://127.0.0.1:1883", description="Broker; overridden by --mqtt.")
    electricity_share: float = Field(default=0.2, ge=0, le=1, description="Electricity customers on MQTT.")
    styles: list[str] = Field(default_factory=lambda: ["json", "tasmota", "ttn"])
    publish_every_s: float = Field(default=10.0, gt=0, description="Wall-clock seconds between rounds.")
    topic_prefix: str = "releve"
    ttn_application: str = "releve-water"

    @field_validator("styles")
    @classmethod
    def _styles(cls, value: list[str]) -> list[str]:
        bad = sorted(set(value) - {"json", "tasmota", "ttn"})
        if bad or not value:
            raise ValueError(f"styles must be a non-empty subset of json, tasmota, ttn (not {bad})")
        return value


class FleetConfig(_Section):
    """A whole simulated fleet."""

    seed: int = Field(default=42, ge=0)
    start: datetime = Field(default=datetime(2026, 1, 1, tzinfo=UTC), description="Simulation start (midnight UTC).")
    interval_minutes: int = Field(default=15, description="Interval length; divides a day.")
    horizon_days: int = Field(default=366, ge=1, description="Injections are drawn inside this span.")
    speed: float = Field(default=96.0, gt=0, description="Live mode: simulated seconds per wall second.")
    serial_base: int = Field(default=26_000_000, ge=1)
    topology: TopologyConfig = TopologyConfig()
    consumption: ConsumptionConfig = ConsumptionConfig()
    theft: InjectionConfig = InjectionConfig(rate=0.15)
    faults: InjectionConfig = InjectionConfig(rate=0.15)
    modbus: ModbusConfig = ModbusConfig()
    mqtt: MqttConfig = MqttConfig()

    @field_validator("start")
    @classmethod
    def _midnight(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if (value.hour, value.minute, value.second, value.microsecond) != (0, 0, 0, 0):
            raise ValueError("start must be a midnight (UTC)")
        return value

    @field_validator("interval_minutes")
    @classmethod
    def _divides_day(cls, value: int) -> int:
        if value <= 0 or 1440 % value:
            raise ValueError("interval_minutes must divide 1440")
        return value

    @model_validator(mode="after")
    def _kinds(self) -> FleetConfig:
        for section, allowed in ((self.theft, THEFT_KINDS), (self.faults, FAULT_KINDS)):
            bad = sorted(set(section.kinds) - set(allowed))
            if bad:
                raise ValueError(f"unknown kinds {bad}; allowed: {', '.join(allowed)}")
            if section.max_days < section.min_days:
                raise ValueError("max_days is below min_days")
        return self


def parse_fleet(data: dict[str, Any], origin: str = "<fleet>") -> FleetConfig:
    """Validate a parsed fleet document."""
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as exc:
        raise FleetError(f"{origin}: invalid fleet: {describe(exc, '(fleet)')}") from exc


def load_fleet(path: Path | None) -> FleetConfig:
    """Read a fleet file (None: all defaults)."""
    if path is None:
        return FleetConfig()
    data = read_toml(path, FleetError)
    return parse_fleet(data, str(path))
