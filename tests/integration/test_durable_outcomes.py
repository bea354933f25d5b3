"""Nothing lost: outcomes survive a dead backend and a restarted worker (real processes).

A worker writes each outcome to its outbox (``<KTRDR_CHECKPOINT_DIR>/.outbox/<worker
id>/``) before reporting it and keeps it, with the operation's checkpoint, until the
backend acknowledges it. Here the backend is SIGKILLed for a whole minute while
operations finish, on SQLite and on PostgreSQL, and a worker holding an undelivered
outcome is itself stopped (SIGTERM) or killed (SIGKILL) and started again; every
operation must end completed, with the result an uninterrupted run computes.

Heartbeats every 0.2 s, an orphan timeout of 5 s (the backend gives workers that long
after it starts), checkpoints every 50 epochs. Waits poll with deadlines.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fleet import Fleet, Server, backend_env, operator_client, worker_env
from support.postgres import backend_database_env, fresh_database
from support.processes import ProcessGroup, free_port, wait_until
from support.reference import uninterrupted_training

from ktrdr.config import CheckpointSettings
from ktrdr.protocol import OperationStatus
from ktrdr.workers.checkpoints import CheckpointStore

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
#: How long the backend stays dead: the issue's one-minute upgrade.
OUTAGE_S = 60.0
#: A training run of several seconds (it must still run when the backend is killed).
TRAINING = {"bars": 4000, "hidden_units": 32, "epochs": 1000, "seed": 11}
FINISHED = {s.value for s in OperationStatus if s.finished}


def reference_result(directory: Path) -> Any:
    """What :data:`TRAINING` computes when nothing interrupts it (same seed)."""
    return uninterrupted_training(directory, TRAINING)


class Outage:
    """A backend on a fixed port and database, workers sharing a checkpoint directory."""

    def __init__(self, fleet: Fleet, directory: Path, database: dict[str, str]) -> None:
        self.fleet = fleet
        self.directory = directory
        self.database = database
        self.checkpoint_dir = directory / "checkpoints"
        self.port = free_port()
        self.backend: Server | None = None
        self.http = operator_client()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_backend(self) -> Server:
        env = backend_env(
            self.port,
            KTRDR_ORPHAN_TIMEOUT="5s",
            KTRDR_ORPHAN_CHECK_INTERVAL="0.3s",
            KTRDR_OPS_CACHE_TTL="0.1s",
            **self.database,
        )
        self.backend = self.fleet.start_backend(port=self.port, env=env)
        return self.backend

    def kill_backend(self) -> float:
        """SIGKILL the backend; the moment it died (monotonic)."""
        assert self.backend is not None
        self.backend.process.signal(signal.SIGKILL)
        self.backend.process.wait_exit()
        return time.monotonic()

    def start_worker(self, worker_id: str, port: int, *, wait: bool = True) -> Server:
        env = worker_env(
            port,
            self.port,
            KTRDR_WORKER_ID=worker_id,
            KTRDR_CHECKPOINT_DIR=str(self.checkpoint_dir),
            KTRDR_CHECKPOINT_EPOCH_INTERVAL="50",
        )
        return self.fleet.start_worker(
            "training", backend_port=self.port, port=port, env=env, wait=wait
        )

    def create(self) -> str:
        answer = self.http.post(self.url + OPS, json={"type": "training", "parameters": TRAINING})
        assert answer.status_code == 201, answer.text
        operation_id: str = answer.json()["id"]
        return operation_id

    def get(self, operation_id: str) -> dict[str, Any]:
        answer = self.http.get(f"{self.url}{OPS}/{operation_id}")
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        return view

    def logs(self) -> str:
        return "\n".join(child.output() for child in self.fleet.group.children)

    def wait_running(self, operation_ids: list[str], workers: list[Server]) -> None:
        """Until the workers run the operations (each for several seconds from then).

        The backend says running as soon as it dispatches; the worker's own /health
        says it has the operation.
        """

        def running() -> bool:
            current = {(w.health() or {}).get("current_operation_id") for w in workers}
            return current == set(operation_ids)

        wait_until(running, timeout_s=60, message=self.logs)

    def wait_finished(self, operation_ids: list[str]) -> list[dict[str, Any]]:
        def finished() -> list[dict[str, Any]] | None:
            views = [self.get(op) for op in operation_ids]
            return views if all(v["status"] in FINISHED for v in views) else None

        return wait_until(finished, timeout_s=60, message=self.logs)

    def outbox(self, worker_id: str) -> list[str]:
        """The operation ids in ``worker_id``'s outbox on disk."""
        directory = self.checkpoint_dir / ".outbox" / worker_id
        return sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []

    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore(settings=CheckpointSettings(dir=self.checkpoint_dir))


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Outage]]:
    """Makes the test's Outage over a database; every process killed at the end."""
    made: list[Outage] = []

    def make(database: dict[str, str]) -> Outage:
        made.append(Outage(Fleet(group, tmp_path), tmp_path, database))
        return made[-1]

    with ProcessGroup(tmp_path) as group:
        yield make
        for each in made:
            each.http.close()


