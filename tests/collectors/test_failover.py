"""Failover without loss, on real servers: the primary dies mid-ingest, the replica is promoted.

Readings go the way a collector sends them (spool, forwarder) to a multi-host URL with
``target_session_attrs=read-write``. While no server accepts writes the spool holds them; once the
replica is promoted they drain into it. Every reading published must then be in the new primary
exactly once, with its value.
"""

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg

from collectors.forward import Forwarder
from collectors.spool import Spool
from releve.model import Reading, Source

METERS = [f"FO{i:03d}" for i in range(20)]
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=400)


def landed(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM reading_all").fetchone()
        return int(row[0]) if row else 0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_readings_published_through_a_failover_land_once_in_the_new_primary(replicated, service_tmp):
    with psycopg.connect(replicated.server_url(replicated.primary), autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, 'electricity', 't', 'kWh', 'import')",
            [(m,) for m in METERS],
        )
    spool = Spool(service_tmp / "spool")
    forwarder = Forwarder(
        spool, replicated.url, replicated.settings, origin="failover", seal_seconds=0.05, max_backoff=0.5
    )
    published: list[Reading] = []
    rounds = 0
    stop = threading.Event()

    def publish() -> None:  # one poll round of every meter each few ms, as a collector appends them
        nonlocal rounds
        while not stop.is_set():
            ts = T0 + timedelta(minutes=15 * rounds)
            batch = [
                Reading(m, "1-0:1.8.0", ts, 1000.0 + rounds + i / 100, "kWh", Source.MODBUS)
                for i, m in enumerate(METERS)
            ]
            spool.append(batch)
            published.extend(batch)
            rounds += 1
            time.sleep(0.005)

    publisher = threading.Thread(target=publish)
    forwarder.start()
    publisher.start()
    try:
        old, new = replicated.server_url(replicated.primary), replicated.server_url(replicated.replica)
        wait_for(lambda: landed(old) >= 2000, 60, "readings to land on the first primary")
        replicated.primary.kill()  # SIGKILL, mid-ingest: no shutdown, no flush
        wait_for(lambda: forwarder.last_error is not None, 30, "the forwarder to notice the outage")
        held = rounds
        time.sleep(1.0)  # no primary answers; readings keep coming and wait in the spool
        assert rounds > held and spool.sealed(), "readings kept arriving and were spooled during the outage"
        replicated.replica.promote()
        wait_for(lambda: forwarder.last_error is None and landed(new) > 0, 60, "the spool to drain")
        time.sleep(0.5)  # some more readings after the promotion
    finally:
        stop.set()
        publisher.join()
        forwarder.stop(drain=True, timeout=60)
    assert not spool.sealed() and not spool.quarantined()
    spool.close()

    with psycopg.connect(new) as conn:
        rows = conn.execute(
            """SELECT m.serial, r.ts, r.value FROM reading_all r JOIN meter m ON m.id = r.meter_id"""
        ).fetchall()
        batches = conn.execute("SELECT count(*), count(DISTINCT batch_key) FROM ingest_batch").fetchone()
    expected = {(r.meter, r.ts, r.value) for r in published}
    assert len(expected) == len(published) > 2000
    assert len(rows) == len(published)  # exactly once: the primary key would refuse a second copy anyway,
    assert {(s, ts, v) for s, ts, v in rows} == expected  # so count and content are both checked
    assert batches is not None and batches[0] == batches[1]
