"""Sharding by meter on three real PostgreSQL servers: routed writes, foreign-table partitions, VEE, theft, billing.

The coordinator (the test database, which also serves as the one-server reference) holds the registry
and ``reading_sharded`` — hash partitions on ``meter_id`` that are postgres_fdw foreign tables on each
shard's ``reading``. The same fleet lands once on the reference and once through the
``ShardedWriter``; every reading must sit on the shard its meter hashes to, and VEE run on the three
shards in parallel must reach exactly the reference's validated reads and exceptions.

The acceptance test of issue 19 then runs VEE, the theft ranking and a bill run from the CLI on the
three shards and on one separate server holding the same data: the same validated reads, the same
ranking (order and scores) and the same bills to the cent.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest

from analytics.theft import store
from analytics.theft.sharded import load_shards
from analytics.vee.run import run_vee, run_vee_shards
from billing.run import run_bills
from billing.tariffs import load_tariffs
from ingest import BatchWriter, ReadingFrame
from ingest.sharded import ShardedWriter
from releve import shards
from releve.cli import main

from ..conftest import MigratedDatabase, _with_dbname
from .faults import DAY, T0, make_fleet

pytestmark = pytest.mark.db

CH = "1-0:1.8.0"
N_SHARDS = 3  # as the shard_urls fixture starts


def add_registry(url, fleet, serials):
    """The same registry, in the same order (so the same ids), on every database: meters, service points,
    installations with the fleet's recorded exchanges."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol, register_digits) "
            "VALUES (%s, 'electricity', 'test', 'kWh', 'import', %s)",
            [(s, int(fleet.digits[m])) for m, s in enumerate(serials)],
        )
        cur.execute(
            "INSERT INTO service_point (code, commodity) SELECT 'SP-' || serial, commodity FROM meter ORDER BY id"
        )
        for m, t, removal, install in fleet.exchanges:
            at = datetime.fromtimestamp(t, UTC)
            cur.execute(
                """INSERT INTO installation (meter_id, service_point_id, installed_at, removed_at, install_index,
                                             removal_index, reason)
                   SELECT m.id, sp.id, %s, %s, 0, %s, 'exchange' FROM meter m JOIN service_point sp
                     ON sp.code = 'SP-' || m.serial WHERE m.serial = %s""",
                (at - timedelta(days=400), at, removal, serials[m]),
            )
            cur.execute(
                """INSERT INTO installation (meter_id, service_point_id, installed_at, install_index, reason)
                   SELECT m.id, sp.id, %s, %s, 'exchange' FROM meter m JOIN service_point sp
                     ON sp.code = 'SP-' || m.serial WHERE m.serial = %s""",
                (at, install, serials[m]),
            )


def outcome(url):
    """What VEE concluded, by meter serial: validated reads and exceptions."""
    with psycopg.connect(url) as conn:
        reads = conn.execute(
            """SELECT m.serial, v.ts, v.value, v.quality, v.quality_flag FROM validated_reading v
               JOIN meter m ON m.id = v.meter_id ORDER BY 1, 2"""
        ).fetchall()
        exceptions = conn.execute(
            """SELECT m.serial, e.ts, e.rule, e.severity, e.value, round(e.usage::numeric, 6), e.message
               FROM vee_exception e JOIN meter m ON m.id = e.meter_id ORDER BY 1, 2, 3"""
        ).fetchall()
    return reads, exceptions


