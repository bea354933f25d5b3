"""The deadline watch: timeouts per attempt, stalls while heartbeating, races, its loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.backend import Backend, backend_config, make_backend, open_store

from ktrdr.api.deadlines import DeadlineWatch
from ktrdr.protocol import OperationStatus

pytestmark = pytest.mark.anyio

OPS = "/api/v1/operations"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A backend with a 60 s stall timeout and one idle training worker, tr-1."""
    store = open_store(tmp_path)
    backend = make_backend(store, backend_config(KTRDR_OPS_STALL_TIMEOUT="60s"))
    backend.register("tr-1")
    yield backend
    await backend.dispatcher.aclose()
    store.close()


async def running(backend: Backend, **body: Any) -> str:
    """An operation created with ``body`` (e.g. timeout_s) and started on tr-1; its id."""
    async with backend.client() as client:
        created = await client.post(OPS, json={"type": "training", "parameters": {}, **body})
    assert created.status_code == 201, created.text
    await backend.dispatcher.dispatch_once()
    operation_id: str = created.json()["id"]
    assert backend.store.get(operation_id).status is OperationStatus.RUNNING
    return operation_id


async def heartbeat(backend: Backend, operation_id: str, percent: float) -> None:
    """tr-1 heartbeats attempt 1 of the operation with ``percent`` progress, written now."""
    async with backend.client() as client:
        response = await client.post(
            "/api/v1/workers/tr-1/heartbeat",
            json={
                "status": "busy",
                "current_operation_id": operation_id,
                "attempt": 1,
                "progress": {"percent": percent},
            },
            headers=backend.worker_auth("tr-1"),
        )
    assert response.status_code == 200, response.text
    await backend.reports.flush()


async def test_an_attempt_past_its_timeout_is_failed_and_its_job_killed(
    backend: Backend,
) -> None:
    """timeout_s=10: still running at 9 s, failed at 11 s saying it timed out after 10
    seconds; its worker is told the attempt is superseded (kill at once).
    """
    operation_id = await running(backend, timeout_s=10)
    backend.clock.advance(9)
    early = await backend.deadlines.run_once()
    backend.clock.advance(2)

    [late] = await backend.deadlines.run_once()

    record = backend.store.get(operation_id)
    assert early == []
    assert (late.id, record.status) == (operation_id, OperationStatus.FAILED)
    assert record.error == (
        "timed out after 10 seconds (attempt 1 on worker tr-1; the limit is the operation's "
        "timeout_s, else KTRDR_OPS_DEFAULT_TIMEOUT); the job was stopped"
    )
    assert backend.workers.cancels == [("tr-1", operation_id)]
    assert backend.workers.cancel_bodies == [{"attempt": 1, "superseded": True}]
    assert record.timeout_s == 10


async def test_the_default_timeout_applies_without_timeout_s(tmp_path: Path) -> None:
    """KTRDR_OPS_DEFAULT_TIMEOUT=5s is the timeout of an operation created without one."""
    store = open_store(tmp_path)
    backend = make_backend(store, backend_config(KTRDR_OPS_DEFAULT_TIMEOUT="5s"))
    backend.register("tr-1")
    operation_id = await running(backend)
    backend.clock.advance(6)

    failed = await backend.deadlines.run_once()

    assert backend.store.get(operation_id).timeout_s == 5
    assert [r.error.split(" (")[0] for r in failed if r.error] == ["timed out after 5 seconds"]
    await backend.dispatcher.aclose()
    store.close()


async def test_no_timeout_means_no_deadline(backend: Backend) -> None:
    """Without timeout_s and with the default 0, an attempt may run for days."""
    operation_id = await running(backend)
    for _ in range(3):
        backend.clock.advance(30)
        await heartbeat(backend, operation_id, percent=backend.clock().second)
    backend.clock.advance(3 * 24 * 3600)
    backend.store.update_progress(
        operation_id, progress={"percent": 99}, now=backend.clock(), worker_id="tr-1"
    )

    assert await backend.deadlines.run_once() == []
    assert backend.store.get(operation_id).deadline_at is None


async def test_a_report_before_the_deadline_wins(backend: Backend) -> None:
    """Completed at 9 s of a 10 s timeout: the outcome stands, nothing is stopped."""
    operation_id = await running(backend, timeout_s=10)
    backend.clock.advance(9)
    async with backend.client() as client:
        report = {"worker_id": "tr-1", "attempt": 1, "status": "completed", "result": {}}
        await client.post(
            f"{OPS}/{operation_id}/report", json=report, headers=backend.worker_auth("tr-1")
        )
    backend.clock.advance(5)

    assert await backend.deadlines.run_once() == []
    assert backend.store.get(operation_id).status is OperationStatus.COMPLETED
    assert backend.workers.cancels == []


