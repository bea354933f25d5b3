"""The dispatcher: right type, idle workers only, claim before sending, requeue, no doubles."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from support.backend import TOKEN, Backend, make_backend, open_store
from support.tracing import memory_tracing, trace_hex
from support.worker_fakes import FakeBackend, make_worker

from ktrdr.api.dispatcher import (
    Dispatcher,
    DispatchOutcome,
    worker_client,
)
from ktrdr.config import AuthSettings, LoggingSettings, Secret
from ktrdr.protocol import HeartbeatRequest, OperationStatus, OperationType, WorkerStatus
from ktrdr.web.http_client import CLIENT_KEEPALIVE_EXPIRY
from ktrdr.workers.server import build_worker_server

pytestmark = pytest.mark.anyio

TRAINING = OperationType.TRAINING
BACKTEST = OperationType.BACKTEST


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A backend over a fresh SQLite store, with fake workers and a fake clock."""
    store = open_store(tmp_path)
    backend = make_backend(store)
    yield backend
    await backend.dispatcher.aclose()
    store.close()


def status_of(backend: Backend, operation_id: str) -> OperationStatus:
    return backend.store.get(operation_id).status


async def test_each_operation_goes_to_an_idle_worker_of_its_type(backend: Backend) -> None:
    """A training and a backtest operation go to the training and the backtest worker."""
    backend.register("bt-1", BACKTEST)
    backend.register("tr-1", TRAINING)
    training = backend.service.create("training", {"epochs": 3})
    backtest = backend.service.create("backtest", {})

    dispatched = await backend.dispatcher.dispatch_once()

    assert {(d.worker_id, d.operation_id, d.outcome) for d in dispatched} == {
        ("tr-1", training.id, DispatchOutcome.STARTED),
        ("bt-1", backtest.id, DispatchOutcome.STARTED),
    }
    assert sorted(backend.workers.started()) == [("bt-1", backtest.id), ("tr-1", training.id)]
    body = dict(backend.workers.starts)["tr-1"]
    assert body == {  # a first attempt reads as before attempts (old workers take it)
        "operation_id": training.id,
        "operation_type": "training",
        "parameters": training.parameters,
        "resume": False,
    }
    assert set(backend.workers.tokens) == {f"Bearer {TOKEN}"}
    assert backend.store.get(training.id).worker_id == "tr-1"
    assert backend.registry.get("tr-1").status is WorkerStatus.BUSY
    assert backend.registry.get("tr-1").current_operation_id == training.id


async def test_only_idle_workers_get_work(backend: Backend) -> None:
    """Busy, stopping and unavailable workers are passed over; pending work waits."""
    for worker_id, status in (
        ("busy", WorkerStatus.BUSY),
        ("stopping", WorkerStatus.STOPPING),
        ("gone", WorkerStatus.IDLE),
    ):
        backend.register(worker_id)
        backend.registry.heartbeat(worker_id, HeartbeatRequest(status=status), now=backend.clock())
    backend.registry.mark_unavailable(["gone"])
    operation = backend.service.create("training", {})

    assert await backend.dispatcher.dispatch_once() == []

    assert backend.workers.starts == []
    assert status_of(backend, operation.id) is OperationStatus.PENDING


async def test_oldest_pending_operation_goes_first(backend: Backend) -> None:
    """With one worker, the operation created first is started first."""
    backend.register("tr-1")
    first = backend.service.create("training", {"seed": 1})
    backend.clock.advance(1)
    second = backend.service.create("training", {"seed": 2})

    await backend.dispatcher.dispatch_once()

    assert backend.workers.started() == [("tr-1", first.id)]
    assert status_of(backend, second.id) is OperationStatus.PENDING


async def test_a_worker_never_gets_two_operations(backend: Backend) -> None:
    """A stale 'idle' heartbeat cannot get a worker running one operation a second one."""
    backend.register("tr-1")
    first = backend.service.create("training", {})
    backend.clock.advance(1)
    second = backend.service.create("training", {})
    await backend.dispatcher.dispatch_once()
    # A heartbeat sent before the worker received the start request arrives late.
    idle = HeartbeatRequest(status=WorkerStatus.IDLE)
    backend.registry.heartbeat("tr-1", idle, now=backend.clock())

    assert await backend.dispatcher.dispatch_once() == []

    assert backend.workers.started() == [("tr-1", first.id)]
    assert status_of(backend, second.id) is OperationStatus.PENDING


