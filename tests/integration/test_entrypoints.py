"""The entrypoints as processes: ``python -m`` modules and the ``ktrdr`` commands."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fleet import TOKEN, Fleet, Server, backend_env, worker_env
from support.processes import ProcessGroup, base_env, free_port

pytestmark = pytest.mark.slow

KTRDR = str(Path(sys.executable).with_name("ktrdr"))


@pytest.fixture
def group(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Children killed at the end of the test."""
    with ProcessGroup(tmp_path) as processes:
        yield processes


def test_backend_with_a_bad_port_exits_1_with_the_report(group: ProcessGroup) -> None:
    """python -m ktrdr.api.main: a bad KTRDR_API_PORT is exit 1 and one report, no traceback."""
    backend = group.python("backend", "ktrdr.api.main", env=backend_env(1, KTRDR_API_PORT="80x"))

    code = backend.wait_exit()

    stderr = backend.stderr()
    assert code == 1
    assert "KTRDR_API_PORT='80x'" in stderr
    assert "Traceback" not in stderr


def test_worker_type_contradicting_the_entrypoint_exits_1(group: ProcessGroup) -> None:
    """KTRDR_WORKER_TYPE=backtest on the training entrypoint is a configuration error."""
    env = worker_env(free_port(), 1, KTRDR_WORKER_TYPE="backtest")
    worker = group.python("worker", "ktrdr.workers.training_worker", env=env)

    code = worker.wait_exit()

    stderr = worker.stderr()
    assert code == 1
    assert "KTRDR_WORKER_TYPE='backtest'" in stderr
    assert "expected training" in stderr
    assert "Traceback" not in stderr


def test_worker_id_the_backend_would_refuse_exits_1_naming_it(group: ProcessGroup) -> None:
    """A KTRDR_WORKER_ID with spaces fails at startup, not at every registration attempt."""
    env = worker_env(free_port(), 1, KTRDR_WORKER_ID="my worker")
    worker = group.python("worker", "ktrdr.workers.backtest_worker", env=env)

    code = worker.wait_exit()

    stderr = worker.stderr()
    assert code == 1
    assert "KTRDR_WORKER_ID='my worker'" in stderr
    assert "Traceback" not in stderr


def test_ktrdr_worker_command_reports_a_bad_port(group: ProcessGroup) -> None:
    """``ktrdr worker training`` validates like the module entrypoint: exit 1, report."""
    env = worker_env(None, 1, KTRDR_WORKER_PORT="abc")
    worker = group.spawn("cli-worker", [KTRDR, "worker", "training"], env=env)

    code = worker.wait_exit()

    assert code == 1
    assert "KTRDR_WORKER_PORT='abc'" in worker.stderr()


def test_ktrdr_backend_and_worker_commands_run_a_fleet(group: ProcessGroup, tmp_path: Path) -> None:
    """``ktrdr backend`` and ``ktrdr worker backtest`` serve, register and stop with exit 0."""
    fleet = Fleet(group, tmp_path)
    backend_port, worker_port = free_port(), free_port()
    backend = Server(
        group.spawn("cli-backend", [KTRDR, "backend"], env=backend_env(backend_port)), backend_port
    )
    fleet.wait_healthy(backend)
    worker = Server(
        group.spawn(
            "cli-worker", [KTRDR, "worker", "backtest"], env=worker_env(worker_port, backend_port)
        ),
        worker_port,
    )
    worker_id = fleet.wait_healthy(worker)["worker_id"]
    view = fleet.wait_listed(backend, worker_id)

    worker.process.signal(signal.SIGTERM)
    backend_code_before = backend.process.returncode
    worker_code = worker.process.wait_exit()
    backend.process.signal(signal.SIGTERM)
    backend_code = backend.process.wait_exit()

    assert view["worker_type"] == "backtest"
    assert backend_code_before is None
    assert (worker_code, backend_code) == (0, 0)
    for process in (worker.process, backend.process):
        assert TOKEN not in process.stdout() + process.stderr()


@pytest.mark.parametrize("component", ["backend", "training"])
def test_port_in_use_is_exit_1_naming_the_variable(component: str, tmp_path: Path) -> None:
    """A taken port: exit 1 and one report line naming the port variable, no traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        if component == "backend":
            variable, module = "KTRDR_API_PORT", "ktrdr.api.main"
            env = base_env(KTRDR_API_HOST="127.0.0.1", KTRDR_API_PORT=str(port))
        else:
            variable, module = "KTRDR_WORKER_PORT", "ktrdr.workers.training_worker"
            env = base_env(KTRDR_WORKER_HOST="127.0.0.1", KTRDR_WORKER_PORT=str(port))
        result = subprocess.run(
            [sys.executable, "-m", module],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"{variable}={port}: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
