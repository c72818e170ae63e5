"""The accounts and field-work pages on a ledger, a credit-control run and work orders made through billing's own API."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dashboards.bills import money
from dashboards.browser import console_errors, wait_idle
from dashboards.screenshots import login
from releve.db import connect, editor_role, reader_role

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings(r"ignore:\s*The dash_table.DataTable:DeprecationWarning")]

TODAY = datetime.now(UTC).date()
PASSWORDS = {"billing1": "billing-pass-123", "field1": "field-pass-123", "operator1": "operator-pass-123"}
#: Python's None or NaN shown as text, and raw codes (snake_case identifiers such as step names or order kinds).
NOT_FOR_PEOPLE = re.compile(r"\b(None|nan|NaN|NaT|null)\b|\b[a-z]+_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def ledgered(filled):
    """On the billed fleet: a part payment, a payment reversed, a deposit, a penalty, a dispute, a credit run
    today, inspections from the theft list and a fault report nobody took for 30 minutes."""
    from billing import credit, ledger, workorders

    now = datetime.now(UTC)
    with connect(filled.url, role=editor_role(filled.settings)) as conn:
        top = conn.execute(
            """SELECT a.number, a.id, e.amount FROM account a JOIN ledger_entry e ON e.account_id = a.id
               WHERE e.kind = 'bill' AND NOT a.prepaid ORDER BY e.amount DESC, a.number LIMIT 3"""
        ).fetchall()
        (paid, paid_id, amount), (disputed, _, _), (plain, plain_id, _) = top
        ledger.pay(conn, paid, (amount / 2).quantize(Decimal("0.01")), "R-1", date(2026, 3, 20), "bank")
        wrong, _ = ledger.pay(conn, paid, Decimal("1.00"), "R-2", date(2026, 3, 21), "bank")
        ledger.reverse(conn, wrong, "posted to the wrong account", date(2026, 3, 22))
        ledger.post(
            conn,
            paid_id,
            "deposit",
            Decimal("-20.00"),
            date(2026, 1, 10),
            book="deposit",
            reference="D-1",
            source_key="deposit:D-1",
        )
        ledger.post(
            conn,
            plain_id,
            "penalty",
            Decimal("35.00"),
            date(2026, 2, 1),
            due=date(2026, 2, 11),
            reference="meter tampering",
            source_key="test:penalty",
        )
        credit.open_dispute(conn, disputed, "dispute", "the reading looks too high", now)
        summary = credit.run_credit(conn, credit.load_config(credit.EXAMPLE), TODAY)
        run = conn.execute("SELECT max(id) FROM theft_run").fetchone()[0]
        inspections = workorders.from_theft(conn, run, 3)
        meter = conn.execute("SELECT meter_id FROM work_order WHERE id = %s", (inspections[0],)).fetchone()[0]
        fault, _ = workorders.create(
            conn,
            "fault",
            source="call centre",
            meter=meter,
            description="sparks at the meter box",
            reported_at=now - timedelta(minutes=30),
            now=now - timedelta(minutes=30),
        )
    assert summary.actions.get("reminder", 0) > 0 and summary.held.get("dispute") == 1
    return {"paid": paid, "disputed": disputed, "plain": plain, "fault": fault, "inspections": inspections}


def currency(filled):
    return filled.one("SELECT currency FROM bill GROUP BY currency ORDER BY count(*) DESC LIMIT 1")


def text_of(driver, element_id, timeout=30):
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_elements(By.ID, element_id) and d.find_element(By.ID, element_id).text.strip()
    )
    return driver.find_element(By.ID, element_id).text.strip()


def open_as(driver, base_url, user, path):
    driver.get(base_url + "/logout")
    login(driver, base_url, user, PASSWORDS[user])
    driver.get(base_url + path)
    wait_idle(driver)


def table_text(driver, table_id, wanted, timeout=30):
    """The table's text once it shows ``wanted``."""
    WebDriverWait(driver, timeout).until(lambda d: wanted in d.find_element(By.ID, table_id).text)
    return driver.find_element(By.ID, table_id).text


def rows_of(driver, table_id):
    """Each data row of a table as its cells' texts."""
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tr")
    return [
        [td.text.strip() for td in r.find_elements(By.TAG_NAME, "td")]
        for r in rows
        if r.find_elements(By.TAG_NAME, "td")
    ]


def no_raw_text(driver):
    wait_idle(driver)
    found = sorted({m.group(0) for m in NOT_FOR_PEOPLE.finditer(driver.find_element(By.TAG_NAME, "body").text)})
    assert found == []


def positions(filled):
    """``billing.ledger.balances`` of every account today: the rule the pages must agree with."""
    from billing import ledger

    with connect(filled.url, role=reader_role(filled.settings)) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM account")]
        return ledger.balances(conn, ids, TODAY)


