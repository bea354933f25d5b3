"""Attempts with real processes: fencing, automatic retries, timeouts and stalls.

A real backend (SQLite), real training workers sharing one checkpoint directory, real
signals: a worker paused past the orphan timeout (SIGSTOP) while its operation is
retried on another one, a worker killed (SIGKILL) mid-training, a job frozen while its
worker keeps heartbeating. Short intervals keep it fast: heartbeats every 0.2 s, an
orphan timeout of 1.5 s checked every 0.3 s.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fleet import TOKEN, Fleet, Server, backend_env, operator_client, worker_env
from support.processes import ProcessGroup, free_port, wait_until
from support.tcp_proxy import TcpProxy

from ktrdr.config import CheckpointSettings
from ktrdr.protocol import OperationStatus
from ktrdr.workers.checkpoints import FENCE_FILE, CheckpointStore

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
WORKERS = "/api/v1/workers"
FINISHED = {s.value for s in OperationStatus if s.finished}
#: A training run long enough (a few seconds) to be paused or killed part-way.
LONG_TRAINING = {"bars": 4000, "hidden_units": 32, "epochs": 2500, "seed": 11}
#: A heartbeat's JSON body as the worker sends it (pydantic, no spaces): its status.
HEARTBEAT_STATUS = re.compile(rb'\{"status":"(idle|busy|stopping)"')


class Fixture:
    """A backend, workers on loopback sharing a checkpoint directory, an operator client."""

    def __init__(self, group: ProcessGroup, directory: Path) -> None:
        self.fleet = Fleet(group, directory)
        self.directory = directory
        self.checkpoint_dir = directory / "shared-checkpoints"
        self.backend_port = free_port()
        self.backend: Server | None = None
        self.http = operator_client()

    def start_backend(self, **overrides: str) -> Server:
        settings = {
            "KTRDR_ORPHAN_TIMEOUT": "1.5s",
            "KTRDR_ORPHAN_CHECK_INTERVAL": "0.3s",
            "KTRDR_OPS_CACHE_TTL": "0",
            "KTRDR_DB_PATH": str(self.directory / "ops.db"),
        }
        env = backend_env(self.backend_port, **{**settings, **overrides})
        self.backend = self.fleet.start_backend(port=self.backend_port, env=env)
        return self.backend

    def start_worker(self, *, backend_port: int | None = None) -> tuple[Server, str]:
        """A training worker (talking to ``backend_port``, the backend's by default)."""
        port = free_port()
        env = worker_env(
            port,
            backend_port or self.backend_port,
            KTRDR_CHECKPOINT_DIR=str(self.checkpoint_dir),
            KTRDR_CHECKPOINT_EPOCH_INTERVAL="50",
        )
        worker = self.fleet.start_worker(
            "training", backend_port=self.backend_port, port=port, env=env
        )
        worker_id: str = worker.health()["worker_id"]
        assert self.backend is not None
        self.fleet.wait_listed(self.backend, worker_id, status="idle")
        return worker, worker_id

    @property
    def url(self) -> str:
        assert self.backend is not None
        return self.backend.url

    def create(self, **body: Any) -> str:
        response = self.http.post(self.url + OPS, json={"type": "training", **body})
        assert response.status_code == 201, response.text
        operation_id: str = response.json()["id"]
        return operation_id

    def get(self, operation_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}{OPS}/{operation_id}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def wait_for(self, operation_id: str, condition: Any, *, timeout_s: float = 90) -> Any:
        """Poll the operation until ``condition(view)``; explains itself on timeout."""

        def reached() -> Any:
            view = self.get(operation_id)
            return view if condition(view) else None

        def explain() -> str:
            logs = "\n".join(child.output() for child in self.fleet.group.children)
            return f"{operation_id}: {self.get(operation_id)}\n{logs}"

        return wait_until(reached, timeout_s=timeout_s, message=explain, interval_s=0.05)

    def uninterrupted(self, parameters: dict[str, Any]) -> Any:
        """The result of the same run on this fleet, start to finish without a fault
        (the reference: same seed, same processes, same environment).
        """
        operation_id = self.create(parameters=parameters)
        done = self.wait_for(operation_id, lambda view: view["status"] in FINISHED)
        assert (done["status"], done["attempt"], done["lost_attempts"]) == ("completed", 1, 0)
        return done["result"]

    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore(settings=CheckpointSettings(dir=self.checkpoint_dir))

    def past_a_checkpoint(self, operation_id: str) -> Any:
        """Wait until the operation runs past epoch 50 with a checkpoint on disk."""

        def far_enough(view: dict[str, Any]) -> bool:
            epoch = ((view.get("progress") or {}).get("details") or {}).get("epoch", 0)
            return (
                view["status"] == "running"
                and epoch > 50
                and self.checkpoints().exists(operation_id)
            )

        return self.wait_for(operation_id, far_enough)


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[Fixture]:
    """Processes killed at the end, whatever happened."""
    with ProcessGroup(tmp_path) as group:
        fixture = Fixture(group, tmp_path)
        yield fixture
        fixture.http.close()


def test_a_paused_worker_is_retried_elsewhere_and_its_late_run_never_counts(fx: Fixture) -> None:
    """SIGSTOP past the orphan timeout: attempt 2 runs on the other worker; SIGCONT: the
    paused worker is told its attempt is stale and is idle within three heartbeats, never
    reports it; one outcome, equal to an uninterrupted run's with the same seed.
    """
    backend = fx.start_backend()
    with TcpProxy("127.0.0.1", backend.port, tap=True) as tap:
        paused, paused_id = fx.start_worker(backend_port=tap.port)
        operation_id = fx.create(parameters=LONG_TRAINING)
        fx.past_a_checkpoint(operation_id)
        _, other_id = fx.start_worker()

        paused.process.signal(signal.SIGSTOP)
        retried = fx.wait_for(
            operation_id, lambda view: view["status"] == "running" and view["attempt"] == 2
        )
        said_before = len(tap.client_chunks())
        paused.process.signal(signal.SIGCONT)
        wait_until(lambda: (paused.health() or {}).get("status") == "idle", timeout_s=30)
        done = fx.wait_for(operation_id, lambda view: view["status"] in FINISHED)
        said = tap.client_chunks()
        reference = fx.uninterrupted(LONG_TRAINING)  # while both workers can reach the backend

    beats = [
        match.group(1).decode()
        for chunk in said[said_before:]
        for match in HEARTBEAT_STATUS.finditer(chunk)
    ]
    reports = [c for c in said if f"{OPS}/{operation_id}/report".encode() in c]
    assert (retried["worker_id"], retried["lost_attempts"]) == (other_id, 1)
    assert "idle" in beats[:3], beats  # the stale worker is idle within three heartbeats
    assert reports == []  # it never reported its stale attempt
    assert (done["status"], done["attempt"], done["worker_id"]) == ("completed", 2, other_id)
    assert done["result"] == reference
    assert backend.process.stderr().count(f"operation {operation_id} completed") == 1
    stale = paused.process.stderr()
    # Told by a heartbeat's answer, or by the checkpoint attempt 2 had claimed meanwhile
    # (its job, a process of its own, ran on while the worker was paused).
    told = f"operation {operation_id} attempt 1 is no longer current" in stale
    fenced = f"attempt 1 of operation {operation_id} may not touch its checkpoint" in stale
    assert told or fenced, stale
    assert f"operation {operation_id} attempt 1 stopped; not reported" in stale
    fence = (fx.checkpoint_dir / operation_id / FENCE_FILE).read_text()
    assert int(fence) == 2  # attempt 2 owned the checkpoint to the end
    assert not fx.checkpoints().exists(operation_id)
    assert paused_id != other_id


def test_a_sigkilled_worker_is_retried_from_its_checkpoint_at_attempt_2(fx: Fixture) -> None:
    """SIGKILL mid-training: orphaned, queued again by itself, completed on the other
    worker as attempt 2 from the checkpoint, with the uninterrupted run's result.
    """
    fx.start_backend()
    first, first_id = fx.start_worker()
    operation_id = fx.create(parameters=LONG_TRAINING)
    fx.past_a_checkpoint(operation_id)
    second, second_id = fx.start_worker()

    first.process.signal(signal.SIGKILL)
    first.process.wait_exit()
    done = fx.wait_for(operation_id, lambda view: view["status"] in FINISHED)

    assert (done["status"], done["attempt"], done["lost_attempts"]) == ("completed", 2, 1)
    assert done["worker_id"] == second_id != first_id
    log = second.process.stderr()
    assert f"operation {operation_id} started (training, retrying, attempt 2)" in log
    resumed = re.search(
        rf"operation {operation_id} attempt 2 resumes from its checkpoint at step (\d+)", log
    )
    assert resumed is not None, log
    assert int(resumed.group(1)) >= 50
    assert done["result"] == fx.uninterrupted(LONG_TRAINING)


def test_an_operation_past_its_timeout_is_failed_and_its_job_stopped(fx: Fixture) -> None:
    """timeout_s=1 on a long training: failed "timed out after 1 seconds", not retried;
    the worker kills the job at once and is idle again.
    """
    fx.start_backend()
    worker, worker_id = fx.start_worker()
    operation_id = fx.create(parameters={**LONG_TRAINING, "epochs": 10_000}, timeout_s=1)

    failed = fx.wait_for(operation_id, lambda view: view["status"] in FINISHED)
    wait_until(lambda: (worker.health() or {}).get("status") == "idle", timeout_s=30)

    assert failed["status"] == "failed"
    assert failed["error"].startswith(
        f"timed out after 1 seconds (attempt 1 on worker {worker_id}; the limit is the "
        "operation's timeout_s, else KTRDR_OPS_DEFAULT_TIMEOUT)"
    )
    assert (failed["attempt"], failed["lost_attempts"], failed["timeout_s"]) == (1, 0, 1)
    assert worker.health()["job_pid"] is None
    assert f"operation {operation_id} attempt 1 is no longer current" in worker.process.stderr()


def test_a_frozen_job_is_failed_as_stalled_while_its_worker_heartbeats(fx: Fixture) -> None:
    """The job's process frozen (SIGSTOP) while the worker heartbeats on: failed as stalled
    after KTRDR_OPS_STALL_TIMEOUT, the frozen job killed, the worker idle again.
    """
    fx.start_backend(KTRDR_OPS_STALL_TIMEOUT="2s")
    worker, worker_id = fx.start_worker()
    operation_id = fx.create(parameters={**LONG_TRAINING, "epochs": 10_000})
    fx.wait_for(operation_id, lambda view: view["progress"] is not None)
    job_pid = worker.health()["job_pid"]

    os.kill(job_pid, signal.SIGSTOP)
    failed = fx.wait_for(operation_id, lambda view: view["status"] in FINISHED)
    wait_until(lambda: (worker.health() or {}).get("status") == "idle", timeout_s=30)

    assert failed["status"] == "failed"
    assert failed["error"].startswith("stalled: its progress has not changed since ")
    assert "longer than KTRDR_OPS_STALL_TIMEOUT=2s) on worker" in failed["error"]
    assert "(attempt 1); the job was stopped" in failed["error"]
    assert worker_id in failed["error"]
    wait_until(lambda: not _alive(job_pid), timeout_s=30)  # killed although frozen


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Accepting:
    """An HTTP server in this process that plays fake workers: every start is accepted
    (202); the path of each request is recorded.
    """

    def __init__(self) -> None:
        self.paths: list[str] = []
        recorded = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                recorded.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def accepting() -> Iterator[Accepting]:
    """The fake workers' server, stopped at the end."""
    server = Accepting()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _register(http: httpx.Client, backend: Server, worker_id: str, endpoint: str) -> str:
    """Register a fake worker at ``endpoint`` (heartbeats due every minute); its credential."""
    response = http.post(
        backend.url + WORKERS + "/register",
        json={
            "worker_id": worker_id,
            "worker_type": "training",
            "endpoint_url": endpoint,
            "heartbeat_interval_s": 60,
            "config_fingerprint": "fp",
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code in (200, 201), response.text
    credential: str = response.json()["credential"]
    return credential


def test_attempts_lost_to_unreachable_workers_fail_after_max_attempts(fx: Fixture) -> None:
    """KTRDR_OPS_MAX_ATTEMPTS=2 and two registered workers nobody listens for: attempt 1
    and attempt 2 are lost at dispatch, then the operation fails naming both and the variable.
    """
    backend = fx.start_backend(KTRDR_OPS_MAX_ATTEMPTS="2")
    with httpx.Client(timeout=10) as http:
        for name in ("ghost-a", "ghost-b"):
            _register(http, backend, name, f"http://127.0.0.1:9/{name}")  # nobody listens
    operation_id = fx.create(parameters={"epochs": 1})

    failed = fx.wait_for(operation_id, lambda view: view["status"] in FINISHED)

    assert failed["status"] == "failed"
    assert (failed["attempt"], failed["lost_attempts"]) == (2, 2)
    assert failed["error"].startswith("attempt 2 lost: worker ghost-")
    assert "was unreachable (ConnectError) at dispatch" in failed["error"]
    assert failed["error"].endswith(
        "failed after 2 lost attempts (attempts 1-2; KTRDR_OPS_MAX_ATTEMPTS=2); "
        "resume it to continue from its last checkpoint"
    )


def test_reports_and_heartbeats_of_a_non_current_attempt_are_409_and_change_nothing(
    fx: Fixture, accepting: Accepting
) -> None:
    """An attempt that is no longer current, one that does not exist, an operation the
    worker does not run: each a 409 stale_attempt naming the operation and its current
    attempt, and the operation is unchanged; the current attempt's heartbeat is 200.
    """
    backend = fx.start_backend(KTRDR_ORPHAN_TIMEOUT="120s")
    with httpx.Client(timeout=10) as http:
        first = _register(http, backend, "w-first", accepting.url + "/first")
        operation_id = fx.create(parameters={"epochs": 1})
        fx.wait_for(operation_id, lambda view: view["worker_id"] == "w-first")
        # w-first gives attempt 1 up (as on SIGTERM): attempt 2 goes to w-second.
        gave_up = http.post(
            f"{backend.url}{OPS}/{operation_id}/report",
            json={"worker_id": "w-first", "attempt": 1, "status": "cancelled"},
            headers={"Authorization": f"Bearer {first}"},
        )
        second = _register(http, backend, "w-second", accepting.url + "/second")
        fx.wait_for(operation_id, lambda view: view["attempt"] == 2 and view["status"] == "running")
        before = fx.get(operation_id)

        def beat(credential: str, worker_id: str, attempt: int) -> httpx.Response:
            return http.post(
                f"{backend.url}{WORKERS}/{worker_id}/heartbeat",
                json={"status": "busy", "current_operation_id": operation_id, "attempt": attempt},
                headers={"Authorization": f"Bearer {credential}"},
            )

        def report(credential: str, worker_id: str, attempt: int) -> httpx.Response:
            return http.post(
                f"{backend.url}{OPS}/{operation_id}/report",
                json={"worker_id": worker_id, "attempt": attempt, "status": "completed",
                      "result": {"forged": True}},
                headers={"Authorization": f"Bearer {credential}"},
            )  # fmt: skip

        refused = {
            "heartbeat, no longer current": beat(first, "w-first", 1),
            "heartbeat, unknown attempt": beat(second, "w-second", 3),
            "report, no longer current": report(first, "w-first", 1),
            "report, unknown attempt": report(second, "w-second", 7),
            "report, not its operation": report(first, "w-first", 2),
        }
        after = fx.get(operation_id)
        current = beat(second, "w-second", 2)

    assert gave_up.status_code == 200, gave_up.text
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 409)
    details = {name: r.json()["detail"] for name, r in refused.items()}
    assert {r.json()["error"] for r in refused.values()} == {"stale_attempt"}
    where = "the current attempt is 2 (running on worker w-second)"
    assert details["heartbeat, no longer current"] == (
        f"operation {operation_id}: attempt 1 is no longer current; {where}"
    )
    assert details["report, unknown attempt"] == (
        f"operation {operation_id}: attempt 7 does not exist; {where}"
    )
    assert details["report, not its operation"] == (
        f"operation {operation_id}: attempt 2 is not worker w-first's; {where}"
    )
    assert all(detail.endswith(where) for detail in details.values())
    assert after == before  # nothing changed
    assert current.status_code == 200
    assert accepting.paths == ["/first/operations", "/second/operations"]