def test_readings_land_on_their_meters_shard_and_vee_per_shard_matches_one_server(db, shard_urls, monkeypatch, capsys):
    fleet = make_fleet(meters=150, days=70, seed=19)
    serials = [f"S{m:04d}" for m in range(fleet.meters)]
    for url in (db.url, *shard_urls):
        add_registry(url, fleet, serials)
    shards.attach_shards(db.url, shard_urls)
    names = np.array(serials, dtype=object)[fleet.series]
    ts = (fleet.t * 1e6).astype("datetime64[us]")
    cut = fleet.t.min() + 45 * DAY
    parts = [fleet.t < cut, fleet.t >= cut]  # two batches: VEE's incremental path on every shard

    def frame(mask):
        return ReadingFrame.from_columns(
            list(names[mask]), [CH] * int(mask.sum()), ts[mask], fleet.value[mask], ["kWh"] * int(mask.sum())
        )

    with BatchWriter(db.url, db.settings) as writer:
        for mask in parts:
            writer.write(frame(mask))
    with ShardedWriter(db.url, shard_urls, db.settings) as writer:
        for mask in parts:
            result = writer.write(frame(mask))
            assert result.inserted == int(mask.sum()) and len(writer.parts) == N_SHARDS

    # Every reading is on the shard its meter hashes to, and the coordinator sees them all through postgres_fdw.
    with psycopg.connect(db.url) as conn:
        home = shards.shards_of(conn, serials, N_SHARDS)
        through_fdw = conn.execute("SELECT count(*) FROM reading_sharded").fetchone()[0]
        one_meter = conn.execute(
            "SELECT count(*) FROM reading_sharded WHERE meter_id = (SELECT id FROM meter WHERE serial = 'S0007')"
        ).fetchone()[0]
    assert set(home) == set(serials) and set(home.values()) == set(range(N_SHARDS))
    assert through_fdw == len(fleet.value) and one_meter == int((names == "S0007").sum())
    for k, url in enumerate(shard_urls):
        with psycopg.connect(url) as conn:
            counts = dict(
                conn.execute(
                    "SELECT m.serial, count(*) FROM reading_all r JOIN meter m ON m.id = r.meter_id GROUP BY 1"
                ).fetchall()
            )
        assert counts and all(home[s] == k for s in counts), f"shard {k} holds another shard's meter"
        assert counts == {s: int((names == s).sum()) for s in serials if home[s] == k}

    # VEE: once on the reference, then on the three shards at once, in two increments like the data.
    reference = run_vee(db.url, db.settings)
    summaries = run_vee_shards(shard_urls, db.settings)
    assert sum(s.reads for s in summaries) == reference.reads > 0
    # `releve vee run` with database.shard_urls set runs every shard: nothing new is left to validate.
    monkeypatch.setenv("RELEVE_DATABASE_URL", db.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", db.settings.database.role_prefix)
    monkeypatch.setenv("RELEVE_DATABASE__SHARD_URLS", json.dumps(shard_urls))
    assert main(["vee", "run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert all(f"shard {k}: " in out for k in range(N_SHARDS))
    want_reads, want_exc = outcome(db.url)
    got_reads, got_exc = [], []
    for url in shard_urls:
        r, e = outcome(url)
        got_reads += r
        got_exc += e
    assert sorted(got_reads) == want_reads
    assert sorted(got_exc, key=lambda x: x[:3]) == want_exc and want_exc  # the faults were found, identically


# ------------------------------------------------------------------ acceptance: one server vs three shards

AREAS = 3
TOU = [f"T{k}" for k in range(6)]  # interval meters on a time-of-use and demand tariff
CYCLE = "C1"
PERIOD_END = date(2023, 12, 31)  # the fleet's readings run from mid-November 2023 for 70 days


@pytest.fixture
def reference(pg_server_url) -> Iterator[MigratedDatabase]:
    """A second migrated database on the session server: the one server holding all the data."""
    name = f"releve_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield MigratedDatabase(_with_dbname(pg_server_url, name))
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for (role,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"{name}%",)):
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def add_areas_and_accounts(url, serials):
    """Transformer areas (each with a feeder meter, registered after the fleet so ids match everywhere),
    interval meters on the time-of-use tariff, an installation for every meter not exchanged, and an
    account per service point on cycle C1."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol, register_digits) "
            "VALUES (%s, 'electricity', 'test', 'kWh', 'import', 9)",
            [(t,) for t in TOU],
        )
        cur.execute(
            "INSERT INTO service_point (code, commodity) SELECT 'SP-' || serial, commodity FROM meter "
            "WHERE serial = ANY(%s) ORDER BY id",
            (TOU,),
        )
        for a in range(AREAS):
            cur.execute(
                "INSERT INTO meter (serial, commodity, model, unit, protocol, register_digits) "
                "VALUES (%s, 'electricity', 'test', 'kWh', 'import', 9)",
                (f"F{a}",),
            )
            cur.execute(
                """INSERT INTO area (code, kind, commodity, feeder_meter_id, technical_loss_pct)
                   SELECT %s, 'transformer', 'electricity', id, 4 FROM meter WHERE serial = %s""",
                (f"A{a}", f"F{a}"),
            )
        cur.execute(
            """UPDATE service_point sp SET area_id = (SELECT id FROM area WHERE code = 'A' || (m.id %% %s))
               FROM meter m WHERE sp.code = 'SP-' || m.serial""",
            (AREAS,),
        )
        cur.execute(
            """INSERT INTO installation (meter_id, service_point_id, installed_at, install_index, reason)
               SELECT m.id, sp.id, %s, 0, 'new' FROM meter m JOIN service_point sp ON sp.code = 'SP-' || m.serial
               WHERE NOT EXISTS (SELECT 1 FROM installation i WHERE i.meter_id = m.id)""",
            (datetime.fromtimestamp(T0, UTC) - timedelta(days=400),),
        )
        cur.executemany("INSERT INTO customer (name) VALUES (%s)", [(f"Customer {s}",) for s in [*serials, *TOU]])
        cur.execute(
            """INSERT INTO account (number, customer_id, service_point_id, billing_cycle, tariff_code, opened_on)
               SELECT 'A-' || m.serial, c.id, sp.id, %s, CASE WHEN m.serial LIKE 'T%%' THEN 'ETOU' ELSE 'E' END,
                      DATE '2023-01-01'
               FROM meter m JOIN service_point sp ON sp.code = 'SP-' || m.serial
               JOIN customer c ON c.name = 'Customer ' || m.serial ORDER BY m.id""",
            (CYCLE,),
        )


def feeder_frame(fleet, serials):
    """Each area's feeder register: its customers' daily usage plus 20 % (losses and a thief's share)."""
    ids = {s: k + 1 for k, s in enumerate(serials)}  # the meter ids every database gives them
    days = np.unique(fleet.t)
    names, stamps, values = [], [], []
    for a in range(AREAS):
        members = [m for m, s in enumerate(serials) if ids[s] % AREAS == a]
        total = np.zeros(len(days))
        for m in members:
            mine = fleet.series == m
            usage = np.clip(np.diff(fleet.value[mine], prepend=fleet.value[mine][0]), 0, 200)
            total[np.searchsorted(days, fleet.t[mine])] += usage
        register = np.round(1_000 + np.cumsum(total * 1.2), 1)
        names += [f"F{a}"] * len(days)
        stamps += list(days)
        values += list(register)
    ts = (np.array(stamps) * 1e6).astype("datetime64[us]")
    return ReadingFrame.from_columns(names, [CH] * len(names), ts, np.array(values), ["kWh"] * len(names))


def tou_frame(days):
    """The interval meters: 15-minute consumption (stamped at the interval's end, busier by day) and a
    daily register read that adds it up."""
    rng = np.random.default_rng(5)
    names, channels, stamps, values = [], [], [], []
    for k, serial in enumerate(TOU):
        t = T0 + 900 * np.arange(1, days * 96 + 1)
        hour = (t - 900) % DAY // 3600
        usage = np.round((0.1 + 0.05 * k) * (1 + (hour >= 7) * (hour < 21)) * rng.lognormal(0, 0.2, len(t)), 3)
        noon = np.flatnonzero((t % DAY) == 12 * 3600)
        register = np.round(5_000 + np.cumsum(usage)[noon], 3)
        names += [serial] * (len(t) + len(noon))
        channels += ["1-0:1.29.0"] * len(t) + [CH] * len(noon)
        stamps += [*t, *t[noon]]
        values += [*usage, *register]
    ts = (np.array(stamps) * 1e6).astype("datetime64[us]")
    return ReadingFrame.from_columns(names, channels, ts, np.array(values), ["kWh"] * len(names))


def bills(url):
    """Every bill by account: period, kind, status, consumption, amounts, lines and holds."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            """SELECT a.number, b.period_start, b.period_end, b.kind, b.status, b.consumption, b.subtotal, b.tax,
                      b.total, b.lines, b.hold_reasons
               FROM bill b JOIN account a ON a.id = b.account_id ORDER BY 1, 2, 4"""
        ).fetchall()


def freezes(url):
    """The billed reads frozen, by meter serial."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT m.serial, f.frozen_to FROM reading_freeze f JOIN meter m ON m.id = f.meter_id ORDER BY 1, 2"
        ).fetchall()


def test_vee_theft_ranking_and_bill_run_on_three_shards_match_one_server(
    db, shard_urls, reference, tmp_path, monkeypatch, capsys
):
    fleet = make_fleet(meters=90, days=70, seed=23)
    serials = [f"S{m:04d}" for m in range(fleet.meters)]
    for url in (reference.url, db.url, *shard_urls):
        add_registry(url, fleet, serials)
        add_areas_and_accounts(url, serials)
    shards.attach_shards(db.url, shard_urls, db.settings)
    names = np.array(serials, dtype=object)[fleet.series]
    frame = ReadingFrame.from_columns(
        list(names), [CH] * len(names), (fleet.t * 1e6).astype("datetime64[us]"), fleet.value, ["kWh"] * len(names)
    )
    feeders = feeder_frame(fleet, serials)
    intervals = tou_frame(70)
    with BatchWriter(reference.url, reference.settings) as writer:
        for f in (frame, feeders, intervals):
            writer.write(f)
    with ShardedWriter(db.url, shard_urls, db.settings) as writer:
        for f in (frame, feeders, intervals):
            writer.write(f)
    with psycopg.connect(db.url) as conn:
        home = shards.shards_of(conn, [*serials, *TOU, *(f"F{a}" for a in range(AREAS))], N_SHARDS)
    assert {home[f"F{a}"] for a in range(AREAS)} | {home[s] for s in serials} == set(range(N_SHARDS))

    # The sharded runs go through the commands users run, with database.shard_urls set.
    monkeypatch.setenv("RELEVE_DATABASE_URL", db.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", db.settings.database.role_prefix)
    monkeypatch.setenv("RELEVE_DATABASE__SHARD_URLS", json.dumps(shard_urls))

    # VEE: the same validated reads and exceptions.
    run_vee(reference.url, reference.settings)
    assert main(["vee", "run", "--no-progress"]) == 0
    got_reads, got_exc = [], []
    for url in shard_urls:
        r, e = outcome(url)
        got_reads += r
        got_exc += e
    want_reads, want_exc = outcome(reference.url)
    assert sorted(got_reads, key=repr) == sorted(want_reads, key=repr)  # two channels may share an instant
    assert sorted(got_exc, key=repr) == sorted(want_exc, key=repr) and want_exc

    # Theft: areas straddle the shards (customers and feeders hash apart); the ranking is the same.
    want = store.rank_database(reference.settings, reference.url, keep=500).candidates
    capsys.readouterr()
    assert main(["theft", "rank", "--quiet"]) == 0
    run_id = int(re.search(r"^run (\d+):", capsys.readouterr().out, re.M).group(1))
    got = store.load_candidates(db.settings, db.url, run_id)
    assert [c.meter for c in got] == [c.meter for c in want] and len(want) > 10
    assert [c.area for c in got] == [c.area for c in want]
    assert np.allclose([c.risk for c in got], [c.risk for c in want], rtol=1e-9, atol=1e-12)
    assert np.allclose([c.expected_value for c in got], [c.expected_value for c in want], rtol=1e-9)
    assert [c.reasons for c in got] == [c.reasons for c in want]
    assert any("energy balance" in r for c in want for r in c.reasons)  # the areas' feeders were seen
    # The gathered inputs are one server's: every area's feeder series, whichever shard holds its meter.
    gathered = load_shards(db.settings, db.url, shard_urls)
    with psycopg.connect(reference.url) as conn:
        alone = store.load_from_database(conn)
    assert gathered.serials == alone.serials and gathered.meter_ids == alone.meter_ids
    assert np.array_equal(gathered.daily, alone.daily, equal_nan=True)
    assert sorted(gathered.feeders) == sorted(alone.feeders) == [f"A{a}" for a in range(AREAS)]
    for code, series in alone.feeders.items():
        assert np.isfinite(series).sum() > 30 and np.array_equal(gathered.feeders[code], series, equal_nan=True)
    assert [(e.meter, e.ts, e.kind) for e in gathered.events] == [(e.meter, e.ts, e.kind) for e in alone.events]

    # Billing: bills on the coordinator, the series from each meter's shard, the same amounts to the cent.
    tariffs = tmp_path / "tariffs.toml"
    text = (Path(__file__).parents[1] / "billing" / "tariffs_test.toml").read_text()
    tariffs.write_text(text.replace("2026-01-01", "2023-01-01").replace("2026-03-12", "2023-03-12"))
    one = run_bills(reference.url, reference.settings, load_tariffs(tariffs), CYCLE, PERIOD_END, date(2024, 1, 3))
    assert (
        main(
            [
                "bill",
                "run",
                "--cycle",
                CYCLE,
                "--period-end",
                str(PERIOD_END),
                "--issue-date",
                "2024-01-03",
                "--tariffs",
                str(tariffs),
            ]
        )
        == 0
    )
    assert f"accounts {one.accounts}: issued {one.issued}, held {one.held}" in capsys.readouterr().out
    assert one.issued > 10 and one.held > 0
    assert bills(db.url) == bills(reference.url)
    with psycopg.connect(db.url) as conn:  # time of use and demand came from the interval series on the shards
        tou = conn.execute(
            "SELECT count(*) FROM bill WHERE tariff_code = 'ETOU' AND status = 'issued' "
            "AND details ? 'max_demand' AND details ? 'tou'"
        ).fetchone()[0]
    assert tou == len(TOU)
    # The billed reads are frozen on the shard holding each meter, as on one server.
    on_shards = []
    for k, url in enumerate(shard_urls):
        mine = freezes(url)
        assert all(home[s] == k for s, _ in mine)
        on_shards += mine
    assert sorted(on_shards) == freezes(reference.url) and on_shards
    assert freezes(db.url) == []


def test_a_coordinator_without_the_shard_schemas_windowed_readers_is_not_ready_until_attached_again(db, shard_urls):
    """Without releve_shards.validated_between a session through the shards would read the coordinator's own tables."""
    from billing.sharded import ShardsNotAttachedError, run_bills_sharded
    from billing.tariffs import EXAMPLE

    shards.attach_shards(db.url, shard_urls, db.settings)
    with psycopg.connect(db.url, autocommit=True) as conn:
        assert shards.ready(conn, len(shard_urls))
        conn.execute(f"DROP FUNCTION {shards.SHARD_SCHEMA}.validated_between(timestamptz, timestamptz)")
        assert not shards.ready(conn, len(shard_urls))  # as a coordinator attached before migration 0031
    settings = db.settings.model_copy(
        update={"database": db.settings.database.model_copy(update={"shard_urls": shard_urls})}
    )
    with pytest.raises(ShardsNotAttachedError, match="attach them first"):
        run_bills_sharded(db.url, settings, load_tariffs(EXAMPLE), CYCLE, PERIOD_END)
    shards.attach_shards(db.url, shard_urls, db.settings)  # again: the readers come back
    with psycopg.connect(db.url, autocommit=True) as conn:
        assert shards.ready(conn, len(shard_urls))
        # As a coordinator attached before migration 0032: its readers would unnest every shard's blocks.
        conn.execute(f"DROP TABLE {shards.SHARD_SCHEMA}.validated_reading_with_block CASCADE")
        assert not shards.ready(conn, len(shard_urls))
    shards.attach_shards(db.url, shard_urls, db.settings)
    with psycopg.connect(db.url) as conn:
        assert shards.ready(conn, len(shard_urls))


def test_the_shards_windowed_reads_send_every_shard_the_bound_on_its_blocks(db, shard_urls):
    """Each shard gets the window and lo - 1 day < block_first <= hi: its blocks' partitions are pruned there."""
    shards.attach_shards(db.url, shard_urls, db.settings)
    lo, hi = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    with psycopg.connect(shards.through_shards(db.url)) as conn:
        for query, args in (
            ("SELECT * FROM validated_between(%s, %s)", (lo, hi)),
            ("SELECT * FROM validated_series(1, 1, %s, %s)", (lo, hi)),
        ):
            plan = [str(r[0]) for r in conn.execute(f"EXPLAIN (VERBOSE) {query}", args)]
            remote = [line for line in plan if "Remote SQL:" in line]
            assert remote and all("validated_reading_with_block" in line for line in remote), plan
            assert all("block_first >" in line and "block_first <=" in line for line in remote), remote
        columns = [
            d.name for d in conn.execute("SELECT * FROM validated_between(%s, %s) LIMIT 0", (lo, hi)).description
        ]
        view = [d.name for d in conn.execute("SELECT * FROM public.validated_reading LIMIT 0").description]
        assert columns == view  # the view's row type: no block column in what callers read
