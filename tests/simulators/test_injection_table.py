"""The injection table (simulators/injections.py): every kind is one entry, and a seeded fleet stays the same.

The pinned figures were measured on the engine before the table existed (one ``if kind`` branch per
kind): the table must draw the same parameters in the same order and transform the same arrays.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from simulators.config import FAULT_KINDS, THEFT_KINDS, parse_fleet
from simulators.engine import Simulation
from simulators.injections import INJECTIONS

# Spelled out, not the table's kinds: a kind added later changes the default draws, not these fleets.
EVERY_THEFT = dict.fromkeys(
    (
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "bypass",
        "meter_stopped",
        "tamper_drop",
        "reverse_energy",
        "water_reverse_flow",
        "water_magnet",
    ),
    1.0,
)
EVERY_FAULT = dict.fromkeys(
    (
        "comm_loss",
        "slow_device",
        "clock_drift",
        "rollover",
        "meter_exchange",
        "frozen_register",
        "spike",
        "scale_jump",
        "digit_error",
        "leak",
    ),
    1.0,
)
SOME_THEFTS = {"h1": 1.0, "reverse_energy": 1.0, "water_reverse_flow": 1.0, "bypass": 1.0}
SOME_FAULTS = {"comm_loss": 1.0, "spike": 1.0, "rollover": 1.0, "leak": 1.0}

PINNED = {
    "every kind": (
        "c8c8a43d7c61d554",
        "fabb173ca6448e48",
        18974.543941306347,
        18413.65273073408,
        0.0,
        5813975405.633987,
        0.0,
        66528,
    ),
    "chosen kinds": (
        "ac236516e8c047ec",
        "217deb3112329a2f",
        18975.557209215694,
        18190.948237964934,
        378.3398657681869,
        374328800.1916151,
        273701.83413432393,
        62562,
    ),
}


def seeded_fleet(chosen: bool) -> Simulation:
    kinds_t = {"kinds": SOME_THEFTS if chosen else EVERY_THEFT}
    kinds_f = {"kinds": SOME_FAULTS if chosen else EVERY_FAULT}
    return Simulation(
        parse_fleet(
            {
                "seed": 11,
                "horizon_days": 21,
                "topology": {"transformers": 2, "customers_per_transformer": 10, "dmas": 1, "customers_per_dma": 10},
                "modbus": {"tcp_base_port": 0, "rtu_lines": 1, "devices_per_line": 3},
                "theft": {"rate": 0.6, "min_days": 2, "max_days": 8, **kinds_t},
                "faults": {"rate": 0.6, "min_days": 1, "max_days": 6, **kinds_f},
            },
            "pinned fleet",
        )
    )


@pytest.mark.parametrize("fleet", sorted(PINNED))
def test_a_seeded_fleet_draws_and_transforms_exactly_as_before_the_table(fleet):
    sim = seeded_fleet(fleet == "chosen kinds")
    blocks = list(sim.blocks(21))
    labels = [
        (lb.meter, lb.category, lb.kind, lb.start.isoformat(), lb.end.isoformat(), sorted(lb.params.items()))
        for lb in sim.labels()
    ]
    events = [(e.meter, e.step, e.kind.value, e.code) for e in sim.events]
    labels_hash, events_hash, *sums, available = PINNED[fleet]
    assert hashlib.sha256(repr(labels).encode()).hexdigest()[:16] == labels_hash
    assert hashlib.sha256(repr(events).encode()).hexdigest()[:16] == events_hash
    for name, expected in zip(("true", "rec", "exp", "reported_imp", "reported_exp"), sums, strict=True):
        assert float(sum(getattr(b, name).sum() for b in blocks)) == pytest.approx(expected, rel=1e-9), name
    assert int(sum(b.available.sum() for b in blocks)) == available


def test_the_fleet_file_kinds_are_the_table_s_theft_and_fault_entries():
    assert set(THEFT_KINDS) | set(FAULT_KINDS) | {"vacancy"} == set(INJECTIONS)
    assert all(INJECTIONS[k].record is not None for k in THEFT_KINDS), "a theft changes what the meter records"
    assert all(INJECTIONS[k].category == "fault" for k in FAULT_KINDS)


def test_a_kind_fits_only_the_meters_of_its_commodity():
    sim = seeded_fleet(False)
    water = next(m for m in sim.meters if m.role == "customer" and m.unit == "m3")
    power = next(m for m in sim.meters if m.role == "customer" and m.unit == "kWh")
    assert INJECTIONS["leak"].fits_meter(water) and not INJECTIONS["leak"].fits_meter(power)
    assert INJECTIONS["h2"].fits_meter(power) and not INJECTIONS["h2"].fits_meter(water)
    assert INJECTIONS["h1"].fits_meter(power) and INJECTIONS["h1"].fits_meter(water)
    assert np.isfinite(sim._wrap).any() == any(INJECTIONS["rollover"].fits_meter(m) for m in sim.meters)
