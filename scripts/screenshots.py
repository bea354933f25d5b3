"""Make the README's pictures: the dashboard, one operation's page, `ktrdr ops show --plot`.

Run ``make screenshots`` (or ``.venv/bin/python scripts/screenshots.py``). It starts a
fleet with ``ktrdr up`` in a temporary directory, runs a training and a backtest to
completion and starts a longer training, then drives the same headless Chromium as
the browser tests (Debian's chromium and chromium-driver; ``make chromium``) to take:

- ``docs/images/dashboard.png``: the fleet page, a training running;
- ``docs/images/dashboard-operation.png``: the completed training's page and curves;
- ``docs/images/ops-show-plot.png``: ``ktrdr ops show ID --plot`` in a terminal
  (its coloured output rendered by rich as an SVG terminal, photographed by Chromium).

Everything it starts is stopped at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.browser import chromium  # noqa: E402 - the tests' browser, one definition

OUT = ROOT / "docs" / "images"
TOKEN = "screenshot-operator-token"  # noqa: S105 - a throwaway fleet's token
FINISHED = {"completed", "failed", "cancelled"}
TRAINING = {"epochs": 400, "bars": 3000, "hidden_units": 32, "seed": 4}
BACKTEST = {"bars": 5000, "seed": 3}
RUNNING = {"epochs": 10000, "bars": 20000, "hidden_units": 128, "seed": 9}
TERMINAL_COLUMNS = 100


def _call(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the fleet this script started, on loopback
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def _until(condition: Any, what: str, timeout_s: float = 300) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)  # polling a fleet this script started
    raise SystemExit(f"screenshots: timed out waiting for {what}")


def _start_fleet(directory: Path) -> tuple[subprocess.Popen[str], str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "true",
        "KTRDR_AUTH_OPERATOR_TOKEN": TOKEN,
        "KTRDR_WORKER_HEARTBEAT_INTERVAL": "1s",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "ktrdr.cli", "up", "--api-port", "0"]
    up = subprocess.Popen(
        [*command, "--data-dir", str(directory / "data")],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert up.stdout is not None
    for line in up.stdout:
        lines.append(line)
        if "fleet is up" in line:
            break
    found = re.search(r"backend  (http://\S+)", "".join(lines))
    if not found:
        up.kill()
        raise SystemExit("screenshots: ktrdr up did not start:\n" + "".join(lines))
    return up, found[1]


def _operation(base: str, kind: str, parameters: dict[str, Any]) -> str:
    body = {"type": kind, "parameters": parameters}
    return str(_call(base, "POST", "/api/v1/operations", body)["id"])


def _view(base: str, operation_id: str) -> dict[str, Any]:
    view: dict[str, Any] = _call(base, "GET", f"/api/v1/operations/{operation_id}")
    return view


def _finished(base: str, operation_id: str) -> None:
    _until(lambda: _view(base, operation_id)["status"] in FINISHED, f"operation {operation_id}")


def _percent(base: str, operation_id: str) -> float:
    return float((_view(base, operation_id).get("progress") or {}).get("percent", 0))


def _terminal_png(output: str, title: str, path: Path) -> None:
    """``output`` (ANSI colours) as a terminal window: rich's SVG, photographed by Chromium."""
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=TERMINAL_COLUMNS, force_terminal=True, file=sink)
        console.print(Text.from_ansi(output), no_wrap=True, crop=True)
    svg_path = path.with_suffix(".svg")
    console.save_svg(str(svg_path), title=title)
    size = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg_path.read_text())
    assert size is not None, "rich's SVG has a viewBox"
    driver = chromium(width=int(float(size[1])) + 1, height=int(float(size[2])) + 1)
    try:
        driver.get(svg_path.as_uri())
        driver.save_screenshot(str(path))
    finally:
        driver.quit()
        svg_path.unlink()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ktrdr-screenshots-") as scratch:
        up, base = _start_fleet(Path(scratch))
        try:
            training = _operation(base, "training", TRAINING)
            backtest = _operation(base, "backtest", BACKTEST)
            _finished(base, training)
            _finished(base, backtest)
            running = _operation(base, "training", RUNNING)
            _until(lambda: _percent(base, running) > 3, "the long training to make progress")
            driver = chromium(width=1280, height=900)
            try:
                driver.get(base + "/ui/login")
                driver.find_element(By.ID, "token").send_keys(TOKEN)
                driver.find_element(By.ID, "sign-in").click()
                WebDriverWait(driver, 30).until(
                    lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-operation-id="{running}"]')
                )
                time.sleep(1.5)  # let one more poll redraw the progress bars for the picture
                driver.save_screenshot(str(OUT / "dashboard.png"))
                driver.get(f"{base}/ui/operations/{training}")
                WebDriverWait(driver, 30).until(
                    lambda d: d.find_elements(By.CSS_SELECTOR, 'figure[data-chart="loss"] polyline')
                )
                driver.save_screenshot(str(OUT / "dashboard-operation.png"))
            finally:
                driver.quit()
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "KTRDR_AUTH_OPERATOR_TOKEN": TOKEN,
                "FORCE_COLOR": "1",
                "COLUMNS": str(TERMINAL_COLUMNS),
            }
            show = ["ops", "show", training, "--plot", "--backend-url", base]
            shown = subprocess.run(
                [sys.executable, "-m", "ktrdr.cli", *show],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            title = f"ktrdr ops show {training[:8]}… --plot"
            _terminal_png(shown.stdout, title, OUT / "ops-show-plot.png")
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                up.kill()
    for name in ("dashboard.png", "dashboard-operation.png", "ops-show-plot.png"):
        print(f"wrote {(OUT / name).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
