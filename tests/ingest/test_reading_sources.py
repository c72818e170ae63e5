"""Every reading keeps its own source: a frame never relabels mixed readings with the first one's."""

from datetime import UTC, datetime, timedelta

import pytest

from ingest import Ingestor, ReadingFrame
from releve.model import Reading, Source

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=12)


def reading(meter, k, source):
    return Reading(meter, "1-0:1.8.0", T0 + timedelta(minutes=15 * k), float(k), "kWh", source)


def test_a_frame_refuses_readings_of_several_sources_instead_of_relabelling_them():
    mixed = [reading("M1", 0, Source.MQTT), reading("M2", 0, Source.MODBUS)]
    with pytest.raises(ValueError, match="several sources \\(modbus, mqtt\\)"):
        ReadingFrame.from_readings(mixed)
    assert ReadingFrame.from_readings(mixed, source=Source.IMPORT).source is Source.IMPORT  # an explicit override
    frames = [ReadingFrame.from_readings(mixed[:1]), ReadingFrame.from_readings(mixed[1:])]
    with pytest.raises(ValueError, match="several sources"):
        ReadingFrame.concat(frames)


@pytest.mark.db
def test_the_ingestor_lands_mixed_submissions_with_each_readings_source(db):
    db.add_meters(["M1", "M2"])
    with Ingestor(db.url, db.settings) as ingestor:
        ingestor.submit([reading("M1", 0, Source.MQTT), reading("M2", 0, Source.MODBUS)])
        ingestor.submit([reading("M2", 1, Source.MODBUS)])
        ingestor.flush(timeout=30)
    with db.connect() as conn:
        rows = conn.execute("""SELECT m.serial, count(*), min(s.name), max(s.name) FROM reading_all r
                               JOIN meter m ON m.id = r.meter_id JOIN reading_source s ON s.id = r.source_id
                               GROUP BY m.serial ORDER BY 1""").fetchall()
    assert rows == [("M1", 1, "mqtt", "mqtt"), ("M2", 2, "modbus", "modbus")]
