"""Small fleets for the simulator tests."""

from __future__ import annotations

from typing import Any

from simulators.config import FleetConfig, parse_fleet


def small_fleet(**overrides: Any) -> FleetConfig:
    """A fleet of a few dozen meters with free ports; ``overrides`` are merged into sections."""
    data: dict[str, Any] = {
        "seed": 7,
        "horizon_days": 28,
        "topology": {"transformers": 2, "customers_per_transformer": 8, "dmas": 1, "customers_per_dma": 6},
        "modbus": {"tcp_base_port": 0, "rtu_lines": 1, "devices_per_line": 3},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_fleet(data, "test fleet")