@pytest.mark.parametrize("answer", [409, 503, 401], ids=["busy", "stopping", "bad-token"])
async def test_a_refused_start_puts_the_operation_back_in_the_queue(
    backend: Backend, answer: int | Exception
) -> None:
    """Busy, stopping or wrong token: pending again with its attempt number given back
    (that attempt never ran), and the worker rests.
    """
    backend.register("tr-1")
    backend.workers.answers["tr-1"] = answer
    operation = backend.service.create("training", {})

    [dispatch] = await backend.dispatcher.dispatch_once()
    record = backend.store.get(operation.id)
    idle = HeartbeatRequest(status=WorkerStatus.IDLE)
    backend.registry.heartbeat("tr-1", idle, now=backend.clock())
    resting = await backend.dispatcher.dispatch_once()
    backend.clock.advance(1.5)  # past the worker's 1 s heartbeat interval
    backend.workers.answers.pop("tr-1")
    [again] = await backend.dispatcher.dispatch_once()

    assert dispatch.outcome is DispatchOutcome.RELEASED
    assert (record.status, record.worker_id, record.started_at, record.attempt) == (
        OperationStatus.PENDING,
        None,
        None,
        0,
    )
    assert record.lost_attempts == 0
    assert resting == []  # no retry storm: the worker rests for about one heartbeat
    assert (again.operation_id, again.outcome) == (operation.id, DispatchOutcome.STARTED)
    assert backend.store.get(operation.id).attempt == 1


async def test_an_unreachable_worker_loses_the_attempt_and_the_retry_is_numbered(
    backend: Backend,
) -> None:
    """Unreachable at dispatch: attempt 1 is lost (pending, resume, 1 lost), the worker
    rests, and the next dispatch is attempt 2 sent as a retry.
    """
    backend.register("tr-1")
    backend.workers.answers["tr-1"] = httpx.ConnectError("refused")
    operation = backend.service.create("training", {})

    [dispatch] = await backend.dispatcher.dispatch_once()
    record = backend.store.get(operation.id)
    backend.clock.advance(1.5)
    backend.workers.answers.pop("tr-1")
    [again] = await backend.dispatcher.dispatch_once()

    assert (dispatch.outcome, dispatch.detail) == (
        DispatchOutcome.LOST,
        "unreachable (ConnectError)",
    )
    assert (record.status, record.attempt, record.lost_attempts, record.resume) == (
        OperationStatus.PENDING,
        1,
        1,
        True,
    )
    assert record.error is not None
    assert record.error.startswith("attempt 1 lost: worker tr-1 was unreachable (ConnectError)")
    assert again.outcome is DispatchOutcome.STARTED
    sent = backend.workers.starts[-1][1]
    assert (sent["attempt"], sent["retry"], sent["resume"]) == (2, True, True)


async def test_a_released_operation_goes_to_another_idle_worker(backend: Backend) -> None:
    """When one worker cannot take it, the next round gives it to another one."""
    backend.register("tr-1")
    backend.register("tr-2")
    backend.workers.answers["tr-1"] = httpx.ConnectError("refused")
    operation = backend.service.create("training", {})

    await backend.dispatcher.dispatch_once()
    await backend.dispatcher.dispatch_once()

    assert backend.workers.started() == [("tr-2", operation.id)]
    assert backend.store.get(operation.id).worker_id == "tr-2"


async def test_an_operation_the_worker_refuses_fails_with_its_reason(backend: Backend) -> None:
    """A 422 from the worker is about the operation itself: failed, not retried forever."""
    backend.register("tr-1")
    backend.workers.answers["tr-1"] = 422
    operation = backend.service.create("training", {})

    [dispatch] = await backend.dispatcher.dispatch_once()

    record = backend.store.get(operation.id)
    assert dispatch.outcome is DispatchOutcome.FAILED
    assert record.status is OperationStatus.FAILED
    assert record.error == "worker tr-1 refused the operation: HTTP 422 refused: tr-1 says no"
    assert backend.registry.get("tr-1").status is WorkerStatus.IDLE


