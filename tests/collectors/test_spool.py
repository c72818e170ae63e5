import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collectors.spool import Segment, Spool, SpoolFullError
from releve.model import EventKind, MeterEvent, Reading, Rejected, Source

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def readings(n, start=0):
    return [
        Reading("M1", "1-0:1.8.0", T0 + timedelta(minutes=15 * (start + i)), float(start + i), "kWh", Source.MQTT)
        for i in range(n)
    ]


def test_what_is_appended_comes_back_in_order_after_sealing(tmp_path):
    spool = Spool(tmp_path)
    spool.append(readings(3))
    spool.append(
        readings(2, 3),
        events=[MeterEvent("M1", T0, EventKind.MAGNETIC_FIELD, Source.MQTT, {"a": 1})],
        rejected=[Rejected("mqtt x", "bad", "{", Source.MQTT)],
    )
    spool.seal()
    [segment] = spool.sealed()
    batch = spool.read(segment)
    assert batch.readings == readings(5)
    assert batch.events[0].details == {"a": 1}
    assert batch.rejected[0].payload == "{"


def test_segments_drain_oldest_first_with_distinct_batch_keys(tmp_path):
    spool = Spool(tmp_path, segment_bytes=50)  # smaller than one record: a segment each
    for k in range(5):
        spool.append(readings(1, k))
    spool.seal()
    segments = spool.sealed()
    assert len(segments) == 5
    assert [spool.read(s).readings[0].value for s in segments] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert len({s.key for s in segments}) == 5


def test_a_torn_last_record_is_cut_and_the_records_before_it_kept(tmp_path):
    spool = Spool(tmp_path)
    spool.append(readings(2))
    spool.append(readings(2, 2))
    open_file = next(tmp_path.glob("*.open"))
    spool._lockfile.close()  # simulate the process dying: no seal, no close
    with open_file.open("ab") as fh:
        fh.write(b"\x00\x00\x01\x00garbage")  # half a record
    reopened = Spool(tmp_path)
    [segment] = reopened.sealed()
    assert reopened.read(segment).readings == readings(4)


def test_the_spool_refuses_appends_at_its_bound_and_keeps_what_it_has(tmp_path, caplog):
    spool = Spool(tmp_path, max_bytes=2000)
    appended = 0
    with pytest.raises(SpoolFullError, match="full"):  # noqa: PT012 - filling up is the point
        for k in range(100):
            spool.append(readings(1, k))
            appended += 1
    assert "full" in caplog.text  # it said so loudly before refusing
    spool.seal()
    kept = sum(len(spool.read(s).readings) for s in spool.sealed())
    assert kept == appended
    assert 0 < kept < 100
    assert spool.size <= 2000


def test_removing_a_landed_segment_frees_its_space(tmp_path):
    spool = Spool(tmp_path)
    spool.append(readings(10))
    spool.seal()
    assert spool.size > 0
    spool.remove(spool.sealed()[0])
    assert spool.size == 0
    assert spool.sealed() == []


