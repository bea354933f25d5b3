"""The backend's side of the handoff: a report with ``take_next`` answered with the next
operation's start, over the real app, store and dispatcher (workers are fakes).

Old workers (no ``take_next``) get the answer they always got and are served by
rounds; a round never starts a second operation on a worker that just got one; a
cancel of a handed-off operation is sent until the worker confirms it; a lost answer
is handed again; a worker gives back what it cannot start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from support.backend import TOKEN, Backend, make_backend, open_store

from ktrdr.protocol import (
    HANDOFF_HEADER,
    REGISTER_PATH,
    HeartbeatRequest,
    OperationView,
    ReportAnswer,
    WorkerStatus,
)

pytestmark = pytest.mark.anyio

OPS = "/api/v1/operations"
#: Exactly what a worker from before the handoff sends (and expects back).
OLD_REPORT = {
    "worker_id": "w1",
    "attempt": 1,
    "status": "completed",
    "result": {"loss": 0.25},
    "error": None,
    "checkpoint_saved": False,
}


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A backend with worker w1 running operation ``first`` and ``second`` queued."""
    store = open_store(tmp_path)
    backend = make_backend(store)
    backend.register("w1")
    yield backend
    await backend.dispatcher.aclose()
    store.close()


async def queue_two(backend: Backend) -> tuple[str, str]:
    """``first`` running on w1 (by a round), ``second`` pending behind it."""
    first = backend.service.create("training", {"seed": 1}).id
    assert [d.operation_id for d in await backend.dispatcher.dispatch_once()] == [first]
    backend.clock.advance(1)  # queue order is creation time (then the random id)
    second = backend.service.create("training", {"seed": 2}).id
    backend.clock.advance(1)
    return first, second


async def report(
    backend: Backend, operation_id: str, body: dict[str, Any], worker: str = "w1"
) -> httpx.Response:
    async with backend.client(operator=False) as client:
        return await client.post(
            f"{OPS}/{operation_id}/report", json=body, headers=backend.worker_auth(worker)
        )


def _count(backend: Backend, outcome: str) -> float:
    """How many training starts the dispatch metric counts with ``outcome``."""
    wanted = {"operation_type": "training", "outcome": outcome}
    for metric in backend.metrics.dispatch_latency.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels == wanted:
                return sample.value
    return 0.0


async def test_an_old_workers_report_gets_a_plain_view_and_a_round_serves_it(
    backend: Backend,
) -> None:
    first, second = await queue_two(backend)

    answer = await report(backend, first, OLD_REPORT)
    rounds = await backend.dispatcher.dispatch_once()

    assert answer.status_code == 200, answer.text
    assert "next_operation" not in answer.json()
    view = OperationView.model_validate_json(answer.content)  # refuses unknown fields
    assert view.status.value == "completed"
    assert [(d.operation_id, d.outcome.value) for d in rounds] == [(second, "started")]
    assert backend.workers.started() == [("w1", first), ("w1", second)]
    assert _count(backend, "handed_off") == 0


async def test_take_next_hands_the_oldest_pending_operation_over_in_the_answer(
    backend: Backend,
) -> None:
    first, second = await queue_two(backend)
    third = backend.service.create("training", {"seed": 3}).id

    answer = await report(backend, first, {**OLD_REPORT, "take_next": True})
    # A stale heartbeat says w1 is idle: the round still leaves it alone (busy in the store).
    idle = HeartbeatRequest(status=WorkerStatus.IDLE)
    backend.registry.heartbeat("w1", idle, now=backend.clock())
    rounds = await backend.dispatcher.dispatch_once()

    assert answer.status_code == 200, answer.text
    body = ReportAnswer.model_validate_json(answer.content)
    assert body.status.value == "completed"
    assert body.next_operation is not None
    start = body.next_operation.start
    assert (start.operation_id, start.attempt, start.parameters["seed"]) == (second, 1, 2)
    assert (start.resume, start.retry) == (False, False)
    running = backend.service.get(second)
    assert (running.status.value, running.worker_id, running.attempt) == ("running", "w1", 1)
    assert rounds == []
    assert backend.workers.started() == [("w1", first)]  # no start request for it
    assert backend.service.get(third).status.value == "pending"
    assert _count(backend, "handed_off") == 1


async def test_nothing_is_handed_to_a_stopping_worker_or_for_a_given_up_attempt(
    backend: Backend,
) -> None:
    first, second = await queue_two(backend)
    stopping = HeartbeatRequest(status=WorkerStatus.STOPPING, current_operation_id=first, attempt=1)
    backend.registry.heartbeat("w1", stopping, now=backend.clock())

    answer = await report(backend, first, {**OLD_REPORT, "take_next": True})

    assert answer.status_code == 200, answer.text
    assert "next_operation" not in answer.json()
    assert backend.service.get(second).status.value == "pending"


