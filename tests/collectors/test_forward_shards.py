"""A collector's spool drains into shards when ``database.shard_urls`` is set: each meter's readings on its shard."""

from datetime import UTC, datetime, timedelta

import psycopg

from collectors.forward import Forwarder
from collectors.spool import Spool
from releve import shards
from releve.model import EventKind, MeterEvent, Reading, Rejected, Source

METERS = [f"SH{i:03d}" for i in range(30)]
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)


def test_spooled_readings_land_on_the_shard_of_their_meter_exactly_once(db, shard_urls, service_tmp):
    for url in (db.url, *shard_urls):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.cursor().executemany(
                "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, 'electricity', 't', 'kWh', 'import')",
                [(m,) for m in METERS],
            )
    shards.attach_shards(db.url, shard_urls)
    database = db.settings.database.model_copy(update={"shard_urls": shard_urls})
    settings = db.settings.model_copy(update={"database": database})
    spool = Spool(service_tmp / "spool")
    readings = [
        Reading(m, "1-0:1.8.0", T0 + timedelta(minutes=15 * k), 10.0 * k + i, "kWh", Source.MODBUS)
        for k in range(40)
        for i, m in enumerate(METERS)
    ]
    for k in range(0, len(readings), 300):
        spool.append(readings[k : k + 300])
    spool.append(
        events=[MeterEvent("SH004", T0, EventKind.MAGNETIC_FIELD, Source.MODBUS)],
        rejected=[Rejected("modbus SH999", "unknown register", b"\x01\x02", Source.MODBUS)],
    )
    spool.append(readings[:300])  # redelivered: duplicates, not second copies
    forwarder = Forwarder(spool, db.url, settings, origin="sharded")
    spool.seal()
    assert forwarder.drain_once() == len(readings)
    forwarder.stop(drain=False)
    assert not spool.sealed() and not spool.quarantined()
    spool.close()

    with psycopg.connect(db.url) as conn:
        home = shards.shards_of(conn, METERS, len(shard_urls))
        assert conn.execute("SELECT count(*) FROM reading_sharded").fetchone()[0] == len(readings)
        assert conn.execute("SELECT count(*) FROM reading_all").fetchone()[0] == 0  # the coordinator keeps none
    for k, url in enumerate(shard_urls):
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT m.serial, r.ts, r.value FROM reading_all r JOIN meter m ON m.id = r.meter_id"
            ).fetchall()
            events = conn.execute("SELECT count(*) FROM meter_event").fetchone()[0]
            dead = conn.execute("SELECT count(*) FROM rejected_input").fetchone()[0]
        assert sorted(rows) == sorted((r.meter, r.ts, r.value) for r in readings if home[r.meter] == k)
        assert events == (1 if home["SH004"] == k else 0)
        assert dead == (1 if k == 0 else 0)
