"""Headless Chromium for the screenshots command and the browser tests (Debian ``chromium`` + ``chromium-driver``).

Nothing is downloaded at run time: the driver is the system ``chromedriver`` (``/usr/bin/chromedriver``
unless ``RELEVE_CHROMEDRIVER`` says otherwise), the browser the system ``chromium``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dashboards.server import serve_in_thread

__all__ = ["chromium", "console_errors", "free_port", "serve_in_thread", "set_viewport", "wait_idle"]

CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def chromium(width: int = 1440, height: int = 900, download_dir: str | None = None) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile and the browser log enabled."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="releve-chromium-")
    opts = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    binary = os.environ.get("RELEVE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    opts.binary_location = binary
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if download_dir:
        opts.add_experimental_option(
            "prefs", {"download.default_directory": download_dir, "download.prompt_for_download": False}
        )
    driver_path = os.environ.get("RELEVE_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    try:
        set_viewport(driver, width, height)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport exactly ``width`` × ``height`` CSS pixels (the window's frame aside)."""
    driver.set_window_size(width, height + 200)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def console_errors(driver: Any) -> list[str]:
    """SEVERE entries of the browser console since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def wait_idle(driver: Any, timeout: float = 20.0) -> None:
    """Wait until Dash has no callback in flight (no element with data-dash-is-loading)."""
    import time

    from selenium.webdriver.common.by import By

    end = time.monotonic() + timeout
    time.sleep(0.3)
    while time.monotonic() < end:
        ready = driver.execute_script("return document.readyState") == "complete"
        if ready and not driver.find_elements(By.ID, "react-entry-point"):
            return  # not a Dash page (the login form)
        loading = driver.find_elements(By.CSS_SELECTOR, "[data-dash-is-loading='true']")
        if ready and not loading and driver.find_elements(By.ID, "page"):
            time.sleep(0.4)
            if not driver.find_elements(By.CSS_SELECTOR, "[data-dash-is-loading='true']"):
                return
        time.sleep(0.2)
