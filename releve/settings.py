"""Settings: one TOML file, overridden by ``RELEVE_*`` environment variables.

The file is found at ``$RELEVE_SETTINGS`` or ``./releve.toml``; a missing file means defaults.
An environment variable overrides one key: ``RELEVE_<SECTION>__<KEY>``, for instance
``RELEVE_DATABASE__URL=postgresql://user@host/db``. ``RELEVE_DATABASE_URL`` is accepted as a
shorthand for the most common override. ``releve settings --sample`` prints a commented file
generated from the models below, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from releve.validation import describe

DEFAULT_FILE = Path("releve.toml")


class SettingsError(Exception):
    """The settings file or an override is invalid; the message names the key and the problem."""


class _Section(BaseModel):
    """A settings section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    """Where the database is and who Relevé is inside it."""

    url: str = Field(
        "",
        description="PostgreSQL/TimescaleDB URL. Empty: start the embedded server in data_dir.",
    )
    replica_url: str = Field(
        "",
        description="A streaming replica for dashboards and reports (reader role). Empty: they read the primary.",
    )
    shard_urls: list[str] = Field(
        [],  # pydantic copies a mutable default per instance
        description="Sharding by meter: one URL per shard server; url is then the coordinator (docs/scaling.md).",
    )
    data_dir: Path = Field(Path("var/pg"), description="Data directory of the embedded server.")
    role_prefix: str = Field(
        "releve",
        pattern=r"^[a-z_][a-z0-9_]{0,40}$",
        description="Database roles are <prefix>_writer (ingest), <prefix>_reader, <prefix>_editor.",
    )
    use_roles: bool = Field(True, description="Switch to the least-privileged role (SET ROLE) for each kind of work.")
    partition_months_ahead: int = Field(
        3, ge=1, le=36, description="Plain PostgreSQL: monthly partitions created this far ahead."
    )
    chunk_interval: str = Field("7 days", description="TimescaleDB: hypertable chunk interval.")
    compress_after: str = Field("30 days", description="TimescaleDB: compress chunks older than this.")
    retention: str = Field("", description="TimescaleDB: drop raw chunks older than this (empty: keep forever).")


class IngestSettings(_Section):
    """How the batch writer sizes its batches and what it refuses."""

    batch_rows: int = Field(50_000, ge=1, description="Flush a batch when it holds this many rows.")
    batch_seconds: float = Field(2.0, gt=0, description="Flush a batch at least this often.")
    max_pending_rows: int = Field(500_000, ge=1, description="Back-pressure: writers block when this many rows wait.")
    writers: int = Field(
        1,
        ge=1,
        le=16,
        description="Connections an Ingestor lands batches on at once (the order of batches is not kept).",
    )
    max_future_seconds: float = Field(
        300.0, ge=0, description="Readings stamped further in the future than this are rejected."
    )
    earliest: str = Field("2000-01-01", description="Readings stamped before this date are rejected.")
    blocks: bool = Field(
        True,
        description="Keep a batch's runs of one meter and channel within a UTC day as one block row "
        "(reading_block) instead of a row per reading; single readings stay rows. Ignored on TimescaleDB.",
    )


class LoggingSettings(_Section):
    """Quiet by default; JSON lines when asked."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    format: Literal["text", "json"] = "text"


class MqttSettings(_Section):
    """The MQTT broker the collectors and simulators talk to."""

    url: str = Field("", description="mqtt://host:port (mqtts:// for TLS). Empty: the embedded broker.")
    username: str = ""
    password_env: str = Field("RELEVE_MQTT_PASSWORD", description="Environment variable holding the broker password.")
    password_file: str = Field("", description="File holding the broker password (read at start).")


class DashboardSettings(_Section):
    """The web app (``releve dashboard``): where it listens, sessions, login throttling."""

    host: str = Field(
        "127.0.0.1", description="Address to listen on. Keep 127.0.0.1 behind a TLS reverse proxy (docs/operations.md)."
    )
    port: int = Field(8050, ge=0, le=65535, description="Port to listen on.")
    threads: int = Field(8, ge=1, le=64, description="Requests served at once (waitress worker threads).")
    trusted_proxies: int = Field(
        0, ge=0, le=5, description="Reverse proxies in front whose X-Forwarded-For/-Proto/-Host are believed."
    )
    secure_cookie: bool = Field(False, description="Send the session cookie over HTTPS only (set it behind TLS).")
    session_idle_minutes: int = Field(30, ge=1, description="A session ends after this long without a request.")
    session_max_hours: float = Field(12.0, gt=0, description="A session ends this long after its login, whatever.")
    login_failures: int = Field(5, ge=1, description="Failed logins in a row before an account is locked.")
    address_failures: int = Field(20, ge=1, description="Failed logins in a row before a client address is locked.")
    lockout_seconds: float = Field(30.0, gt=0, description="First lock-out; it doubles with each further failure.")
    lockout_max_seconds: float = Field(900.0, gt=0, description="Longest lock-out.")


class Settings(BaseSettings):
    """All of Relevé's settings; each section is documented by its fields."""

    model_config = SettingsConfigDict(env_prefix="RELEVE_", env_nested_delimiter="__", extra="forbid", toml_file=None)

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order of precedence: explicit arguments, environment, then the TOML file."""
        path = _settings_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def _settings_path() -> Path | None:
    explicit = os.environ.get("RELEVE_SETTINGS")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SettingsError(f"RELEVE_SETTINGS names {path}, which is not a file")
        return path
    return DEFAULT_FILE if DEFAULT_FILE.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Read the settings file and the environment; raise SettingsError naming the bad key."""
    shorthand = os.environ.get("RELEVE_DATABASE_URL")
    try:
        path = _settings_path()
        if path is not None:
            with path.open("rb") as fh:
                tomllib.load(fh)  # surface TOML syntax errors with the file name below
        settings = Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        where = str(path) if path else "environment"
        raise SettingsError(f"{where}: invalid settings: {describe(exc)}") from exc
    if shorthand and "RELEVE_DATABASE__URL" not in os.environ and "database" not in overrides:
        settings.database.url = shorthand
    return settings


def sample_toml() -> str:
    """Return a commented settings file with every key at its default, generated from the models."""
    lines = [
        "# Relevé settings. Every key is optional; shown here at its default.",
        "# Override any key from the environment: RELEVE_<SECTION>__<KEY>=value",
        "",
    ]
    for section_name, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        lines.append(f"[{section_name}]")
        doc = (model.__doc__ or "").strip()
        if doc:
            lines.append(f"# {doc}")
        for key, sub in model.model_fields.items():
            if sub.description:
                lines.append(f"# {sub.description}")
            lines.append(f"{key} = {_toml_value(sub.default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
