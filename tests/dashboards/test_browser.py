"""The pages in headless Chromium against the app served from a thread, on a simulated fleet."""

import json
import re
import time
import urllib.error
import urllib.request
import zlib

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dashboards.bills import HOLD_REASONS
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


USERS = {
    "operator1": ("operator-pass-123", ["operator"]),
    "fraud1": ("fraud-pass-123", ["fraud"]),
    "billing1": ("billing-pass-123", ["billing"]),
    "field1": ("field-pass-123", ["field"]),
    "admin1": ("admin-pass-123", ["admin"]),
    "locked1": ("locked-pass-123", ["operator"]),
}  # as conftest.py creates them


def as_user(driver, base_url, user):
    driver.get(base_url + "/logout")
    login(driver, base_url, user, USERS[user][0])


def test_control_room_shows_the_fleet_from_the_database(filled, base_url, browser):
    as_user(browser, base_url, "operator1")
    open_page(browser, base_url + "/")
    assert text_of(browser, "kpi-meters") == f"{filled.one('SELECT count(*) FROM meter'):,}"
    open_exc = filled.one("SELECT count(*) FROM vee_exception WHERE status = 'open' AND severity <> 'info'")
    assert text_of(browser, "kpi-open-exceptions") == f"{open_exc:,}"
    assert text_of(browser, "kpi-communicating") == text_of(browser, "kpi-meters")  # the fleet clock is the data's end
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cr-meters td")) > 0)
    assert "26000000" in browser.find_element(By.ID, "cr-meters").text
    placed = filled.one(
        "SELECT count(*) FROM meter m JOIN installation i ON i.meter_id = m.id AND i.removed_at IS NULL "
        "JOIN service_point sp ON sp.id = i.service_point_id WHERE sp.latitude IS NOT NULL"
    )
    # every service point drawn, under the CSP (SVG markers: nothing the policy forbids, no WebGL needed)
    WebDriverWait(browser, 20).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cr-map .scatterlayer .point")) >= placed > 0
    )
    no_errors(browser)


def test_meter_page_shows_series_index_history_and_exceptions(filled, base_url, browser):
    serial, mid = "26000003", filled.one("SELECT id FROM meter WHERE serial = '26000003'")
    as_user(browser, base_url, "operator1")
    open_page(browser, f"{base_url}/meter/{serial}")
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "mt-open-exc"))
    last = filled.one("SELECT max(ts) FROM reading_all WHERE meter_id = %s", (mid,))
    last_index = filled.one(
        "SELECT max(ts) FROM reading_all r JOIN channel c ON c.id = r.channel_id "
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


PAGES = {  # path → (role, an element the page shows once its data is there)
    "/": ("operator", "kpi-meters"),
    "/meter/26000003": ("operator", "mt-open-exc"),
    "/fraud": ("fraud", "kpi-candidates"),
    "/billing": ("billing", "kpi-held"),
    "/accounts": ("billing", "kpi-arrears-accounts"),
    "/field": ("field", "kpi-open-orders"),
    "/users": ("admin", "us-users-table"),
}
#: One callback per page, with inputs it answers for: (output key, inputs, state, text in a good answer).
CALLBACKS = {
    "operator": (
        "cr-meter-link.children",
        [("cr-meters", "active_cell", {"row": 0, "column": 0})],
        [("cr-meters", "data", [{"serial": "26000003"}])],
        "Open meter 26000003",
    ),
    "fraud": ("fr-balance.figure", [("fr-balance-area", "value", "T001")], [], "Energy balance of T001"),
    "billing": (
        "..bl-held.data...bl-held.page_count..",
        [
            ("bl-held", "page_current", 0),
            ("bl-held", "page_size", 5),
            ("bl-held", "sort_by", []),
            ("bl-held", "filter_query", ""),
            ("bl-changed", "data", 0),
        ],
        [],
        "page_count",
    ),
    "field": (
        "..fw-orders.data...fw-orders.page_count...fw-orders.selected_rows..",
        [
            ("fw-orders", "page_current", 0),
            ("fw-orders", "page_size", 5),
            ("fw-orders", "sort_by", []),
            ("fw-orders", "filter_query", ""),
            ("fw-tick", "n_intervals", 0),
            ("fw-changed", "data", 0),
        ],
        [],
        "page_count",
    ),
    "admin": ("..us-users.children...us-throttle.children..", [("us-refresh", "n_clicks", None)], [], "admin1"),
}


def callback_body(role):
    output, inputs, state, _ = CALLBACKS[role]
    outs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in output.strip(".").split("...")]
    return json.dumps(
        {
            "output": output,
            "outputs": outs if output.startswith("..") else outs[0],
            "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
            "state": [{"id": i, "property": p, "value": v} for i, p, v in state],
            "changedPropIds": [],
        }
    )


