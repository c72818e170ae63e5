"""Backfill: N days of fleet history written as documented CSV files (see docs/simulators.md).

Files in the output directory (all UTC, ISO-8601 timestamps ``YYYY-MM-DDTHH:MM:SSZ``):

``meters.csv``            registry: serial, model, commodity, role, unit, multiplier, register width,
                          protocol address, service point, coordinates, area, feeder
``areas.csv``             transformers and district metered areas with their feeder/bulk meter
``register_reads.csv``    meter,channel,ts,value,unit,device_ts — what the registers show at every
                          interval start (``device_ts`` only when the meter clock is off)
``intervals.csv``         meter,channel,ts,value,unit — recorded consumption per interval (ts = start)
``events.csv``            meter,ts,kind,code
``manual_reads.csv``      meter,ts,value,unit,read_type — monthly indexes typed by meter readers
``labels.csv``            meter,category,kind,start,end,params — ground truth of every injection
``truth_daily.csv``       meter,date,true,recorded,stolen,unit — per customer and day
``area_balance_daily.csv`` area,date,feeder,customers_true,customers_recorded,technical_losses,stolen,unit
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from simulators.engine import Block, Label, Simulation

_TS = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class BackfillSummary:
    """What a backfill wrote and how long it took."""

    meters: int
    days: float
    register_rows: int
    interval_rows: int
    labels: int
    events: int
    seconds: float

    @property
    def rows(self) -> int:
        """Register plus interval rows."""
        return self.register_rows + self.interval_rows


def _address(sim: Simulation, index: int) -> str:
    meter = sim.meters[index]
    cfg = sim.config
    if meter.transport == "tcp":
        port = cfg.modbus.tcp_base_port + meter.gateway if cfg.modbus.tcp_base_port else 0
        return f"tcp://{cfg.modbus.host}:{port}/{meter.unit_id}"
    if meter.transport == "rtu":
        return f"rtu://line{meter.line}/{meter.unit_id}"
    return f"mqtt://{meter.mqtt_style}/{meter.serial}"


def write_registry(sim: Simulation, out: Path) -> None:
    """Write meters.csv and areas.csv."""
    feeders = {a.name: sim.meters[a.feeder].serial for a in sim.areas}
    with (out / "meters.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "serial",
                "model",
                "commodity",
                "role",
                "customer_class",
                "unit",
                "multiplier",
                "register_digits",
                "register_width_bits",
                "register_wrap",
                "transport",
                "address",
                "service_point",
                "latitude",
                "longitude",
                "area",
                "feeder_serial",
            ]
        )
        for m in sim.meters:
            entry = m.profile.entry(m.import_channel)
            width = 16 * entry.count if entry is not None and entry.data_type.value.startswith(("int", "uint")) else ""
            wrap = entry.wrap if entry is not None and entry.wrap is not None else ""
            w.writerow(
                [
                    m.serial,
                    m.model,
                    m.commodity.value,
                    m.role,
                    m.customer_class,
                    m.unit,
                    1,
                    m.profile.register_digits or "",
                    width,
                    wrap,
                    m.transport,
                    _address(sim, m.index),
                    m.service_point,
                    m.latitude,
                    m.longitude,
                    m.area,
                    "" if m.role == "feeder" else feeders[m.area],
                ]
            )
    with (out / "areas.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "area",
                "kind",
                "commodity",
                "feeder_serial",
                "customers",
                "latitude",
                "longitude",
                "technical_loss_min",
                "technical_loss_max",
            ]
        )
        for a in sim.areas:
            w.writerow(
                [
                    a.name,
                    a.kind,
                    a.commodity.value,
                    sim.meters[a.feeder].serial,
                    len(a.customers),
                    round(a.latitude, 6),
                    round(a.longitude, 6),
                    a.loss_min,
                    a.loss_max,
                ]
            )


def write_labels(labels: list[Label], path: Path) -> None:
    """Write a labels CSV: meter,category,kind,start,end,params (params as JSON)."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["meter", "category", "kind", "start", "end", "params"])
        for lb in labels:
            w.writerow(
                [
                    lb.meter,
                    lb.category,
                    lb.kind,
                    lb.start.strftime(_TS),
                    lb.end.strftime(_TS),
                    json.dumps(lb.params, sort_keys=True),
                ]
            )


def read_labels(path: Path) -> list[Label]:
    """Read a labels CSV back into :class:`Label` objects."""
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(
                Label(
                    row["meter"],
                    row["category"],
                    row["kind"],
                    datetime.strptime(row["start"], _TS).replace(tzinfo=UTC),
                    datetime.strptime(row["end"], _TS).replace(tzinfo=UTC),
                    json.loads(row["params"]),
                )
            )
    return out


class _Writer:
    """Fast line-oriented CSV writer for the big files."""

    def __init__(self, path: Path, header: str) -> None:
        self.fh = path.open("w", buffering=1 << 20)
        self.fh.write(header + "\n")
        self.rows = 0

    def lines(self, lines: list[str]) -> None:
        self.fh.write("".join(lines))
        self.rows += len(lines)

    def close(self) -> None:
        self.fh.close()