async def test_a_report_sent_again_after_a_lost_answer_gets_the_same_handoff(
    backend: Backend,
) -> None:
    first, second = await queue_two(backend)
    asked = {**OLD_REPORT, "take_next": True}

    answer = await report(backend, first, asked)
    again = await report(backend, first, asked)
    plain_again = await report(backend, first, OLD_REPORT)  # did not ask: refused as before

    assert again.status_code == 200, again.text
    assert again.json()["next_operation"] == answer.json()["next_operation"]
    assert plain_again.status_code == 409
    assert _count(backend, "handed_off") == 1
    async with backend.client() as client:
        assert (await client.post(f"{OPS}/{second}/cancel")).status_code == 200
    after_cancel = await report(backend, first, asked)
    assert after_cancel.status_code == 409, after_cancel.text


async def test_a_cancel_of_a_handed_off_operation_is_sent_until_the_worker_has_it(
    backend: Backend,
) -> None:
    """The worker may not have read the answer yet (404 to the cancel): it is sent
    again until the worker says it stops the operation.
    """
    first, second = await queue_two(backend)
    await report(backend, first, {**OLD_REPORT, "take_next": True})
    backend.workers.answers["w1"] = 404  # not started there yet

    async with backend.client() as client:
        cancelled = await client.post(f"{OPS}/{second}/cancel")
    backend.workers.answers["w1"] = 202  # now it runs it
    with anyio.fail_after(30):
        while backend.workers.cancels.count(("w1", second)) < 2:
            await anyio.sleep(0.05)

    assert cancelled.status_code == 200, cancelled.text
    assert backend.service.get(second).status.value == "cancelled"


async def test_a_worker_gives_back_an_operation_it_cannot_start(backend: Backend) -> None:
    first, second = await queue_two(backend)
    third = backend.service.create("training", {"seed": 3}).id
    await report(backend, first, {**OLD_REPORT, "take_next": True})
    backend.register("w2")
    release = {"worker_id": "w1", "attempt": 1, "reason": "shutting down"}

    async with backend.client(operator=False) as client:
        other = await client.post(
            f"{OPS}/{second}/release", json=release, headers=backend.worker_auth("w2")
        )
        given = await client.post(
            f"{OPS}/{second}/release", json=release, headers=backend.worker_auth("w1")
        )
        twice = await client.post(
            f"{OPS}/{second}/release", json=release, headers=backend.worker_auth("w1")
        )

    assert other.status_code == 401, other.text
    assert given.status_code == 200, given.text
    view = backend.service.get(second)
    assert (view.status.value, view.attempt, view.worker_id) == ("pending", 0, None)
    assert [v.id for v in backend.service.pending()] == [second, third]  # its old place
    assert twice.status_code == 409, twice.text
    assert backend.registry.get("w1").current_operation_id is None


async def test_the_registration_answer_says_the_backend_hands_over(backend: Backend) -> None:
    body = {
        "worker_id": "w9",
        "worker_type": "training",
        "endpoint_url": "http://127.0.0.1:9/w9",
        "heartbeat_interval_s": 1,
        "config_fingerprint": "fp",
    }
    async with backend.client(operator=False) as client:
        answer = await client.post(
            REGISTER_PATH, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 201, answer.text
    assert answer.headers[HANDOFF_HEADER] == "1"


async def test_handoffs_of_workers_no_longer_registered_are_forgotten(backend: Backend) -> None:
    """The memory of handoffs (for reports sent again) follows the fleet: once workers
    removed for silence outnumber the registered ones, their handoffs are dropped, so
    it stays within twice the fleet (plus 16) however many workers came and went.
    """
    departed = [f"gone-{i}" for i in range(30)]
    for worker_id in [*departed, "w1"]:
        if worker_id != "w1":
            backend.register(worker_id)
        running = backend.service.create("training", {"seed": 1}).id
        backend.service.start(running, worker_id=worker_id)
        backend.clock.advance(1)
        backend.service.create("training", {"seed": 2})
        backend.clock.advance(1)
        body = {**OLD_REPORT, "worker_id": worker_id, "take_next": True}
        answer = await report(backend, running, body, worker=worker_id)
        assert answer.json()["next_operation"] is not None, answer.text
        if worker_id != "w1":
            backend.registry.remove([worker_id])  # silent past the removal threshold

    remembered = set(backend.reports._handoffs)

    assert "w1" in remembered
    assert len(remembered) <= 2 * len(backend.registry) + 16 < len(departed)