def fetch_in_page(driver, path, body=None):
    """Status and text of a request made by the page itself (its cookies, its origin, its CSP)."""
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const init = arguments[1] ? {method: "POST", headers: {"Content-Type": "application/json"}, body: arguments[1]}
                                  : {};
        fetch(arguments[0], init).then(r => r.text().then(t => done([r.status, t]))).catch(e => done([0, String(e)]));
    """,
        path,
        body,
    )


def test_anonymous_users_see_the_login_only(base_url, browser, app):
    browser.get(base_url + "/logout")
    for page in [*PAGES, "/nowhere"]:
        open_page(browser, base_url + page)
        assert browser.current_url.endswith("/login?next=" + page), page
        assert browser.find_elements(By.ID, "login-submit") and not browser.find_elements(By.ID, "react-entry-point")
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as err:  # the server refuses before any Dash code runs
            opener.open(base_url + page)
        assert err.value.code == 302 and err.value.headers["Location"].endswith(f"/login?next={page}")
    no_errors(browser)
    for route in ("/_dash-layout", "/_dash-dependencies", "/_dash-component-suites/dash/deps/react@18.3.1.min.js"):
        assert fetch_in_page(browser, route)[0] == 401, route
    for role in CALLBACKS:
        assert fetch_in_page(browser, "/_dash-update-component", callback_body(role))[0] == 401
    console_errors(browser)  # the refusals just provoked are logged as failed loads


@pytest.mark.parametrize("user", ["operator1", "fraud1", "billing1", "field1", "admin1"])
def test_each_role_sees_its_pages_and_is_refused_the_others_page_and_callback(base_url, browser, user):
    role = USERS[user][1][0]
    as_user(browser, base_url, user)
    for page, (need, element) in PAGES.items():
        open_page(browser, base_url + page)
        if need == role:
            WebDriverWait(browser, 30).until(lambda d, e=element: d.find_elements(By.ID, e))
            no_errors(browser)  # nothing refused, nothing blocked by the CSP
            nav = browser.find_element(By.CLASS_NAME, "topbar").text
            for other, (other_need, _) in PAGES.items():
                label = {
                    "/": "Control room",
                    "/fraud": "Fraud unit",
                    "/billing": "Billing",
                    "/accounts": "Accounts",
                    "/field": "Field work",
                    "/users": "Users",
                }.get(other)
                if label:
                    assert (label in nav) == (other_need == role), (user, label, nav)
        else:
            assert text_of(browser, "forbidden") == "Not for your roles", (user, page)
            assert not browser.find_elements(By.ID, element)
            assert fetch_in_page(browser, page)[0] == 403
            console_errors(browser)  # the 403s just seen are logged as failed loads
    for other, (*_, good) in CALLBACKS.items():
        status, text = fetch_in_page(browser, "/_dash-update-component", callback_body(other))
        if other == role:
            assert status == 200 and good in text, (user, other, status, text[:300])
        else:
            assert status == 403 and "needs the" in text, (user, other, status, text[:300])
    console_errors(browser)


def test_repeated_failed_logins_lock_the_account_with_a_growing_wait(filled, base_url, browser, app):
    browser.get(base_url + "/logout")
    policy = app.throttle.policies["account"]
    for attempt in range(1, policy.limit + 1):
        login(browser, base_url, "locked1", f"wrong-password-{attempt}")
        expected = "Unknown user or wrong password." if attempt < policy.limit else "Too many failed logins"
        assert text_of(browser, "login-error").startswith(expected), attempt
    login(browser, base_url, "locked1", USERS["locked1"][0])  # the right password is refused while locked
    assert re.fullmatch(r"Too many failed logins: try again in \d+ s\.", text_of(browser, "login-error"))
    assert "/login" in browser.current_url
    console_errors(browser)  # the 429 answers
    as_user(browser, base_url, "admin1")  # another account from the same address still logs in
    open_page(browser, base_url + "/users")
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "us-throttle-table"))
    row = next(r for r in browser.find_element(By.ID, "us-throttle-table").text.splitlines() if "locked1" in r)
    assert f"account locked1 {policy.limit} " in row
    no_errors(browser)


def test_callbacks_are_refused_without_a_session_and_answered_with_one(app):
    client = app.server.test_client()
    body = json.loads(callback_body("fraud"))
    assert client.post("/_dash-update-component", json=body).status_code == 401  # refused before any Dash code
    page = client.get("/login?next=/fraud").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    answer = client.post(
        "/login", data={"csrf": csrf, "next": "/fraud", "username": "fraud1", "password": "fraud-pass-123"}
    )
    assert answer.status_code == 302 and answer.headers["Location"] == "/fraud"
    reply = client.post("/_dash-update-component", json=body)
    assert reply.status_code == 200 and "Energy balance of T001" in reply.get_data(as_text=True)
    assert client.post("/_dash-update-component", json={**body, "output": "nothing.children"}).status_code == 403
    cross = client.post("/_dash-update-component", json=body, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403


def test_a_session_ends_when_too_old_or_when_the_password_changes(filled, app):
    from dashboards.app import USER_CACHE_S
    from dashboards.auth import set_password
    from releve.db import connect

    client = app.server.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    client.post("/login", data={"csrf": csrf, "next": "/", "username": "billing1", "password": "billing-pass-123"})
    assert client.get("/billing").status_code == 200
    cookie = client.get_cookie("releve_session")
    assert cookie.http_only and cookie.same_site == "Lax" and cookie.expires is not None  # idle expiry
    with client.session_transaction() as session:
        session["login_at"] -= app.server.config["PERMANENT_SESSION_LIFETIME"].total_seconds() * 100
    assert client.get("/billing").status_code == 302  # past dashboard.session_max_hours: logged out
    client.post(
        "/login",
        data={
            "csrf": re.search(r'name="csrf" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1),
            "next": "/",
            "username": "billing1",
            "password": "billing-pass-123",
        },
    )
    assert client.get("/billing").status_code == 200
    with connect(filled.url, autocommit=True) as conn:
        set_password(conn, "billing1", "billing-pass-123")  # the same password, a new hash: sessions end
    time.sleep(USER_CACHE_S + 0.5)
    assert client.get("/billing").status_code == 302


def test_every_response_carries_the_security_headers(base_url, app):
    with urllib.request.urlopen(base_url + "/login") as reply:
        h = reply.headers
        body = reply.read()
    assert b"Log in" in body
    csp = h["Content-Security-Policy"]
    assert "script-src 'self' 'sha256-" in csp and "'unsafe-eval'" not in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert h["X-Frame-Options"] == "DENY" and h["Referrer-Policy"] == "no-referrer"
    assert h["X-Content-Type-Options"] == "nosniff" and h["Cache-Control"] == "no-store"
    assert "werkzeug" not in (h.get("Server") or "").lower()  # waitress, not the development server
    client = app.server.test_client()
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    client.post("/login", data={"csrf": csrf, "next": "/", "username": "operator1", "password": "operator-pass-123"})
    for route in ("/", "/_dash-layout", "/_dash-dependencies"):
        assert client.get(route).headers["Cache-Control"] == "no-store", route
    script = re.search(r'src="(/_dash-component-suites/[^"]+)"', client.get("/").get_data(as_text=True)).group(1)
    assert client.get(script).headers.get("Cache-Control") != "no-store"  # versioned static files may be cached


def test_fraud_page_lists_candidates_and_records_a_visit_outcome(filled, base_url, browser):
    as_user(browser, base_url, "fraud1")
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


def test_fraud_balance_chart_follows_the_selected_candidate(filled, base_url, browser):
    as_user(browser, base_url, "fraud1")
    open_page(browser, base_url + "/fraud")
    run = filled.one("SELECT max(id) FROM theft_run")
    top_area = filled.one("SELECT area FROM theft_candidate WHERE run_id = %s AND rank = 1", (run,))
    # Opened on the top candidate's area.
    WebDriverWait(browser, 20).until(
        lambda d: f"Energy balance of {top_area}" in d.find_element(By.ID, "fr-balance").text
    )
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#fr-list input[type=radio]"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#fr-list tbody tr")
    areas = [r.find_elements(By.CSS_SELECTOR, "td[data-dash-column=area]") for r in rows]
    areas = [a[0].text.strip() if a else "" for a in areas]
    other = next((k for k, a in enumerate(areas) if a and a != top_area), None)
    assert other is not None, areas  # the test fleet's list spans more than one area
    rows[other].find_element(By.CSS_SELECTOR, "input[type=radio]").click()
    WebDriverWait(browser, 20).until(
        lambda d: f"Energy balance of {areas[other]}" in d.find_element(By.ID, "fr-balance").text
    )
    assert browser.find_element(By.CSS_SELECTOR, "#fr-balance-area").text.strip().startswith(areas[other])
    no_errors(browser)


def test_billing_page_shows_holds_and_a_review_decision_is_audited(filled, base_url, browser):
    as_user(browser, base_url, "billing1")
    open_page(browser, base_url + "/billing")
    assert text_of(browser, "kpi-held") == str(filled.one("SELECT count(*) FROM bill WHERE status = 'held'"))
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#bl-queue input[type=radio]"))
    reason = filled.one("SELECT hold_reasons[1] FROM bill WHERE status = 'held' ORDER BY id LIMIT 1")
    held = browser.find_element(By.ID, "bl-held").text
    assert HOLD_REASONS[reason.split(":")[0]] in held  # in words, not the code
    assert f"{reason.split(':')[0]}:" not in held
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


def test_a_bill_page_renders_and_its_pdf_downloads(filled, base_url, browser):
    bill = filled.one("SELECT id FROM bill WHERE status = 'issued' ORDER BY id LIMIT 1")
    total, currency = filled.one("SELECT ARRAY[total::text, currency] FROM bill WHERE id = %s", (bill,))
    as_user(browser, base_url, "billing1")
    open_page(browser, base_url + "/billing")
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#bl-issued td a"))
    assert currency in browser.find_element(By.ID, "bl-issued").text  # money with its currency
    open_page(browser, f"{base_url}/bill/{bill}")
    assert text_of(browser, "bill-title") == f"Bill {bill}"
    shown_total = text_of(browser, "bill-total")
    assert shown_total.endswith(currency) and f"{float(total):,.2f}" in shown_total
    lines = browser.find_element(By.ID, "bill-lines").text
    assert currency in lines
    reads = browser.find_element(By.ID, "bill-reads").text
    assert "actual read" in reads or "estimate" in reads  # the reads used, with their quality in words
    no_errors(browser)
    # The PDF, with the browser's session: a real PDF naming the bill and its total.
    href = browser.find_element(By.ID, "bill-pdf").get_attribute("href")
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
    with urllib.request.urlopen(urllib.request.Request(href, headers={"Cookie": cookies}), timeout=30) as resp:
        assert resp.headers["Content-Type"] == "application/pdf"
        assert f'filename="bill-{bill}.pdf"' in resp.headers["Content-Disposition"]
        body = resp.read()
    assert body.startswith(b"%PDF-") and len(body) > 1000
    assert f"Bill {bill}" in pdf_text(body) and f"{float(total):,.2f} {currency}" in pdf_text(body)
    # … and only for the billing role.
    as_user(browser, base_url, "operator1")
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(urllib.request.Request(href, headers={"Cookie": cookies}), timeout=30)


def pdf_text(body: bytes) -> str:
    """The text drawn by a PDF's (deflated) content streams: enough to find a string fpdf2 wrote."""
    parts = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", body, re.S):
        try:
            parts.append(zlib.decompress(stream).decode("latin-1"))
        except zlib.error:
            continue
    return " ".join("".join(re.findall(r"\((.*?)\)\s*Tj", part)) for part in parts)


