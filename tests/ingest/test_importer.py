"""Loading a simulator backfill directory into the database through the write path."""

import csv

import pytest

from ingest.importer import LoadError, load_directory
from simulators.backfill import backfill
from simulators.config import parse_fleet
from simulators.engine import Simulation

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def backfill_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("backfill")
    sim = Simulation(parse_fleet({
        "seed": 5, "horizon_days": 20, "start": "2026-02-01T00:00:00Z",
        "topology": {"transformers": 2, "customers_per_transformer": 6, "dmas": 1, "customers_per_dma": 4},
        "faults": {"rate": 0.5, "kinds": {"meter_exchange": 1.0}, "min_days": 1, "max_days": 2},
        "theft": {"rate": 0.3}, "modbus": {"tcp_base_port": 0},
    }, "importer test fleet"))
    backfill(sim, 14, out, progress=False)
    return out


def count_csv(path):
    with path.open() as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


def test_a_backfill_lands_registry_readings_events_and_exchanges(db, backfill_dir):
    summary = load_directory(db.url, db.settings, backfill_dir)
    expected = count_csv(backfill_dir / "register_reads.csv") + count_csv(backfill_dir / "intervals.csv")
    assert summary.readings == expected and summary.rejected == 0
    assert summary.events == count_csv(backfill_dir / "events.csv")
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM reading").fetchone()[0] == expected
        assert conn.execute("SELECT count(*) FROM meter").fetchone()[0] == count_csv(backfill_dir / "meters.csv")
        feeders = conn.execute("SELECT count(*) FROM area WHERE feeder_meter_id IS NOT NULL").fetchone()[0]
        assert feeders == count_csv(backfill_dir / "areas.csv") == 3
        customers = conn.execute("SELECT count(*) FROM service_point").fetchone()[0]
        assert customers == conn.execute("SELECT count(*) FROM account").fetchone()[0] == 16
        assert conn.execute("SELECT count(DISTINCT billing_cycle) FROM account").fetchone()[0] == 4
        exchanged = conn.execute(
            "SELECT count(*) FROM installation WHERE reason = 'exchanged' AND removal_index IS NOT NULL").fetchone()[0]
    labels = [r for r in csv.DictReader((backfill_dir / "labels.csv").open()) if r["kind"] == "meter_exchange"]
    assert exchanged == summary.exchanges == len(labels) > 0


def test_loading_the_same_directory_twice_changes_nothing(db, backfill_dir):
    first = load_directory(db.url, db.settings, backfill_dir)
    again = load_directory(db.url, db.settings, backfill_dir)
    assert first.readings > 0
    assert (again.readings, again.meters, again.accounts, again.exchanges) == (0, 0, 0, 0)
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM reading").fetchone()[0] == first.readings
        assert conn.execute("SELECT count(*) FROM installation").fetchone()[0] == 16 + first.exchanges


def test_manual_reads_mode_loads_the_typed_indexes(db, backfill_dir):
    summary = load_directory(db.url, db.settings, backfill_dir, reads="manual")
    assert summary.readings == count_csv(backfill_dir / "manual_reads.csv")
    with db.connect() as conn:
        kinds = dict(conn.execute(
            "SELECT rt.name, count(*) FROM reading r JOIN read_type rt ON rt.id = r.read_type_id GROUP BY 1").fetchall())
    assert set(kinds) <= {"actual", "customer"} and sum(kinds.values()) == summary.readings


def test_a_bad_line_is_named_with_its_file_and_line(db, tmp_path, backfill_dir):
    for name in ("meters.csv", "areas.csv"):
        (tmp_path / name).write_text((backfill_dir / name).read_text())
    (tmp_path / "register_reads.csv").write_text(
        "meter,channel,ts,value,unit,device_ts\n26000001,1-0:1.8.0,2026-02-01T00:00:00Z,12.5,kWh,\n"
        "26000001,1-0:1.8.0,2026-02-01T00:15:00Z,twelve,kWh,\n")
    with pytest.raises(LoadError, match=r"register_reads.csv:3: .*twelve"):
        load_directory(db.url, db.settings, tmp_path)
