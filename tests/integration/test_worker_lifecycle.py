"""Workers and the backend as real processes: registration, restarts, SIGTERM, SIGKILL."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fleet import Fleet, backend_env, worker_env
from support.processes import ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A fleet whose processes are all killed at the end of the test."""
    with ProcessGroup(tmp_path) as group:
        yield Fleet(group, tmp_path)


def test_worker_started_before_the_backend_registers_once_it_is_up(fleet: Fleet) -> None:
    """A worker retries registration until the backend comes up, then appears in the list."""
    backend_port = free_port()
    worker = fleet.start_worker("training", backend_port=backend_port)
    worker.process.wait_for_output("registration with")  # at least one failed attempt
    assert worker.health()["registered"] is False

    backend = fleet.start_backend(port=backend_port)

    view = fleet.wait_listed(backend, worker.health()["worker_id"], status="idle")
    assert view["endpoint_url"] == worker.url
    assert wait_until(lambda: worker.health()["registered"]) is True


def test_workers_re_register_after_a_backend_restart(fleet: Fleet) -> None:
    """After a backend restart, workers re-register within two heartbeat intervals.

    The worker re-registers on the first heartbeat that gets 404 (unit-tested exactly in
    tests/unit/workers/test_base.py); here the bound is two 1 s intervals plus 5 s of
    slack for process scheduling on a loaded machine, counted from the moment the new
    backend answers.
    """
    interval_s = 1.0
    backend_port = free_port()
    env = backend_env(backend_port, KTRDR_WORKER_HEARTBEAT_INTERVAL=f"{interval_s}s")
    backend = fleet.start_backend(port=backend_port, env=env)
    workers = []
    for worker_type in ("training", "backtest"):
        port = free_port()
        wenv = worker_env(port, backend_port, KTRDR_WORKER_HEARTBEAT_INTERVAL=f"{interval_s}s")
        workers.append(
            fleet.start_worker(worker_type, backend_port=backend_port, env=wenv, port=port)
        )
    ids = [w.health()["worker_id"] for w in workers]
    for worker_id in ids:
        fleet.wait_listed(backend, worker_id)

    backend.process.signal(signal.SIGTERM)
    assert backend.process.wait_exit() == 0
    restarted = fleet.start_backend(port=backend_port, env=env)

    def all_listed() -> bool:
        listed = {item["worker_id"] for item in fleet.workers(restarted) or []}
        return listed >= set(ids)

    wait_until(
        all_listed,
        timeout_s=2 * interval_s + 5.0,
        message=lambda: f"not re-registered: {fleet.workers(restarted)}",
    )
    assert "re-registering" in workers[0].process.stderr()


def test_sigterm_exits_0_and_removes_the_worker_from_the_list(fleet: Fleet) -> None:
    """SIGTERM: the worker unregisters and exits 0 within its shutdown timeout (5 s here)."""
    backend = fleet.start_backend()
    worker = fleet.start_worker("backtest", backend_port=backend.port)
    worker_id = worker.health()["worker_id"]
    fleet.wait_listed(backend, worker_id)

    worker.process.signal(signal.SIGTERM)
    code = worker.process.wait_exit(timeout_s=5 + 10)

    assert code == 0, worker.process.output()
    assert fleet.worker_view(backend, worker_id) is None
    assert f"worker {worker_id} unregistered" in worker.process.stderr()


def test_sigterm_while_the_backend_is_down_still_exits_0(fleet: Fleet) -> None:
    """A worker stuck retrying registration exits 0 on SIGTERM instead of hanging."""
    worker = fleet.start_worker("training", backend_port=free_port())
    worker.process.wait_for_output("registration with")

    worker.process.signal(signal.SIGTERM)

    assert worker.process.wait_exit(timeout_s=5 + 10) == 0, worker.process.output()


def test_sigkilled_worker_becomes_unavailable_then_is_removed(fleet: Fleet) -> None:
    """A worker killed with SIGKILL is unavailable after 3 missed beats, removed after 2 s."""
    backend_port = free_port()
    env = backend_env(
        backend_port, KTRDR_WORKER_STALE_AFTER="3", KTRDR_WORKER_REMOVAL_THRESHOLD="2s"
    )
    backend = fleet.start_backend(port=backend_port, env=env)
    worker = fleet.start_worker("training", backend_port=backend_port)
    worker_id = worker.health()["worker_id"]
    fleet.wait_listed(backend, worker_id, status="idle")

    worker.process.signal(signal.SIGKILL)
    worker.process.wait_exit()

    view = fleet.wait_listed(backend, worker_id, status="unavailable")
    assert view["heartbeat_interval_s"] == 0.2
    wait_until(
        lambda: fleet.worker_view(backend, worker_id) is None,
        message=lambda: f"{worker_id} never removed: {fleet.workers(backend)}",
    )


def test_sigterm_stops_the_backend_with_exit_0(fleet: Fleet) -> None:
    """The backend shuts down cleanly on SIGTERM (its signal handling chained to uvicorn's)."""
    backend = fleet.start_backend()

    backend.process.signal(signal.SIGTERM)

    assert backend.process.wait_exit() == 0, backend.process.output()
    assert "Application shutdown complete" in backend.process.stderr()
