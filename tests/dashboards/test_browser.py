"""The pages in headless Chromium against the app served from a thread, on a simulated fleet."""

import re
import urllib.error
import urllib.request

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dashboards.browser import console_errors, wait_idle
from dashboards.screenshots import login

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings(r"ignore:\s*The dash_table.DataTable:DeprecationWarning")]


def text_of(driver, element_id, timeout=30):
    """The element's text once it is non-empty."""
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_elements(By.ID, element_id) and d.find_element(By.ID, element_id).text.strip()
    )
    return driver.find_element(By.ID, element_id).text.strip()


def open_page(driver, url):
    driver.get(url)
    wait_idle(driver)


def no_errors(driver):
    errors = console_errors(driver)
    assert errors == [], errors


def test_control_room_shows_the_fleet_from_the_database(filled, base_url, browser):
    open_page(browser, base_url + "/")
    assert text_of(browser, "kpi-meters") == f"{filled.one('SELECT count(*) FROM meter'):,}"
    open_exc = filled.one("SELECT count(*) FROM vee_exception WHERE status = 'open' AND severity <> 'info'")
    assert text_of(browser, "kpi-open-exceptions") == f"{open_exc:,}"
    assert text_of(browser, "kpi-communicating") == text_of(browser, "kpi-meters")  # the fleet clock is the data's end
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cr-meters td")) > 0)
    assert "26000000" in browser.find_element(By.ID, "cr-meters").text
    assert browser.find_elements(By.CSS_SELECTOR, "#cr-map .scatterlayer, #cr-map canvas")
    no_errors(browser)


def test_meter_page_shows_series_index_history_and_exceptions(filled, base_url, browser):
    serial, mid = "26000003", filled.one("SELECT id FROM meter WHERE serial = '26000003'")
    open_page(browser, f"{base_url}/meter/{serial}")
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "mt-open-exc"))
    last = filled.one("SELECT max(ts) FROM reading WHERE meter_id = %s", (mid,))
    last_index = filled.one(
        "SELECT max(ts) FROM reading r JOIN channel c ON c.id = r.channel_id "
        "WHERE r.meter_id = %s AND c.code = '1-0:1.8.0'",
        (mid,),
    )
    n_open = filled.one(
        "SELECT count(*) FROM vee_exception WHERE meter_id = %s AND status = 'open' "
        "AND severity <> 'info' AND ts > %s - interval '30 days'",
        (mid, last),
    )
    assert text_of(browser, "mt-open-exc") == str(n_open)
    assert "T001" in text_of(browser, "mt-facts")
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#mt-history td")) > 0)
    assert f"{last_index:%Y-%m-%d %H:%M}" in browser.find_element(By.ID, "mt-history").text  # newest read first
    assert "initial" in text_of(browser, "mt-installations")
    no_errors(browser)


def test_fraud_and_billing_need_a_login_with_the_right_role(filled, base_url, browser):
    for page in ("/fraud", "/billing"):
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as err:  # the server refuses before any Dash code runs
            opener.open(base_url + page)
        assert err.value.code == 302 and err.value.headers["Location"].endswith(f"/login?next={page}")
    browser.get(base_url + "/logout")
    open_page(browser, base_url + "/fraud")
    assert "/login?next=/fraud" in browser.current_url
    login(browser, base_url, "fraud1", "wrong-password")
    assert text_of(browser, "login-error") == "Unknown user or wrong password."
    login(browser, base_url, "fraud1", "fraud-pass-123")
    open_page(browser, base_url + "/billing")  # fraud1 has no billing role
    assert "/login?next=/billing" in browser.current_url
    no_errors(browser)


def test_callbacks_of_protected_pages_refuse_without_a_session(app):
    client = app.server.test_client()
    body = {
        "output": "fr-balance.figure",
        "outputs": {"id": "fr-balance", "property": "figure"},
        "inputs": [{"id": "fr-balance-area", "property": "value", "value": "T001"}],
        "changedPropIds": [],
    }
    assert client.post("/_dash-update-component", json=body).status_code == 204  # PreventUpdate: nothing sent
    page = client.get("/login?next=/fraud").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    answer = client.post(
        "/login", data={"csrf": csrf, "next": "/fraud", "username": "fraud1", "password": "fraud-pass-123"}
    )
    assert answer.status_code == 302 and answer.headers["Location"] == "/fraud"
    reply = client.post("/_dash-update-component", json=body)
    assert reply.status_code == 200 and "Energy balance of T001" in reply.get_data(as_text=True)


def test_fraud_page_lists_candidates_and_records_a_visit_outcome(filled, base_url, browser):
    browser.get(base_url + "/logout")
    login(browser, base_url, "fraud1", "fraud-pass-123")
    open_page(browser, base_url + "/fraud")
    run = filled.one("SELECT max(id) FROM theft_run")
    n = filled.one("SELECT count(*) FROM theft_candidate WHERE run_id = %s", (run,))
    assert text_of(browser, "kpi-candidates") == str(n)
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#fr-list input[type=radio]"))
    top = filled.one("SELECT serial FROM theft_candidate WHERE run_id = %s AND rank = 1", (run,))
    browser.find_elements(By.CSS_SELECTOR, "#fr-list input[type=radio]")[0].click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "fr-reasons"))
    assert top in text_of(browser, "fr-evidence-head")
    assert browser.find_element(By.ID, "fr-visit-serial").get_attribute("value") == top
    browser.find_element(By.CSS_SELECTOR, "#fr-visit-result input[value=fraud]").click()
    browser.find_element(By.ID, "fr-visit-note").send_keys("bypass cable found")
    browser.find_element(By.ID, "fr-visit-save").click()
    assert "recorded" in text_of(browser, "fr-visit-ok")
    assert (
        filled.one("SELECT result || '/' || note FROM theft_inspection WHERE serial = %s", (top,))
        == "fraud/[dashboard:fraud1] bypass cable found"
    )
    WebDriverWait(browser, 20).until(
        lambda d: (
            "fraud" in d.find_element(By.ID, "fr-list").text.split("\n")[-1]
            or d.find_elements(By.ID, "fr-visits-table")
        )
    )
    no_errors(browser)


def test_billing_page_shows_holds_and_a_review_decision_is_audited(filled, base_url, browser):
    browser.get(base_url + "/logout")
    login(browser, base_url, "billing1", "billing-pass-123")
    open_page(browser, base_url + "/billing")
    assert text_of(browser, "kpi-held") == str(filled.one("SELECT count(*) FROM bill WHERE status = 'held'"))
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#bl-queue input[type=radio]"))
    reason = filled.one("SELECT hold_reasons[1] FROM bill WHERE status = 'held' ORDER BY id LIMIT 1")
    assert reason.split(":")[0] in browser.find_element(By.ID, "bl-held").text
    first = filled.one("""SELECT e.id FROM vee_exception e JOIN meter m ON m.id = e.meter_id
                          WHERE e.status = 'open' AND e.severity <> 'info'
                          ORDER BY CASE e.severity WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
                                   m.serial, e.ts, e.id LIMIT 1""")
    browser.find_elements(By.CSS_SELECTOR, "#bl-queue input[type=radio]")[0].click()
    assert f"Exception {first}" in text_of(browser, "bl-selected")
    browser.find_element(By.ID, "bl-reject").click()
    assert f"exception {first} rejected" in text_of(browser, "bl-result-text")
    assert (
        filled.one("SELECT status || '/' || resolved_by FROM vee_exception WHERE id = %s", (first,))
        == "rejected/dashboard:billing1"
    )
    no_errors(browser)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None
