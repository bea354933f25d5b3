"""The next operation handed to a worker in the answer to its report, with real processes.

A real backend and real training workers. Operations are queued before the worker
registers, so the first goes out as a start request and every later one can only
reach the worker through a report's answer: the backend's dispatch metric by outcome
says which way each went. A cancel reaches a handed-off operation; a worker that
begins stopping while its report (asking for more) is on its way gives the handed-off
operation back at once, pending again with its attempt given back; a worker that
does not ask is served by the dispatcher's rounds.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fleet import TOKEN, Fleet, Server, backend_env, operator_client, worker_env
from support.processes import ProcessGroup, free_port, wait_until
from support.reference import uninterrupted_training
from support.scrape import Scrape
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
SCRAPE_TOKEN = "test-scrape-token-not-a-secret"
FINISHED = {"completed", "failed", "cancelled"}
DISPATCHED = "ktrdr_dispatch_latency_seconds_count"
#: Milliseconds of work each (seeds differ, so do the results).
SMALL = [{"bars": 100, "hidden_units": 1, "epochs": 1, "seed": seed} for seed in range(1, 6)]
#: Minutes of work if nobody stops it.
ENDLESS = {"bars": 20_000, "hidden_units": 256, "epochs": 10_000, "seed": 1}


class Run:
    """One backend (its worker starts later, see :meth:`worker`) and an operator client."""

    def __init__(self, fleet: Fleet, directory: Path) -> None:
        self.fleet = fleet
        self.directory = directory
        port = free_port()
        env = backend_env(
            port, KTRDR_DB_PATH=str(directory / "ops.db"), KTRDR_METRICS_TOKEN=SCRAPE_TOKEN
        )
        self.backend = fleet.start_backend(port=port, env=env)
        self.http = operator_client()

    def worker(self, name: str, backend_url: str | None = None, **env: str) -> Server:
        """A training worker (its own checkpoint directory), listed idle once registered
        unless its backend URL is not the backend's own.
        """
        port = free_port()
        environment = worker_env(
            port,
            self.backend.port,
            KTRDR_WORKER_ID=name,
            KTRDR_CHECKPOINT_DIR=str(self.directory / "ck"),
            **env,
        )
        if backend_url is not None:
            environment["KTRDR_WORKER_BACKEND_URL"] = backend_url
        return self.fleet.start_worker(
            "training", backend_port=self.backend.port, port=port, env=environment
        )

    def create(self, parameters: dict[str, Any]) -> str:
        response = self.http.post(
            self.backend.url + OPS, json={"type": "training", "parameters": parameters}
        )
        assert response.status_code == 201, response.text
        identifier: str = response.json()["id"]
        return identifier

    def get(self, operation_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.http.get(f"{self.backend.url}{OPS}/{operation_id}").json()
        return view

    def wait(self, operation_id: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            view = self.get(operation_id)
            return view if check(view) else None

        def explain() -> str:
            logs = "\n".join(child.output() for child in self.fleet.group.children)
            return f"{operation_id}: {self.get(operation_id)}\n{logs}"

        return wait_until(reached, timeout_s=90, message=explain, interval_s=0.05)

    def finished(self, operation_id: str) -> dict[str, Any]:
        return self.wait(operation_id, lambda view: view["status"] in FINISHED)

    def dispatched(self, outcome: str) -> float:
        response = httpx.get(
            self.backend.url + "/metrics",
            headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return Scrape(response.text).total(DISPATCHED, operation_type="training", outcome=outcome)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    with ProcessGroup(tmp_path) as group:
        started = Run(Fleet(group, tmp_path), tmp_path)
        yield started
        started.http.close()


def test_queued_operations_reach_the_worker_in_its_reports_answers(
    run: Run, tmp_path: Path
) -> None:
    """Five operations queued before the worker registers: the first is started by a
    start request, the other four are handed over in report answers; each completes
    once, as its first attempt, with the result an uninterrupted run computes.
    """
    ids = [run.create(parameters) for parameters in SMALL]
    worker = run.worker("training-handoff-1")
    finals = [run.finished(operation_id) for operation_id in ids]

    assert [view["status"] for view in finals] == ["completed"] * len(ids), finals
    assert [view["attempt"] for view in finals] == [1] * len(ids)
    assert {view["worker_id"] for view in finals} == {"training-handoff-1"}
    for parameters, view in zip(SMALL, finals, strict=True):
        assert view["result"] == uninterrupted_training(tmp_path / "ref", parameters)
    assert run.dispatched("started") == 1
    assert run.dispatched("handed_off") == len(ids) - 1
    backend_log = run.backend.process.stderr()
    worker_log = worker.process.stderr()
    for operation_id in ids:
        assert worker_log.count(f"operation {operation_id} ended: completed") == 1
        assert backend_log.count(f"operation {operation_id} completed") == 1
    for operation_id in ids[1:]:
        assert f"operation {operation_id} (training) attempt 1 started on worker " in backend_log
        assert "handed over in the answer to its report" in backend_log


def test_a_handed_off_operation_is_cancelled_and_refuses_a_second_start(run: Run) -> None:
    """The endless operation handed over after the first one is cancelled by its
    operator; meanwhile the worker answers a second start request busy (what releases
    an operation a dispatcher round would send it).
    """
    first = run.create(SMALL[0])
    endless = run.create(ENDLESS)
    worker = run.worker("training-handoff-2")
    run.finished(first)
    run.wait(endless, lambda view: view["status"] == "running")
    wait_until(lambda: worker.health()["current_operation_id"] == endless, timeout_s=60)

    second = httpx.post(
        worker.url + "/operations",
        json={"operation_id": "another-one", "operation_type": "training", "attempt": 1},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    cancelled = run.http.post(f"{run.backend.url}{OPS}/{endless}/cancel")
    final = run.finished(endless)
    follower = run.create(SMALL[1])
    after = run.finished(follower)

    assert second.status_code == 409, second.text
    assert f"busy with operation {endless}" in second.text
    assert run.dispatched("handed_off") == 1
    assert cancelled.status_code == 200, cancelled.text
    assert (final["status"], final["result"]) == ("cancelled", None)
    assert after["status"] == "completed"
    assert f"operation {endless}: cancellation requested" in worker.process.stderr()


def test_a_worker_stopping_while_it_asks_gives_the_operation_back(run: Run) -> None:
    """SIGTERM reaches the worker while its report, asking for more, is on its way (a
    proxy holds it): the backend hands the next operation over, the stopping worker
    gives it back at once, and it is pending again with its attempt given back, so the
    next worker runs it as attempt 1 without waiting for the orphan timeout.
    """
    first = run.create(SMALL[0])
    second = run.create(SMALL[1])
    reports = re.compile(rb"POST /api/v1/operations/[0-9a-f]+/report ")

    def hold(chunk: bytes) -> float:
        if reports.match(chunk):
            return 1.0  # the report: long enough to deliver the signal meanwhile
        return 3.0 if b'"stopping"' in chunk else 0.0  # its stopping heartbeat comes later

    with TcpProxy("127.0.0.1", run.backend.port, latency=hold, tap=True) as proxy:
        worker = run.worker(
            "training-handoff-3",
            backend_url=f"http://127.0.0.1:{proxy.port}",
            KTRDR_WORKER_SHUTDOWN_TIMEOUT="15s",
            # Heartbeats far enough apart that the held one does not make it unavailable.
            KTRDR_WORKER_HEARTBEAT_INTERVAL="2s",
        )
        wait_until(
            lambda: any(reports.match(chunk) for chunk in proxy.client_chunks()), timeout_s=60
        )
        worker.process.signal(signal.SIGTERM)
        assert worker.process.wait_exit(timeout_s=60) == 0, worker.process.output()
    given_back = run.wait(second, lambda view: view["status"] == "pending")
    worker_log = worker.process.stderr()
    backend_log = run.backend.process.stderr()

    assert run.get(first)["status"] == "completed"
    assert (given_back["attempt"], given_back["lost_attempts"]) == (0, 0)
    assert given_back["worker_id"] is None
    assert run.dispatched("handed_off") == 1
    assert f"operation {second} (attempt 1), handed over with a report's answer" in worker_log
    assert f"operation {second} given back to the backend" in worker_log
    assert f"operation {second} could not start on worker training-handoff-3" in backend_log
    run.worker("training-handoff-4")
    final = run.finished(second)
    assert (final["status"], final["attempt"], final["worker_id"]) == (
        "completed",
        1,
        "training-handoff-4",
    )
