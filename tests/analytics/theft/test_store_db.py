"""Runs, candidates and outcomes in a real PostgreSQL: rank from the database, feed outcomes back, re-rank."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from releve.cli import CommandError, build_parser

pytestmark = pytest.mark.db

FLEET = {
    "seed": 7,
    "start": datetime(2026, 1, 1, tzinfo=UTC),
    "interval_minutes": 60,
    "horizon_days": 90,
    "topology": {"transformers": 3, "customers_per_transformer": 12, "dmas": 1, "customers_per_dma": 8},
    "theft": {"rate": 0.3, "min_days": 20, "max_days": 40},
    "faults": {"rate": 0.15, "min_days": 2, "max_days": 8},
}


#: The thieves of the loaded fleet, as the simulation that made the template labelled them.
THIEVES: set[str] = set()


def _load(url: str, settings, backfill_dir: Path) -> None:
    """A 90-day simulated backfill loaded through the ingest importer."""
    from ingest.importer import load_directory
    from simulators.backfill import backfill
    from simulators.config import parse_fleet
    from simulators.engine import Simulation

    sim = Simulation(parse_fleet(FLEET, "test"))
    backfill(sim, 90, backfill_dir, progress=False)
    load_directory(url, settings, backfill_dir)
    THIEVES.update(lb.meter for lb in sim.labels() if lb.category == "theft")


@pytest.fixture
def loaded(database_templates, tmp_path_factory):
    """A copy of the 90-day simulated backfill loaded through the ingest importer (loaded once per session, as a
    template); returns (db, thieves)."""
    template = database_templates.template(
        "theft_90_days",
        lambda url, settings: _load(url, settings, tmp_path_factory.mktemp("theft-backfill")),
        base=database_templates.migrated(),
    )
    with database_templates.copy(template) as db:
        yield db, set(THIEVES)


def _run(db, *argv: str) -> int:
    args = build_parser().parse_args(["theft", *argv])
    return args.func(args, db.settings)


def _latest_run(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT max(id) FROM theft_run").fetchone()
    assert row is not None
    return int(row[0])


def test_rank_from_database_stores_run_and_feedback_changes_the_ranking(loaded, capsys):
    db, thieves = loaded
    assert _run(db, "rank", "--top", "10", "--keep", "40", "--quiet") == 0
    assert "run 1: 40 candidates stored" in capsys.readouterr().out
    with db.connect() as conn:
        run1 = _latest_run(conn)
        run = conn.execute(
            "SELECT source, model, n_meters, n_candidates, parameters FROM theft_run WHERE id = %s", (run1,)
        ).fetchone()
        assert run[0] == "database" and run[1] == "unsupervised" and run[2] == 44 and run[3] == 40
        rows = conn.execute(
            "SELECT serial, rank, risk, reasons, evidence, meter_id FROM theft_candidate WHERE run_id = %s "
            "ORDER BY rank",
            (run1,),
        ).fetchall()
    assert all(r[3] and all(isinstance(t, str) for t in r[3]) for r in rows)
    assert all(r[4]["daily"]["recorded"] and r[5] is not None for r in rows)
    top = [r[0] for r in rows[:25]]
    hits = sum(s in thieves for s in top[: len(thieves)])
    assert hits >= 0.7 * len(thieves)

    # First campaign: visit the top 25, record what was found (one door stays shut).
    for k, serial in enumerate(top):
        result = "no_access" if k == 24 else "fraud" if serial in thieves else "nothing"
        assert _run(db, "outcome", "--run", str(run1), "--meter", serial, "--result", result, "--campaign", "C1") == 0
    capsys.readouterr()
    assert _run(db, "report", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    frauds = sum(s in thieves for s in top[:24])
    assert 5 <= frauds <= 19  # both classes for the supervised model
    assert report[0]["campaign"] == "C1" and report[0]["visits"] == 25 and report[0]["no_access"] == 1
    assert report[0]["hit_rate"] == pytest.approx(frauds / 24)
    assert set(report[0]["energy_per_fraud"]) <= {"kWh", "m³"} and report[0]["ranked_by"] == ["unsupervised"]
    assert _run(db, "report") == 0
    text = capsys.readouterr().out
    assert "C1" in text and "unsupervised" in text and "ranked by" in text

    # Re-rank: the outcomes are labels now; inspected meters leave the list; risks move.
    assert _run(db, "rank", "--top", "10", "--keep", "40", "--quiet") == 0
    with db.connect() as conn:
        run2 = _latest_run(conn)
        model, n_labels = conn.execute("SELECT model, n_labels FROM theft_run WHERE id = %s", (run2,)).fetchone()
        second = dict(conn.execute("SELECT serial, risk FROM theft_candidate WHERE run_id = %s", (run2,)).fetchall())
    assert "logistic" in model and n_labels == 24
    assert not set(second) & set(top[:24])
    first = {r[0]: r[2] for r in rows}
    common = set(first) & set(second)
    assert common
    assert any(abs(first[s] - second[s]) > 1e-6 for s in common)


def test_outcome_errors_and_roles(loaded):
    db, _ = loaded
    assert _run(db, "rank", "--top", "5", "--keep", "5", "--quiet") == 0
    with db.connect() as conn:
        run1 = _latest_run(conn)
        listed = conn.execute("SELECT serial FROM theft_candidate WHERE run_id = %s AND rank = 1", (run1,)).fetchone()[
            0
        ]
        unlisted = conn.execute(
            "SELECT serial FROM meter WHERE serial NOT IN (SELECT serial FROM theft_candidate) LIMIT 1"
        ).fetchone()[0]
    with pytest.raises(CommandError, match="not on the list"):
        _run(db, "outcome", "--run", str(run1), "--meter", unlisted, "--result", "fraud")
    with pytest.raises(CommandError, match="no theft run 999"):
        _run(db, "outcome", "--run", "999", "--meter", listed, "--result", "fraud")
    writer, reader, editor = (db.settings.database.role_prefix + s for s in ("_writer", "_reader", "_editor"))
    with db.connect(role=reader) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO theft_run (source) VALUES ('x')")
    with db.connect(role=writer) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO theft_inspection (run_id, serial, result) VALUES (%s, %s, 'fraud')", (run1, listed))
    with db.connect(role=editor) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM theft_candidate")


def test_list_filters_and_exports_a_stored_run(loaded, tmp_path: Path, capsys):
    db, _ = loaded
    assert _run(db, "rank", "--top", "5", "--keep", "30", "--quiet") == 0
    with db.connect() as conn:
        run1 = _latest_run(conn)
    out, gj = tmp_path / "night.csv", tmp_path / "night.geojson"
    assert (
        _run(db, "list", "--run", str(run1), "--area", "T001", "--top", "50", "-o", str(out), "--geojson", str(gj)) == 0
    )
    printed = capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert lines[0].startswith("rank,route_order,meter,area")
    assert all(",T001," in line for line in lines[1:])
    import csv

    rows = list(csv.DictReader(out.open()))
    assert rows and {r["unit"] for r in rows} == {"kWh"} and {r["currency"] for r in rows} == {""}  # no bills yet
    assert json.loads(gj.read_text())["type"] == "FeatureCollection"
    assert "rank" in printed
    with pytest.raises(CommandError, match="no theft run"):
        _run(db, "list", "--run", "424242")


def test_database_input_carries_areas_events_and_vee_findings(loaded):
    from analytics.theft.features import compute_features
    from analytics.theft.store import load_from_database

    db, _ = loaded
    with db.connect() as conn:
        mid, serial = conn.execute(
            "SELECT m.id, m.serial FROM meter m JOIN installation i ON i.meter_id = m.id "
            "JOIN service_point sp ON sp.id = i.service_point_id WHERE sp.customer_class = 'residential' "
            "ORDER BY m.serial LIMIT 1"
        ).fetchone()
        ch = conn.execute("SELECT id FROM channel WHERE code = '1-0:1.8.0'").fetchone()[0]
        for day in range(10, 24):  # 14 consecutive estimated days
            conn.execute(
                "INSERT INTO reading_version (meter_id, channel_id, ts, version, value, quality, kind, created_by) "
                "VALUES (%s, %s, %s, 1, 0, 'E', 'estimate', 'test')",
                (mid, ch, datetime(2026, 2, day, 12, tzinfo=UTC)),
            )
        for day in (3, 4):
            conn.execute(
                "INSERT INTO vee_exception (meter_id, channel_id, ts, rule, severity, message) "
                "VALUES (%s, %s, %s, 'NEGATIVE', 'error', 'read below previous')",
                (mid, ch, datetime(2026, 3, day, tzinfo=UTC)),
            )
        data = load_from_database(conn)
    assert data.n_meters == 44 and data.n_days in (90, 91)  # the backfill reads the final index too
    assert set(data.feeders) == {"T001", "T002", "T003", "DMA001"}
    k = data.serials.index(serial)
    assert data.estimate_streak is not None and data.estimate_streak[k] == 14
    assert data.vee_exceptions is not None and data.vee_exceptions[k] == 2
    assert data.hourly is not None and data.export is not None
    assert data.cumulative and data.meter_ids is not None
    assert {e.kind for e in data.events}  # the backfill's events landed
    f = compute_features(data)
    assert f.col("estimate_streak")[k] == 14 and f.col("index_faults")[k] >= 2
    # The half-hour texture, made in SQL: with hourly intervals, the same as on the hourly array.
    import numpy as np

    from analytics.theft.data import interval_texture

    assert data.texture is not None and isinstance(data.hourly, np.ndarray)
    live = np.isfinite(data.texture)
    assert live.sum() > 0.8 * np.isfinite(data.hourly).all(axis=2).sum()
    np.testing.assert_allclose(data.texture[live], interval_texture(data.hourly)[live], rtol=1e-9, atol=1e-12)


def test_bulk_outcome_import_records_good_rows_and_keeps_the_rejected(loaded, tmp_path: Path, capsys):
    db, thieves = loaded
    assert _run(db, "rank", "--top", "10", "--keep", "12", "--quiet") == 0
    assert "model: ranked by the evidence rules" in capsys.readouterr().err
    with db.connect() as conn:
        run1 = _latest_run(conn)
        listed = [
            r[0] for r in conn.execute("SELECT serial FROM theft_candidate WHERE run_id = %s ORDER BY rank", (run1,))
        ]
        unlisted = conn.execute("SELECT serial FROM meter WHERE serial <> ALL(%s) LIMIT 1", (listed,)).fetchone()[0]
    visits = tmp_path / "visits.csv"
    rows = ["meter,result,campaign,note,visited_at"]
    for serial in listed[:6]:
        rows.append(
            f'{serial},{"fraud" if serial in thieves else "nothing"},,"door, then meter",2026-04-02T22:10:00+02:00'
        )
    rows.append(f"{unlisted},fraud,,,")  # not on the run's list
    rows.append(f"{listed[6]},stolen,,,")  # not a result
    rows.append(f"{listed[7]},fraud,,,not-a-time")  # unreadable time
    visits.write_text("\n".join(rows) + "\n")
    assert _run(db, "outcome", "--file", str(visits), "--run", str(run1), "--campaign", "W14") == 1
    out, err = capsys.readouterr()
    assert "6 outcomes recorded" in out
    assert f"visits.csv:8: meter {unlisted} is not on the list of run {run1}" in err
    assert "visits.csv:9: result must be one of" in err and "visits.csv:10:" in err
    rejected = (tmp_path / "visits.csv.rejected.csv").read_text().splitlines()
    assert rejected[0] == "line,meter,run,result,campaign,reason" and len(rejected) == 4
    with db.connect() as conn:
        got = conn.execute(
            "SELECT serial, result, campaign, note, visited_at FROM theft_inspection WHERE run_id = %s ORDER BY id",
            (run1,),
        ).fetchall()
    assert [g[0] for g in got] == listed[:6]
    assert all(g[2] == "W14" and g[3] == "door, then meter" for g in got)
    assert got[0][4] == datetime(2026, 4, 2, 20, 10, tzinfo=UTC)
    # A file that cannot be read at all is an error that names it; nothing more is recorded.
    bad = tmp_path / "bad.csv"
    bad.write_text("serial,outcome\nx,y\n")
    with pytest.raises(CommandError, match=r"bad.csv:1: missing column\(s\) meter, result"):
        _run(db, "outcome", "--file", str(bad), "--run", str(run1))
    assert _run(db, "report") == 0
    report = capsys.readouterr().out
    frauds = sum(s in thieves for s in listed[:6])
    assert "next ranking:" in report and (f"{frauds} fraud" in report)


def test_default_period_leaves_out_a_partial_last_day(loaded):
    from datetime import timedelta

    from analytics.theft.store import load_from_database

    db, _ = loaded
    with db.connect() as conn:
        before = load_from_database(conn)
        last = before.first_day + timedelta(days=before.n_days - 1)
        spill = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1, minutes=15)
        # One meter's end-stamped interval spills a quarter of an hour into the next day.
        conn.execute("SELECT ensure_reading_partitions(%s, %s)", (spill, spill + timedelta(days=1)))
        conn.execute(
            """INSERT INTO reading SELECT r.meter_id, r.channel_id, %s, r.value, r.unit_id, r.source_id,
                      r.read_type_id, r.quality, r.received_at, r.batch_id
               FROM reading_all r JOIN channel c ON c.id = r.channel_id
               WHERE c.code = '1-0:1.29.0' ORDER BY r.ts DESC LIMIT 1""",
            (spill,),
        )
        conn.execute("CALL refresh_daily_reading(%s, %s)", (spill, spill))
        after = load_from_database(conn)
        explicit = load_from_database(conn, end=last + timedelta(days=2))
    assert (after.first_day, after.n_days) == (before.first_day, before.n_days)
    assert explicit.n_days == before.n_days + 1  # asked for: the partial day is there


def test_hourly_series_read_area_by_area_rank_as_when_read_whole(loaded, monkeypatch):
    import numpy as np

    from analytics.theft import data as theft_data
    from analytics.theft.data import LazyHourly
    from analytics.theft.ranking import score
    from analytics.theft.store import load_from_database

    db, _ = loaded
    with db.connect() as conn:
        whole = load_from_database(conn)
        monkeypatch.setattr(theft_data, "HOURLY_CHUNK_METERS", 5)  # smaller than an area: areas stay whole
        by_area = load_from_database(conn, hourly_in_memory=0)
        assert isinstance(whole.hourly, np.ndarray) and isinstance(by_area.hourly, LazyHourly)
        chunks = [rows for rows, _ in by_area.hourly_chunks()]
        assert sorted(np.concatenate(chunks).tolist()) == list(range(by_area.n_meters))
        assert all(len(set(by_area.area[rows])) == 1 for rows in chunks if by_area.area[rows[0]])
        np.testing.assert_array_equal(by_area.hourly[3], whole.hourly[3])
        np.testing.assert_array_equal(by_area.daily, whole.daily)
        # Read lazily, interval-only meters have hours and texture from one pass (read_with_texture).
        np.testing.assert_array_equal(by_area.texture, whole.texture)
        assert np.isfinite(whole.texture).any()
        a, b = score(whole), score(by_area)
        assert a.features.interval is not None and b.features.interval is not None
        np.testing.assert_array_equal(a.features.X, b.features.X)
        np.testing.assert_array_equal(a.risk, b.risk)
        first, second = a.candidates(30), b.candidates(30)
    assert [c.meter for c in first] == [c.meter for c in second]
    assert [c.evidence for c in first] == [c.evidence for c in second]


def test_a_feeder_with_only_an_interval_channel_still_balances_its_area(loaded):
    import numpy as np

    from analytics.theft.store import load_from_database

    db, _ = loaded
    with db.connect() as conn:
        before = load_from_database(conn)
        code, feeder = conn.execute(
            """SELECT a.code, a.feeder_meter_id FROM area a WHERE a.commodity = 'electricity'
               AND a.feeder_meter_id IS NOT NULL ORDER BY a.code LIMIT 1"""
        ).fetchone()
        assert code in before.feeders_hourly  # the simulated feeder has both channels
        # No register: only the interval channel, as on many substations (readings are append-only,
        # so the register's days leave the daily aggregate and the daily series the ranking reads).
        for table in ("daily_reading", "daily_series"):
            gone = conn.execute(
                f"""DELETE FROM {table} d USING channel c WHERE c.id = d.channel_id AND d.meter_id = %s
                    AND c.code = '1-0:1.8.0'""",
                (feeder,),
            ).rowcount
            assert gone > 0
        after = load_from_database(conn)
    assert code in after.feeders_hourly
    daily, hourly = after.feeders[code], after.feeders_hourly[code]
    full = np.isfinite(hourly).all(axis=1)
    assert full.sum() >= after.n_days - 2
    np.testing.assert_allclose(daily[full], hourly[full].sum(axis=1))
    # the same totals the register gave, to the meter's resolution
    both = full & np.isfinite(before.feeders[code][: after.n_days])
    assert np.nanmedian(np.abs(daily[both] / before.feeders[code][: after.n_days][both] - 1)) < 0.02


#: What the loader summed at ranking time before ``hourly_series`` (migration 0027): every interval
#: in the hour it covers, per meter and hour, straight from ``reading``. The series must give the same.
RAW_HOURS = """
SELECT r.meter_id, floor((date_part('epoch', r.ts) - %(lo_s)s - coalesce(c.interval_s, 900)) / 3600.0)::int8 AS hour,
       sum(r.value)