def pending_on(worker: Server) -> list[str]:
    health = worker.health()
    return list(health["pending_outcomes"]) if health else []


def run_backend_outage(outage: Outage, tmp_path: Path) -> None:
    """Two operations finish while the backend is dead for OUTAGE_S: both completed after."""
    backend = outage.start_backend()
    workers = {f"training-outage-{n}": outage.start_worker(f"training-outage-{n}", free_port())
               for n in (1, 2)}  # fmt: skip
    for worker_id in workers:
        outage.fleet.wait_listed(backend, worker_id, status="idle")
    operations = [outage.create(), outage.create()]
    outage.wait_running(operations, list(workers.values()))

    died = outage.kill_backend()
    held = {
        worker_id: wait_until(
            lambda w=worker: pending_on(w), timeout_s=OUTAGE_S, message=outage.logs
        )
        for worker_id, worker in workers.items()
    }
    finished_at = time.monotonic() - died
    # The rest of the minute: the workers stay up, keep the outcomes (in memory, on disk,
    # with the checkpoints) and keep retrying.
    while time.monotonic() - died < OUTAGE_S:
        for worker_id, worker in workers.items():
            assert worker.process.alive(), worker.process.output()
            assert pending_on(worker) == held[worker_id]
            assert outage.outbox(worker_id) == held[worker_id]
            assert outage.checkpoints().exists(held[worker_id][0])
        time.sleep(1.0)  # the outage itself: nothing to wait for but time

    outage.start_backend()
    views = outage.wait_finished(operations)
    expected = reference_result(tmp_path / "reference")

    assert finished_at < OUTAGE_S  # both ended while the backend was dead
    assert sorted(op for ids in held.values() for op in ids) == sorted(operations)
    for view in views:
        assert view["status"] == "completed", view
        assert view["result"] == expected
        assert view["worker_id"] in workers
    for worker_id, worker in workers.items():
        wait_until(lambda w=worker: pending_on(w) == [], message=outage.logs)
        assert outage.outbox(worker_id) == []
        assert "delivered after" in worker.process.stderr()
    for operation_id in operations:
        wait_until(lambda op=operation_id: not outage.checkpoints().exists(op))


def test_a_backend_dead_for_a_minute_while_operations_finish_loses_no_result(
    outage: Callable[[dict[str, str]], Outage], tmp_path: Path
) -> None:
    """SQLite backend SIGKILLed for 60 s while two operations finish: after its restart
    both are completed with the uninterrupted run's result, outboxes and checkpoints gone.
    """
    run_backend_outage(outage({"KTRDR_DB_PATH": str(tmp_path / "ops.db")}), tmp_path)


@pytest.mark.postgres
def test_a_backend_on_postgres_dead_for_a_minute_loses_no_result(
    outage: Callable[[dict[str, str]], Outage], tmp_path: Path
) -> None:
    """The same minute-long outage with the backend on PostgreSQL: no result lost."""
    with fresh_database("ktrdr_outage") as url:
        on_postgres = outage(backend_database_env(url))
        run_backend_outage(on_postgres, tmp_path)
        on_postgres.fleet.group.stop_all()  # before the database is dropped


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_worker_restarted_with_an_undelivered_outcome_delivers_it(
    outage: Callable[[dict[str, str]], Outage], tmp_path: Path, stop: signal.Signals
) -> None:
    """The backend is dead when an operation ends; the worker is stopped (SIGTERM: the
    shutdown keeps the outcome on disk) or killed; started again with the same id, it
    lists the outcome at once and delivers it when the backend is back: completed with
    the uninterrupted run's result.
    """
    rig = outage({"KTRDR_DB_PATH": str(tmp_path / "ops.db")})
    backend = rig.start_backend()
    port = free_port()
    worker = rig.start_worker("training-restarted", port)
    rig.fleet.wait_listed(backend, "training-restarted", status="idle")
    operation_id = rig.create()
    rig.wait_running([operation_id], [worker])
    rig.kill_backend()
    wait_until(lambda: pending_on(worker) == [operation_id], timeout_s=60, message=rig.logs)

    worker.process.signal(stop)
    code = worker.process.wait_exit()
    on_disk = rig.outbox("training-restarted")
    again = rig.start_worker("training-restarted", port)
    listed_at_start = wait_until(lambda: pending_on(again), message=rig.logs)
    rig.start_backend()
    [view] = rig.wait_finished([operation_id])

    assert code == (0 if stop is signal.SIGTERM else -signal.SIGKILL)
    assert on_disk == [operation_id]
    assert listed_at_start == [operation_id]
    assert view["status"] == "completed", view
    assert view["worker_id"] == "training-restarted"
    assert view["result"] == reference_result(tmp_path / "reference")
    if stop is signal.SIGTERM:
        assert "delivered after the next start" in worker.process.stderr()
    assert "found 1 undelivered outcome(s) from an earlier run" in again.process.stderr()
    wait_until(lambda: rig.outbox("training-restarted") == [], message=rig.logs)
    wait_until(lambda: not rig.checkpoints().exists(operation_id))
