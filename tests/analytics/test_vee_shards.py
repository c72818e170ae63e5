"""Sharding by meter on three real PostgreSQL servers: routed writes, foreign-table partitions, VEE per shard.

The coordinator (the test database, which also serves as the one-server reference) holds the registry
and ``reading_sharded`` — hash partitions on ``meter_id`` that are postgres_fdw foreign tables on each
shard's ``reading``. The same fleet lands once on the reference and once through the
``ShardedWriter``; every reading must sit on the shard its meter hashes to, and VEE run on the three
shards in parallel must reach exactly the reference's validated reads and exceptions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from analytics.vee.run import run_vee, run_vee_shards
from ingest import BatchWriter, ReadingFrame
from ingest.sharded import ShardedWriter
from releve import shards
from releve.cli import main

from .faults import DAY, make_fleet

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
        cur.execute("INSERT INTO service_point (code, commodity) SELECT 'SP-' || serial, commodity FROM meter ORDER BY id")
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


def test_readings_land_on_their_meters_shard_and_vee_per_shard_matches_one_server(db, shard_urls, monkeypatch,
                                                                                 capsys):  # fmt: skip
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
        return ReadingFrame.from_columns(list(names[mask]), [CH] * int(mask.sum()), ts[mask], fleet.value[mask],
                                         ["kWh"] * int(mask.sum()))  # fmt: skip

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
            counts = dict(conn.execute(
                "SELECT m.serial, count(*) FROM reading r JOIN meter m ON m.id = r.meter_id GROUP BY 1"
            ).fetchall())  # fmt: skip
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