def test_one_process_per_spool_directory(tmp_path):
    first = Spool(tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        Spool(tmp_path)
    first.close()


HOSTILE = [b'{"meter": "E1"\x00}', bytes(range(256)), b"\xff\xfe\x00\x00garbage", b""]


@pytest.mark.parametrize("payload", HOSTILE, ids=["nul", "every-byte", "bad-utf8", "empty"])
def test_a_dead_letter_payload_comes_back_byte_for_byte(tmp_path, payload):
    spool = Spool(tmp_path)
    spool.append(rejected=[Rejected("mqtt x", "payload is not JSON", payload, Source.MQTT)])
    spool.seal()
    [segment] = spool.sealed()
    [back] = spool.read(segment).rejected
    assert back.payload == payload
    assert isinstance(back.payload, bytes)


def test_a_record_written_before_payloads_were_bytes_still_reads(tmp_path):
    import json
    import struct
    import zlib

    record = json.dumps({"x": [["mqtt x", "bad", "{", "mqtt"]]}).encode()
    (tmp_path / f"{1:012d}-00000000-0000-0000-0000-000000000001.seg").write_bytes(
        struct.pack(">II", len(record), zlib.crc32(record)) + record
    )
    spool = Spool(tmp_path)
    [back] = spool.read(spool.sealed()[0]).rejected
    assert back.payload == "{"


def test_quarantine_keeps_only_the_refused_records_with_the_reason_and_frees_the_bound(tmp_path):
    spool = Spool(tmp_path)
    for k in range(3):
        spool.append(readings(1, k))
    spool.seal()
    [segment] = spool.sealed()
    record = spool.records(segment)[1]
    spool.quarantine(segment, "record 1: DataError: invalid byte sequence", [1])
    assert spool.sealed() == []
    assert spool.size == 0  # quarantined bytes do not count against the bound
    [held] = spool.quarantined()
    assert held["reason"] == "record 1: DataError: invalid byte sequence"
    assert held["records"] == [1] and held["records_in_segment"] == 3
    assert held["segment"] == segment.path.name
    # Its own key: the keys the segment's other records landed under cannot hide it on replay.
    assert Segment(Path(held["path"])).key not in (segment.key, uuid.uuid5(segment.key, "record 0"))
    assert Segment(Path(held["path"])).seq == segment.seq
    # Same format as a segment: requeued, it drains again.
    assert spool.requeue() == [Path(held["path"]).name]
    assert spool.quarantined() == [] and spool.size == len(record) + 8
    [back] = spool.sealed()
    assert spool.records(back) == [record]
    assert spool.read(back).readings == readings(1, 1)
    with pytest.raises(FileNotFoundError, match="not in"):
        spool.requeue(["nonexistent.seg"])


def test_appends_go_on_while_an_fsync_waits_for_the_disk(tmp_path, monkeypatch):
    """The acknowledging thread's fsync does not hold the spool: the MQTT network thread keeps appending.

    With the fsync under the spool's lock, every append waited out the group commit in progress.
    """
    spool = Spool(tmp_path / "s")
    entered, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        entered.set()
        release.wait(5)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    spool.append_raw("t/1", b"first", 1.0)
    syncing = threading.Thread(target=spool.sync)
    syncing.start()
    assert entered.wait(5)
    appended = threading.Event()

    def append_all() -> None:
        for k in range(100):
            spool.append_raw("t/2", b"x%d" % k, 2.0)
        appended.set()

    appender = threading.Thread(target=append_all)
    appender.start()
    # The fsync stays blocked until ``release``: the appends must finish without it (a wait, not a timing).
    assert appended.wait(5), "appends waited for the fsync"
    release.set()
    appender.join(5)
    syncing.join(5)
    monkeypatch.setattr(os, "fsync", real_fsync)
    spool.close()
    assert len(spool.records(spool.sealed()[0])) == 101


def test_a_sync_returns_only_once_an_fsync_after_its_own_appends_has_finished(tmp_path, monkeypatch):
    """Two threads syncing at once: the second does not return on the first's fsync, begun before its append."""
    spool = Spool(tmp_path / "s")
    calls: list[str] = []
    entered, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def recorded_fsync(fd: int) -> None:
        calls.append("begin")
        if len(calls) == 1:
            entered.set()
            release.wait(5)
        real_fsync(fd)
        calls.append("end")

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    spool.append_raw("t/1", b"a", 1.0)
    first = threading.Thread(target=spool.sync)
    first.start()
    assert entered.wait(5)
    spool.append_raw("t/1", b"b", 1.0)  # after the first sync's flush: not covered by its fsync
    returned = threading.Event()
    second = threading.Thread(target=lambda: (spool.sync(), returned.set()))
    second.start()
    assert not returned.wait(0.3), "the second sync returned while the first fsync was still running"
    release.set()
    first.join(5)
    second.join(5)
    assert returned.is_set()
    assert calls == ["begin", "end", "begin", "end"]  # the second append had an fsync of its own
    spool.sync()  # nothing new: no fsync
    assert len(calls) == 4
    monkeypatch.setattr(os, "fsync", real_fsync)
    spool.close()
