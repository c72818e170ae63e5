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
        seed=seed,
        horizon_days=DAYS,
        theft={"rate": 0},
        topology={"transformers": 4, "customers_per_transformer": 25, "dmas": 2, "customers_per_dma": 20},
        faults={"rate": 0.6, "kinds": {"rollover": 1, "meter_exchange": 1, "frozen_register": 1, "scale_jump": 1}},
    )
    sim = simulators.Simulation(cfg)
    customers = {m.serial: m for m in sim.meters if m.role != "feeder"}
    serials = sorted(customers)
    sid = {s: i for i, s in enumerate(serials)}
    rows = sorted(
        (sid[r.meter], r.ts.timestamp(), r.value)
        for r in sim.readings(DAYS)
        if r.meter in customers and r.channel in ("1-0:1.8.0", "8-0:1.0.0") and r.ts.hour == 0 and r.ts.minute == 0
    )
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
    batch = RegisterSeries(
        arr[:, 0].astype(np.int64),
        arr[:, 1],
        arr[:, 2],
        modulus,
        klass,
        [params_for("electricity"), params_for("water")],
    )
    labels = [(sid[lb.meter], lb) for lb in sim.labels() if lb.meter in customers]
    return batch, labels


@pytest.mark.parametrize("seed", [42, 7])
def test_simulated_fleet_faults_reach_recall_and_precision_and_rollovers_exchanges_stay_quiet(seed):
    batch, labels = daily_register_series(seed)
    result = validate_registers(batch)
    alarms = [(int(batch.series[i]), float(batch.t[i])) for i in result.flagged_rows()]

    def within(meter, ts, lb, after=DAY):
        return meter == lb[0] and lb[1].start.timestamp() <= ts <= lb[1].end.timestamp() + after

    faults = [
        lb
        for lb in labels
        if lb[1].kind in MUST_ALARM
        and (
            (batch.series == lb[0]) & (batch.t >= lb[1].start.timestamp()) & (batch.t <= lb[1].end.timestamp() + DAY)
        ).any()
    ]
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
    info_rows = {
        (int(batch.series[f.row]), float(batch.t[f.row]))
        for f in result.findings
        if f.rule in ("ROLLOVER", "RESET", "EXCHANGE")
    }
    corrected = [lb for lb in quiet if any(within(*r, lb) for r in info_rows)]
    assert len(corrected) >= 0.9 * len(quiet)


def _fleet(seed: int, kinds: dict[str, float], days: int, rate: float = 0.5):
    cfg = config.FleetConfig(
        seed=seed,
        horizon_days=days,
        theft={"rate": 0},
        topology={"transformers": 3, "customers_per_transformer": 20, "dmas": 1, "customers_per_dma": 20},
        faults={"rate": rate, "kinds": kinds, "min_days": 2, "max_days": 5},
    )
    return simulators.Simulation(cfg)


@pytest.mark.parametrize("seed", [11, 12])
def test_communication_losses_of_the_simulator_surface_as_gaps(seed):
    """Daily register reads, as above: a comm-loss episode of 2+ days must raise GAP, nothing else may."""
    sim = _fleet(seed, {"comm_loss": 1.0}, 60)
    customers = {m.serial: m for m in sim.meters if m.role != "feeder"}
    serials = sorted(customers)
    sid = {s: i for i, s in enumerate(serials)}
    rows = sorted(
        (sid[r.meter], r.ts.timestamp(), r.value)
        for r in sim.readings(60)
        if r.meter in customers and r.channel in ("1-0:1.8.0", "8-0:1.0.0") and r.ts.hour == 0 and r.ts.minute == 0
    )
    arr = np.array(rows)
    klass = np.array([0 if customers[s].commodity.value == "electricity" else 1 for s in serials])
    batch = RegisterSeries(
        arr[:, 0].astype(np.int64),
        arr[:, 1],
        arr[:, 2],
        np.full(len(serials), np.inf),
        klass,
        [params_for("electricity"), params_for("water")],
    )
    result = validate_registers(batch)
    gaps = {(int(batch.series[f.row]), float(batch.t[f.row])) for f in result.findings if f.rule == "GAP"}
    losses = [
        (sid[lb.meter], lb)
        for lb in sim.labels()
        if lb.meter in customers and lb.kind == "comm_loss" and (lb.end - lb.start).total_seconds() >= 2 * DAY
    ]

    def covers(g, lb):
        return g[0] == lb[0] and lb[1].start.timestamp() <= g[1] <= lb[1].end.timestamp() + DAY

    assert len(losses) >= 10
    found = [lb for lb in losses if any(covers(g, lb) for g in gaps)]
    true = [g for g in gaps if any(covers(g, lb) for lb in losses)]
    assert len(found) / len(losses) >= 0.95
    assert len(true) / len(gaps) >= 0.90


