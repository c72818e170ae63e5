import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from ingest import Ingestor
from releve import migrate
from releve.model import Reading
from releve.settings import Settings

pytestmark = pytest.mark.db

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=12)


def readings(meter, start, n):
    return [
        Reading(meter, "1-0:1.8.0", T0 + timedelta(minutes=15 * (start + i)), float(start + i), "kWh") for i in range(n)
    ]


def count(db_url):
    import psycopg

    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM reading_all").fetchone()[0]


def test_batches_flush_by_count_and_time(db):
    db.add_meters(["M1"])
    settings = db.settings.model_copy(
        update={"ingest": db.settings.ingest.model_copy(update={"batch_rows": 10, "batch_seconds": 0.2})}
    )
    with Ingestor(db.url, settings) as ingestor:
        ingestor.submit(readings("M1", 0, 25))
        ingestor.flush(timeout=10)
        assert count(db.url) == 25
        ingestor.submit(readings("M1", 25, 3))  # below the batch size: the timer flushes it
        deadline = time.monotonic() + 5
        while count(db.url) < 28 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert count(db.url) == 28


def test_readings_submitted_while_the_database_is_down_land_once_it_is_back(service_tmp):
    """A server of the test's own, stopped while readings are submitted: nothing lost, nothing doubled."""
    import psycopg

    from releve.pgserver import PostgresServer

    server = PostgresServer(service_tmp / "data", durable=False)
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE ingestor_down")
        url = server.url("ingestor_down")
        settings = Settings(
            database={"url": url, "role_prefix": "ingestor_down"},
            ingest={"batch_rows": 5, "batch_seconds": 0.05, "max_pending_rows": 10},
        )
        migrate.upgrade(url, settings)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO meter (serial, commodity, model, unit, protocol) "
                "VALUES ('M1', 'electricity', 't', 'kWh', 'import')"
            )
        server.stop()
        ingestor = Ingestor(url, settings)
        ingestor.submit(readings("M1", 0, 5))
        blocked = threading.Thread(target=lambda: [ingestor.submit(readings("M1", 5 * k, 5)) for k in range(1, 4)])
        blocked.start()
        time.sleep(1.5)
        assert blocked.is_alive(), "submit must block (back-pressure) while rows cannot land"
        server.start()
        blocked.join(60)
        assert not blocked.is_alive()
        ingestor.close()
        assert count(url) == 20
        assert sum(r.inserted for r in ingestor.results) == 20
    finally:
        server.stop()
