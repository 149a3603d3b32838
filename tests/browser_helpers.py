"""Headless Chromium for the browser tests (a module of its own: ``from conftest import`` would pick up
whichever conftest pytest loaded first)."""
from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def headless_chrome(tmp_path, *flags: str):
    """A selenium Chrome driver on Debian's Chromium, or a skip that says what is missing."""
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(path):
            pytest.skip(f"{path} not found (apt-get install {pkg})")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}", *flags):
        opts.add_argument(flag)
    try:
        return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    except Exception as exc:  # noqa: BLE001 - selenium raises several types when the browser cannot start here
        pytest.skip(f"headless Chromium did not start: {type(exc).__name__}: {str(exc).splitlines()[0]}")