async def test_a_start_without_an_answer_stays_running_on_the_worker(backend: Backend) -> None:
    """A read timeout may mean the worker started it: left running, never sent twice."""
    backend.register("tr-1")
    backend.register("tr-2")
    backend.workers.answers["tr-1"] = httpx.ReadTimeout("slow")
    operation = backend.service.create("training", {})

    [dispatch] = await backend.dispatcher.dispatch_once()
    await backend.dispatcher.dispatch_once()

    assert dispatch.outcome is DispatchOutcome.UNCONFIRMED
    assert backend.store.get(operation.id).worker_id == "tr-1"
    assert status_of(backend, operation.id) is OperationStatus.RUNNING
    assert backend.workers.attempts == [("POST", "tr-1", "/operations")]


async def test_a_resumed_operation_is_sent_with_the_resume_flag(backend: Backend) -> None:
    """resume=True reaches the worker, which then loads the checkpoint."""
    backend.register("tr-1")
    operation = backend.service.create("training", {})
    backend.service.cancel(operation.id)
    backend.service.resume(operation.id)

    await backend.dispatcher.dispatch_once()

    assert backend.workers.starts[0][1]["resume"] is True


async def test_cancel_on_worker_asks_the_worker_that_runs_it(backend: Backend) -> None:
    """The cancel request goes to the operation's worker; an unknown worker is no error."""
    backend.register("tr-1")
    operation = backend.service.create("training", {})
    await backend.dispatcher.dispatch_once()

    told = await backend.dispatcher.cancel_on_worker(operation.id, "tr-1")
    gone = await backend.dispatcher.cancel_on_worker(operation.id, "never-registered")
    backend.workers.answers["tr-1"] = httpx.ConnectError("refused")
    unreachable = await backend.dispatcher.cancel_on_worker(operation.id, "tr-1")

    assert (told, gone, unreachable) == (True, False, False)
    assert backend.workers.cancels == [("tr-1", operation.id)]


async def test_the_loop_dispatches_when_woken_without_waiting_for_the_tick(
    backend: Backend,
) -> None:
    """run_forever: a wake-up starts a round at once (the tick here is an hour)."""
    dispatcher = Dispatcher(
        service=backend.service,
        registry=backend.registry,
        http=backend.http,
        token=Secret(TOKEN),
        clock=backend.clock,
        tick=datetime.timedelta(hours=1),
    )
    backend.register("tr-1")
    stop = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run_forever(stop))
    operation = backend.service.create("training", {})

    dispatcher.wake()
    with anyio.fail_after(10):
        while not backend.workers.starts:
            await asyncio.sleep(0.005)
    stop.set()
    rounds = await loop

    assert backend.workers.started() == [("tr-1", operation.id)]
    assert rounds >= 1


# --- no request forgery through a worker's endpoint ---------------------------------------


