"""The backend app factory: injected collaborators, background loops in the lifespan."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from support.backend import OPERATOR_TOKEN, make_backend, open_store

from ktrdr.api import WorkerRegistry, utc_now
from ktrdr.api.app import MAX_SWEEP_INTERVAL, MIN_SWEEP_INTERVAL, sweep_interval
from ktrdr.api.store import OperationStore
from ktrdr.config import BackendConfig, validate_all
from ktrdr.protocol import OperationStatus, OperationType, RegisterRequest

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def _config(**environ: str) -> BackendConfig:
    """A backend configuration with the test operator token (the one ``client()`` sends)."""
    return validate_all(
        "backend", {"KTRDR_AUTH_OPERATOR_TOKEN": OPERATOR_TOKEN, **environ}, env_file=None
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OperationStore]:
    """A fresh SQLite store, closed after the test."""
    store = open_store(tmp_path)
    yield store
    store.close()


def test_utc_now_is_aware_utc() -> None:
    """The production clock returns timezone-aware UTC datetimes."""
    assert utc_now().utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        ("10s", datetime.timedelta(seconds=5)),
        ("0.05s", MIN_SWEEP_INTERVAL),
        ("20s", MAX_SWEEP_INTERVAL),
    ],
)
def test_sweep_interval_is_half_the_heartbeat_within_bounds(
    interval: str, expected: datetime.timedelta
) -> None:
    """The liveness sweep runs every half heartbeat, clamped to [50 ms, 5 s]."""
    config = _config(KTRDR_WORKER_HEARTBEAT_INTERVAL=interval)

    assert sweep_interval(config) == expected


@pytest.mark.anyio
async def test_lifespan_sweeps_dead_workers_without_any_request(store: OperationStore) -> None:
    """While the app runs, its background sweep removes a silent worker on its own."""
    registry = WorkerRegistry()
    config = _config(
        KTRDR_WORKER_HEARTBEAT_INTERVAL="0.1s",
        KTRDR_WORKER_STALE_AFTER="1",
        KTRDR_WORKER_REMOVAL_THRESHOLD="1s",
    )
    backend = make_backend(store, config, registry=registry)
    registry.register(
        RegisterRequest(
            worker_id="w",
            worker_type=OperationType.BACKTEST,
            endpoint_url="http://127.0.0.1:9/w",
            heartbeat_interval_s=0.1,
            config_fingerprint="fp",
        ),
        now=backend.clock(),
    )
    backend.clock.advance(2)

    async with backend.app.router.lifespan_context(backend.app):
        with anyio.fail_after(10):
            while "w" in registry:
                await anyio.sleep(0.01)

    assert len(registry) == 0


@pytest.mark.anyio
async def test_lifespan_dispatches_a_created_operation_to_an_idle_worker(
    store: OperationStore,
) -> None:
    """With the app running, a created operation reaches the idle worker without any tick."""
    config = _config(KTRDR_AUTH_WORKER_TOKEN="t" * 16)
    backend = make_backend(store, config)
    backend.register("w1")

    async with backend.app.router.lifespan_context(backend.app), backend.client() as client:
        created = (await client.post("/api/v1/operations", json={"type": "training"})).json()
        with anyio.fail_after(10):
            while not backend.workers.starts:
                await anyio.sleep(0.01)
        running = (await client.get(f"/api/v1/operations/{created['id']}")).json()

    assert backend.workers.started() == [("w1", created["id"])]
    assert (running["status"], running["worker_id"]) == ("running", "w1")


@pytest.mark.anyio
async def test_lifespan_runs_orphan_detection_and_retention(store: OperationStore) -> None:
    """The orphan detector and the retention cleaner run as soon as the app starts
    (one attempt allowed: the orphan fails instead of being retried).
    """
    config = _config(
        KTRDR_ORPHAN_TIMEOUT="60s", KTRDR_OPS_RETENTION_DAYS="1", KTRDR_OPS_MAX_ATTEMPTS="1"
    )
    backend = make_backend(store, config)
    orphan = backend.service.create("training", {})
    backend.service.start(orphan.id, worker_id="w-dead")
    old = backend.service.create("backtest", {})
    backend.service.start(old.id, worker_id="w-1")
    backend.service.finish(old.id, status=OperationStatus.COMPLETED, worker_id="w-1", result={})
    backend.clock.advance(2 * 24 * 3600)

    async with backend.app.router.lifespan_context(backend.app):
        with anyio.fail_after(10):
            while backend.store.get(orphan.id).status is OperationStatus.RUNNING:
                await anyio.sleep(0.01)
            while backend.store.count_live() + len(backend.store.list().items) > 1:
                await anyio.sleep(0.01)

    failed = backend.store.get(orphan.id)
    assert failed.status is OperationStatus.FAILED
    assert "worker w-dead" in (failed.error or "")
    assert [r.id for r in backend.store.list().items] == [orphan.id]


@pytest.mark.anyio
async def test_lifespan_stops_its_background_tasks_on_shutdown(store: OperationStore) -> None:
    """Leaving the lifespan stops all six loops and closes the dispatcher's client."""
    backend = make_backend(store, _config())
    names = {
        "ktrdr-liveness",
        "ktrdr-dispatch",
        "ktrdr-heartbeats",
        "ktrdr-orphans",
        "ktrdr-retention",
        "ktrdr-deadlines",
    }

    def loops() -> set[str]:
        return {t.get_name() for t in asyncio.all_tasks() if not t.done()} & names

    async with backend.app.router.lifespan_context(backend.app):
        during = loops()
    after = loops()

    assert during == names
    assert after == set()
    assert backend.http.is_closed


@pytest.mark.anyio
async def test_lifespan_writes_heartbeat_stamps_on_its_own(store: OperationStore) -> None:
    """While the app runs, a heartbeat's progress reaches the store without a manual flush."""
    backend = make_backend(store, _config(KTRDR_AUTH_WORKER_TOKEN="t" * 16))
    backend.register("w1")
    operation = backend.service.create("training", {})
    backend.service.start(operation.id, worker_id="w1")
    beat = {
        "status": "busy",
        "current_operation_id": operation.id,
        "attempt": 1,
        "progress": {"percent": 5},
    }

    async with backend.app.router.lifespan_context(backend.app), backend.client() as client:
        await client.post(
            "/api/v1/workers/w1/heartbeat",
            json=beat,
            headers=backend.worker_auth("w1"),
        )
        with anyio.fail_after(10):
            while backend.store.get(operation.id).progress is None:
                await anyio.sleep(0.01)

    assert backend.store.get(operation.id).progress == {
        "percent": 5.0,
        "message": "",
        "details": {},
    }