def test_accounts_page_shows_arrears_by_age_and_the_credit_control_queue(filled, ledgered, base_url, browser):
    cur = currency(filled)
    pos = positions(filled)
    in_arrears = [p for p in pos.values() if p.overdue > 0]
    open_as(browser, base_url, "billing1", "/accounts")
    assert text_of(browser, "kpi-arrears-accounts") == f"{len(in_arrears):,}"
    assert text_of(browser, "kpi-overdue") == money(sum(p.overdue for p in in_arrears), cur)
    assert text_of(browser, "kpi-age-90") == money(sum(p.ageing["90+"] for p in pos.values()), cur)
    assert text_of(browser, "kpi-open-cases") == str(
        filled.one("SELECT count(*) FROM credit_case WHERE closed_on IS NULL")
    )
    assert text_of(browser, "kpi-on-hold") == "1"
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ac-ageing .barlayer .point"))
    arrears = table_text(browser, "ac-arrears", ledgered["disputed"])
    most = sorted(in_arrears, key=lambda p: (-p.overdue, p.account))[0]
    assert rows_of(browser, "ac-arrears")[0][0] == most.account  # most overdue first
    assert "dispute open" in arrears and money(most.overdue, cur) in arrears  # money with its currency
    queue = table_text(browser, "ac-queue", ledgered["paid"])
    row = " | ".join(next(r for r in rows_of(browser, "ac-queue") if ledgered["paid"] in r))
    assert f"reminder on {TODAY}" in row and "final notice" in row
    from billing.credit import EXAMPLE, load_config

    klass = filled.one(
        "SELECT sp.customer_class FROM account a JOIN service_point sp ON sp.id = a.service_point_id "
        "WHERE a.number = %s",
        (ledgered["paid"],),
    )
    final = load_config(EXAMPLE).steps_for(klass).steps[1]  # the final notice: so late, so long after the reminder
    due = max(
        pos_of(pos, ledgered["paid"]).oldest_due + timedelta(days=final.days_overdue),
        TODAY + timedelta(days=final.after_previous_days),
    )
    assert row.split(" | ")[8] == str(due)
    assert ledgered["disputed"] not in queue  # an open dispute holds collection: no case, no step
    assert console_errors(browser) == []
    no_raw_text(browser)


def pos_of(pos, number):
    return next(p for p in pos.values() if p.account == number)


def test_an_accounts_ledger_shows_entries_balance_ageing_and_holds(filled, ledgered, base_url, browser):
    cur = currency(filled)
    p = pos_of(positions(filled), ledgered["paid"])
    open_as(browser, base_url, "billing1", f"/accounts/{ledgered['paid']}")
    assert text_of(browser, "ac-title") == f"Account {ledgered['paid']}"
    assert text_of(browser, "kpi-balance") == money(p.balance, cur)
    assert text_of(browser, "kpi-account-overdue") == money(p.overdue, cur)
    assert text_of(browser, "kpi-deposit") == money(Decimal("20.00"), cur)
    assert text_of(browser, "kpi-net") == money(p.balance - Decimal("20.00"), cur)
    assert text_of(browser, "kpi-age-90") == money(p.ageing["90+"], cur)
    entries = table_text(browser, "ac-entries", "reversal")
    for what in ("payment", "reversal", "bill", "deposit", "R-1", money(p.balance, cur)):
        assert what in entries, what
    assert "reminder" in text_of(browser, "ac-actions") and text_of(browser, "ac-holds") == "Holds: none"
    assert "Case" in text_of(browser, "ac-case")
    assert console_errors(browser) == []
    no_raw_text(browser)
    browser.get(f"{base_url}/accounts/{ledgered['disputed']}")
    wait_idle(browser)
    assert "dispute" in text_of(browser, "ac-holds") and "the reading looks too high" in text_of(browser, "ac-disputes")
    browser.get(f"{base_url}/accounts/NO-SUCH-ACCOUNT")
    assert text_of(browser, "ac-missing") == "There is no such account."