def _block_rows(
    sim: Simulation, blk: Block, count: int, ts_text: list[str], reads: _Writer, intervals: _Writer
) -> None:
    step = np.timedelta64(sim.config.interval_minutes, "m")
    end_text = [str(t + step) + "Z" for t in blk.times[:count]]  # interval values are stamped at their end
    for spec in sim.meters:
        m = spec.index
        ok = blk.available[m, :count]
        all_ok = bool(ok.all())
        idx = range(count) if all_ok else np.flatnonzero(ok).tolist()
        drifting = sim.has_episode(m, "clock_drift")
        for channel, series in (
            (spec.import_channel, blk.reported_imp[m, :count]),
            (spec.export_channel, blk.reported_exp[m, :count]),
        ):
            values = series.tolist()
            head = f"{spec.serial},{channel},"
            tail = f",{spec.unit},"
            if not drifting:
                reads.lines([f"{head}{ts_text[j]},{values[j]:.3f}{tail}\n" for j in idx])
                continue
            rows = []
            for j in idx:
                ts = sim.time_of(blk.first_step + j)
                offset = sim.clock_offset(m, ts)
                dev = (ts + timedelta(seconds=offset)).strftime(_TS) if offset else ""
                rows.append(f"{head}{ts_text[j]},{values[j]:.3f}{tail}{dev}\n")
            reads.lines(rows)
        rec = blk.rec[m, :count].tolist()
        head = f"{spec.serial},{spec.interval_channel},"
        tail = f",{spec.unit}\n"
        intervals.lines([f"{head}{end_text[j]},{rec[j]:.4f}{tail}" for j in idx])


def backfill(sim: Simulation, days: float, out: Path, progress: bool = True) -> BackfillSummary:
    """Write ``days`` days of history of ``sim`` into ``out`` (created if missing)."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    write_registry(sim, out)
    end_step = int(days * sim.steps_per_day)
    spd = sim.steps_per_day
    reads = _Writer(out / "register_reads.csv", "meter,channel,ts,value,unit,device_ts")
    intervals = _Writer(out / "intervals.csv", "meter,channel,ts,value,unit")
    truth = io.StringIO()
    truth.write("meter,date,true,recorded,stolen,unit\n")
    balance = io.StringIO()
    balance.write("area,date,feeder,customers_true,customers_recorded,technical_losses,stolen,unit\n")
    customers = np.array([m.role == "customer" for m in sim.meters])
    n_blocks = -(-end_step // sim.block_steps)
    for blk in tqdm(sim.blocks(days), total=n_blocks, desc="backfill", unit="week", disable=not progress):
        count = min(blk.steps, end_step - blk.first_step)
        ts_text = [str(t) + "Z" for t in blk.times[:count]]
        _block_rows(sim, blk, count, ts_text, reads, intervals)
        n_days = count // spd
        if n_days == 0:
            continue
        true_d = blk.true[:, : n_days * spd].reshape(len(sim.meters), n_days, spd).sum(axis=2)
        rec_d = blk.rec[:, : n_days * spd].reshape(len(sim.meters), n_days, spd).sum(axis=2)
        dates = [str(d) for d in blk.times[: n_days * spd : spd].astype("datetime64[D]")]
        for spec in sim.meters:
            if not customers[spec.index]:
                continue
            m = spec.index
            for d, date in enumerate(dates):
                t, r = true_d[m, d], rec_d[m, d]
                truth.write(f"{spec.serial},{date},{t:.4f},{r:.4f},{max(t - r, 0.0):.4f},{spec.unit}\n")
        loss_d = blk.losses[:, : n_days * spd].reshape(len(sim.areas), n_days, spd).sum(axis=2)
        for a, area in enumerate(sim.areas):
            for d, date in enumerate(dates):
                ct = true_d[area.customers, d].sum()
                cr = rec_d[area.customers, d].sum()
                unit = sim.meters[area.feeder].unit
                balance.write(
                    f"{area.name},{date},{true_d[area.feeder, d]:.4f},{ct:.4f},{cr:.4f},"
                    f"{loss_d[a, d]:.4f},{max(ct - cr, 0.0):.4f},{unit}\n"
                )
    reads.close()
    intervals.close()
    (out / "truth_daily.csv").write_text(truth.getvalue())
    (out / "area_balance_daily.csv").write_text(balance.getvalue())
    end = sim.time_of(end_step)
    events = sim.events_between(sim.start, end)
    with (out / "events.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["meter", "ts", "kind", "code"])
        for ev in events:
            w.writerow([sim.meters[ev.meter].serial, ev.ts.strftime(_TS), ev.kind.value, ev.code])
    manual_labels = []
    with (out / "manual_reads.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["meter", "ts", "value", "unit", "read_type"])
        for m, step, value, read_type, label in sim.manual_reads(days):
            w.writerow(
                [sim.meters[m].serial, sim.time_of(step).strftime(_TS), int(value), sim.meters[m].unit, read_type]
            )
            if label is not None:
                manual_labels.append(label)
    labels = [lb for lb in sim.labels(until=end) if lb.kind != "digit_error"] + manual_labels
    labels.sort(key=lambda lb: (lb.start, lb.meter, lb.kind))
    write_labels(labels, out / "labels.csv")
    return BackfillSummary(
        len(sim.meters), days, reads.rows, intervals.rows, len(labels), len(events), time.perf_counter() - t0
    )
