"""Headless Chromium for tests and the README's screenshots: Debian's chromium + chromium-driver.

Selenium drives the system's ``chromedriver`` directly (never Selenium Manager, which
would try to download a browser). ``make chromium`` installs both packages when they
are missing; without them :func:`chromium` fails with that instruction.
"""

from __future__ import annotations

import shutil

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

#: What to run when Chromium is missing (it installs Debian's packages as root).
INSTALL_HINT = "run `make chromium` (as root it installs Debian's chromium and chromium-driver)"


def missing() -> str | None:
    """What is missing to drive a browser, or None."""
    absent = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if absent:
        return f"{' and '.join(absent)} not found on PATH: {INSTALL_HINT}"
    return None


def chromium(*, width: int = 1300, height: int = 1000) -> webdriver.Chrome:
    """A headless Chromium window of ``width`` x ``height`` CSS pixels; quit() it after use."""
    problem = missing()
    if problem is not None:
        raise RuntimeError(problem)
    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI and containers run as root, where the sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(shutil.which("chromedriver")))
    return webdriver.Chrome(service=service, options=options)


__all__ = ["INSTALL_HINT", "chromium", "missing"]
