"""The milestone's end-to-end scenarios, with real processes on loopback and free ports."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fleet import Fleet, worker_env
from support.processes import ProcessGroup, free_port, port_is_free, port_lock

pytestmark = pytest.mark.slow

DEFAULT_PORT = 5003


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A fleet whose processes are all killed at the end of the test."""
    with ProcessGroup(tmp_path) as group:
        yield Fleet(group, tmp_path)


def test_backend_and_training_worker_start_and_the_worker_is_listed(fleet: Fleet) -> None:
    """Scenario 1: a started training worker appears in GET /api/v1/workers as training."""
    backend = fleet.start_backend()
    worker = fleet.start_worker("training", backend_port=backend.port)
    worker_id = worker.health()["worker_id"]

    view = fleet.wait_listed(backend, worker_id)

    assert view["worker_type"] == "training"
    assert view["endpoint_url"] == worker.url
    assert view["status"] == "idle"
    assert view["current_operation_id"] is None


def test_non_numeric_port_exits_1_with_a_report_naming_variable_and_value(fleet: Fleet) -> None:
    """Scenario 2: KTRDR_WORKER_PORT=abc ends the worker with code 1 and a clear report."""
    env = worker_env(None, backend_port=1, KTRDR_WORKER_PORT="abc")
    worker = fleet.start_worker("training", backend_port=1, env=env, wait=False)

    code = worker.process.wait_exit()

    stderr = worker.process.stderr()
    assert code == 1, worker.process.output()
    report_lines = [line for line in stderr.splitlines() if "KTRDR_WORKER_PORT" in line]
    assert any("abc" in line for line in report_lines), stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("worker_type", ["training", "backtest"])
def test_without_a_port_setting_workers_use_and_log_5003(fleet: Fleet, worker_type: str) -> None:
    """Scenario 3: with no port set, training and backtest workers both listen on 5003."""
    backend = fleet.start_backend()
    env = worker_env(None, backend_port=backend.port)
    assert "KTRDR_WORKER_PORT" not in env
    with port_lock(DEFAULT_PORT):
        if not port_is_free(DEFAULT_PORT):
            pytest.skip(f"port {DEFAULT_PORT} is taken by a process outside this test run")
        worker = fleet.start_worker(
            worker_type, backend_port=backend.port, port=DEFAULT_PORT, env=env
        )
        health = worker.health()
        listening = worker.process.wait_for_output(f"listening on 127.0.0.1:{DEFAULT_PORT}")
        view = fleet.wait_listed(backend, health["worker_id"])
        worker.process.signal(signal.SIGTERM)
        code = worker.process.wait_exit()

    assert health["worker_type"] == worker_type
    assert f"{worker_type}-" in health["worker_id"]
    assert health["worker_id"].endswith(f"-{DEFAULT_PORT}")
    assert f":{DEFAULT_PORT}" in listening
    assert view["endpoint_url"].endswith(f":{DEFAULT_PORT}")
    assert code == 0, worker.process.output()


def test_deprecated_worker_port_is_used_with_a_warning(fleet: Fleet) -> None:
    """Scenario 4: WORKER_PORT=<port> works, and stderr names WORKER_PORT and its new name."""
    backend = fleet.start_backend()
    port = free_port()
    env = worker_env(None, backend_port=backend.port, WORKER_PORT=str(port))
    env["KTRDR_WORKER_PUBLIC_URL"] = f"http://127.0.0.1:{port}"

    worker = fleet.start_worker("training", backend_port=backend.port, port=port, env=env)

    assert worker.health()["worker_type"] == "training"
    stderr = worker.process.stderr()
    warnings = [line for line in stderr.splitlines() if "WORKER_PORT" in line and "deprec" in line]
    assert any("KTRDR_WORKER_PORT" in line for line in warnings), stderr
    assert f"listening on 127.0.0.1:{port}" in stderr
