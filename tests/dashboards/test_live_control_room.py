"""The control room while a fleet runs: real Modbus servers, a real collector, a fault injected live, in Chromium.

The module's database is filled like the others (conftest.py); on top, the fleet's Modbus TCP meters are served
live and polled by a collector, so comm_health and live readings land as they do under ``releve demo``.
"""

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dashboards.browser import console_errors, wait_idle
from dashboards.screenshots import login
from tests.dashboards.conftest import FLEET

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings(r"ignore:\s*The dash_table.DataTable:DeprecationWarning")]

REFRESH_MS = 2_000


@pytest.fixture(scope="module")
def live_fleet(filled, tmp_path_factory):
    """The test fleet's Modbus TCP gateways served now, and a collector polling them every second."""
    from collectors.config import CollectorConfig
    from collectors.service import Collector
    from simulators.clock import SimClock
    from simulators.config import parse_fleet
    from simulators.engine import Simulation
    from simulators.modbus import ModbusFrontEnd

    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    sim = Simulation(
        parse_fleet({**FLEET, "start": (now - timedelta(days=20)).isoformat(), "horizon_days": 40}, "live test fleet")
    )  # same seed and topology: the same serials as the database
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    front = ModbusFrontEnd(sim, SimClock(datetime.now(UTC), speed=1.0))
    asyncio.run_coroutine_threadsafe(front.start(), loop).result(30)
    assert front.gateways, "the test fleet has no Modbus TCP gateway"
    config = CollectorConfig.model_validate(
        {
            "name": "live-test",
            "spool_dir": str(tmp_path_factory.mktemp("spool")),
            "health_every_s": 0.5,
            "modbus": {
                "periods": {"energy": 1.0, "instant": 1.0, "events": 1.0},
                "jitter": 0.0,
                "retries": 0,
                "gateways": [
                    {
                        "name": f"gw{i}",
                        "host": gw.host,
                        "port": gw.port,
                        "timeout_s": 0.5,
                        "meters": [
                            {"serial": sim.meters[m].serial, "unit": u, "profile": sim.meters[m].model}
                            for u, m in sorted(gw.store.units.items())
                        ],
                    }
                    for i, gw in enumerate(front.gateways)
                ],
            },
        }
    )
    collector = Collector(config, filled.settings, filled.url)
    collector.start()
    try:
        yield sim, front, loop
    finally:
        collector.stop()
        asyncio.run_coroutine_threadsafe(front.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def live_base_url(filled, live_fleet):
    import os
    import uuid

    from dashboards.app import create_app
    from dashboards.browser import serve_in_thread
    from dashboards.queries import Queries

    os.environ.setdefault("RELEVE_DASHBOARD_SECRET", "test-secret-" + uuid.uuid4().hex)
    queries = Queries(filled.url, filled.settings, snapshot_ttl=0.5)
    application = create_app(filled.url, filled.settings, queries=queries, refresh_ms=REFRESH_MS)
    with serve_in_thread(application.server) as base:
        yield base
    queries.close()


def kpi(driver, kpi_id):
    """The KPI's text now (read in one script call: the element is replaced on every refresh)."""
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';", kpi_id
    ).strip()