@pytest.mark.parametrize("seed", [21, 22])
def test_interval_spikes_of_the_simulator_are_found_and_nothing_else_is_called_a_spike(seed):
    """15-minute interval series: every labelled spike the rule can judge (at least ``spike_min``,
    the floor below which intervals are not judged) is found; nothing else is called a spike."""
    from zoneinfo import ZoneInfo

    from analytics.vee.intervals import validate_interval_series

    days = 30
    sim = _fleet(seed, {"spike": 1.0}, days, rate=0.4)
    customers = [m for m in sim.meters if m.role != "feeder"]
    series: dict[str, list[tuple[float, float]]] = {m.serial: [] for m in customers}
    for r in sim.readings(days, channels="intervals"):
        if r.meter in series:
            series[r.meter].append((r.ts.timestamp(), r.value))
    labelled = [lb for lb in sim.labels() if lb.kind == "spike" and lb.meter in series]
    commodity = {m.serial: m.commodity.value for m in customers}

    def recorded(lb):
        return max((v for t, v in series[lb.meter] if lb.start.timestamp() < t <= lb.end.timestamp() + 900), default=0)

    spikes = [lb for lb in labelled if recorded(lb) >= params_for(commodity[lb.meter]).spike_min]
    flagged = []
    for m in customers:
        t = np.array([p[0] for p in series[m.serial]])
        v = np.array([p[1] for p in series[m.serial]])
        found, _ = validate_interval_series(t, v, float(t[0]), ZoneInfo("UTC"), 900, params_for(m.commodity.value))
        flagged += [(m.serial, f.t) for f in found if f.rule == "SPIKE"]

    def hit(f, lb):  # the spiking interval ends within the labelled interval's span (+ one interval)
        return f[0] == lb.meter and lb.start.timestamp() < f[1] <= lb.end.timestamp() + 900

    assert len(spikes) >= 10
    recall = sum(any(hit(f, lb) for f in flagged) for lb in spikes) / len(spikes)
    precision = sum(any(hit(f, lb) for lb in spikes) for f in flagged) / max(len(flagged), 1)
    assert recall >= 0.95 and precision >= 0.90, (recall, precision)


def test_digit_entry_errors_in_the_simulators_manual_reads_are_caught_with_the_right_suggestion():
    """A year of monthly manual reads (the utility's situation): typed digit errors must be flagged, and
    the index the meter showed must be among the suggested corrections.

    Scored over the errors a high/low check can see at all: not on a meter's first read (nothing to
    compare with), and moving the index by more than a month's consumption (a transposition of the
    last two digits, 5831 typed 5813, stays inside any usage band; it is reported as not scored).
    """
    sim = _fleet(31, {"digit_error": 1.0}, 365, rate=0.35)
    reads = list(sim.manual_reads(365))
    customers = sorted({sim.meters[m].serial for m, *_ in reads})
    sid = {s: i for i, s in enumerate(customers)}
    rows = sorted((sid[sim.meters[m].serial], sim.time_of(step).timestamp(), value) for m, step, value, _, _ in reads)
    arr = np.array(rows)
    klass = np.array(
        [
            0
            if sim.meters[next(i for i, x in enumerate(sim.meters) if x.serial == s)].commodity.value == "electricity"
            else 1
            for s in customers
        ]
    )
    modulus = np.full(len(customers), np.inf)
    batch = RegisterSeries(
        arr[:, 0].astype(np.int64),
        arr[:, 1],
        arr[:, 2],
        modulus,
        klass,
        [params_for("electricity", "manual"), params_for("water", "manual")],
    )
    result = validate_registers(batch)
    first_read = {}
    for k in range(len(arr)):
        first_read.setdefault(int(arr[k, 0]), float(arr[k, 1]))
    monthly = {}
    for s_, _t, v_ in rows:
        monthly.setdefault(s_, []).append(v_)
    month_usage = {s_: float(np.median(np.diff(v))) if len(v) > 2 else np.inf for s_, v in monthly.items()}
    labelled = [lb for *_, lb in reads if lb is not None]
    errors = [
        lb
        for lb in labelled
        if first_read[sid[lb.meter]] != lb.start.timestamp()
        and abs(lb.params["typed"] - lb.params["correct"]) > month_usage[sid[lb.meter]]
    ]
    print(f"digit errors: {len(labelled)} injected, {len(errors)} visible to a band check")
    flagged = {(int(batch.series[i]), float(batch.t[i])) for i in result.flagged_rows()}
    suggestions: dict[tuple[int, float], list[float]] = {}
    for f in result.findings:
        key = (int(batch.series[f.row]), float(batch.t[f.row]))
        suggestions.setdefault(key, []).extend(getattr(f, "suggestions", []) or [])
    assert len(errors) >= 10
    caught = [lb for lb in errors if (sid[lb.meter], lb.start.timestamp()) in flagged]
    assert len(caught) / len(errors) >= 0.95
    right = [
        lb
        for lb in caught
        if any(
            abs(getattr(s, "value", s) - lb.params["correct"]) < 1e-6
            for s in suggestions.get((sid[lb.meter], lb.start.timestamp()), [])
        )
    ]
    assert len(right) / len(caught) >= 0.8
