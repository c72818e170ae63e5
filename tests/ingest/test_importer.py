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
    sim = Simulation(
        parse_fleet(
            {
                "seed": 5,
                "horizon_days": 20,
                "start": "2026-02-01T00:00:00Z",
                "topology": {"transformers": 2, "customers_per_transformer": 6, "dmas": 1, "customers_per_dma": 4},
                "faults": {"rate": 0.5, "kinds": {"meter_exchange": 1.0}, "min_days": 1, "max_days": 2},
                "theft": {"rate": 0.3},
                "modbus": {"tcp_base_port": 0},
            },
            "importer test fleet",
        )
    )
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
        assert conn.execute("SELECT count(*) FROM reading_all").fetchone()[0] == expected
        assert conn.execute("SELECT count(*) FROM meter").fetchone()[0] == count_csv(backfill_dir / "meters.csv")
        feeders = conn.execute("SELECT count(*) FROM area WHERE feeder_meter_id IS NOT NULL").fetchone()[0]
        assert feeders == count_csv(backfill_dir / "areas.csv") == 3
        customers = conn.execute("SELECT count(*) FROM service_point").fetchone()[0]
        assert customers == conn.execute("SELECT count(*) FROM account").fetchone()[0] == 16
        assert conn.execute("SELECT count(DISTINCT billing_cycle) FROM account").fetchone()[0] == 4
        exchanged = conn.execute(
            "SELECT count(*) FROM installation WHERE reason = 'exchanged' AND removal_index IS NOT NULL"
        ).fetchone()[0]
    labels = [r for r in csv.DictReader((backfill_dir / "labels.csv").open()) if r["kind"] == "meter_exchange"]
    assert exchanged == summary.exchanges == len(labels) > 0


def test_loading_the_same_directory_twice_changes_nothing(db, backfill_dir):
    first = load_directory(db.url, db.settings, backfill_dir)
    again = load_directory(db.url, db.settings, backfill_dir)
    assert first.readings > 0
    assert (again.readings, again.meters, again.accounts, again.exchanges) == (0, 0, 0, 0)
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM reading_all").fetchone()[0] == first.readings
        assert conn.execute("SELECT count(*) FROM installation").fetchone()[0] == 16 + first.exchanges


def test_manual_reads_mode_loads_the_typed_indexes(db, backfill_dir):
    summary = load_directory(db.url, db.settings, backfill_dir, reads="manual")
    assert summary.readings == count_csv(backfill_dir / "manual_reads.csv")
    with db.connect() as conn:
        kinds = dict(
            conn.execute(
                "SELECT rt.name, count(*) FROM reading_all r JOIN read_type rt ON rt.id = r.read_type_id GROUP BY 1"
            ).fetchall()
        )
    assert set(kinds) <= {"actual", "customer"} and sum(kinds.values()) == summary.readings


def test_a_bad_line_is_named_with_its_file_and_line(db, tmp_path, backfill_dir):
    for name in ("meters.csv", "areas.csv"):
        (tmp_path / name).write_text((backfill_dir / name).read_text())
    (tmp_path / "register_reads.csv").write_text(
        "meter,channel,ts,value,unit,device_ts\n26000001,1-0:1.8.0,2026-02-01T00:00:00Z,12.5,kWh,\n"
        "26000001,1-0:1.8.0,2026-02-01T00:15:00Z,twelve,kWh,\n"
    )
    with pytest.raises(LoadError, match=r"register_reads.csv:3: .*twelve"):
        load_directory(db.url, db.settings, tmp_path)


def snapshot(db):
    """Every table's content (a digest of its rows) and every relation's name: the database as it is."""
    with db.connect() as conn:
        relations = [
            r
            for (r,) in conn.execute(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' ORDER BY 1"
            )
        ]
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
            )
        ]
        contents = {
            t: conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM \"{t}\" x"
            ).fetchone()
            for t in tables
        }
    return relations, contents


def copy_registry(src, dst):
    for name in ("meters.csv", "areas.csv"):
        (dst / name).write_text((src / name).read_text())


