"""The benches' shared set-up (``bench/common.py``): what a stopped bench leaves behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

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