def test_field_page_shows_open_orders_an_sla_breach_and_the_map(filled, ledgered, base_url, browser):
    from billing.workorders import sla

    with connect(filled.url, role=reader_role(filled.settings)) as conn:
        breaches = sla(conn)
    n_open = filled.one("SELECT count(*) FROM work_order WHERE status IN ('open', 'assigned', 'awaiting_command')")
    placed = filled.one("""SELECT count(*) FROM work_order w JOIN service_point sp ON sp.id = w.service_point_id
                           WHERE w.status IN ('open', 'assigned', 'awaiting_command') AND sp.latitude IS NOT NULL""")
    assert any(b.id == ledgered["fault"] for b in breaches)
    open_as(browser, base_url, "field1", "/field")
    assert text_of(browser, "kpi-open-orders") == f"{n_open:,}"
    assert text_of(browser, "kpi-breaches") == f"{len(breaches):,}"
    assert text_of(browser, "kpi-unassigned") == f"{n_open:,}"  # nobody has been given one yet
    table = table_text(browser, "fw-breaches-table", f"work order {ledgered['fault']}")
    assert "fault routed within 5 min" in table and "not assigned yet" in table
    orders = table_text(browser, "fw-orders", "sparks at the meter box")
    assert "inspection" in orders and "night inspection with police" in orders
    WebDriverWait(browser, 20).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#fw-map .scatterlayer .point")) >= placed > 0
    )
    assert console_errors(browser) == []
    no_raw_text(browser)
    # the dispatcher gives the fault to a crew: audited as the dashboard user, and the breach now says "assigned late"
    k = next(i for i, r in enumerate(rows_of(browser, "fw-orders")) if "sparks at the meter box" in r)
    browser.find_elements(By.CSS_SELECTOR, "#fw-orders input[type=radio]")[k].click()
    browser.find_element(By.ID, "fw-assignee").send_keys("crew 7")
    browser.find_element(By.ID, "fw-assign").click()
    assert text_of(browser, "fw-assign-ok") == f"Order {ledgered['fault']} given to crew 7."
    assert filled.one("SELECT assignee || ' ' || status FROM work_order WHERE id = %s", (ledgered["fault"],)) == (
        "crew 7 assigned"
    )
    assert (
        filled.one(
            "SELECT by_user FROM work_order_event WHERE work_order_id = %s AND event = 'assigned'", (ledgered["fault"],)
        )
        == "dashboard:field1"
    )
    table_text(browser, "fw-breaches-table", "assigned late")
    assert text_of(browser, "kpi-unassigned") == f"{n_open - 1:,}"
    assert console_errors(browser) == []


def test_only_their_roles_open_the_accounts_and_field_pages(ledgered, base_url, browser):
    open_as(browser, base_url, "field1", "/accounts")
    assert text_of(browser, "forbidden") == "Not for your roles"
    open_as(browser, base_url, "billing1", "/field")
    assert text_of(browser, "forbidden") == "Not for your roles"
    open_as(browser, base_url, "operator1", f"/accounts/{ledgered['paid']}")
    assert text_of(browser, "forbidden") == "Not for your roles"
    console_errors(browser)  # the refusals are logged as failed loads


def test_the_pages_sql_ageing_agrees_with_the_ledger_entry_for_entry(filled, ledgered, app):
    from billing import ledger

    for as_of in (date(2026, 3, 4), date(2026, 3, 21), date(2026, 4, 30), TODAY):
        sql = app.queries.accounts.positions(as_of)
        with connect(filled.url, role=reader_role(filled.settings)) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM account")]
            python = ledger.balances(conn, ids, as_of)
        for acc, p in python.items():
            s = sql.get(acc)
            if s is None:
                assert (p.balance, p.deposit, p.litigation) == (0, 0, 0), p
                continue
            ages = {"current": s["age_current"], "30": s["age_30"], "60": s["age_60"], "90+": s["age_90"]}
            assert (s["balance"], s["deposit"], s["litigation"], s["overdue"], s["oldest_due"], s["credit"], ages) == (
                p.balance,
                p.deposit,
                p.litigation,
                p.overdue,
                p.oldest_due,
                p.credit,
                p.ageing,
            ), (as_of, p.account)


def test_the_new_pages_queries_run_as_the_least_privilege_login(filled, ledgered, web_url):
    from dashboards.queries import Queries

    q = Queries(web_url, filled.settings)
    try:
        summary = q.accounts.arrears_summary()
        assert summary["accounts"] > 0 and summary["open_cases"] > 0
        assert q.accounts.arrears(0, 10, [], "")[1] == summary["accounts"]
        rows, total = q.accounts.credit_queue(
            0, 10, [{"column_id": "next_due", "direction": "asc"}], "{next_step} contains final"
        )
        assert total > 0 and all(r["next_step"] for r in rows)
        acc = q.accounts.account(ledgered["paid"])
        assert acc is not None and acc["position"].deposit == Decimal("20.00")
        assert q.accounts.entries(acc["id"], 0, 5, [], "{kind} = payment")[1] == 2
        assert q.field.summary()["open"] > 0 and q.field.open_orders(0, 5, [], "{kind} = fault")[1] == 1
        assert any(b.id == ledgered["fault"] for b in q.field.breaches())
        assert q.field.map_points() and q.field.by_kind()
    finally:
        q.close()
