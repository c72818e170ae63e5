"""The Ingestor rides out a failover: a multi-host URL, the primary killed, the replica promoted.

A batch whose connection died is retried under the same key on whichever server is primary now, so
a commit that was acknowledged to nobody is recognised instead of counted twice.
"""

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg

from ingest import Ingestor
from releve.model import Reading, Source

METERS = [f"IF{i:03d}" for i in range(25)]
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=400)


def landed(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM reading_all").fetchone()
        return int(row[0]) if row else 0


def test_every_reading_submitted_across_a_promotion_lands_once(replicated):
    old, new = replicated.server_url(replicated.primary), replicated.server_url(replicated.replica)
    with psycopg.connect(old, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, 'electricity', 't', 'kWh', 'import')",
            [(m,) for m in METERS],
        )
    settings = replicated.settings.model_copy(
        update={"ingest": replicated.settings.ingest.model_copy(update={"batch_seconds": 0.05, "batch_rows": 500})}
    )
    submitted: list[Reading] = []
    stop = threading.Event()
    with Ingestor(replicated.url, settings, origin="failover") as ingestor:

        def feed() -> None:
            k = 0
            while not stop.is_set():
                batch = [
                    Reading(m, "1-0:1.8.0", T0 + timedelta(minutes=15 * k), 50.0 + k + i / 10, "kWh", Source.IMPORT)
                    for i, m in enumerate(METERS)
                ]
                ingestor.submit(batch)
                submitted.extend(batch)
                k += 1
                time.sleep(0.002)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            deadline = time.monotonic() + 60
            while landed(old) < 2000:
                assert time.monotonic() < deadline, "nothing landed on the first primary"
                time.sleep(0.05)
            replicated.primary.kill()
            time.sleep(1.0)  # no primary: batches wait in memory and are retried
            replicated.replica.promote()
            time.sleep(1.0)
        finally:
            stop.set()
            feeder.join()
        ingestor.flush(timeout=120)

    with psycopg.connect(new) as conn:
        rows = conn.execute(
            "SELECT m.serial, r.ts, r.value FROM reading_all r JOIN meter m ON m.id = r.meter_id"
        ).fetchall()
        dup = conn.execute("SELECT coalesce(sum(n_duplicates), 0) FROM ingest_batch").fetchone()
    assert len(rows) == len(submitted) > 2000
    assert set(rows) == {(r.meter, r.ts, r.value) for r in submitted}
    assert dup is not None and dup[0] == 0  # no batch was landed a second time under a new key
