"""An Ingestor landing on several connections at once (``ingest.writers``): nothing lost, nothing doubled."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest import Ingestor
from releve.model import Reading

pytestmark = pytest.mark.db

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)


def readings(meter: str, start: int, n: int) -> list[Reading]:
    return [
        Reading(meter, "1-0:1.8.0", T0 + timedelta(minutes=15 * (start + i)), float(start + i), "kWh") for i in range(n)
    ]


def test_two_writers_land_every_reading_once(db):
    meters = [f"W{i}" for i in range(6)]
    db.add_meters(meters)
    ingest = db.settings.ingest.model_copy(
        update={"batch_rows": 40, "batch_seconds": 0.05, "max_pending_rows": 100, "writers": 2}
    )
    settings = db.settings.model_copy(update={"ingest": ingest})
    with Ingestor(db.url, settings, origin="two") as ingestor:
        for start in range(0, 120, 20):
            for m in meters:
                ingestor.submit(readings(m, start, 20))
                # Each block again, overlapping the next one: redelivered while other batches are in flight.
                ingestor.submit(readings(m, start, 30))
        ingestor.flush(timeout=60)
        assert {t.name for t in ingestor._threads} == {"ingestor-two-0", "ingestor-two-1"}
    results = ingestor.results
    with psycopg.connect(db.url) as conn:
        stored = conn.execute("SELECT count(*), count(DISTINCT (meter_id, channel_id, ts)) FROM reading_all").fetchone()
        conflicts = conn.execute("SELECT count(*) FROM reading_conflict").fetchone()
    distinct = len(meters) * 130  # instants 0..129 per meter
    assert stored == (distinct, distinct)
    assert conflicts == (0,)
    assert sum(r.inserted for r in results) == distinct
    assert sum(r.inserted + r.duplicates for r in results) == sum(r.rows for r in results) == len(meters) * 6 * 50
    assert len(results) > 2
