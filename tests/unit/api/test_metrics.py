"""The backend's /metrics: who may read it, and that each figure counts what happened."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from support.backend import (
    OPERATOR_TOKEN,
    TOKEN,
    Backend,
    backend_config,
    make_backend,
    open_store,
)
from support.scrape import Scrape

from ktrdr.api.metrics import BackendMetrics, FinishedOperation, instrument_store
from ktrdr.api.store import OperationStore
from ktrdr.protocol import OperationStatus, OperationType

pytestmark = pytest.mark.anyio

OPS = "/api/v1/operations"
SCRAPE_TOKEN = "unit-test-scrape-token"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A backend (metrics on) with an idle training worker tr-1 and backtest worker bt-1."""
    store = open_store(tmp_path)
    backend = make_backend(store)
    backend.register("tr-1")
    backend.register("bt-1", OperationType.BACKTEST)
    yield backend
    await backend.dispatcher.aclose()
    store.close()


async def scrape(backend: Backend, token: str = OPERATOR_TOKEN) -> Scrape:
    """GET /metrics with ``token``; the parsed answer (fails on anything but 200)."""
    async with backend.client(operator=False) as client:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


async def report(backend: Backend, operation_id: str, worker: str, status: str) -> httpx.Response:
    """POST a worker's report of ``operation_id`` with ``worker``'s credential."""
    body = {
        "worker_id": worker,
        "attempt": 1,
        "status": status,
        "result": {} if status == "completed" else None,
    }
    async with backend.client() as client:
        return await client.post(
            f"{OPS}/{operation_id}/report", json=body, headers=backend.worker_auth(worker)
        )


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Bearer {TOKEN}", f"Bearer {SCRAPE_TOKEN}", OPERATOR_TOKEN],
    ids=["none", "wrong", "worker-token", "unset-scrape-token", "no-scheme"],
)
async def test_metrics_without_an_accepted_token_is_401_and_shows_nothing(
    backend: Backend, authorization: str | None
) -> None:
    """401 JSON naming the variable; no metric name, no operation, no token in the answer."""
    created = backend.service.create("training", {"symbol": "SECRETSYM"})
    headers = {"Authorization": authorization} if authorization else {}
    async with backend.client(operator=False) as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert "KTRDR_AUTH_OPERATOR_TOKEN" in response.json()["detail"]
    for leak in ("ktrdr_", created.id, "SECRETSYM", TOKEN, OPERATOR_TOKEN, SCRAPE_TOKEN):
        assert leak not in response.text