def test_a_gateway_taken_down_turns_its_meters_late_within_two_refreshes(filled, live_fleet, live_base_url, browser):
    from dashboards.queries import LATE_POLLS

    sim, front, loop = live_fleet
    gateway = front.gateways[0]
    serials = [sim.meters[m].serial for m in gateway.store.units.values()]
    login(browser, live_base_url, "operator1", "operator-pass-123")
    browser.get(live_base_url + "/")
    wait_idle(browser)
    # First every meter of the gateway answers: none is late.
    WebDriverWait(browser, 60).until(
        lambda _: (
            filled.one(
                "SELECT count(*) FROM comm_health WHERE collector = 'live-test' AND good > 0 AND serial = ANY(%s)",
                (serials,),
            )
            == len(serials)
        )
    )
    WebDriverWait(browser, 30).until(lambda d: kpi(d, "kpi-late") == "0")
    asyncio.run_coroutine_threadsafe(front.take_down(gateway), loop).result(30)
    try:
        # The fault reaches the database: the collector's polls of every meter of the gateway fail in a row.
        WebDriverWait(browser, 60, poll_frequency=0.2).until(
            lambda _: (
                filled.one(
                    "SELECT count(*) FROM comm_health WHERE collector = 'live-test' AND consecutive_failures >= %s "
                    "AND serial = ANY(%s)",
                    (LATE_POLLS, serials),
                )
                == len(serials)
            )
        )
        # … and the control room shows them late within two refreshes of the page. Refreshes are counted
        # (the KPI row's update requests that come back), not timed: on a loaded machine a refresh may
        # come late, but the page must not need more than two of them (three if one was in flight).
        browser.execute_script("""
            window.__releveRefreshes = 0;
            const fetch0 = window.fetch;
            window.fetch = async (...args) => {
                const answer = await fetch0(...args);
                const body = args[1] && typeof args[1].body === 'string' ? args[1].body : '';
                if (String(args[0]).includes('_dash-update-component') && body.includes('cr-kpis')) {
                    window.__releveRefreshes += 1;
                }
                return answer;
            };""")
        WebDriverWait(browser, 60, poll_frequency=0.2).until(
            lambda d: kpi(d, "kpi-late").replace(",", "").isdigit() and int(kpi(d, "kpi-late")) >= len(serials)
        )
        refreshes = browser.execute_script("return window.__releveRefreshes")
        assert 1 <= refreshes <= 3, f"late shown after {refreshes} refreshes of the page"
        links = browser.execute_script("return document.getElementById('cr-links').textContent")
        assert "not answering" in links  # the gateway's link state, in words
    finally:
        asyncio.run_coroutine_threadsafe(front.bring_up(gateway), loop).result(30)
    # Served again, it recovers: its meters answer and the late count falls back.
    WebDriverWait(browser, 60).until(lambda d: kpi(d, "kpi-late") == "0")
    WebDriverWait(browser, 30).until(
        lambda d: "gw0tcpconnected" in d.execute_script("return document.getElementById('cr-links').textContent")
    )
    assert console_errors(browser) == []


def test_an_alarm_is_acknowledged_and_stays_acknowledged(filled, live_base_url, browser):
    login(browser, live_base_url, "operator1", "operator-pass-123")
    browser.get(live_base_url + "/")
    wait_idle(browser)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cr-alarms td"))
    first = browser.find_elements(By.CSS_SELECTOR, "#cr-alarms tbody tr")[1]  # row 0 holds the headers
    status = first.find_elements(By.CSS_SELECTOR, "td[data-dash-column=status]")[0].text
    assert status == "new"
    link = first.find_element(By.CSS_SELECTOR, "td[data-dash-column=meter] a")
    serial = link.text
    assert link.get_attribute("href").endswith(f"/meter/{serial}")  # the alarm links to its meter
    first.find_element(By.CSS_SELECTOR, "input[type=radio]").click()
    browser.find_element(By.ID, "cr-alarm-ack").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "cr-alarm-ok"))
    assert (
        filled.one(
            "SELECT count(*) FROM alarm_state s JOIN meter m ON m.id = s.meter_id "
            "WHERE m.serial = %s AND s.acknowledged_by = 'operator1'",
            (serial,),
        )
        == 1
    )
    browser.find_element(By.ID, "cr-alarm-assignee").send_keys("field team 3")
    first = browser.find_elements(By.CSS_SELECTOR, "#cr-alarms tbody tr")[1]
    browser.find_element(By.ID, "cr-alarm-assign").click()
    WebDriverWait(browser, 20).until(
        lambda d: "assigned to field team 3" in d.find_element(By.ID, "cr-alarm-result").text
    )
    # A new page view (and the ticks after it) still shows it acknowledged, by whom, and who is on it.
    browser.get(live_base_url + "/")
    wait_idle(browser)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cr-alarms td"))
    time.sleep(2 * REFRESH_MS / 1000)
    row = browser.find_elements(By.CSS_SELECTOR, "#cr-alarms tbody tr")[1]
    assert row.find_element(By.CSS_SELECTOR, "td[data-dash-column=meter]").text == serial
    assert row.find_element(By.CSS_SELECTOR, "td[data-dash-column=status]").text.startswith("acknowledged by operator1")
    assert row.find_element(By.CSS_SELECTOR, "td[data-dash-column=assignee]").text == "field team 3"
    assert console_errors(browser) == []
