"""Operations end to end with real backend and worker processes on loopback.

Short intervals keep it fast: heartbeats every 0.2 s, an orphan timeout of 1.5 s
checked every 0.3 s, a 0.1 s read cache. Workers share one checkpoint directory, as
workers on one machine or volume do, so a resumed operation may run on any of them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from support.fleet import Fleet, Server, backend_env, operator_client, worker_env
from support.postgres import fresh_database
from support.processes import ProcessGroup, free_port, wait_until
from support.reference import uninterrupted_training

from ktrdr.config import CheckpointSettings
from ktrdr.protocol import OperationStatus
from ktrdr.workers.checkpoints import CheckpointStore

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
ORPHAN_TIMEOUT_S = 1.5
ORPHAN_CHECK_S = 0.3
#: Slack for process scheduling on a loaded machine (and the 0.1 s read cache).
MARGIN_S = 2.0
FINISHED = {s.value for s in OperationStatus if s.finished}
#: A training run long enough (about 1-2 s) to be interrupted mid-way.
LONG_TRAINING = {"bars": 4000, "hidden_units": 32, "epochs": 1000, "seed": 11}


class Ops:
    """The operations API of a running backend, and the fleet around it."""

    def __init__(self, fleet: Fleet, directory: Path) -> None:
        self.fleet = fleet
        self.directory = directory
        self.checkpoint_dir = directory / "shared-checkpoints"
        self.backend_port = free_port()
        self.backend: Server | None = None
        self.http = operator_client()

    def backend_env(self, **overrides: str) -> dict[str, str]:
        return backend_env(
            self.backend_port,
            KTRDR_ORPHAN_TIMEOUT=f"{ORPHAN_TIMEOUT_S}s",
            KTRDR_ORPHAN_CHECK_INTERVAL=f"{ORPHAN_CHECK_S}s",
            KTRDR_OPS_CACHE_TTL="0.1s",
            KTRDR_DB_PATH=str(self.directory / "ops.db"),
            **overrides,
        )

    def start_backend(self, **overrides: str) -> Server:
        env = self.backend_env(**overrides)
        self.backend = self.fleet.start_backend(port=self.backend_port, env=env)
        return self.backend

    def start_worker(self, worker_type: str, **overrides: str) -> tuple[Server, str]:
        """A worker on a free port, registered; returns it and its id."""
        port = free_port()
        env = worker_env(
            port,
            self.backend_port,
            KTRDR_CHECKPOINT_DIR=str(self.checkpoint_dir),
            KTRDR_CHECKPOINT_EPOCH_INTERVAL="50",
            **overrides,
        )
        worker = self.fleet.start_worker(
            worker_type, backend_port=self.backend_port, port=port, env=env
        )
        worker_id = worker.health()["worker_id"]
        assert self.backend is not None
        self.fleet.wait_listed(self.backend, worker_id, status="idle")
        return worker, worker_id

    @property
    def url(self) -> str:
        assert self.backend is not None
        return self.backend.url + OPS

    def create(self, kind: str, **parameters: Any) -> str:
        response = self.http.post(self.url, json={"type": kind, "parameters": parameters})
        assert response.status_code == 201, response.text
        operation_id: str = response.json()["id"]
        return operation_id

    def get(self, operation_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/{operation_id}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def post(self, operation_id: str, action: str) -> httpx.Response:
        return self.http.post(f"{self.url}/{operation_id}/{action}")

    def wait_for(
        self,
        operation_id: str,
        statuses: set[str],
        *,
        timeout_s: float = 60.0,
        condition: Any = None,
    ) -> dict[str, Any]:
        """Poll the operation until its status is one of ``statuses`` (and ``condition``)."""

        def reached() -> dict[str, Any] | None:
            view = self.get(operation_id)
            if view["status"] in statuses and (condition is None or condition(view)):
                return view
            return None

        def explain() -> str:
            logs = "\n".join(child.output() for child in self.fleet.group.children)
            return f"{operation_id} never reached {statuses}: {self.get(operation_id)}\n{logs}"

        return wait_until(reached, timeout_s=timeout_s, message=explain, interval_s=0.05)

    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore(settings=CheckpointSettings(dir=self.checkpoint_dir))


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    """A fleet on loopback (every process killed at the end) and a client for it."""
    with ProcessGroup(tmp_path) as group:
        ops = Ops(Fleet(group, tmp_path), tmp_path)
        yield ops
        ops.http.close()


def test_a_training_operation_completes_with_metrics(ops: Ops) -> None:
    """Created, dispatched to the training worker, completed with loss and accuracy."""
    stale = ops.checkpoint_dir / "old-operation" / "checkpoint.zip"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over")
    forty_days_ago = time.time() - 40 * 24 * 3600
    os.utime(stale, (forty_days_ago, forty_days_ago))
    ops.start_backend()
    _, worker_id = ops.start_worker("training")

    operation_id = ops.create("training", bars=500, epochs=30, seed=3)
    done = ops.wait_for(operation_id, FINISHED)

    assert done["status"] == "completed", done
    assert done["worker_id"] == worker_id
    result = done["result"]
    assert result["epochs"] == 30
    assert 0.0 <= result["accuracy"] <= 1.0
    assert 0.0 <= result["validation_accuracy"] <= 1.0
    assert result["final_loss"] < result["initial_loss"]
    # Deleted once the backend acknowledged the result (just after it is visible here).
    wait_until(lambda: not ops.checkpoints().exists(operation_id))
    assert not stale.exists()  # older than KTRDR_CHECKPOINT_MAX_AGE_DAYS: purged at start


def test_a_backtest_completes_with_trading_metrics_and_bad_csvs_fail_clearly(
    ops: Ops, tmp_path: Path
) -> None:
    """A backtest reports its metrics; bad CSVs fail naming file, line and column only."""
    ops.start_backend()
    ops.start_worker("backtest", KTRDR_DATA_DIR=str(tmp_path))
    bad_rows = tmp_path / "bad.csv"
    bad_rows.write_text("open,high,low,close,volume\n1,2,0.5,1.5,100\n1,2,0.5,abc,100\n")

    good = ops.create("backtest", bars=1000, seed=5)
    missing = ops.create("backtest", csv_path="nowhere.csv")
    garbled = ops.create("backtest", csv_path="bad.csv")
    views = {name: ops.wait_for(op, FINISHED) for name, op in
             (("good", good), ("missing", missing), ("garbled", garbled))}  # fmt: skip

    result = views["good"]["result"]
    assert views["good"]["status"] == "completed", views["good"]
    assert set(result) >= {"total_return", "sharpe", "max_drawdown", "win_rate", "trade_count"}
    assert result["trade_count"] > 0
    assert 0.0 <= result["max_drawdown"] <= 1.0
    assert 0.0 <= result["win_rate"] <= 1.0
    assert views["missing"]["status"] == "failed"
    assert views["missing"]["error"] == "csv_path 'nowhere.csv' does not exist in KTRDR_DATA_DIR"
    assert views["garbled"]["status"] == "failed"
    assert views["garbled"]["error"] == "bars file bad.csv, line 3, column 4 (close): not a number"


def test_a_sigkilled_worker_is_orphaned_then_resumed_elsewhere_to_the_same_result(
    ops: Ops, tmp_path: Path
) -> None:
    """SIGKILL mid-training with KTRDR_OPS_MAX_ATTEMPTS=1: failed by the orphan detector in
    time, naming the worker; resumed by hand on a new worker from the checkpoint; same
    result as an uninterrupted run.
    """
    ops.start_backend(KTRDR_OPS_MAX_ATTEMPTS="1")
    first, first_id = ops.start_worker("training")
    operation_id = ops.create("training", **LONG_TRAINING)
    ops.wait_for(
        operation_id,
        {"running"},
        condition=lambda view: (
            (view["progress"] or {}).get("details", {}).get("epoch", 0) > 50
            and ops.checkpoints().exists(operation_id)
        ),
    )

    first.process.signal(signal.SIGKILL)
    first.process.wait_exit()
    orphaned = ops.wait_for(
        operation_id, FINISHED, timeout_s=ORPHAN_TIMEOUT_S + ORPHAN_CHECK_S + MARGIN_S
    )
    saved_epoch = ops.checkpoints().load(operation_id, kind="training").step

    assert orphaned["status"] == "failed", orphaned
    assert f"worker {first_id} last reported it at" in orphaned["error"]
    assert "KTRDR_ORPHAN_TIMEOUT=1.5s" in orphaned["error"]
    assert 0 < saved_epoch < LONG_TRAINING["epochs"]
    assert saved_epoch % 50 == 0  # KTRDR_CHECKPOINT_EPOCH_INTERVAL=50 reached the job

    second, second_id = ops.start_worker("training")
    resumed = ops.post(operation_id, "resume")
    done = ops.wait_for(operation_id, FINISHED)

    assert resumed.status_code == 200
    assert resumed.json()["resume"] is True
    assert done["status"] == "completed", done
    assert done["worker_id"] == second_id != first_id
    assert f"operation {operation_id} started (training, resuming, attempt 2)" in (
        second.process.stderr()
    )
    assert done["result"] == uninterrupted_training(tmp_path / "reference", LONG_TRAINING)
    wait_until(lambda: not ops.checkpoints().exists(operation_id))


def test_sigterm_on_a_busy_worker_saves_a_checkpoint_and_queues_a_retry(ops: Ops) -> None:
    """SIGTERM mid-training: the worker saves a checkpoint, reports, and exits 0; the
    attempt is lost with its worker, so the operation waits for the next one (pending).
    """
    ops.start_backend()
    worker, worker_id = ops.start_worker("training")
    operation_id = ops.create("training", **{**LONG_TRAINING, "epochs": 5000})
    ops.wait_for(operation_id, {"running"}, condition=lambda view: view["progress"] is not None)

    worker.process.signal(signal.SIGTERM)
    code = worker.process.wait_exit()
    view = ops.wait_for(operation_id, {"pending"}, timeout_s=10)

    assert code == 0, worker.process.output()
    assert (view["attempt"], view["lost_attempts"], view["resume"]) == (1, 1, True), view
    assert view["error"].startswith(f"attempt 1 lost: worker {worker_id} stopped it (")
    assert "checkpoint saved" in view["error"]
    assert "(shutdown)" in view["error"]
    assert view["worker_id"] == worker_id
    checkpoint = ops.checkpoints().load(operation_id, kind="training")
    assert 0 < checkpoint.step < 5000


def test_resume_without_a_checkpoint_fails_clearly_and_finished_cancels_are_409(ops: Ops) -> None:
    """Resuming an operation that never ran fails with the reason; cancelling it again is 409."""
    ops.start_backend()
    operation_id = ops.create("training", epochs=5)  # no worker yet: stays pending
    cancelled = ops.post(operation_id, "cancel")
    again = ops.post(operation_id, "cancel")
    _, worker_id = ops.start_worker("training")

    assert ops.post(operation_id, "resume").status_code == 200
    view = ops.wait_for(operation_id, FINISHED)

    assert cancelled.json()["status"] == "cancelled"
    assert again.status_code == 409
    assert again.json()["error"] == "invalid_transition"
    assert view["status"] == "failed"
    assert view["worker_id"] == worker_id
    assert view["error"].startswith(f"cannot resume: no checkpoint for operation {operation_id}")


def test_operations_survive_a_backend_restart(ops: Ops) -> None:
    """Same SQLite file: finished results and pending work are still there after a restart."""
    backend = ops.start_backend()
    worker, _ = ops.start_worker("backtest")
    finished = ops.create("backtest", bars=500, seed=2)
    before = ops.wait_for(finished, FINISHED)
    worker.process.signal(signal.SIGTERM)
    assert worker.process.wait_exit() == 0
    waiting = ops.create("backtest", bars=500, seed=4)

    backend.process.signal(signal.SIGTERM)
    assert backend.process.wait_exit() == 0
    ops.start_backend()
    after = ops.get(finished)
    still_pending = ops.get(waiting)
    ops.start_worker("backtest")
    done = ops.wait_for(waiting, FINISHED)

    assert after == before
    assert after["status"] == "completed"
    assert still_pending["status"] == "pending"
    assert done["status"] == "completed", done


@pytest.fixture
def postgres_database() -> Iterator[sa.URL]:
    """A new, empty PostgreSQL database for this test (dropped afterwards)."""
    with fresh_database("ktrdr_e2e") as url:
        yield url


@pytest.mark.postgres
def test_the_backend_on_postgres_runs_operations_and_keeps_them(
    ops: Ops, postgres_database: sa.URL
) -> None:
    """KTRDR_DB_ENGINE=postgresql: schema created at startup, operations run and persist."""
    url = postgres_database
    database = {
        "KTRDR_DB_ENGINE": "postgresql",
        "KTRDR_DB_HOST": url.host or "127.0.0.1",
        "KTRDR_DB_PORT": str(url.port or 5432),
        "KTRDR_DB_NAME": url.database or "",
        "KTRDR_DB_USER": url.username or "postgres",
        "KTRDR_DB_PASSWORD": url.password or "unused-with-trust-auth",
    }
    backend = ops.start_backend(**database)
    ops.start_worker("backtest")

    operation_id = ops.create("backtest", bars=500, seed=9)
    done = ops.wait_for(operation_id, FINISHED)
    backend.process.signal(signal.SIGTERM)
    assert backend.process.wait_exit() == 0
    ops.start_backend(**database)

    assert done["status"] == "completed", done
    assert ops.get(operation_id) == done
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT status FROM operations")).scalars().all()
    engine.dispose()
    assert stored == ["completed"]
    assert not (ops.directory / "ops.db").exists()


def test_backend_start_with_an_unreachable_database_exits_1(ops: Ops) -> None:
    """A database that cannot be reached stops the backend at startup with the variables."""
    env = ops.backend_env(
        KTRDR_DB_ENGINE="postgresql",
        KTRDR_DB_HOST="127.0.0.1",
        KTRDR_DB_PORT=str(free_port()),
        KTRDR_DB_PASSWORD="hunter2-not-shown",
    )
    backend = ops.fleet.start_backend(port=ops.backend_port, env=env, wait=False)

    code = backend.process.wait_exit()

    stderr = backend.process.stderr()
    assert code == 1, backend.process.output()
    assert "KTRDR_DB_HOST" in stderr
    assert "hunter2-not-shown" not in stderr
    assert "Traceback" not in stderr


def test_a_worker_with_an_unwritable_checkpoint_dir_exits_1_at_startup(
    ops: Ops, tmp_path: Path
) -> None:
    """KTRDR_CHECKPOINT_DIR that cannot be created: exit 1 naming it, before serving."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = worker_env(
        free_port(), ops.backend_port, KTRDR_CHECKPOINT_DIR=str(blocker / "checkpoints")
    )
    worker = ops.fleet.start_worker("training", backend_port=ops.backend_port, env=env, wait=False)

    code = worker.process.wait_exit()

    stderr = worker.process.stderr()
    assert code == 1, worker.process.output()
    assert "KTRDR_CHECKPOINT_DIR=" in stderr
    assert "not writable" in stderr
    assert "Traceback" not in stderr
    assert "listening on" not in stderr
