"""``ktrdr health`` (the container HEALTHCHECK) probes the port its settings name."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fleet import Fleet, Server, backend_env, worker_env
from support.processes import ProcessGroup, free_port, run_ktrdr

pytestmark = pytest.mark.slow


def health(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``ktrdr health`` with exactly ``env``."""
    return run_ktrdr("health", *args, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """A backend and a training worker."""
    directory = tmp_path_factory.mktemp("health")
    with ProcessGroup(directory) as group:
        fleet = Fleet(group, directory)
        backend = fleet.start_backend()
        worker = fleet.start_worker("training", backend_port=backend.port)
        yield backend, worker


def test_worker_container_probes_the_worker_port(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    """With a worker type set, auto mode probes KTRDR_WORKER_PORT and reports healthy."""
    backend, worker = servers
    env = worker_env(worker.port, backend.port, KTRDR_WORKER_TYPE="training")
    result = health(env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"healthy: http://127.0.0.1:{worker.port}/health"


def test_backend_container_probes_the_api_port(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    """Without a worker type, auto mode probes KTRDR_API_PORT."""
    backend, _ = servers
    result = health(backend_env(backend.port), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"healthy: http://127.0.0.1:{backend.port}/health"


def test_nothing_listening_is_unhealthy_in_one_line(tmp_path: Path) -> None:
    """A port nobody answers on: exit 1 and one line naming the URL."""
    port = free_port()
    result = health(backend_env(port), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ktrdr health: http://127.0.0.1:{port}/health did not answer (ConnectError)"
    ]


def test_bad_configuration_is_unhealthy_with_the_report(tmp_path: Path) -> None:
    """A configuration the server would refuse makes the probe fail with the report."""
    env = worker_env(free_port(), free_port(), KTRDR_WORKER_PORT="abc")
    result = health(env, "--component", "worker", cwd=tmp_path)
    assert result.returncode == 1
    assert "KTRDR_WORKER_PORT='abc'" in result.stderr
    assert "Traceback" not in result.stderr