PAGES_BY_USER = {
    "operator1": ["/", "/meter/26000003"],
    "fraud1": ["/fraud"],
    "billing1": ["/billing", "/bill/{bill}", "/accounts"],
    "field1": ["/field"],
    "admin1": ["/users"],
}
#: Python's None or NaN shown as text, and raw codes (snake_case identifiers such as hold codes or event kinds).
NOT_FOR_PEOPLE = re.compile(r"\b(None|nan|NaN|NaT|null)\b|\b[a-z]+_[a-z0-9_]+\b")


def test_no_page_shows_none_or_a_raw_code(filled, base_url, browser):
    bill = filled.one("SELECT min(id) FROM bill WHERE status = 'issued'")
    for user, pages in PAGES_BY_USER.items():
        as_user(browser, base_url, user)
        for path in pages:
            open_page(browser, base_url + path.format(bill=bill))
            time.sleep(2)  # the callbacks after the first render (tables, figures)
            wait_idle(browser)
            text = browser.find_element(By.TAG_NAME, "body").text
            found = sorted({m.group(0) for m in NOT_FOR_PEOPLE.finditer(text)})
            assert found == [], f"{path} as {user} shows {found}"


def test_pages_say_what_is_still_being_prepared_and_stop_saying_it_once_ready(filled):
    from dashboards.app import create_app

    under_way = {"text": "loading 90 days of history"}
    application = create_app(filled.url, filled.settings, refresh_ms=3_600_000, preparing=lambda: under_way["text"])
    try:
        client = application.server.test_client()
        page = client.get("/login?next=/").get_data(as_text=True)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        client.post(
            "/login", data={"csrf": csrf, "next": "/", "username": "operator1", "password": "operator-pass-123"}
        )
        body = {
            "output": "..topbar.children...page.children..",
            "outputs": [{"id": "topbar", "property": "children"}, {"id": "page", "property": "children"}],
            "inputs": [{"id": "url", "property": "pathname", "value": "/"}],
            "state": [],
            "changedPropIds": [],
        }
        reply = client.post("/_dash-update-component", json=body)
        assert reply.status_code == 200
        assert "Still being prepared: loading 90 days of history" in reply.get_data(as_text=True)
        under_way["text"] = ""
        assert "Still being prepared" not in client.post("/_dash-update-component", json=body).get_data(as_text=True)
    finally:
        application.queries.close()
