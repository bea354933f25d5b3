"""A worker cannot be taken down by the jobs it runs (real backend and worker processes).

Each operation runs in a job process of its own: a FIFO as data file, which used to
block a job for good, is refused at once while ``/health`` keeps answering; a training
frozen mid-epoch is killed ``KTRDR_WORKER_STOP_GRACE`` after its cancel; a job over
``KTRDR_WORKER_MAX_MEMORY`` fails naming the cap; a job killed from outside fails its
operation; and the worker,
still registered, runs the next operation each time.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fleet import Fleet, Server, operator_client, worker_env
from support.processes import ProcessGroup, free_port, wait_until

from ktrdr.protocol import OperationStatus

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
FINISHED = {s.value for s in OperationStatus if s.finished}
STOP_GRACE_S = 2.0
#: Beyond the grace: scheduling slack on a loaded machine, the kill and the report.
MARGIN_S = 8.0


class Fleet1:
    """A backend and one worker of ``kind`` on loopback, and a client for both."""

    #: Fleets of the running test (the ``group`` fixture closes their clients).
    started: list[Fleet1] = []  # noqa: RUF012 - test bookkeeping, cleared by the fixture

    def __init__(self, group: ProcessGroup, directory: Path, kind: str, **worker: str) -> None:
        fleet = Fleet(group, directory)
        self.backend = fleet.start_backend()
        port = free_port()
        env = worker_env(
            port,
            self.backend.port,
            KTRDR_WORKER_STOP_GRACE=f"{STOP_GRACE_S}s",
            KTRDR_CHECKPOINT_DIR=str(directory / "checkpoints"),
            **worker,
        )
        self.worker: Server = fleet.start_worker(
            kind, backend_port=self.backend.port, port=port, env=env
        )
        self.worker_id: str = self.worker.health()["worker_id"]
        fleet.wait_listed(self.backend, self.worker_id, status="idle")
        self.fleet = fleet
        self.http = operator_client()
        Fleet1.started.append(self)

    def create(self, kind: str, **parameters: Any) -> str:
        response = self.http.post(
            self.backend.url + OPS, json={"type": kind, "parameters": parameters}
        )
        assert response.status_code == 201, response.text
        operation_id: str = response.json()["id"]
        return operation_id

    def get(self, operation_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.http.get(f"{self.backend.url}{OPS}/{operation_id}").json()
        return view

    def wait_for(self, operation_id: str, statuses: set[str], timeout_s: float = 90) -> Any:
        def reached() -> dict[str, Any] | None:
            view = self.get(operation_id)
            return view if view["status"] in statuses else None

        return wait_until(
            reached,
            timeout_s=timeout_s,
            interval_s=0.05,
            message=lambda: f"{self.get(operation_id)}\n{self.worker.process.output()}",
        )

    def job_pid(self) -> int | None:
        pid: int | None = self.worker.health()["job_pid"]
        return pid

    def assert_carries_on(self) -> None:
        """Still registered and idle, and completes the next small operation."""
        view = self.fleet.worker_view(self.backend, self.worker_id)
        assert view is not None
        assert view["status"] in {"idle", "busy"}, view
        kind = self.worker.health()["worker_type"]
        small = {"bars": 300, "epochs": 3} if kind == "training" else {"bars": 300}
        done = self.wait_for(self.create(kind, **small), FINISHED)
        assert done["status"] == "completed", done
        assert done["worker_id"] == self.worker_id


@pytest.fixture
def group(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Every process the test starts, killed at the end; HTTP clients closed first."""
    with ProcessGroup(tmp_path) as processes:
        yield processes
        for fleet in Fleet1.started:
            fleet.http.close()
        Fleet1.started.clear()


class HealthWatch:
    """Polls a worker's ``/health`` with a one-second timeout until stopped; records misses."""

    def __init__(self, url: str) -> None:
        self.url = url + "/health"
        self.answers = 0
        self.misses: list[str] = []
        self._stop = threading.Event()
        self._probed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthWatch:
        """Starts polling and returns once the first probe is done, so a watch covers its block."""
        self._thread.start()
        self._probed.wait(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=1.0) as client:
            while not self._stop.is_set():
                try:
                    client.get(self.url).raise_for_status()
                    self.answers += 1
                except httpx.HTTPError as exc:
                    self.misses.append(repr(exc))
                self._probed.set()
                self._stop.wait(0.1)


