"""Heartbeat stamps: batched writes that survive a failed round and a shutdown, and the
operations whose outcome a live worker still holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.backend import Backend, make_backend, open_store

from ktrdr.protocol import MAX_PENDING_OUTCOMES, HeartbeatRequest, Progress, WorkerStatus

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A backend with worker w1 running one training operation."""
    store = open_store(tmp_path)
    backend = make_backend(store)
    backend.register("w1")
    yield backend
    await backend.dispatcher.aclose()
    store.close()


async def beat(backend: Backend, operation_id: str, percent: float) -> None:
    """What the heartbeat route does: update the registry, then tell the reports."""
    previous = backend.registry.get("w1")
    request = HeartbeatRequest(
        status=WorkerStatus.BUSY,
        current_operation_id=operation_id,
        attempt=1,
        progress=Progress(percent=percent),
    )
    record = backend.registry.heartbeat("w1", request, now=backend.clock())
    await backend.reports.heartbeat(previous, record, request)


async def test_a_failed_write_keeps_the_stamps_for_the_next_round(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refusing one batch loses nothing: the next flush writes it."""
    operation = backend.service.create("training", {})
    backend.service.start(operation.id, worker_id="w1")
    backend.clock.advance(5)
    await beat(backend, operation.id, 30)
    real = backend.service.record_heartbeats

    def down(stamps: Any) -> None:
        raise OSError("database is locked")

    monkeypatch.setattr(backend.service, "record_heartbeats", down)
    with pytest.raises(OSError, match="locked"):
        await backend.reports.flush()
    monkeypatch.setattr(backend.service, "record_heartbeats", real)
    kept = backend.reports.unwritten
    written = await backend.reports.flush()

    record = backend.store.get(operation.id)
    assert (kept, written) == (1, 1)
    assert record.progress is not None
    assert record.progress["percent"] == 30
    assert record.last_reported_at == backend.clock()


async def test_newer_stamps_win_over_the_ones_kept_from_a_failed_write(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stamp noted during a failed write is not overwritten by the older, kept one."""
    operation = backend.service.create("training", {})
    backend.service.start(operation.id, worker_id="w1")
    await beat(backend, operation.id, 10)
    real = backend.service.record_heartbeats

    loop = asyncio.get_running_loop()

    def newer_arrives_then_fail(stamps: Any) -> None:
        # A heartbeat handled on the loop while this write runs in its thread.
        asyncio.run_coroutine_threadsafe(beat(backend, operation.id, 50), loop).result()
        raise OSError("database is locked")

    monkeypatch.setattr(backend.service, "record_heartbeats", newer_arrives_then_fail)
    with pytest.raises(OSError, match="locked"):
        await backend.reports.flush()
    monkeypatch.setattr(backend.service, "record_heartbeats", real)
    await backend.reports.flush()

    progress = backend.store.get(operation.id).progress
    assert progress is not None
    assert progress["percent"] == 50


async def test_stopping_writes_what_is_left(backend: Backend) -> None:
    """run_forever writes the last noted stamps when the app shuts down."""
    operation = backend.service.create("training", {})
    backend.service.start(operation.id, worker_id="w1")
    stop = asyncio.Event()
    stop.set()  # shutting down before the loop even ran a round
    await beat(backend, operation.id, 70)

    await backend.reports.run_forever(stop)

    progress = backend.store.get(operation.id).progress
    assert backend.reports.unwritten == 0
    assert progress is not None
    assert progress["percent"] == 70


async def test_an_outcome_pending_on_a_live_worker_is_not_orphaned_and_lands_late(
    backend: Backend,
) -> None:
    """Heartbeats listing an operation in ``pending_outcomes`` (ended, report not through
    yet) keep it from the orphan detector however long the delivery takes; the late
    report (of attempt 1) is then taken. An operation nobody lists, or that another
    worker lists, is orphaned as before: that attempt is lost and the operation queued
    for another.
    """
    backend.register("w2")
    pending = backend.service.create("training", {}).id
    silent = backend.service.create("training", {}).id
    foreign = backend.service.create("training", {}).id
    for operation_id in (pending, silent, foreign):
        backend.service.start(operation_id, worker_id="w1")
    timeout_s = backend.config.orphan.timeout.total_seconds()
    async with backend.client(operator=False) as client:
        for _ in range(4):  # four timeouts' worth of delivery attempts
            backend.clock.advance(timeout_s / 2 + 1)
            for worker_id, listed in (("w1", [pending]), ("w2", [foreign])):
                answer = await client.post(
                    f"/api/v1/workers/{worker_id}/heartbeat",
                    json={"status": "idle", "pending_outcomes": listed},
                    headers=backend.worker_auth(worker_id),
                )
                assert answer.status_code == 200, answer.text
            await backend.reports.flush()
            backend.orphans.check()
        states = {op: backend.store.get(op).status.value for op in (pending, silent, foreign)}
        report = await client.post(
            f"/api/v1/operations/{pending}/report",
            json={"worker_id": "w1", "attempt": 1, "status": "completed", "result": {"loss": 0.2}},
            headers=backend.worker_auth("w1"),
        )

    assert states == {pending: "running", silent: "pending", foreign: "pending"}
    assert backend.store.get(silent).lost_attempts == backend.store.get(foreign).lost_attempts == 1
    assert report.status_code == 200, report.text
    assert report.json()["status"] == "completed"
    assert report.json()["result"] == {"loss": 0.2}


async def test_a_heartbeat_listing_more_pending_outcomes_than_allowed_is_refused(
    backend: Backend,
) -> None:
    """pending_outcomes is bounded (MAX_PENDING_OUTCOMES ids): a longer list is a 422."""
    too_many = [f"op-{i}" for i in range(MAX_PENDING_OUTCOMES + 1)]
    async with backend.client(operator=False) as client:
        answer = await client.post(
            "/api/v1/workers/w1/heartbeat",
            json={"status": "idle", "pending_outcomes": too_many},
            headers=backend.worker_auth("w1"),
        )

    assert answer.status_code == 422
    assert "pending_outcomes" in answer.text
