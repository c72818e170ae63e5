"""Backfill CSV files, the readings API, and the ``releve simulate`` command line."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from releve.cli import main
from simulators.backfill import backfill, read_labels
from simulators.engine import Simulation

from .conftest import small_fleet

DAYS = 14


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    out = tmp_path_factory.mktemp("backfill")
    sim = Simulation(
        small_fleet(theft={"rate": 0.5, "max_days": 4}, faults={"rate": 0.5, "max_days": 4}, horizon_days=DAYS)
    )
    summary = backfill(sim, DAYS, out, progress=False)
    return sim, out, summary


def test_backfill_writes_the_documented_files_and_headers(filled):
    _, out, summary = filled
    headers = {
        "meters.csv": "serial,model,commodity,role,customer_class,unit,multiplier,register_digits,"
        "register_width_bits,register_wrap,transport,address,service_point,latitude,longitude,area,"
        "feeder_serial",
        "areas.csv": "area,kind,commodity,feeder_serial,customers,latitude,longitude,technical_loss_min,"
        "technical_loss_max",
        "register_reads.csv": "meter,channel,ts,value,unit,device_ts",
        "intervals.csv": "meter,channel,ts,value,unit",
        "events.csv": "meter,ts,kind,code",
        "manual_reads.csv": "meter,ts,value,unit,read_type",
        "labels.csv": "meter,category,kind,start,end,params",
        "truth_daily.csv": "meter,date,true,recorded,stolen,unit",
        "area_balance_daily.csv": "area,date,feeder,customers_true,customers_recorded,technical_losses,stolen,unit",
    }
    for name, header in headers.items():
        assert (out / name).read_text().splitlines()[0] == header, name
    assert summary.register_rows == len(rows(out / "register_reads.csv"))
    assert summary.interval_rows == len(rows(out / "intervals.csv"))


def test_register_reads_match_the_readings_api(filled):
    sim, out, _ = filled
    api = [
        (
            r.meter,
            r.channel,
            r.ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            round(r.value, 3),
            r.device_ts.strftime("%Y-%m-%dT%H:%M:%SZ") if r.device_ts else "",
        )
        for r in sim.readings(DAYS)
    ]
    csv_rows = [
        (r["meter"], r["channel"], r["ts"], float(r["value"]), r["device_ts"]) for r in rows(out / "register_reads.csv")
    ]
    assert len(api) == len(csv_rows)
    assert api == [(m, c, t, pytest.approx(v, abs=6e-4), d) for m, c, t, v, d in csv_rows]
    intervals = list(sim.readings(DAYS, channels="intervals"))
    assert len(intervals) == len(rows(out / "intervals.csv"))
    events = [
        (e.meter, e.ts.strftime("%Y-%m-%dT%H:%M:%SZ"), e.kind.value, str(e.details["code"]))
        for e in sim.meter_events(DAYS)
    ]
    assert events == [(r["meter"], r["ts"], r["kind"], r["code"]) for r in rows(out / "events.csv")]


def test_labels_csv_round_trips_and_truth_files_balance(filled):
    sim, out, _ = filled
    labels = read_labels(out / "labels.csv")
    assert labels
    assert {lb.category for lb in labels} <= {"theft", "fault", "context"}
    expected = [lb for lb in sim.labels() if lb.kind != "digit_error"]
    assert [lb for lb in labels if lb.kind != "digit_error"] == expected
    for row in rows(out / "truth_daily.csv"):
        assert float(row["stolen"]) == pytest.approx(max(float(row["true"]) - float(row["recorded"]), 0), abs=2e-4)
    thieves = {lb.meter for lb in labels if lb.category == "theft"}
    stolen_by = {r["meter"] for r in rows(out / "truth_daily.csv") if float(r["stolen"]) > 0.01}
    assert stolen_by <= thieves
    for row in rows(out / "area_balance_daily.csv"):
        assert float(row["feeder"]) == pytest.approx(
            float(row["customers_true"]) + float(row["technical_losses"]), abs=1e-3
        )
    manual = rows(out / "manual_reads.csv")
    typed = {(lb.meter, lb.start.strftime("%Y-%m-%dT%H:%M:%SZ")): lb for lb in labels if lb.kind == "digit_error"}
    for row in manual:
        label = typed.get((row["meter"], row["ts"]))
        if label is not None:
            assert int(row["value"]) == label.params["typed"] != label.params["correct"]


def test_same_seed_writes_identical_files(tmp_path, filled):
    _, first, _ = filled
    again = tmp_path / "again"
    backfill(
        Simulation(
            small_fleet(theft={"rate": 0.5, "max_days": 4}, faults={"rate": 0.5, "max_days": 4}, horizon_days=DAYS)
        ),
        DAYS,
        again,
        progress=False,
    )
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    for path in sorted(first.iterdir()):
        assert digest(path) == digest(again / path.name), path.name


def test_cli_backfill_and_a_bad_fleet_file(tmp_path, capsys):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text("seed = 3\n[topology]\ntransformers = 1\ncustomers_per_transformer = 3\ndmas = 0\n")
    assert (
        main(
            [
                "simulate",
                "backfill",
                "--fleet",
                str(fleet),
                "--days",
                "1",
                "--out",
                str(tmp_path / "o"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "4 meters, 1 days" in capsys.readouterr().out
    assert len(rows(tmp_path / "o" / "register_reads.csv")) == 4 * 96 * 2
    fleet.write_text("[topology]\ntransformers = -1\n")
    assert main(["simulate", "backfill", "--fleet", str(fleet), "--days", "1", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "fleet.toml: invalid fleet: topology.transformers: Input should be greater than or equal to 0" in err


@pytest.mark.mqtt
def test_cli_run_serves_modbus_and_mqtt_and_stops_cleanly_on_ctrl_c(tmp_path, mqtt_broker):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        "[topology]\ntransformers = 1\ncustomers_per_transformer = 4\ndmas = 1\ncustomers_per_dma = 2\n"
        "[modbus]\ntcp_base_port = 0\n[mqtt]\npublish_every_s = 0.2\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "releve.cli",
            "simulate",
            "run",
            "--fleet",
            str(fleet),
            "--mqtt",
            mqtt_broker.url,
            "--run-dir",
            str(tmp_path / "run"),
            "--speed",
            "600",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        text = "".join(lines)
        port = int(re.search(r"modbus tcp 127\.0\.0\.1:(\d+)", text).group(1))
        assert re.search(r"modbus rtu \S+ \(9600 8N1\) units 1", text)
        assert "mqtt publisher -> " + mqtt_broker.url in text
        assert (tmp_path / "run" / "rtu-line0").is_symlink()
        # Which model answers at which unit id: printed, and listed in the run directory.
        assert re.search(r"modbus tcp 127\.0\.0\.1:\d+ units 1-\d+ \(.*sdm630 1\b", text), text
        assert "unit listing (model at each unit id): " in text
        listing = json.loads((tmp_path / "run" / "units.json").read_text())
        feeder = next(r for r in listing if r["transport"] == "tcp" and r["unit"] == 1)
        assert feeder["endpoint"] == f"127.0.0.1:{port}" and feeder["model"] == "sdm630" and feeder["role"] == "feeder"
        assert (tmp_path / "run" / "units.csv").read_text().startswith("transport,endpoint,unit,serial,model,")
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
        assert client.connect()
        first = client.read_input_registers(72, count=2, device_id=1)
        time.sleep(0.3)
        second = client.read_input_registers(72, count=2, device_id=1)
        client.close()
        assert first.registers != second.registers, "the feeder's energy register advances with the clock"
        got = []
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        sub = mqtt.Client(CallbackAPIVersion.VERSION2)
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
        sub.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
        sub.connect("127.0.0.1", mqtt_broker.port)
        sub.loop_start()
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        sub.loop_stop()
        sub.disconnect()
        assert len(got) >= 3
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "simulators stopped" in err


def test_cli_run_list_says_which_model_answers_at_which_unit(capsys):
    from simulators.config import FleetConfig
    from simulators.engine import Simulation

    assert main(["simulate", "run", "--list", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    sim = Simulation(FleetConfig())
    assert len(rows) == len(sim.meters)
    for row, meter in zip(rows, sim.meters, strict=True):
        assert (row["serial"], row["model"], row["transport"]) == (meter.serial, meter.model, meter.transport)
        if meter.transport == "tcp":
            assert row["endpoint"] == f"127.0.0.1:{5020 + meter.gateway}" and row["unit"] == meter.unit_id
        elif meter.transport == "rtu":
            assert row["endpoint"] == f"rtu-line{meter.line}" and row["unit"] == meter.unit_id
        else:
            assert row["unit"] is None
    assert main(["simulate", "run", "--list", "csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert csv_lines[0] == "transport,endpoint,unit,serial,model,manufacturer,commodity,role"
    assert len(csv_lines) == len(rows) + 1