class Scripted:
    """A MockTransport handler answering every request with one fixed response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.urls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return self.response


async def dispatch_with(backend: Backend, response: httpx.Response) -> tuple[Scripted, str]:
    """Start one training operation on tr-1, which answers ``response``; (handler, op id)."""
    handler = Scripted(response)
    dispatcher = Dispatcher(
        service=backend.service,
        registry=backend.registry,
        http=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        token=Secret(TOKEN),
        clock=backend.clock,
    )
    backend.register("tr-1", TRAINING)
    operation = backend.service.create("training", {})
    try:
        await dispatcher.dispatch_once()
    finally:
        await dispatcher.aclose()
    return handler, operation.id


async def test_a_refusal_that_is_not_an_error_body_leaves_only_its_status(
    backend: Backend,
) -> None:
    """An HTML 422 page fails the operation with 'HTTP 422' only: none of the body is kept."""
    page = "<html><body>SECRET_API_KEY=hunter2\nadmin panel</body></html>"
    response = httpx.Response(422, text=page, headers={"Content-Type": "text/html"})

    handler, operation_id = await dispatch_with(backend, response)

    error = backend.store.get(operation_id).error
    assert error == "worker tr-1 refused the operation: HTTP 422"
    assert handler.urls == ["http://127.0.0.1:9/tr-1/operations"]


async def test_a_workers_reason_is_kept_on_one_bounded_line(backend: Backend) -> None:
    """An ErrorBody whose detail has line breaks and 10,000 characters becomes one short line."""
    detail = "first line\nsecond\r\nthird\u2028fourth " + "x" * 10_000
    response = httpx.Response(422, json={"error": "invalid_request", "detail": detail})

    _, operation_id = await dispatch_with(backend, response)

    error = backend.store.get(operation_id).error or ""
    assert not {"\n", "\r", "\u2028"} & set(error)
    assert error.startswith("worker tr-1 refused the operation: HTTP 422 invalid_request: first")
    assert len(error) <= 600


async def test_a_redirect_is_never_followed(backend: Backend) -> None:
    """A 307 to another address is not followed; the operation goes back to pending."""
    response = httpx.Response(307, headers={"Location": "http://127.0.0.1:1/internal/admin"})

    handler, operation_id = await dispatch_with(backend, response)

    assert handler.urls == ["http://127.0.0.1:9/tr-1/operations"]
    assert backend.store.get(operation_id).status is OperationStatus.PENDING
    assert backend.store.get(operation_id).error is None


# --- traces ---------------------------------------------------------------------------

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_the_dispatch_continues_the_create_requests_trace(tmp_path: Path) -> None:
    """dispatch is a child of the create request's span; the worker gets its traceparent."""
    memory = memory_tracing(component="backend")
    store = open_store(tmp_path)
    backend = make_backend(store, tracing=memory.tracing)
    backend.register("tr-1")
    async with backend.client() as client:
        created = await client.post(
            "/api/v1/operations",
            json={"type": "training", "parameters": {}},
            headers={"traceparent": CALLER},
        )
    operation_id = created.json()["id"]
    await backend.dispatcher.drain()  # claimed at its creation (tr-1 was idle), sent now
    assert backend.workers.started() == [("tr-1", operation_id)]
    create = memory.named("POST /api/v1/operations")
    dispatch = memory.named("dispatch")
    assert dispatch.parent is not None
    assert dispatch.parent.span_id == create.get_span_context().span_id
    assert trace_hex(dispatch) == "0af7651916cd43dd8448eb211c80319c"
    assert dispatch.attributes is not None
    assert dispatch.attributes["ktrdr.operation.id"] == operation_id
    assert dispatch.attributes["ktrdr.worker.id"] == "tr-1"
    assert dispatch.attributes["ktrdr.dispatch.outcome"] == "started"
    [sent] = backend.workers.traceparents
    assert sent is not None
    assert sent.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    await backend.dispatcher.aclose()
    store.close()
    memory.close()


async def test_an_attempt_without_a_trace_begins_one_at_its_dispatch(tmp_path: Path) -> None:
    """Created while tracing was off: the dispatch starts the attempt's trace and records it."""
    memory = memory_tracing(component="backend")
    store = open_store(tmp_path)
    backend = make_backend(store, tracing=memory.tracing)
    backend.register("tr-1")
    created = backend.service.create("training", {})
    assert created.trace_id is None
    await backend.dispatcher.dispatch_once()
    dispatch = memory.named("dispatch")
    assert dispatch.parent is None
    assert backend.service.get(created.id).trace_id == trace_hex(dispatch)
    await backend.dispatcher.aclose()
    store.close()
    memory.close()


class GatedWorker:
    """A worker whose start answer waits for ``release``; cancels answer ``cancel_answers``."""

    def __init__(self, start: int | Exception = 202, cancel_answers: list[int] | None = None):
        self.start = start
        self.cancel_answers = list(cancel_answers or [])
        self.received = asyncio.Event()
        self.release = asyncio.Event()
        self.log: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/operations"):
            self.log.append("start")
            self.received.set()
            await self.release.wait()
            if isinstance(self.start, Exception):
                raise self.start
            return httpx.Response(self.start, json={"status": "running"})
        self.log.append("cancel")
        answer = self.cancel_answers.pop(0) if self.cancel_answers else 202
        return httpx.Response(answer, json={"error": "unknown_operation", "detail": "not here"})


def gated_dispatcher(backend: Backend, worker: GatedWorker, tick_s: float = 1.0) -> Dispatcher:
    return Dispatcher(
        service=backend.service,
        registry=backend.registry,
        http=httpx.AsyncClient(transport=httpx.MockTransport(worker)),
        token=Secret(TOKEN),
        clock=backend.clock,
        tick=datetime.timedelta(seconds=tick_s),
    )


