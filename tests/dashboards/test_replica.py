"""The dashboards read from a streaming replica (``database.replica_url``), in headless Chromium.

This module runs the dashboard fleet (conftest.py's ``filled``) on a primary of its own, makes a
``pg_basebackup -R`` hot standby of it, and serves the app with ``replica_url`` pointing at the
standby: every page and callback a role needs answers without an error (a hot standby refuses any
write, so a read path that wrote would fail here), the control room says it reads the replica and
how far behind it is, and the forms that write still reach the primary.
"""

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dashboards.browser import console_errors, wait_idle
from dashboards.screenshots import login
from releve.db import connect, reader_role, replica_status
from releve.pgserver import PostgresServer
from tests.conftest import DatabaseTemplates

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings(r"ignore:\s*The dash_table.DataTable:DeprecationWarning")]

USERS = {
    "operator1": "operator-pass-123",
    "fraud1": "fraud-pass-123",
    "billing1": "billing-pass-123",
    "admin1": "admin-pass-123",
}  # as conftest.py creates them
PAGES = {  # user → (page, an element the page shows once its data is there)
    "operator1": [("/", "kpi-meters"), ("/meter/26000003", "mt-open-exc")],
    "fraud1": [("/fraud", "kpi-candidates")],
    "billing1": [("/billing", "kpi-held")],
    "admin1": [("/users", "us-users-table")],
}
SERVERS: dict[str, PostgresServer] = {}


@pytest.fixture(scope="module")
def pg_server_url():
    """This module's own primary (overrides the session server: the replica must copy a server we own)."""
    root = Path(tempfile.mkdtemp(prefix="releve-test-replica-"))
    root.chmod(0o755)
    primary = PostgresServer(root / "primary", durable=False)
    primary.start()
    SERVERS["root"], SERVERS["primary"] = root, primary  # type: ignore[assignment]
    try:
        yield primary.url("postgres")
    finally:
        if "replica" in SERVERS:
            SERVERS.pop("replica").stop()
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def database_templates(pg_server_url):
    """Template databases on this module's own primary (the session's are on the session server); the primary
    is deleted with them."""
    return DatabaseTemplates(pg_server_url)


@pytest.fixture(scope="module")
def replica_url(filled):
    """A hot standby of the filled primary, caught up with it; the URL of the test database on it."""
    primary = SERVERS["primary"]
    replica = primary.replica(Path(SERVERS["root"]) / "replica")  # type: ignore[arg-type]
    replica.start()
    SERVERS["replica"] = replica
    info = psycopg.conninfo.conninfo_to_dict(filled.url)
    info.update(port=str(replica.port), passfile=str(replica.password_file))
    url = psycopg.conninfo.make_conninfo(**info)
    wait_caught_up(filled.url, url)
    return url


def wait_caught_up(primary_url, replica_url, timeout=60):
    with psycopg.connect(primary_url, autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with psycopg.connect(replica_url, autocommit=True) as conn:
        while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def app(filled, replica_url):
    from dashboards.app import create_app

    os.environ.setdefault("RELEVE_DASHBOARD_SECRET", "test-secret-" + uuid.uuid4().hex)
    database = filled.settings.database.model_copy(update={"replica_url": replica_url})
    settings = filled.settings.model_copy(update={"database": database})
    application = create_app(filled.url, settings, refresh_ms=3_600_000)
    yield application
    application.queries.close()


def text_of(driver, element_id, timeout=30):
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_elements(By.ID, element_id) and d.find_element(By.ID, element_id).text.strip()
    )
    return driver.find_element(By.ID, element_id).text.strip()


def no_errors(driver):
    errors = console_errors(driver)
    assert errors == [], errors


def as_user(driver, base_url, user):
    driver.get(base_url + "/logout")
    login(driver, base_url, user, USERS[user])


def test_the_read_pool_is_on_the_replica_and_the_edit_pool_on_the_primary(app, filled):
    with app.queries.read.connection() as conn:
        status = replica_status(conn)
        assert status.standby and status.receiving and status.lag_seconds is not None
        assert conn.execute("SELECT current_user").fetchone()[0] == reader_role(filled.settings)
    with app.queries.edit.connection() as conn:
        assert not replica_status(conn).standby


@pytest.mark.parametrize("user", list(PAGES))
def test_every_page_a_role_needs_renders_from_the_replica_without_an_error(app, base_url, browser, filled, user):
    as_user(browser, base_url, user)
    for page, element in PAGES[user]:
        browser.get(base_url + page)
        wait_idle(browser)
        WebDriverWait(browser, 30).until(lambda d, e=element: d.find_elements(By.ID, e))
        if page == "/":
            assert text_of(browser, "kpi-meters") == f"{filled.one('SELECT count(*) FROM meter'):,}"
            assert "reading from the replica" in text_of(browser, "cr-clock")
        no_errors(browser)  # nothing refused by the standby, nothing blocked by the CSP


def test_a_visit_outcome_goes_to_the_primary_and_reaches_the_replica(app, base_url, browser, filled, replica_url):
    as_user(browser, base_url, "fraud1")
    browser.get(base_url + "/fraud")
    wait_idle(browser)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#fr-list input[type=radio]"))
    browser.find_elements(By.CSS_SELECTOR, "#fr-list input[type=radio]")[0].click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "fr-reasons"))
    serial = browser.find_element(By.ID, "fr-visit-serial").get_attribute("value")
    browser.find_element(By.CSS_SELECTOR, "#fr-visit-result input[value=fraud]").click()
    browser.find_element(By.ID, "fr-visit-save").click()
    assert "recorded" in text_of(browser, "fr-visit-ok")
    no_errors(browser)
    wait_caught_up(filled.url, replica_url)
    with connect(replica_url, role=reader_role(filled.settings)) as conn:
        row = conn.execute("SELECT result FROM theft_inspection WHERE serial = %s", (serial,)).fetchone()
    assert row == ("fraud",)


def test_the_callbacks_answer_from_the_replica(app, filled):
    """The fraud page's energy balance, the heaviest read, through the app's callback endpoint."""
    import re

    client = app.server.test_client()
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    client.post("/login", data={"csrf": csrf, "next": "/fraud", "username": "fraud1", "password": USERS["fraud1"]})
    body = {
        "output": "fr-balance.figure",
        "outputs": {"id": "fr-balance", "property": "figure"},
        "inputs": [{"id": "fr-balance-area", "property": "value", "value": "T001"}],
        "changedPropIds": [],
    }
    answer = client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
    assert answer.status_code == 200 and "Energy balance of T001" in answer.get_data(as_text=True)
