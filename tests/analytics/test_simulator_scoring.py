"""VEE scored against the simulator's labelled fleet (simulators/, docs/simulators.md).

Daily register reads (the import register at 00:00 UTC) of every customer meter, with faults
injected by the simulator: frozen registers and ×10/×1000 scale jumps must raise alarms; rollovers
of narrow counters and meter exchanges must not. Vacancies are context: alarms while a home stands
empty and for the ten days the history needs to follow it back up are left out of the score.
"""

from __future__ import annotations

import numpy as np
import pytest

from analytics.vee.params import params_for
from analytics.vee.registers import RegisterSeries, validate_registers

simulators = pytest.importorskip("simulators.engine")
config = pytest.importorskip("simulators.config")

DAY = 86400.0
DAYS = 60
MUST_ALARM = {"frozen_register", "scale_jump"}
MUST_NOT_ALARM = {"rollover", "meter_exchange"}


def daily_register_series(seed: int):
    cfg = config.FleetConfig(
        seed=seed, horizon_days=DAYS, theft={"rate": 0},
        topology={"transformers": 4, "customers_per_transformer": 25, "dmas": 2, "customers_per_dma": 20},
        faults={"rate": 0.6, "kinds": {"rollover": 1, "meter_exchange": 1, "frozen_register": 1, "scale_jump": 1}},
    )  # fmt: skip
    sim = simulators.Simulation(cfg)
    customers = {m.serial: m for m in sim.meters if m.role != "feeder"}
    serials = sorted(customers)
    sid = {s: i for i, s in enumerate(serials)}
    rows = sorted(
        (sid[r.meter], r.ts.timestamp(), r.value) for r in sim.readings(DAYS)
         if r.meter in customers and r.channel in ("1-0:1.8.0", "8-0:1.0.0") and r.ts.hour == 0 and r.ts.minute == 0
    )  # fmt: skip
    modulus = np.full(len(serials), np.inf)
    klass = np.zeros(len(serials), np.int64)
    for s, m in customers.items():
        entry = m.profile.entry(m.import_channel)
        if entry is not None and entry.wrap:
            modulus[sid[s]] = entry.wrap
        if m.profile.register_digits:
            modulus[sid[s]] = 10.0**m.profile.register_digits
        klass[sid[s]] = 0 if m.commodity.value == "electricity" else 1
    arr = np.array(rows)
    batch = RegisterSeries(arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], modulus, klass,
                           [params_for("electricity"), params_for("water")])  # fmt: skip
    labels = [(sid[lb.meter], lb) for lb in sim.labels() if lb.meter in customers]
    return batch, labels


@pytest.mark.parametrize("seed", [42, 7])
def test_simulated_fleet_faults_reach_recall_and_precision_and_rollovers_exchanges_stay_quiet(seed):
    batch, labels = daily_register_series(seed)
    result = validate_registers(batch)
    alarms = [(int(batch.series[i]), float(batch.t[i])) for i in result.flagged_rows()]

    def within(meter, ts, lb, after=DAY):
        return meter == lb[0] and lb[1].start.timestamp() <= ts <= lb[1].end.timestamp() + after

    faults = [lb for lb in labels if lb[1].kind in MUST_ALARM
              and ((batch.series == lb[0]) & (batch.t >= lb[1].start.timestamp())
                   & (batch.t <= lb[1].end.timestamp() + DAY)).any()]  # fmt: skip
    vacancies = [lb for lb in labels if lb[1].kind == "vacancy"]
    scored = [a for a in alarms if not any(within(*a, v, after=11 * DAY) for v in vacancies)]
    true_alarms = [a for a in scored if any(within(*a, f) for f in faults)]
    detected = [f for f in faults if any(within(*a, f) for a in alarms)]
    recall = len(detected) / len(faults)
    precision = len(true_alarms) / len(scored)
    assert len(faults) >= 40
    assert recall >= 0.95, [f[1] for f in faults if f not in detected]
    assert precision >= 0.90, [a for a in scored if a not in true_alarms][:10]
    # Rollovers and exchanges are corrected (info findings), never alarms on the read itself.
    quiet = [lb for lb in labels if lb[1].kind in MUST_NOT_ALARM]
    info_rows = {(int(batch.series[f.row]), float(batch.t[f.row])) for f in result.findings
                 if f.rule in ("ROLLOVER", "RESET", "EXCHANGE")}  # fmt: skip
    corrected = [lb for lb in quiet if any(within(*r, lb) for r in info_rows)]
    assert len(corrected) >= 0.9 * len(quiet)
