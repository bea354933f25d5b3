"""The dashboard in a real browser (headless Chromium) against a real backend and worker.

Signed in through the form, the page lists the worker, follows a training submitted
from the page as its progress moves (no reload: a marker set in the page survives),
draws its loss chart while it runs, and cancels and resumes it with the page's buttons.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait
from support import browser
from support.fleet import OPERATOR_TOKEN, Fleet, Server, backend_env, worker_env
from support.processes import ProcessGroup, free_port

pytestmark = pytest.mark.slow

#: A training of a minute or more on a loaded machine: long enough to watch it move.
LONG_TRAINING = {"epochs": 10000, "bars": 5000, "hidden_units": 64, "seed": 3}
WAIT_S = 90


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """A backend and a registered training worker; (backend, worker id)."""
    with ProcessGroup(tmp_path) as group:
        fleet = Fleet(group, tmp_path)
        port = free_port()
        env = backend_env(port, KTRDR_DB_PATH=str(tmp_path / "ops.db"))
        backend = fleet.start_backend(port=port, env=env)
        worker_port = free_port()
        environment = worker_env(
            worker_port, port, KTRDR_CHECKPOINT_DIR=str(tmp_path / "checkpoints")
        )
        worker = fleet.start_worker(
            "training", backend_port=port, port=worker_port, env=environment
        )
        yield backend, worker.health()["worker_id"]


@pytest.fixture
def driver() -> Iterator[WebDriver]:
    """A headless Chromium; the test fails with the install command if it is missing."""
    problem = browser.missing()
    if problem is not None:
        pytest.fail(problem)
    chrome = browser.chromium()
    try:
        yield chrome
    finally:
        chrome.quit()


def wait(driver: WebDriver, condition: Any, what: str) -> Any:
    """Poll ``condition(driver)`` until truthy (WebDriverWait), failing with ``what``."""
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message=what)


def read(driver: WebDriver, selector: str, script: str = "node !== null") -> Any:
    """``script`` evaluated on the node ``selector`` finds now (or on null), in one step.

    The page redraws its tables every second, so a node found in one call may be gone
    by the next: every read happens inside the page.
    """
    return driver.execute_script(
        f"const node = document.querySelector(arguments[0]); return {script};", selector
    )


def percent(driver: WebDriver, operation_id: str) -> float:
    """The progress the operations table shows for ``operation_id`` (0 when not listed)."""
    selector = f'tr[data-operation-id="{operation_id}"] .progress'
    return float(read(driver, selector, "node ? node.dataset.percent : 0"))


def text(driver: WebDriver, selector: str) -> str:
    return str(read(driver, selector, "node ? node.textContent : ''"))


def loss_points(driver: WebDriver) -> int:
    """How many points the loss line of the loss chart has."""
    selector = 'figure[data-chart="loss"] polyline[data-series="loss"]'
    script = "node ? node.getAttribute('points').trim().split(/\\s+/).length : 0"
    return int(read(driver, selector, script))


def test_the_dashboard_follows_a_training_live_and_draws_its_chart(
    servers: tuple[Server, str], driver: WebDriver
) -> None:
    """Worker listed, progress moving without a reload, loss chart drawn, cancel and resume."""
    backend, worker_id = servers
    driver.get(backend.url + "/ui/")
    assert driver.current_url.endswith("/ui/login")
    driver.find_element(By.ID, "token").send_keys(OPERATOR_TOKEN)
    driver.find_element(By.ID, "sign-in").click()

    row = f'#workers tr[data-worker-id="{worker_id}"]'
    wait(driver, lambda d: read(d, row + '[data-status="idle"]'), "the worker is listed idle")
    driver.execute_script("window.ktrdrNoReload = true;")

    parameters = driver.find_element(By.ID, "submit-params")
    parameters.clear()
    parameters.send_keys(json.dumps(LONG_TRAINING))
    driver.find_element(By.ID, "submit-button").click()
    submitted = wait(
        driver,
        lambda d: d.find_element(By.ID, "submit-result").get_attribute("data-operation-id"),
        "the submission is confirmed with the operation's id",
    )
    first = wait(driver, lambda d: percent(d, submitted), "the operation's progress")
    wait(driver, lambda d: percent(d, submitted) > first, "the progress moves")
    wait(driver, lambda d: read(d, row + '[data-status="busy"] a'), "the worker shows it")
    assert driver.execute_script("return window.ktrdrNoReload === true;")

    read(driver, f'tr[data-operation-id="{submitted}"] a', "node.click()")
    wait(driver, lambda d: d.current_url.endswith(f"/ui/operations/{submitted}"), "its page")
    drawn = wait(driver, lambda d: loss_points(d) >= 2 and loss_points(d), "the loss chart")
    wait(driver, lambda d: loss_points(d) > drawn, "the chart grows while the training runs")
    assert read(driver, 'figure[data-chart="loss"] polyline[data-series="validation_loss"]')
    assert read(driver, 'figure[data-chart="accuracy"] polyline[data-series="accuracy"]')

    status = "#operation-status .status"
    driver.find_element(By.ID, "cancel").click()
    wait(driver, lambda d: text(d, status) == "cancelled", "the operation is cancelled")
    wait(driver, lambda d: read(d, "#resume", "!node.disabled"), "resume is offered")
    driver.find_element(By.ID, "resume").click()
    wait(driver, lambda d: text(d, status) in ("pending", "running"), "it is queued again")
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