FROM reading_all r JOIN channel c ON c.id = r.channel_id
WHERE r.meter_id = ANY(%(ids)s) AND r.channel_id = ANY(%(ch)s::smallint[])
  AND r.ts > %(lo)s AND r.ts <= %(hi)s
GROUP BY 1, 2
"""


def test_hourly_series_give_the_hours_summed_from_the_readings(loaded):
    import numpy as np

    from analytics.theft.store import INTERVAL_CHANNELS, _channel_ids, _HourlyReader, load_from_database
    from releve.db import refresh_hourly

    db, _ = loaded
    assert refresh_hourly(db.url) == (0, 0)  # the importer refreshed it: nothing new
    with db.connect() as conn:
        data = load_from_database(conn)
        ids = [int(i) for i in data.meter_ids]
        channels = _channel_ids(conn, INTERVAL_CHANNELS)
        lo = datetime(data.first_day.year, data.first_day.month, data.first_day.day, tzinfo=UTC)
        hi = lo + (data.n_days * 24) * (datetime(2000, 1, 1, 1) - datetime(2000, 1, 1))
        expected = np.zeros((len(ids), data.n_days * 24))
        seen = np.zeros(expected.shape, dtype=bool)
        row = {m: k for k, m in enumerate(ids)}
        for meter, hour, value in conn.execute(
            RAW_HOURS, {"lo_s": lo.timestamp(), "ids": ids, "ch": channels, "lo": lo, "hi": hi}
        ):
            if 0 <= hour < data.n_days * 24:
                expected[row[meter], hour] += value
                seen[row[meter], hour] = True
        expected = expected.reshape(len(ids), data.n_days, 24)
        expected[~seen.reshape(expected.shape).all(axis=2)] = np.nan
        got = _HourlyReader(conn, channels, lo, hi, data.n_days).read(ids)
    assert np.isfinite(got).sum() > 0.5 * got.size
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(data.hourly, expected)


def test_the_hourly_series_texture_floor_is_the_analytics_one():
    import importlib

    from analytics.theft.data import TEXTURE_FLOOR

    migration = importlib.import_module("releve.migrations.0027_hourly_series")
    assert migration.TEXTURE_FLOOR == TEXTURE_FLOOR


@pytest.mark.db
def test_hourly_series_follow_the_batches_landed_since_the_last_refresh(db):
    """Quarter-hours, end-stamped: each counts in the hour it covers; a later batch fills its days in."""
    import math
    from datetime import timedelta

    import numpy as np

    from ingest import BatchWriter
    from releve.db import refresh_hourly
    from releve.model import Reading

    db.add_meters(["M1"])
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    quarter = timedelta(minutes=15)
    first = [Reading("M1", "1-0:1.29.0", t0 + quarter * (k + 1), 0.1 * (k % 4 + 1), "kWh") for k in range(96)]
    with BatchWriter(db.url, db.settings) as writer:
        writer.write(first[:48])  # the day's first half
    assert refresh_hourly(db.url)[0] == 1
    with BatchWriter(db.url, db.settings) as writer:
        writer.write(first[48:])  # the rest, in a second batch
    assert refresh_hourly(db.url)[0] == 1
    assert refresh_hourly(db.url) == (0, 0)  # nothing new
    with db.connect() as conn:
        rows = conn.execute("SELECT month::text, value, texture FROM hourly_series").fetchall()
    assert [r[0] for r in rows] == ["2025-03-01"]  # one month row (migration 0029), its first day filled
    hours = np.frombuffer(rows[0][1], ">f8").reshape(31, 24)
    texture = np.frombuffer(rows[0][2], ">f8")
    assert hours[0].tolist() == pytest.approx([1.0] * 24)  # 0.1 + 0.2 + 0.3 + 0.4 in every hour
    assert np.isnan(hours[1:]).all() and np.isnan(texture[1:]).all()
    # 96 evenly spaced quarter-hours fill the day; of its 95 steps (+ 0.01 kWh each side) 24 are
    # ln(0.41 / 0.31), 24 ln(0.31 / 0.21), 24 ln(0.21 / 0.11) and 23 ln(0.41 / 0.11): the median is the second
    assert texture[0] == pytest.approx(math.log(0.31 / 0.21))