def test_a_fifo_as_data_file_fails_at_once_and_the_worker_stays_responsive(
    group: ProcessGroup, tmp_path: Path
) -> None:
    """A FIFO in KTRDR_DATA_DIR: the operation fails naming the rule, /health < 1 s."""
    os.mkfifo(tmp_path / "never.csv")
    fleet = Fleet1(group, tmp_path, "training", KTRDR_DATA_DIR=str(tmp_path))

    with HealthWatch(fleet.worker.url) as watch:
        operation_id = fleet.create("training", csv_path="never.csv")
        failed = fleet.wait_for(operation_id, FINISHED, timeout_s=STOP_GRACE_S + MARGIN_S)
        wait_until(
            lambda: fleet.worker.health()["status"] == "idle",
            timeout_s=STOP_GRACE_S + MARGIN_S,
        )

    assert failed["status"] == "failed"
    assert failed["error"].startswith("csv_path 'never.csv' is not a regular file")
    assert watch.misses == []
    assert watch.answers > 0
    fleet.assert_carries_on()


def test_a_job_stuck_in_an_epoch_is_cancelled_within_the_grace_and_health_answers(
    group: ProcessGroup, tmp_path: Path
) -> None:
    """A job frozen mid-epoch (SIGSTOP): cancel kills it after the grace; /health < 1 s."""
    fleet = Fleet1(group, tmp_path, "training")
    operation_id = fleet.create("training", bars=20_000, epochs=10_000)
    fleet.wait_for(operation_id, {"running"})
    pid = wait_until(fleet.job_pid, message=fleet.worker.process.output)
    os.kill(pid, signal.SIGSTOP)  # it can no longer finish an epoch, however long we wait

    with HealthWatch(fleet.worker.url) as watch:
        response = fleet.http.post(f"{fleet.backend.url}{OPS}/{operation_id}/cancel")
        assert response.status_code == 200, response.text
        wait_until(
            lambda: fleet.worker.health()["status"] == "idle",
            timeout_s=STOP_GRACE_S + MARGIN_S,
            message=fleet.worker.process.output,
        )
    cancelled = fleet.wait_for(operation_id, FINISHED)

    assert cancelled["status"] == "cancelled", cancelled
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), message="the frozen job still runs")
    assert watch.misses == []
    assert watch.answers > 0
    fleet.assert_carries_on()


def test_a_job_over_the_memory_cap_fails_naming_it_and_the_worker_carries_on(
    group: ProcessGroup, tmp_path: Path
) -> None:
    """KTRDR_WORKER_MAX_MEMORY=300M: bars=1000000, hidden_units=256 fails naming the cap."""
    fleet = Fleet1(group, tmp_path, "training", KTRDR_WORKER_MAX_MEMORY="300M")

    operation_id = fleet.create("training", bars=1_000_000, hidden_units=256, epochs=2)
    failed = fleet.wait_for(operation_id, FINISHED)

    assert failed["status"] == "failed", failed
    assert "KTRDR_WORKER_MAX_MEMORY=300M" in failed["error"]
    fleet.assert_carries_on()


def test_a_job_killed_from_outside_fails_its_operation_and_the_worker_carries_on(
    group: ProcessGroup, tmp_path: Path
) -> None:
    """SIGKILL to the job process: its operation fails in one line; the worker goes on."""
    fleet = Fleet1(group, tmp_path, "backtest")
    operation_id = fleet.create("backtest", bars=1_000_000)
    pid = wait_until(fleet.job_pid, message=fleet.worker.process.output)

    os.kill(pid, signal.SIGKILL)
    failed = fleet.wait_for(operation_id, FINISHED)

    assert failed["status"] == "failed", failed
    assert failed["error"] == "the job process was killed (SIGKILL) from outside the worker"
    assert fleet.worker.process.alive()
    fleet.assert_carries_on()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _maps_numpy(pid: int) -> bool:
    return "site-packages/numpy/" in Path(f"/proc/{pid}/maps").read_text()


def test_the_worker_process_never_loads_numpy(group: ProcessGroup, tmp_path: Path) -> None:
    """After running a job, numpy is mapped in the job processes' server, not in the worker."""
    fleet = Fleet1(group, tmp_path, "backtest")
    done = fleet.wait_for(fleet.create("backtest", bars=500), FINISHED)

    worker_pid = fleet.worker.process.pid

    assert done["status"] == "completed", done
    assert not _maps_numpy(worker_pid)
    assert any(_maps_numpy(child) for child in _children(worker_pid))  # the fork server
