"""Series with real processes: a training's curves survive a cancel, a backend restart and a
resume, equal to an uninterrupted run's; a backtest's equity curve is down-sampled; and
``ktrdr ops show --plot`` draws them.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fleet import OPERATOR_TOKEN, Fleet, Server, backend_env, operator_client, worker_env
from support.processes import ProcessGroup, base_env, free_port, run_ktrdr, wait_until
from support.reference import uninterrupted_series

from ktrdr.config import CheckpointSettings
from ktrdr.protocol import OperationStatus
from ktrdr.workers.checkpoints import CheckpointStore

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
FINISHED = {s.value for s in OperationStatus if s.finished}
#: About 1-2 s of training: long enough to cancel half-way.
TRAINING = {"bars": 4000, "hidden_units": 32, "epochs": 1000, "seed": 7}


class Fixture:
    """A backend on a SQLite file and one worker sharing a checkpoint directory."""

    def __init__(self, group: ProcessGroup, directory: Path) -> None:
        self.fleet = Fleet(group, directory)
        self.directory = directory
        self.port = free_port()
        self.http = operator_client()
        self.backend: Server | None = None

    def start_backend(self) -> Server:
        env = backend_env(self.port, KTRDR_DB_PATH=str(self.directory / "ops.db"))
        self.backend = self.fleet.start_backend(port=self.port, env=env)
        return self.backend

    def start_worker(self, kind: str) -> Server:
        port = free_port()
        env = worker_env(
            port,
            self.port,
            KTRDR_CHECKPOINT_DIR=str(self.directory / "checkpoints"),
            KTRDR_CHECKPOINT_EPOCH_INTERVAL="50",
        )
        return self.fleet.start_worker(kind, backend_port=self.port, port=port, env=env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{OPS}"

    def create(self, kind: str, parameters: dict[str, Any]) -> str:
        response = self.http.post(self.url, json={"type": kind, "parameters": parameters})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def get(self, operation_id: str, suffix: str = "") -> Any:
        try:
            response = self.http.get(f"{self.url}/{operation_id}{suffix}")
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait_for(self, operation_id: str, condition: Any) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            view = self.get(operation_id)
            return view if view is not None and condition(view) else None

        def explain() -> str:
            logs = "\n".join(child.output() for child in self.fleet.group.children)
            return f"{operation_id}: {self.get(operation_id)}\n{logs}"

        return wait_until(reached, timeout_s=90, message=explain, interval_s=0.05)


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[Fixture]:
    """Processes killed at the end, whatever happened."""
    with ProcessGroup(tmp_path) as group:
        fixture = Fixture(group, tmp_path)
        yield fixture
        fixture.http.close()


def test_a_training_curve_survives_cancel_restart_and_resume(fx: Fixture, tmp_path: Path) -> None:
    """Cancelled half-way, backend restarted, resumed: every epoch's four points, equal to an
    uninterrupted run's; the points stored at the cancel are still there after the restart.
    """
    backend = fx.start_backend()
    worker = fx.start_worker("training")
    operation_id = fx.create("training", TRAINING)
    checkpoints = CheckpointStore(settings=CheckpointSettings(dir=tmp_path / "checkpoints"))

    def half_way(view: dict[str, Any]) -> bool:
        epoch = ((view.get("progress") or {}).get("details") or {}).get("epoch", 0)
        return view["status"] == "running" and epoch > 100 and checkpoints.exists(operation_id)

    fx.wait_for(operation_id, half_way)
    assert fx.http.post(f"{fx.url}/{operation_id}/cancel").status_code == 200
    worker.process.wait_for_output(f"operation {operation_id} ended: cancelled")
    stopped_at = checkpoints.load(operation_id, kind="training").step

    def reported() -> Any:
        series = fx.get(operation_id, "/series")
        loss = (series or {}).get("series", {}).get("loss") or [[0]]
        return series if loss[-1][0] == stopped_at else None

    stopped = wait_until(reported, message=lambda: f"series: {fx.get(operation_id, '/series')}")

    backend.process.signal(signal.SIGTERM)
    assert backend.process.wait_exit() == 0
    fx.start_backend()
    after_restart = fx.get(operation_id, "/series")
    assert fx.http.post(f"{fx.url}/{operation_id}/resume").status_code == 200
    done = fx.wait_for(operation_id, lambda view: view["status"] in FINISHED)
    final = fx.get(operation_id, "/series")
    expected = uninterrupted_series(tmp_path / "reference", TRAINING)

    assert done["status"] == "completed", done
    assert after_restart == stopped
    assert stopped["x"] == "epoch"
    assert [x for x, _ in stopped["series"]["loss"]] == list(range(1, stopped_at + 1))
    assert final == {"x": "epoch", "series": expected}
    assert sorted(final["series"]) == ["accuracy", "loss", "validation_accuracy", "validation_loss"]
    assert final["series"]["loss"][0][1] == done["result"]["initial_loss"]


def test_a_backtest_equity_curve_is_down_sampled_and_plotted(fx: Fixture) -> None:
    """5,000 bars: 1,000 equity points ending at the final equity; --plot draws the chart."""
    fx.start_backend()
    fx.start_worker("backtest")
    operation_id = fx.create("backtest", {"bars": 5000, "seed": 3})
    done = fx.wait_for(operation_id, lambda view: view["status"] in FINISHED)
    series = fx.get(operation_id, "/series")
    env = base_env(KTRDR_AUTH_OPERATOR_TOKEN=OPERATOR_TOKEN)
    backend_url = f"http://127.0.0.1:{fx.port}"
    shown = run_ktrdr(
        "ops",
        "show",
        operation_id,
        "--plot",
        "--backend-url",
        backend_url,
        env=env,
        cwd=fx.directory,
    )
    unknown = run_ktrdr(
        "ops",
        "show",
        "no-such-op",
        "--plot",
        "--backend-url",
        backend_url,
        env=env,
        cwd=fx.directory,
    )

    assert done["status"] == "completed", done
    equity = series["series"]["equity"]
    assert (series["x"], len(equity), equity[0][0]) == ("bar", 1000, 5)
    assert equity[-1] == [5000, done["result"]["final_equity"]]
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if line.strip()]
    assert "equity" in [line.strip() for line in lines]
    assert lines[-1].strip() == "bar"
    assert "\x1b[" not in shown.stdout  # not a terminal: no colours
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("ktrdr: ")
    assert "Traceback" not in unknown.stderr