async def test_a_cancel_never_overtakes_the_start_in_flight(backend: Backend) -> None:
    """Cancelled while its start is on the way: the cancel is sent once the start is answered."""
    backend.register("tr-1")
    worker = GatedWorker()
    dispatcher = gated_dispatcher(backend, worker)
    operation = backend.service.create("training", {})
    dispatching = asyncio.create_task(dispatcher.dispatch_once())
    with anyio.fail_after(10):
        await worker.received.wait()
    cancelled = backend.service.cancel(operation.id)
    cancelling = asyncio.create_task(dispatcher.cancel_on_worker(operation.id, "tr-1"))
    for _ in range(50):  # give an eager cancel every chance to go out first
        await asyncio.sleep(0)
    before_start_answered = list(worker.log)
    worker.release.set()
    with anyio.fail_after(10):
        [dispatch] = await dispatching
        told = await cancelling
    await dispatcher.aclose()

    assert cancelled.worker_id == "tr-1"
    assert before_start_answered == ["start"]
    assert dispatch.outcome is DispatchOutcome.STARTED
    assert told is True
    assert worker.log == ["start", "cancel"]


async def test_a_cancel_is_not_sent_for_a_start_that_never_reached_the_worker(
    backend: Backend,
) -> None:
    """The start failed to connect: the worker never had it, so there is nothing to cancel."""
    backend.register("tr-1")
    worker = GatedWorker(start=httpx.ConnectError("refused"))
    dispatcher = gated_dispatcher(backend, worker)
    operation = backend.service.create("training", {})
    dispatching = asyncio.create_task(dispatcher.dispatch_once())
    with anyio.fail_after(10):
        await worker.received.wait()
    backend.service.cancel(operation.id)
    cancelling = asyncio.create_task(dispatcher.cancel_on_worker(operation.id, "tr-1"))
    worker.release.set()
    with anyio.fail_after(10):
        await dispatching
        told = await cancelling
    await dispatcher.aclose()

    assert told is False
    assert worker.log == ["start"]
    assert status_of(backend, operation.id) is OperationStatus.CANCELLED


async def test_a_cancel_after_an_unanswered_start_is_sent_again_until_confirmed(
    backend: Backend,
) -> None:
    """The start got no answer: "not running here" is not final; the cancel is re-sent."""
    backend.register("tr-1")
    worker = GatedWorker(start=httpx.ReadTimeout("slow"), cancel_answers=[404, 404])
    dispatcher = gated_dispatcher(backend, worker, tick_s=0.01)
    operation = backend.service.create("training", {})
    worker.release.set()
    [dispatch] = await dispatcher.dispatch_once()
    backend.service.cancel(operation.id)

    told = await dispatcher.cancel_on_worker(operation.id, "tr-1")
    with anyio.fail_after(10):
        while worker.log.count("cancel") < 3 or dispatcher._resends:
            await anyio.sleep(0.01)
    await dispatcher.aclose()

    assert dispatch.outcome is DispatchOutcome.UNCONFIRMED
    assert told is False  # the first answer: 404
    assert worker.log == ["start", "cancel", "cancel", "cancel"]  # the third was accepted


async def test_cancel_is_not_re_sent_after_a_start_the_worker_answered(backend: Backend) -> None:
    """A 404 after an answered start is final: the job ended already."""
    backend.register("tr-1")
    worker = GatedWorker(cancel_answers=[404])
    dispatcher = gated_dispatcher(backend, worker, tick_s=0.01)
    operation = backend.service.create("training", {})
    worker.release.set()
    await dispatcher.dispatch_once()
    backend.service.cancel(operation.id)

    told = await dispatcher.cancel_on_worker(operation.id, "tr-1")
    resends = len(dispatcher._resends)
    await dispatcher.aclose()

    assert told is False
    assert resends == 0
    assert worker.log == ["start", "cancel"]


async def test_idle_connections_to_workers_expire_before_the_workers_server_closes_them() -> None:
    """A start is never sent on a connection the worker's server is closing for idleness."""
    server = build_worker_server(
        make_worker(FakeBackend()),
        auth=AuthSettings(worker_token=Secret(TOKEN)),
        logging_settings=LoggingSettings(),
    )
    client = worker_client()
    pool = client._transport._pool  # type: ignore[attr-defined]
    await client.aclose()

    assert pool._keepalive_expiry == CLIENT_KEEPALIVE_EXPIRY.total_seconds()
    assert CLIENT_KEEPALIVE_EXPIRY.total_seconds() <= server.config.timeout_keep_alive / 2
