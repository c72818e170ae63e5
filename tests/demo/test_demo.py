"""The demo path end to end: embedded database and broker, simulated fleet, history, live collection."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import psutil
import psycopg
import pytest

from releve.pgserver import PostgresServer

pytestmark = [pytest.mark.db, pytest.mark.mqtt, pytest.mark.slow]


def run_demo(data_dir, *extra, env=None, seconds=40):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "releve.cli",
            "demo",
            "--data-dir",
            str(data_dir),
            "--meters",
            "40",
            "--days",
            "35",
            "--port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        cwd=data_dir.parent,
    )  # the state file goes to <cwd>/var, not the checkout
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops" in line or time.monotonic() > deadline:
            break
    return proc, lines


def stop(proc, lines):
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    return "".join(lines) + out


def descendants_alive(pid_list):
    return [p for p in pid_list if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def demo_processes():
    """Every demo started by a test is stopped (process group and all) even when the test fails."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_demo_comes_up_flows_readings_stops_cleanly_and_reuses_its_data(service_tmp, demo_processes):
    # Not "demo": `python -m` puts the working folder first on sys.path, and a folder named like the demo
    # package there would shadow an editable install's package (a regular install is not affected).
    data = service_tmp / "demo-data"
    proc, lines = run_demo(data)
    demo_processes.append(proc)
    started = "".join(lines)
    assert "Ctrl-C stops" in started, started
    # The dashboards answer as soon as the database is up, before the history is loaded.
    assert started.index("dashboards answer at") < started.index("simulating and loading")
    url = next(line.split()[1] for line in lines if line.startswith("database"))
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    time.sleep(15)  # live polls and MQTT rounds land meanwhile
    with psycopg.connect(url) as conn:
        history = conn.execute(
            "SELECT count(*) FROM reading_all WHERE source_id = (SELECT id FROM reading_source WHERE name = 'import')"
        ).fetchone()[0]
        live = conn.execute(
            "SELECT count(*) FROM reading_all WHERE source_id IN "
            "(SELECT id FROM reading_source WHERE name IN ('modbus', 'mqtt'))"
        ).fetchone()[0]
        runs = conn.execute("SELECT count(*) FROM vee_run").fetchone()[0]
        candidates = conn.execute(
            "SELECT count(*) FROM theft_candidate WHERE jsonb_array_length(reasons) > 0 AND evidence IS NOT NULL"
        ).fetchone()[0]
        bills = conn.execute("SELECT count(*) FROM bill WHERE status IN ('issued', 'held')").fetchone()[0]
        accounts = conn.execute("SELECT count(*) FROM account").fetchone()[0]
        meters = conn.execute("SELECT count(*) FROM meter").fetchone()[0]
        credit_steps = dict(conn.execute("SELECT action, count(*) FROM credit_action GROUP BY action").fetchall())
        open_orders = dict(
            conn.execute(
                "SELECT kind, count(*) FROM work_order WHERE status IN "
                "('open', 'assigned', 'awaiting_command') GROUP BY kind"
            ).fetchall()
        )
    assert history > 40 * 30 * 96  # 35 days of 15-minute history for ~40 meters
    assert live > 0  # simulator -> Modbus/MQTT -> collector -> spool -> database
    assert runs >= 1  # VEE ran over the history
    assert candidates > 0  # the inspection list was produced, every candidate with reasons
    assert bills == accounts  # a bill run billed (or held) every account
    # Credit control ran (notices, disconnections for the collector) and field work waits for crews.
    assert credit_steps.get("notice", 0) > 0 and credit_steps.get("disconnect", 0) > 0, credit_steps
    assert open_orders.get("inspection", 0) > 0, open_orders  # tonight's theft list, in route order
    assert any(line.startswith("credit ") and "open work orders" in line for line in lines)
    where = next(line for line in lines if line.startswith("dashboards"))
    dashboard = where.split()[1]
    user, password = re.search(r"login: (\S+) / (\S+),", where).groups()  # printed for the person at the demo
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with pytest.raises(urllib.error.HTTPError, match="401"):  # nothing without logging in
        browser.open(dashboard + "_dash-layout", timeout=30)
    form = browser.open(dashboard, timeout=30).read().decode()  # redirected to the login form
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    body = urllib.parse.urlencode({"csrf": csrf, "next": "/", "username": user, "password": password}).encode()
    assert "Relevé" in browser.open(dashboard + "login", body, timeout=30).read().decode()
    assert json.loads(browser.open(dashboard + "_dash-layout", timeout=30).read())
    # What the control room shows comes from the dashboards' own query layer on the demo's database.
    from dashboards.queries import Queries
    from releve.settings import Settings

    queries = Queries(url, Settings(database={"url": url}))
    try:
        counts = queries.snapshot(fresh=True).counts()
    finally:
        queries.close()
    assert sum(counts.values()) == meters  # every meter has a communication state
    assert counts.get("communicating", 0) > 0
    # One database: `releve db status` and `collect status` beside the demo use the demo's, not a new one.
    beside = subprocess.run(
        [sys.executable, "-m", "releve.cli", "db", "status", "--json"],
        cwd=data.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RELEVE_DATABASE_URL": ""},
    )
    assert beside.returncode == 0, beside.stderr
    status = json.loads(beside.stdout)
    assert status["database"] == url
    assert status["rows"]["meter"] == meters
    assert "the demo running in this folder" in status["source"]
    collect = subprocess.run(
        [sys.executable, "-m", "releve.cli", "collect", "status"],
        cwd=data.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "collector demo-collector of the demo" in collect.stdout, collect.stdout + collect.stderr
    assert "gw0" in collect.stdout  # the link health the demo's collector wrote
    output = stop(proc, lines)
    assert proc.returncode == 0, output
    assert "stopped" in output
    time.sleep(1)
    assert descendants_alive(children) == [], "Ctrl-C left processes behind"
    # The data is kept: a second start does not load the history again.
    proc, lines = run_demo(data)
    demo_processes.append(proc)
    output = stop(proc, lines)
    assert "history already loaded" in output
    assert "today's ranking is kept" in output  # no new theft run when nothing changed
    assert "already billed up to" in output and "issued" not in output  # no re-billing of every account
    assert "credit control: the runs up to" in output  # no second credit run on the same day
    assert proc.returncode == 0
    server = PostgresServer(data / "pg")
    assert not server.is_running()
