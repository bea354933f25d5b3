"""A worker started by hand gives its jobs one BLAS thread, unless the operator chose.

Real backend and worker processes. The job processes are forked from the worker's fork
server, which loads numpy (and reads the BLAS thread counts) once, when the worker
warms it up after registering: its environment is what every job gets. The worker is
started without any thread count in its environment, as an operator's shell would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fleet import Fleet, worker_env
from support.processes import ProcessGroup, free_port, wait_until

from ktrdr.workers.job_process import BLAS_THREADS

pytestmark = pytest.mark.slow


@pytest.fixture
def group(tmp_path: Path) -> Iterator[ProcessGroup]:
    with ProcessGroup(tmp_path) as processes:
        yield processes


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children.extend(int(child) for child in text)
    return children


def _fork_server_environment(worker_pid: int) -> dict[str, str] | None:
    """The environment of the worker's job fork server, once it runs (else None)."""
    for child in _children(worker_pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            raw = Path(f"/proc/{child}/environ").read_bytes()
        except OSError:
            continue
        if b"forkserver" in command:
            pairs = (item.partition("=") for item in raw.decode().split("\0") if item)
            return {name: value for name, _, value in pairs}
    return None


def _start_worker(group: ProcessGroup, tmp_path: Path, **threads: str) -> dict[str, str]:
    fleet = Fleet(group, tmp_path)
    backend = fleet.start_backend()
    port = free_port()
    env = worker_env(port, backend.port, **threads)
    for name in BLAS_THREADS:
        if name not in threads:
            env.pop(name, None)  # as an operator's shell: no thread count at all
    worker = fleet.start_worker("training", backend_port=backend.port, port=port, env=env)
    environment: dict[str, str] = wait_until(
        lambda: _fork_server_environment(worker.process.pid), timeout_s=60
    )
    return environment


def test_a_bare_worker_gives_its_jobs_one_blas_thread(group: ProcessGroup, tmp_path: Path) -> None:
    environment = _start_worker(group, tmp_path)

    assert {name: environment.get(name) for name in BLAS_THREADS} == BLAS_THREADS


def test_an_operators_thread_count_is_kept(group: ProcessGroup, tmp_path: Path) -> None:
    environment = _start_worker(group, tmp_path, OMP_NUM_THREADS="2")

    assert environment["OMP_NUM_THREADS"] == "2"
    assert environment["OPENBLAS_NUM_THREADS"] == "1"
