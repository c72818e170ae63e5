"""``releve dashboard screenshots``: one PNG per page at 1440×900, from the app served in-process.

Each page is saved twice: ``<page>.png`` (the 1440×900 viewport) and ``<page>-full.png`` (the whole page).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from releve import db
from releve.settings import Settings

PAGES = (
    ("control-room", "/"),
    ("meter", "/meter/{meter}"),
    ("fraud", "/fraud"),
    ("billing", "/billing"),
    ("bill", "/bill/{bill}"),
    ("accounts", "/accounts"),
    ("account", "/accounts/{account}"),
    ("field", "/field"),
    ("users", "/users"),
)


def busiest_meter(url: str, settings: Settings) -> str | None:
    """The meter with the most open exceptions (else the first one): a page worth looking at."""
    with db.connect(url, role=db.reader_role(settings)) as conn:
        row = conn.execute(
            """SELECT m.serial FROM meter m LEFT JOIN vee_exception e ON e.meter_id = m.id AND e.status = 'open'
                 AND e.severity = 'error'
               GROUP BY m.serial ORDER BY count(e.id) DESC, m.serial LIMIT 1"""
        ).fetchone()
    return str(row[0]) if row else None


def login(driver: Any, base: str, username: str, password: str) -> None:
    """Log in through the form."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    old = driver.find_element(By.ID, "login-submit")
    old.click()

    def replaced(_: Any) -> bool:
        # The answer to the form has loaded once the old button is gone. Chromium reports a node of
        # an unloaded document either as stale or as "does not belong to the document": both mean gone.
        try:
            old.is_enabled()
        except WebDriverException:
            return True
        return False

    WebDriverWait(driver, 20).until(replaced)


def take_screenshots(url: str, settings: Settings, out: Path, meter: str | None = None) -> list[Path]:
    """Serve the app, log in as a temporary user with every role (deleted afterwards), save each page."""
    from dashboards.app import create_app
    from dashboards.auth import ROLES, add_user
    from dashboards.browser import chromium, serve_in_thread, set_viewport, wait_idle

    out.mkdir(parents=True, exist_ok=True)
    meter = meter or busiest_meter(url, settings) or ""
    with db.connect(url, role=db.reader_role(settings)) as conn:
        row = conn.execute("SELECT max(id) FROM bill WHERE status = 'issued'").fetchone()
        busiest = conn.execute(  # the account with the most movements: a ledger worth looking at
            """SELECT a.number FROM account a JOIN ledger_entry e ON e.account_id = a.id
               GROUP BY a.number ORDER BY count(*) DESC, a.number LIMIT 1"""
        ).fetchone()
    bill = str(row[0]) if row and row[0] else "none"
    account = str(busiest[0]) if busiest else "none"
    user, password = f"screenshots-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    with db.connect(url, autocommit=True) as conn:
        add_user(conn, user, password, list(ROLES))
    app = create_app(url, settings, refresh_ms=3_600_000)
    paths: list[Path] = []
    try:
        with serve_in_thread(app.server) as base, chromium(1440, 900) as driver:
            login(driver, base, user, password)
            for name, path in PAGES:
                driver.get(base + path.format(meter=meter, bill=bill, account=account))
                wait_idle(driver)
                target = out / f"{name}.png"
                driver.save_screenshot(str(target))
                paths.append(target)
                # and the whole page, for what lies below the fold
                for _ in range(2):  # the page may grow once its figures are laid out at the new size
                    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
                    set_viewport(driver, 1440, min(max(height, 900), 6000))
                    time.sleep(1.0)
                full = out / f"{name}-full.png"
                driver.save_screenshot(str(full))
                paths.append(full)
                set_viewport(driver, 1440, 900)
    finally:
        app.queries.close()
        with db.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM dashboard_user WHERE username = %s", (user,))
    return paths