async def test_the_timeout_counts_from_each_attempts_start(backend: Backend) -> None:
    """A retried attempt gets the whole timeout again, from its own start."""
    operation_id = await running(backend, timeout_s=10)
    backend.clock.advance(8)
    backend.service.lose(operation_id, worker_id="tr-1", attempt=1, reason="test")
    backend.registry.operation_ended("tr-1", operation_id)  # its heartbeat would say idle
    await backend.dispatcher.dispatch_once()
    backend.clock.advance(8)

    assert await backend.deadlines.run_once() == []
    assert backend.store.get(operation_id).attempt == 2
    backend.clock.advance(3)
    assert [r.attempt for r in await backend.deadlines.run_once()] == [2]


async def test_unchanged_progress_fails_as_stalled_while_the_worker_heartbeats(
    backend: Backend,
) -> None:
    """Heartbeats every 20 s with the same progress: failed as stalled 60 s after the
    progress last changed (heartbeats alone do not count as progress); the job is stopped.
    """
    operation_id = await running(backend)
    backend.clock.advance(10)
    await heartbeat(backend, operation_id, percent=10)
    changed_at = backend.clock()
    judged = []
    for _ in range(4):
        backend.clock.advance(20)
        await heartbeat(backend, operation_id, percent=10)
        judged.append(await backend.deadlines.run_once())

    record = backend.store.get(operation_id)
    assert [len(j) for j in judged] == [0, 0, 0, 1]  # more than 60 s after the change
    assert record.status is OperationStatus.FAILED
    assert record.error == (
        f"stalled: its progress has not changed since {changed_at.isoformat()} (80s, longer "
        "than KTRDR_OPS_STALL_TIMEOUT=60s) on worker tr-1 (attempt 1); the job was stopped"
    )
    assert backend.workers.cancel_bodies == [{"attempt": 1, "superseded": True}]


async def test_changing_progress_is_never_a_stall(backend: Backend) -> None:
    """Progress that moves at every heartbeat keeps the operation running for hours."""
    operation_id = await running(backend)
    for step in range(1, 200):
        backend.clock.advance(50)
        await heartbeat(backend, operation_id, percent=step / 2)
        assert await backend.deadlines.run_once() == []
    assert backend.store.get(operation_id).status is OperationStatus.RUNNING


async def test_a_stall_timeout_of_zero_disables_the_rule(tmp_path: Path) -> None:
    """KTRDR_OPS_STALL_TIMEOUT=0: no progress for a day is not judged."""
    store = open_store(tmp_path)
    backend = make_backend(store, backend_config(KTRDR_OPS_STALL_TIMEOUT="0"))
    backend.register("tr-1")
    operation_id = await running(backend)
    backend.clock.advance(24 * 3600)

    assert await backend.deadlines.run_once() == []
    assert backend.store.get(operation_id).status is OperationStatus.RUNNING
    await backend.dispatcher.aclose()
    store.close()


async def test_stalls_get_a_full_stall_timeout_after_the_backend_starts(
    backend: Backend,
) -> None:
    """Progress recorded an hour before the watch started is not judged at once."""
    operation_id = await running(backend)
    backend.clock.advance(3600)
    watch = DeadlineWatch(
        store=backend.store, settings=backend.config.operations, clock=backend.clock
    )
    backend.clock.advance(59)
    before = watch.check()
    backend.clock.advance(2)

    assert before == []
    assert [r.id for r in watch.check()] == [operation_id]


async def test_the_loop_writes_fresh_progress_before_judging(backend: Backend) -> None:
    """A progress change noted but not yet written keeps the operation (prepare = flush)."""
    operation_id = await running(backend)
    backend.clock.advance(50)
    async with backend.client() as client:
        await client.post(
            "/api/v1/workers/tr-1/heartbeat",
            json={
                "status": "busy",
                "current_operation_id": operation_id,
                "attempt": 1,
                "progress": {"percent": 5},
            },
            headers=backend.worker_auth("tr-1"),
        )
    backend.clock.advance(20)  # 70 s after the start, 20 s after the change

    class OneRound:
        async def __call__(self, stop: asyncio.Event, seconds: float) -> bool:
            stop.set()
            return True

    watch = DeadlineWatch(
        store=backend.store,
        settings=backend.config.operations,
        clock=backend.clock,
        wait=OneRound(),
    )
    watch._started_at = backend.clock() - backend.config.operations.stall_timeout * 2
    rounds = await watch.run_forever(asyncio.Event(), prepare=backend.reports.flush)

    assert rounds == 1
    assert backend.store.get(operation_id).status is OperationStatus.RUNNING


async def test_the_timeout_is_422_when_it_is_not_a_positive_number(backend: Backend) -> None:
    """timeout_s 0, negative, a string or infinity: 422 naming body.timeout_s, nothing made."""
    async with backend.client() as client:
        answers = [
            await client.post(OPS, json={"type": "training", "timeout_s": value})
            for value in (0, -5, "soon", 1e10)
        ]
        infinite = await client.post(
            OPS,
            content=b'{"type": "training", "timeout_s": Infinity}',
            headers={"Content-Type": "application/json"},
        )

    for answer in (*answers, infinite):
        assert answer.status_code == 422, answer.text
        assert [item["loc"] for item in answer.json()["detail"]] == [["body", "timeout_s"]]
    assert backend.store.count_live() == 0
