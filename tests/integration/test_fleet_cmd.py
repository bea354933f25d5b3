"""``ktrdr workers`` and ``ktrdr ops`` against a real backend process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fleet import Fleet, Server
from support.processes import ProcessGroup, base_env, free_port, wait_until

pytestmark = pytest.mark.slow


def ktrdr(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``ktrdr`` command with a clean environment; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "ktrdr.cli", *args],
        env=base_env(COLUMNS="200"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Server]]:
    """One backend with one training worker for the whole module."""
    directory = tmp_path_factory.mktemp("fleet")
    with ProcessGroup(directory) as group:
        fleet = Fleet(group, directory)
        backend = fleet.start_backend()
        fleet.start_worker("training", backend_port=backend.port)
        yield fleet, backend


def test_workers_json_lists_the_registered_worker(
    running: tuple[Fleet, Server], tmp_path: Path
) -> None:
    """``ktrdr workers --json`` prints the backend's list, with the training worker in it."""
    fleet, backend = running
    wait_until(lambda: fleet.workers(backend), message="no worker registered")
    result = ktrdr("workers", "--json", "--backend-url", backend.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    assert [item["worker_type"] for item in items] == ["training"]


def test_workers_table_shows_id_type_and_status(
    running: tuple[Fleet, Server], tmp_path: Path
) -> None:
    """The table view names the worker, its type and its status."""
    _, backend = running
    result = ktrdr("workers", "--backend-url", backend.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "training" in result.stdout
    assert "idle" in result.stdout


def test_backend_down_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A backend that does not answer: one line on stderr, exit code 2, no traceback."""
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("workers",), ("ops", "list"), ("ops", "show", "abc")):
        result = ktrdr(*args, "--backend-url", url, cwd=tmp_path)
        assert result.returncode == 2, args
        assert result.stderr.strip().splitlines() == [
            f"ktrdr: cannot reach the backend at {url} (ConnectError)"
        ]


def test_bad_param_syntax_is_a_usage_error(tmp_path: Path) -> None:
    """``--param`` without ``=`` is refused before anything is sent."""
    result = ktrdr("ops", "submit", "training", "--param", "epochs", cwd=tmp_path)
    assert result.returncode == 2
    assert "expected KEY=VALUE, got 'epochs'" in result.stderr
    assert "Traceback" not in result.stderr