async def test_the_scrape_token_reads_metrics_and_nothing_else(tmp_path: Path) -> None:
    """With KTRDR_METRICS_TOKEN set, it reads /metrics; the operator routes still refuse it."""
    store = open_store(tmp_path)
    backend = make_backend(store, backend_config(KTRDR_METRICS_TOKEN=SCRAPE_TOKEN))
    try:
        scraped = await scrape(backend, SCRAPE_TOKEN)
        async with backend.client(operator=False) as client:
            refused = await client.get(OPS, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    finally:
        await backend.dispatcher.aclose()
        store.close()
    assert "ktrdr_operations_active" in scraped.names
    assert refused.status_code == 401
    assert wrong.status_code == 401
    detail = wrong.json()["detail"]
    assert "KTRDR_AUTH_OPERATOR_TOKEN" in detail
    assert "KTRDR_METRICS_TOKEN" in detail


async def test_metrics_switched_off_are_not_served(tmp_path: Path) -> None:
    """KTRDR_METRICS_ENABLED=false: /metrics is 404 with the operator token, 401 without."""
    store = open_store(tmp_path)
    backend = make_backend(store, backend_config(KTRDR_METRICS_ENABLED="false"))
    try:
        backend.service.cancel(backend.service.create("training", {}).id)
        async with backend.client(operator=False) as client:
            bare = await client.get("/metrics")
        async with backend.client() as client:
            operator = await client.get("/metrics")
    finally:
        await backend.dispatcher.aclose()
        store.close()
    assert (bare.status_code, operator.status_code) == (401, 404)
    assert backend.metrics.enabled is False


async def test_the_fleet_and_queue_gauges_are_read_when_scraped(backend: Backend) -> None:
    """Workers by type and status, operations running and queued by type, as they are now."""
    for _ in range(2):
        backend.service.create("training", {})
    running = backend.service.create("backtest", {})
    backend.service.start(running.id, worker_id="bt-1")
    backend.registry.assign("bt-1", running.id)

    scraped = await scrape(backend)

    assert scraped.value("ktrdr_workers_registered_total", {"worker_type": "training"}) == 1
    assert scraped.value("ktrdr_workers_registered_total", {"worker_type": "backtest"}) == 1
    assert scraped.value("ktrdr_workers_available", {"worker_type": "training"}) == 1
    assert scraped.value("ktrdr_workers_available", {"worker_type": "backtest"}) == 0
    assert scraped.value("ktrdr_workers", {"worker_type": "backtest", "status": "busy"}) == 1
    assert scraped.value("ktrdr_operations_active") == 1
    assert scraped.value("ktrdr_operations_queued", {"operation_type": "training"}) == 2
    assert scraped.value("ktrdr_operations_queued", {"operation_type": "backtest"}) == 0


async def test_each_finished_operation_is_counted_once_with_its_duration(
    backend: Backend,
) -> None:
    """Completed by report, cancelled by a user, failed as an orphan (its last attempt):
    one count each, and a duration sample per count; a second report of the same
    operation changes nothing; the orphaned attempts retried before are not finishes.
    """
    done = backend.service.create("training", {})
    backend.service.start(done.id, worker_id="tr-1")
    backend.clock.advance(30)
    assert (await report(backend, done.id, "tr-1", "completed")).status_code == 200
    assert (await report(backend, done.id, "tr-1", "completed")).status_code == 409
    backend.service.cancel(backend.service.create("backtest", {}).id)
    orphan = backend.service.create("backtest", {})
    for _ in range(backend.config.operations.max_attempts):
        backend.service.start(orphan.id, worker_id="bt-1")
        backend.clock.advance(3600)
        assert [r.id for r in backend.orphans.check()] == [orphan.id]
    backend.registry.remove(["bt-1"])
    assert backend.store.get(orphan.id).status is OperationStatus.FAILED

    scraped = await scrape(backend)

    def finished(kind: str, status: str) -> float:
        labels = {"operation_type": kind, "status": status}
        count = scraped.value("ktrdr_operation_duration_seconds_count", labels)
        assert count == scraped.value("ktrdr_operations_total", labels)
        return count

    assert finished("training", "completed") == 1
    assert finished("backtest", "cancelled") == 1
    assert finished("backtest", "failed") == 1
    assert finished("training", "failed") == 0
    assert scraped.total("ktrdr_operations_total") == 3
    completed = {"operation_type": "training", "status": "completed"}
    assert scraped.value("ktrdr_operation_duration_seconds_sum", completed) == 30
    assert scraped.value("ktrdr_reports_rejected_total", {"reason": "not_current"}) == 1


async def test_refused_reports_are_counted_by_reason(backend: Backend) -> None:
    """An unknown operation, another worker's credential, an operation run elsewhere (not
    that worker's attempt), an operation that already ended.
    """
    mine = backend.service.create("training", {})
    backend.service.start(mine.id, worker_id="tr-1")
    backend.register("tr-2")
    unknown = await report(backend, "no-such-operation", "tr-1", "completed")
    async with backend.client() as client:
        forged = await client.post(
            f"{OPS}/{mine.id}/report",
            json={"worker_id": "tr-1", "attempt": 1, "status": "failed", "error": "x"},
            headers=backend.worker_auth("tr-2"),
        )
    elsewhere = await report(backend, mine.id, "tr-2", "failed")
    ended = backend.service.create("training", {})
    backend.service.cancel(ended.id)
    late = await report(backend, ended.id, "tr-1", "completed")

    scraped = await scrape(backend)

    codes = (unknown.status_code, forged.status_code, elsewhere.status_code, late.status_code)
    assert codes == (404, 401, 409, 409)
    rejected = "ktrdr_reports_rejected_total"
    assert scraped.value(rejected, {"reason": "unknown_operation"}) == 1
    assert scraped.value(rejected, {"reason": "wrong_worker"}) == 1
    assert scraped.value(rejected, {"reason": "stale_attempt"}) == 1
    assert scraped.value(rejected, {"reason": "not_current"}) == 1
    assert backend.store.get(mine.id).status is OperationStatus.RUNNING


async def test_retried_attempts_are_counted_by_type_and_cause(backend: Backend) -> None:
    """A worker that gives its attempt up (shutdown) and one unreachable at dispatch: one
    retry each under its cause; the final loss is a failure, not a retry.
    """
    given_up = backend.service.create("training", {})
    backend.service.start(given_up.id, worker_id="tr-1")
    assert (await report(backend, given_up.id, "tr-1", "cancelled")).status_code == 200
    backend.workers.answers["bt-1"] = httpx.ConnectError("refused")
    backend.service.create("backtest", {})
    await backend.dispatcher.dispatch_once()

    scraped = await scrape(backend)

    retried = "ktrdr_attempts_retried_total"
    assert scraped.value(retried, {"operation_type": "training", "reason": "worker_gone"}) == 1
    assert scraped.value(retried, {"operation_type": "backtest", "reason": "unreachable"}) == 1
    assert scraped.total(retried) == 2


async def test_heartbeats_are_counted_by_worker_type(backend: Backend) -> None:
    """Each accepted heartbeat counts once under its worker's type; a refused one does not."""
    async with backend.client() as client:
        for _ in range(3):
            accepted = await client.post(
                "/api/v1/workers/tr-1/heartbeat",
                json={"status": "idle"},
                headers=backend.worker_auth("tr-1"),
            )
            assert accepted.status_code == 200
        refused = await client.post(
            "/api/v1/workers/bt-1/heartbeat",
            json={"status": "idle"},
            headers=backend.worker_auth("tr-1"),
        )

    scraped = await scrape(backend)

    assert refused.status_code == 401
    received = "ktrdr_heartbeats_received_total"
    assert scraped.value(received, {"worker_type": "training"}) == 3
    assert scraped.value(received, {"worker_type": "backtest"}) == 0


async def test_dispatch_latency_is_observed_per_start_by_outcome(backend: Backend) -> None:
    """A start the worker accepts, one it refuses for now (503), one it refuses for good (422)."""
    backend.register("tr-2")
    backend.register("tr-3")
    backend.workers.answers.update({"tr-2": 503, "tr-3": 422})
    for _ in range(3):
        backend.service.create("training", {})

    outcomes = sorted(d.outcome.value for d in await backend.dispatcher.dispatch_once())
    scraped = await scrape(backend)

    assert outcomes == ["failed", "released", "started"]
    for outcome in outcomes:
        labels = {"operation_type": "training", "outcome": outcome}
        assert scraped.value("ktrdr_dispatch_latency_seconds_count", labels) == 1
        assert scraped.value("ktrdr_dispatch_latency_seconds_sum", labels) >= 0


def test_database_errors_are_counted_by_kind(tmp_path: Path) -> None:
    """A failed statement counts as other; a database that cannot be opened as unreachable."""
    store = OperationStore.open_url(f"sqlite+pysqlite:///{tmp_path / 'db' / 'ops.db'}")
    metrics = BackendMetrics()
    instrument_store(store, metrics)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE operations"))
    with pytest.raises(sa.exc.OperationalError):
        store.get("op-1")
    store.engine.dispose()
    shutil.rmtree(tmp_path / "db")
    with pytest.raises(sa.exc.OperationalError):
        store.get("op-1")
    store.close()

    errors = metrics.store_errors
    assert errors.labels("other")._value.get() == 1
    assert errors.labels("unreachable")._value.get() == 1


def test_duration_runs_from_start_or_else_from_creation() -> None:
    """A started operation is timed from its start; one cancelled while queued from creation."""
    import datetime

    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    second = datetime.timedelta(seconds=1)
    started = FinishedOperation(
        type=OperationType.TRAINING,
        status=OperationStatus.COMPLETED,
        created_at=t0,
        started_at=t0 + 10 * second,
        finished_at=t0 + 25 * second,
    )
    queued = FinishedOperation(
        type=OperationType.TRAINING,
        status=OperationStatus.CANCELLED,
        created_at=t0,
        started_at=None,
        finished_at=t0 + 4 * second,
    )
    assert (started.duration_s, queued.duration_s) == (15, 4)


def test_two_metric_sets_in_one_process_count_apart() -> None:
    """No global registry: two backends in one process never share a count."""
    first, second = BackendMetrics(), BackendMetrics()
    first.heartbeat_received(OperationType.TRAINING)
    assert first.heartbeats.labels("training")._value.get() == 1
    assert second.heartbeats.labels("training")._value.get() == 0


def test_every_dispatch_outcome_is_a_label_from_the_start() -> None:
    """The pre-declared outcomes are exactly the dispatcher's, so a new one is not forgotten."""
    from ktrdr.api.dispatcher import DispatchOutcome
    from ktrdr.api.metrics import DISPATCH_OUTCOMES

    assert set(DISPATCH_OUTCOMES) == {o.value for o in DispatchOutcome}
