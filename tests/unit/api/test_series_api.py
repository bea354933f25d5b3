"""Series through the backend: heartbeats and reports store points, GET .../series reads them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.backend import Backend, make_backend, open_store

from ktrdr.errors import StaleAttempt
from ktrdr.protocol import HeartbeatRequest, WorkerStatus

pytestmark = pytest.mark.anyio

OPS = "/api/v1/operations"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A backend with idle training workers w1 and w2."""
    store = open_store(tmp_path)
    backend = make_backend(store)
    backend.register("w1")
    backend.register("w2")
    yield backend
    await backend.dispatcher.aclose()
    store.close()


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    """The operator's HTTP client, in process."""
    async with backend.client() as http:
        yield http


async def beat(backend: Backend, worker_id: str, operation_id: str, **series: Any) -> None:
    """What the heartbeat route does: update the registry, then tell the reports."""
    previous = backend.registry.get(worker_id)
    request = HeartbeatRequest(
        status=WorkerStatus.BUSY,
        current_operation_id=operation_id,
        attempt=1,
        series=series or None,
    )
    record = backend.registry.heartbeat(worker_id, request, now=backend.clock())
    await backend.reports.heartbeat(previous, record, request)


def running(backend: Backend, worker_id: str = "w1", kind: str = "training") -> str:
    """A new operation running on ``worker_id``; its id."""
    operation = backend.service.create(kind, {})
    backend.service.start(operation.id, worker_id=worker_id)
    return operation.id


async def series_of(client: httpx.AsyncClient, operation_id: str) -> Any:
    response = await client.get(f"{OPS}/{operation_id}/series")
    assert response.status_code == 200, response.text
    return response.json()


async def test_heartbeat_points_are_stored_merged_across_unwritten_heartbeats(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Points of heartbeats noted before one write, a bare heartbeat between them, all kept."""
    op = running(backend)
    assert await series_of(client, op) == {"x": "epoch", "series": {}}
    await beat(backend, "w1", op, loss=[(1, 0.7), (2, 0.6)])
    await beat(backend, "w1", op)
    await beat(backend, "w1", op, loss=[(3, 0.5)], accuracy=[(3, 0.55)])
    await backend.reports.flush()
    assert await series_of(client, op) == {
        "x": "epoch",
        "series": {"accuracy": [[3, 0.55]], "loss": [[1, 0.7], [2, 0.6], [3, 0.5]]},
    }


async def test_points_of_a_failed_write_survive_a_newer_heartbeat(
    backend: Backend, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails while a newer heartbeat arrives loses neither heartbeat's points."""
    op = running(backend)
    await beat(backend, "w1", op, loss=[(1, 0.7)])
    real = backend.service.record_heartbeats
    loop = asyncio.get_running_loop()

    def newer_arrives_then_fail(stamps: Any) -> None:
        asyncio.run_coroutine_threadsafe(beat(backend, "w1", op, loss=[(2, 0.6)]), loop).result()
        raise OSError("database is locked")

    monkeypatch.setattr(backend.service, "record_heartbeats", newer_arrives_then_fail)
    with pytest.raises(OSError, match="locked"):
        await backend.reports.flush()
    monkeypatch.setattr(backend.service, "record_heartbeats", real)
    await backend.reports.flush()
    assert (await series_of(client, op))["series"] == {"loss": [[1, 0.7], [2, 0.6]]}


async def test_a_worker_that_does_not_run_the_operation_adds_no_points(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Points in a heartbeat naming another worker's operation are refused (409) and dropped."""
    op = running(backend, "w1")
    with pytest.raises(StaleAttempt):
        await beat(backend, "w2", op, loss=[(1, 0.7)])
    await backend.reports.flush()
    assert (await series_of(client, op))["series"] == {}


async def test_the_report_stores_the_whole_curve_even_after_a_cancel(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """A run cancelled before its report (409) still keeps the points the report carried."""
    op = running(backend, kind="backtest")
    await client.post(f"{OPS}/{op}/cancel")
    report = {
        "worker_id": "w1",
        "attempt": 1,
        "status": "cancelled",
        "checkpoint_saved": True,
        "series": {"equity": [[2, 10_010.0], [1, 10_000.0]]},
    }
    answer = await client.post(f"{OPS}/{op}/report", json=report, headers=backend.worker_auth("w1"))
    assert answer.status_code == 409
    assert await series_of(client, op) == {
        "x": "bar",
        "series": {"equity": [[1, 10_000.0], [2, 10_010.0]]},
    }


async def test_another_workers_report_adds_no_points(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """w2's credential reporting w2's points for w1's operation: refused, nothing stored."""
    op = running(backend, "w1")
    report = {
        "worker_id": "w2",
        "attempt": 1,
        "status": "completed",
        "series": {"loss": [[1, 0.1]]},
    }
    answer = await client.post(f"{OPS}/{op}/report", json=report, headers=backend.worker_auth("w2"))
    assert answer.status_code == 409
    assert (await series_of(client, op))["series"] == {}


async def test_series_of_an_unknown_operation_is_404(client: httpx.AsyncClient) -> None:
    """An id that does not exist answers 404 with the usual error body."""
    response = await client.get(f"{OPS}/no-such-op/series")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_operation"


async def test_series_need_the_operator_token(backend: Backend) -> None:
    """Without the operator token: 401, and no point in the answer."""
    op = running(backend)
    await beat(backend, "w1", op, loss=[(1, 0.123456)])
    await backend.reports.flush()
    async with backend.client(operator=False) as anonymous:
        response = await anonymous.get(f"{OPS}/{op}/series")
    assert response.status_code == 401
    assert "0.123456" not in response.text