def test_a_bad_line_in_the_middle_leaves_the_database_exactly_as_before(db, tmp_path, backfill_dir, monkeypatch):
    import ingest.importer

    load_directory(db.url, db.settings, backfill_dir, reads="manual")  # something there already
    before = snapshot(db)
    assert before[1]["reading"][0] > 0
    # A whole backfill (new registry rows: accounts, installations; readings in many chunks; events) with one
    # unreadable value two thirds of the way into its intervals, after several chunks have landed.
    copy_registry(backfill_dir, tmp_path)
    (tmp_path / "meters.csv").write_text((backfill_dir / "meters.csv").read_text().replace("26000001", "36000001"))
    for name in ("register_reads.csv", "events.csv", "labels.csv"):
        (tmp_path / name).write_text((backfill_dir / name).read_text())
    lines = (backfill_dir / "intervals.csv").read_text().splitlines()
    bad = len(lines) * 2 // 3
    fields = lines[bad].split(",")
    fields[3] = "12x"
    lines[bad] = ",".join(fields)
    (tmp_path / "intervals.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(ingest.importer, "CHUNK", 500)
    with pytest.raises(LoadError, match=rf"intervals.csv:{bad + 1}: .*12x"):
        load_directory(db.url, db.settings, tmp_path)
    assert snapshot(db) == before


def test_impossible_values_go_to_dead_letters_with_the_reason_and_the_rest_lands(db, tmp_path, backfill_dir):
    copy_registry(backfill_dir, tmp_path)
    (tmp_path / "intervals.csv").write_text(
        "meter,channel,ts,value,unit\n"
        "26000001,1-0:1.29.0,2026-02-01T00:15:00Z,0.25,kWh\n"
        "26000001,1-0:1.29.0,2026-02-01T00:30:00Z,-0.40,kWh\n"
        "26000001,1-0:1.8.0,2026-02-01T00:30:00Z,-3,kWh\n"
        "26000001,1-0:13.7.0,2026-02-01T00:30:00Z,1.7,1\n"
        "26000001,1-0:32.7.0,2026-02-01T00:30:00Z,-230,V\n"
        "26000001,1-0:13.7.0,2026-02-01T00:45:00Z,-0.9,1\n"
    )
    summary = load_directory(db.url, db.settings, tmp_path)
    assert (summary.readings, summary.rejected) == (2, 4)
    with db.connect() as conn:
        dead = dict(conn.execute("SELECT origin, reason FROM rejected_input").fetchall())
    where = str(tmp_path / "intervals.csv")
    assert dead == {
        f"{where}:3": "negative value -0.4 on 1-0:1.29.0 (interval: never below zero)",
        f"{where}:4": "negative value -3 on 1-0:1.8.0 (register: never below zero)",
        f"{where}:5": "value 1.7 on 1-0:13.7.0 (power factor) is outside -1..1",
        f"{where}:6": "negative value -230 on 1-0:32.7.0 (voltage L1: never below zero)",
    }


def test_the_summary_line_names_conflicts(db, tmp_path, backfill_dir, monkeypatch, capsys):
    from releve.cli import main

    copy_registry(backfill_dir, tmp_path)
    (tmp_path / "register_reads.csv").write_text(
        "meter,channel,ts,value,unit\n26000001,1-0:1.8.0,2026-02-01T00:00:00Z,12.5,kWh\n"
    )
    monkeypatch.setenv("RELEVE_DATABASE_URL", db.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", db.settings.database.role_prefix)
    assert main(["ingest", "load", str(tmp_path)]) == 0
    (tmp_path / "register_reads.csv").write_text(
        "meter,channel,ts,value,unit\n26000001,1-0:1.8.0,2026-02-01T00:00:00Z,13.5,kWh\n"
    )
    assert main(["ingest", "load", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "0 readings (0 duplicates, 1 conflicts, 0 rejected)" in out[-2]
    assert out[-1].startswith("conflicts: 1 reading(s) already stored with another value, kept in reading_conflict")
    assert out[-1].endswith("26000001 1-0:1.8.0 2026-02-01T00:00Z stored 12.5, file 13.5")
