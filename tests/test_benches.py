"""The benches' shared set-up (``bench/common.py``): what a stopped bench leaves behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parent.parent

#: A bench in miniature: a throwaway database, its URL printed, then a long wait inside it.
BENCH = textwrap.dedent(
    """
    import time
    from bench.common import bench_database

    with bench_database() as (url, settings, where):
        print(url, flush=True)
        time.sleep(120)
    """
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A TMPDIR the server's unprivileged user can traverse (pytest's own is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="releve-test-bench-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_bench_stopped_by_sigterm_stops_and_removes_its_throwaway_server(scratch: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RELEVE_BENCH_DATABASE_URL"}
    env["TMPDIR"] = str(scratch)
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-c", BENCH], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url, proc.stderr.read() if proc.stderr else "no URL printed"
        with psycopg.connect(url) as conn:  # the server is up while the bench runs
            assert conn.execute("SELECT 1").fetchone() == (1,)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()
    assert not any(scratch.glob("releve-bench-*")), "the server's data directory was left behind"


def test_collect_bench_payloads_are_the_plain_json_the_collector_decodes() -> None:
    from bench.collect import TOPIC, round_messages

    t0 = "2026-10-01T00:00:00+00:00"
    got = list(round_messages(3, 1_001, 500, t0))
    assert len(got) == 1_001
    topic, payload = got[1_000]  # meter 0's third reading
    assert topic == TOPIC.format(round=3, serial="MQ00000").encode()
    assert (
        payload
        == json.dumps(
            {
                "meter": "MQ00000",
                "ts": "2026-10-01T00:30:00Z",
                "readings": [
                    {"channel": "1-0:1.8.0", "value": 1_100, "unit": "kWh"},
                    {"channel": "1-0:1.7.0", "value": 400.0, "unit": "W"},
                ],
            }
        ).encode()
    )


@pytest.mark.mqtt
@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto not installed")
def test_collect_bench_queues_a_round_past_65535_messages_whole(scratch: Path) -> None:
    """A round larger than the 16-bit message ids and than the production queue bound arrives whole.

    At 80,000 and 100,000 messages the old bench hung: its paho publisher reused message ids still
    in flight (paho refuses such a publish), so rounds were capped at 60,000.
    """
    import multiprocessing as mp

    from bench.collect import TOPIC, _drained, _mosquitto_sub, _publish, _session
    from releve.broker import MqttBroker

    messages = 120_000
    with MqttBroker(scratch / "b", max_queued_messages=messages + 1_000, persistence=False) as broker:
        _session(broker.port, "drain", TOPIC.format(round=1, serial="+"))
        pub = mp.get_context("spawn").Process(
            target=_publish, args=(broker.port, 1, messages, 50, "2026-01-01T00:00:00+00:00", None)
        )
        pub.start()
        pub.join(120)
        assert pub.exitcode == 0
        _drained(_mosquitto_sub(broker.port, "drain", TOPIC.format(round=1, serial="+"), messages, 60), messages, "sub")


#: What the theft ranking reads of hourly interval data, row by row, by meter serial (ids may differ).
SERIES_QUERIES = {
    "daily_reading": """SELECT m.serial, d.day, d.n, d.total, d.min_value, d.max_value, d.first_value, d.last_value
                        FROM daily_reading d JOIN meter m ON m.id = d.meter_id ORDER BY 1, 2""",
    "daily_series": """SELECT m.serial, s.month, s.value FROM daily_series s JOIN meter m ON m.id = s.meter_id
                       ORDER BY 1, 2""",
    "daily_read_count": "SELECT day, n FROM daily_read_count ORDER BY 1",
    "hourly_series": """SELECT m.serial, s.month, s.value FROM hourly_series s JOIN meter m ON m.id = s.meter_id
                        ORDER BY 1, 2""",
    "interval_day_series": """SELECT m.serial, s.month, s.value FROM interval_day_series s
                              JOIN meter m ON m.id = s.meter_id ORDER BY 1, 2""",
}


def test_theft_bench_writes_hourly_series_as_the_refresh_makes_them_from_readings(database_templates) -> None:
    """``bench/theft_db.py --hourly-series`` skips ``reading`` (≈ 90 GB at 100,000 meters): the same tables, to the bit."""
    from bench import theft_db

    template = database_templates.migrated()
    with database_templates.copy(template) as readings, database_templates.copy(template) as direct:
        theft_db.land(readings.url, 40, 75, hourly=True, seed=3)
        theft_db.land(direct.url, 40, 75, hourly=True, seed=3, series=True)
        with readings.connect() as a, direct.connect() as b:
            assert a.execute("SELECT count(*) FROM reading_all").fetchone() == (40 * 75 * 24 + 2 * 75 * 24,)
            assert b.execute("SELECT count(*) FROM reading_all").fetchone() == (0,)
            for table, query in SERIES_QUERIES.items():
                want, got = a.execute(query).fetchall(), b.execute(query).fetchall()
                assert len(want) > 0 and got == want, table
            # The texture's logs: the server's libm and numpy's may differ in the last bit.
            texture = "SELECT m.serial, s.month, s.texture FROM hourly_series s JOIN meter m ON m.id = s.meter_id ORDER BY 1, 2"
            want, got = a.execute(texture).fetchall(), b.execute(texture).fetchall()
            assert [r[:2] for r in got] == [r[:2] for r in want]
            w = np.frombuffer(b"".join(r[2] for r in want), ">f8")
            g = np.frombuffer(b"".join(r[2] for r in got), ">f8")
            assert np.isfinite(w).sum() >= 40 * 70
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=0)


def test_billing_bench_bills_time_of_use_accounts_from_interval_blocks(pg_server_url: str) -> None:
    """``bench/billing.py`` end to end, small: its interval meters land as blocks and their bills are priced."""
    env = dict(os.environ, RELEVE_BENCH_DATABASE_URL=pg_server_url, PYTHONPATH=str(ROOT))
    args = ["--accounts", "200", "--interval-meters", "20", "--interval-days", "40"]
    done = subprocess.run(
        [sys.executable, "bench/billing.py", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "76,800 interval reads (20 time-of-use meters)" in done.stdout  # 20 meters × 40 days × 96
    assert "bills: 198," in done.stdout
    assert "issued 196, held 2" in done.stdout
