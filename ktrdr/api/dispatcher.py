"""The dispatcher: hands pending operations to idle workers of their type, and stops them.

One round (:meth:`Dispatcher.dispatch_once`) takes the idle, available workers from the
registry, leaves out every worker the store says is still running an operation (a
stale "idle" heartbeat cannot get a worker two operations), and pairs the oldest
pending operations of each type with them. Each pairing is first written to the store
(pending → running on that worker as its next attempt, one atomic transition: a
cancel or another round cannot take the same operation), then sent to the worker as
an authenticated ``POST /operations`` carrying the attempt number. If the worker
answers busy or stopping, the operation goes back to pending in its old place (the
attempt number given back) and the worker rests until its next heartbeat; if it was
never reached, the attempt is lost like one whose worker died (retried up to
``KTRDR_OPS_MAX_ATTEMPTS``); if the worker refuses the operation itself (422), it
fails with the worker's reason. Nothing is lost: an operation is pending, running on a
worker that accepted it (or at least may have), or finished with a reason.

A cancel never overtakes its start: :meth:`Dispatcher.cancel_on_worker` first waits
for a start of the same operation that is still being claimed or sent, then tells
the worker, which by then runs the operation (or never got it). When the start got
no answer, the worker may still receive it later, so the cancel is sent again every
tick for :data:`CANCEL_RESEND_WINDOW` until the worker confirms it.

A worker that reports an outcome and asks for more (``take_next``) may get its next
operation in the answer instead (``ktrdr.api.reports``): the finish and the claim are
one store transaction, and :meth:`Dispatcher.hand_off` does for that start everything
a round's start does (the registry, the ``dispatch`` span, the metric, the log line,
a cancel waiting for it) with the same functions; only the HTTP request is left out.
The worker cannot confirm it at once, so a cancel treats it as a start that got no
answer. A worker that cannot start a handed-off operation gives it back
(:meth:`Dispatcher.give_back`), like a start answered busy.

Rounds run when woken (an operation created or resumed, a worker registered, became
idle or reported without taking the next operation) and on a short tick. The
dispatcher speaks HTTP to workers through an injected ``httpx.AsyncClient`` (tests use
``httpx.MockTransport``) and owns it.

A worker names its own ``endpoint_url``, so the dispatcher must not become a way to
reach anything else: it only ever calls that base URL (checked at registration, and
again here) plus its fixed paths, never follows a redirect, and keeps nothing of an
answer but its status and, when the body parses as a worker ``ErrorBody``, a bounded
single-line reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import functools
import logging
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote

import attrs
import httpx

from ktrdr.api.metrics import AttemptLoss, BackendMetrics, DisabledBackendMetrics
from ktrdr.api.operations import OperationsService
from ktrdr.api.periodic import run_until_stopped, wait_or_stop, wait_or_wake
from ktrdr.api.registry import WorkerRecord, WorkerRegistry
from ktrdr.api.store import InvalidTransition, OperationNotFound
from ktrdr.config import AuthSettings, Secret, env_name
from ktrdr.log_context import attempt_of, operation_context
from ktrdr.protocol import (
    WORKER_OPERATIONS_PATH,
    CancelOperationRequest,
    Handoff,
    OperationStatus,
    OperationType,
    OperationView,
    StartOperationRequest,
    base_url_problem,
)
from ktrdr.tracing import Tracing, current_traceparent
from ktrdr.web.http_client import bearer_headers, client_limits, describe_error

__all__ = [
    "CANCEL_RESEND_WINDOW",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_TICK",
    "MAX_ROUND_WORKERS",
    "CreateAndClaim",
    "Dispatch",
    "DispatchOutcome",
    "Dispatcher",
    "WorkerAnswer",
    "one_line",
    "start_request",
    "worker_client",
    "worker_url",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]
#: Creates an operation, claiming for one of the given idle workers in the same
#: transaction (:meth:`OperationsService.create_and_claim` with its arguments bound).
CreateAndClaim = Callable[[list[str]], tuple[OperationView, tuple[OperationView, str] | None]]

#: A round runs at least this often, woken or not (catches anything a wake missed).
DEFAULT_TICK = datetime.timedelta(seconds=1)
#: Idle workers of one type considered in one round (a full round wakes the next).
MAX_ROUND_WORKERS = 32
#: Budget of one call to a worker (start or cancel).
DEFAULT_REQUEST_TIMEOUT = datetime.timedelta(seconds=5)
#: How long a cancel is sent again (every tick) to a worker whose start got no answer.
CANCEL_RESEND_WINDOW = datetime.timedelta(seconds=30)
#: Longest error text kept from a worker's refusal.
_MAX_REASON = 500
#: Runs of control characters and line breaks (Unicode's too), made one space.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\s]+")


class DispatchOutcome(str, enum.Enum):
    """What became of one pairing of an operation with a worker."""

    STARTED = "started"  # the worker accepted it
    RELEASED = "released"  # refused for now: pending again, the attempt given back
    LOST = "lost"  # never reached the worker: the attempt is lost (retried or failed)
    FAILED = "failed"  # the worker refused this operation itself: failed with its reason
    UNCONFIRMED = "unconfirmed"  # sent, no answer: left running (heartbeats or orphans decide)
    HANDED_OFF = "handed_off"  # in the answer to the worker's report (it starts it on receipt)


#: Outcomes after which the worker may run the operation without having said so.
_MAYBE_RUNNING = (DispatchOutcome.UNCONFIRMED, DispatchOutcome.HANDED_OFF)


@attrs.frozen(kw_only=True)
class WorkerAnswer:
    """A worker's answer to a read: its status and at most ``max_bytes`` of its body."""

    status_code: int
    body: bytes
    truncated: bool


@attrs.frozen(kw_only=True)
class Dispatch:
    """One operation sent (or not) to one worker in a round."""

    operation_id: str
    worker_id: str
    outcome: DispatchOutcome
    detail: str = ""


def one_line(text: str, limit: int = _MAX_REASON) -> str:
    """``text`` on one line (control characters and line breaks become a space), cut to
    ``limit`` characters.
    """
    return _BREAKS.sub(" ", text).strip()[:limit]


def _first_attempt(request: StartOperationRequest) -> set[str] | None:
    """The fields to leave out of a start request: ``attempt`` and ``retry`` of a first
    attempt, so it reads as before attempts were numbered and a worker not upgraded yet
    (the backend is upgraded first) still takes it.
    """
    return {"attempt", "retry"} if request.attempt == 1 and not request.retry else None


def start_request(view: OperationView) -> StartOperationRequest:
    """What a worker is told to run for the claimed attempt ``view`` (a start request's
    body, or a handoff's).
    """
    return StartOperationRequest(
        operation_id=view.id,
        operation_type=view.type,
        parameters=dict(view.parameters),
        resume=view.resume,
        attempt=view.attempt,
        retry=view.lost_attempts > 0,
    )


def _log_started(view: OperationView, worker_id: str, how: str = "") -> None:
    logger.info(
        "operation %s (%s%s) attempt %d started on worker %s%s",
        view.id,
        view.type.value,
        ", resuming" if view.resume else "",
        view.attempt,
        worker_id,
        how,
    )


def _reason(response: httpx.Response) -> str:
    """The worker's ``ErrorBody`` as one line (or just the status), at most 500 characters.

    A body that is not an ``ErrorBody`` (HTML, text, anything a redirect target or
    another service sends) contributes nothing but the status.
    """
    return one_line(describe_error(response))


def worker_client() -> httpx.AsyncClient:
    """The dispatcher's HTTP client for the workers (its idle connections expire early)."""
    return httpx.AsyncClient(limits=client_limits())


def worker_url(worker: WorkerRecord, path: str) -> str | None:
    """``path`` under the worker's base URL; None if the base URL is not one."""
    if base_url_problem(worker.endpoint_url) is not None:
        return None
    return worker.endpoint_url.rstrip("/") + path


class Dispatcher:
    """Pairs pending operations with idle workers; forwards cancellations to workers.

    Runs on the event loop (the registry is loop-only); store calls go to threads.
    ``clock`` returns aware UTC datetimes. :meth:`run_forever` is started by the app's
    lifespan, which calls :meth:`aclose` on shutdown.
    """

    def __init__(
        self,
        *,
        service: OperationsService,
        registry: WorkerRegistry,
        http: httpx.AsyncClient,
        token: Secret,
        clock: Clock,
        tick: datetime.timedelta = DEFAULT_TICK,
        request_timeout: datetime.timedelta = DEFAULT_REQUEST_TIMEOUT,
        metrics: BackendMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._service = service
        self._metrics = metrics if metrics is not None else DisabledBackendMetrics()
        self._registry = registry
        self._http = http
        self._headers = bearer_headers(token)
        self._clock = clock
        self._tick = tick
        self._timeout_s = request_timeout.total_seconds()
        self._tracing = tracing if tracing is not None else Tracing.off()
        self._wake = asyncio.Event()
        #: Workers that just failed a start, and when they may be tried again.
        self._resting: dict[str, datetime.datetime] = {}
        #: One per claim in progress (a round's, a report's handoff): resolved once its
        #: starts are tracked in ``_starts``.
        self._claims: set[asyncio.Future[None]] = set()
        #: Starts being sent, by operation id: resolved with the outcome once answered.
        self._starts: dict[str, asyncio.Future[DispatchOutcome]] = {}
        #: Starts that got no answer, and when (kept for CANCEL_RESEND_WINDOW).
        self._unconfirmed: dict[str, datetime.datetime] = {}
        #: Cancels being sent again to a worker that may still receive the start.
        self._resends: set[asyncio.Task[None]] = set()
        #: Starts of operations claimed at their creation, being sent.
        self._sending: set[asyncio.Task[Dispatch]] = set()
        self._closing = asyncio.Event()

    # --- the loop ---------------------------------------------------------------------

    def wake(self) -> None:
        """Run a round as soon as possible (call from the event loop)."""
        self._wake.set()

    async def run_forever(self, stop_event: asyncio.Event) -> int:
        """Dispatch now, then whenever woken or every tick, until ``stop_event`` is set."""
        return await run_until_stopped(
            "dispatch",
            self.dispatch_once,
            interval=self._tick,
            stop_event=stop_event,
            wait=wait_or_wake(self._wake),
        )

    async def aclose(self) -> None:
        """Stop re-sending cancels and release the HTTP client (the app's lifespan shutdown)."""
        self._closing.set()
        for task in list(self._resends):
            task.cancel()
        await asyncio.gather(*self._resends, return_exceptions=True)
        await self.drain()  # starts already claimed are sent (each bounded by its timeout)
        await self._http.aclose()

    async def drain(self) -> None:
        """Wait until the starts of operations claimed at their creation are settled."""
        await asyncio.gather(*self._sending, return_exceptions=True)

    # --- one round --------------------------------------------------------------------

    async def dispatch_once(self) -> list[Dispatch]:
        """Pair pending operations with idle workers and start them; what happened to each."""
        self._wake.clear()
        now = self._clock()
        self._resting = {w: until for w, until in self._resting.items() if until > now}
        candidates: dict[OperationType, list[str]] = defaultdict(list)
        workers: dict[str, WorkerRecord] = {}
        for kind in self._registry.idle_types():
            for record in self._free(kind):
                candidates[kind].append(record.worker_id)
                workers[record.worker_id] = record
        if not candidates:
            return []
        async with self.claiming():  # a cancel arriving now waits for the starts below
            claims, raced = await asyncio.to_thread(self._claim, dict(candidates))
            for view, worker_id in claims:
                self.track(view, worker_id)
        if raced or len(claims) >= MAX_ROUND_WORKERS:
            self.wake()  # an operation vanished under us, or more may be waiting
        results = await asyncio.gather(
            *(self._request_start(view, workers[worker_id]) for view, worker_id in claims)
        )
        return list(results)

    def _free(self, kind: OperationType) -> list[WorkerRecord]:
        """Idle workers of ``kind`` not resting: longest idle first, at most a round's
        worth (the cost of a round does not grow with the fleet; a full round wakes the
        next one).
        """
        free: list[WorkerRecord] = []
        for record in self._registry.idle(kind):
            if record.worker_id not in self._resting:
                free.append(record)
                if len(free) >= MAX_ROUND_WORKERS:
                    break
        return free

    async def create(self, operation_type: OperationType, create: CreateAndClaim) -> OperationView:
        """Create an operation with ``create`` (in a thread) and start what it claims.

        ``create`` gets the idle workers of ``operation_type`` (ids, best first) and,
        in the transaction that inserts the operation, claims the oldest pending one of
        the type for the first of them that runs nothing: a creation while a worker
        waits starts at once, without a round (issue 13's create-and-dispatch in one
        transaction). The start is sent in the background, as a round sends it; the
        created operation is returned (running already when it was the one claimed).
        """
        free = {record.worker_id: record for record in self._free(operation_type)}
        async with self.claiming():
            view, claimed = await asyncio.to_thread(create, list(free))
            if claimed is not None:
                self.track(*claimed)
        if claimed is None or claimed[0].id != view.id:
            self.wake()  # not started here, or older operations were waiting
        if claimed is not None:
            started, worker_id = claimed
            task = asyncio.create_task(self._request_start(started, free[worker_id]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return view

    @contextlib.asynccontextmanager
    async def claiming(self) -> AsyncIterator[None]:
        """Claim operations inside: a cancel arriving meanwhile waits until the block
        ends, by when every claimed operation is :meth:`track`-ed.
        """
        claim: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._claims.add(claim)
        try:
            yield
        finally:
            self._claims.discard(claim)
            claim.set_result(None)

    def track(self, view: OperationView, worker_id: str) -> None:
        """``view`` was just claimed for ``worker_id``: the registry has the worker busy
        with it, and a cancel waits for its start to settle (call within
        :meth:`claiming`, then :meth:`_settle` the start).
        """
        self._registry.assign(worker_id, view.id)
        self._starts[view.id] = asyncio.get_running_loop().create_future()

    async def hand_off(self, view: OperationView, worker_id: str) -> Handoff:
        """The start of ``view`` (claimed and :meth:`track`-ed for ``worker_id`` with
        its report's finish), to answer the report with instead of a start request.

        Everything a round's start does but the request: the ``dispatch`` span in the
        attempt's trace (the handoff carries it on), the dispatch metric and latency
        (outcome ``handed_off``), the log line, and a waiting cancel told (it treats
        the start as unconfirmed: sent again until the worker confirms).
        """
        handoff: list[Handoff] = []

        async def give() -> Dispatch:
            handoff.append(Handoff(start=start_request(view), traceparent=current_traceparent()))
            _log_started(view, worker_id, " (handed over in the answer to its report)")
            return Dispatch(
                operation_id=view.id, worker_id=worker_id, outcome=DispatchOutcome.HANDED_OFF
            )

        await self._settle(view, worker_id, give)
        return handoff[0]

    def _claim(
        self, candidates: dict[OperationType, list[str]]
    ) -> tuple[list[tuple[OperationView, str]], bool]:
        """In a thread: mark the oldest pending operations running on free workers.

        Returns the (operation, worker id) pairs and whether an operation was cancelled
        or deleted between listing and claiming it.
        """
        busy = self._service.busy_workers()
        claims: list[tuple[OperationView, str]] = []
        raced = False
        for kind, worker_ids in candidates.items():
            free = [w for w in worker_ids if w not in busy]
            if not free:
                continue
            for pending in self._service.pending(operation_type=kind, limit=len(free)):
                try:
                    started = self._service.start(pending.id, worker_id=free[0])
                except (InvalidTransition, OperationNotFound):
                    raced = True
                    continue
                claims.append((started, free.pop(0)))
        return claims, raced

    async def _request_start(self, view: OperationView, worker: WorkerRecord) -> Dispatch:
        """:meth:`_settle` a claimed operation with a start request to its worker."""
        send = functools.partial(self._send_start, view, worker)
        return await self._settle(view, worker.worker_id, send)

    async def _settle(
        self, view: OperationView, worker_id: str, send: Callable[[], Awaitable[Dispatch]]
    ) -> Dispatch:
        """:meth:`_start` with ``send``, then tell a cancel waiting for it how it went."""
        outcome = DispatchOutcome.UNCONFIRMED
        try:
            dispatch = await self._start(view, worker_id, send)
            outcome = dispatch.outcome
            return dispatch
        finally:
            if outcome in _MAYBE_RUNNING:
                self._note_unconfirmed(view.id)
            started = self._starts.pop(view.id, None)
            if started is not None and not started.done():
                started.set_result(outcome)

    def _note_unconfirmed(self, operation_id: str) -> None:
        """Remember a start the worker has not confirmed, for a cancel within
        :data:`CANCEL_RESEND_WINDOW`; forget the ones older than that. Oldest first (the
        dict's order), so forgetting stops at the first one still young: a handoff per
        operation costs the same however many were handed off recently.
        """
        now = self._clock()
        horizon = now - CANCEL_RESEND_WINDOW
        unconfirmed = self._unconfirmed
        while unconfirmed:
            oldest, at = next(iter(unconfirmed.items()))
            if at > horizon:
                break
            del unconfirmed[oldest]
        unconfirmed.pop(operation_id, None)
        unconfirmed[operation_id] = now

    async def _start(
        self, view: OperationView, worker_id: str, send: Callable[[], Awaitable[Dispatch]]
    ) -> Dispatch:
        """Give one claimed operation to its worker (``send``: a start request, or a
        handoff), in its attempt's trace; time it and count it.

        The ``dispatch`` span continues the span that began the attempt (the create or
        resume request); an attempt begun without one (tracing was off then) begins its
        trace here, and the operation records it.
        """
        parent = None
        if self._tracing.enabled:
            try:
                parent = await asyncio.to_thread(self._service.trace_parent, view.id)
            except OperationNotFound:
                parent = None  # deleted meanwhile: the round settles it below
        attributes = {
            "ktrdr.operation.id": view.id,
            "ktrdr.operation.type": view.type.value,
            "ktrdr.operation.resume": view.resume,
            "ktrdr.worker.id": worker_id,
        }
        with self._tracing.span(
            "dispatch", parent=parent, root=parent is None, attributes=attributes
        ) as span:
            if self._tracing.enabled and parent is None:
                begun = current_traceparent()
                if begun is not None:
                    await asyncio.to_thread(self._service.set_trace_parent, view.id, begun)
            began = time.perf_counter()
            with operation_context(view.id, attempt=attempt_of(view)):
                dispatch = await send()
            self._metrics.dispatched(view.type, dispatch.outcome.value, time.perf_counter() - began)
            span.set_attribute("ktrdr.dispatch.outcome", dispatch.outcome.value)
            return dispatch

    async def _send_start(self, view: OperationView, worker: WorkerRecord) -> Dispatch:
        """``POST /operations`` to the worker and settle the outcome."""
        request = start_request(view)
        url = worker_url(worker, WORKER_OPERATIONS_PATH)
        if url is None:  # the registration check makes this unreachable; never call it
            return await self._release(view, worker, "its endpoint_url is not a base URL")
        try:
            response = await self._http.post(
                url,
                content=request.model_dump_json(exclude=_first_attempt(request)).encode(),
                headers=self._headers,
                timeout=self._timeout_s,
                follow_redirects=False,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return await self._lose(view, worker, f"unreachable ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            # The request may have reached the worker: leave the operation running on
            # it. Its heartbeats confirm it; if it never runs, the orphan detector fails it.
            detail = f"no answer ({type(exc).__name__})"
            logger.warning(
                "operation %s: worker %s gave %s to the start request; left running on it",
                view.id,
                worker.worker_id,
                detail,
            )
            self._rest(worker)
            return Dispatch(
                operation_id=view.id,
                worker_id=worker.worker_id,
                outcome=DispatchOutcome.UNCONFIRMED,
                detail=detail,
            )
        if response.is_success:
            _log_started(view, worker.worker_id)
            return Dispatch(
                operation_id=view.id, worker_id=worker.worker_id, outcome=DispatchOutcome.STARTED
            )
        reason = _reason(response)
        if response.status_code in (400, 413, 422):
            return await self._fail(view, worker, reason)
        if response.status_code == 401:
            logger.error(
                "worker %s refused the backend's token; %s must be the "
                "same on the backend and every worker",
                worker.worker_id,
                env_name(attrs.fields(AuthSettings).worker_token),
            )
        return await self._release(view, worker, reason)

    def _rest(self, worker: WorkerRecord) -> None:
        """Skip ``worker`` until about its next heartbeat (no retry storm on one worker)."""
        pause = max(worker.heartbeat_interval, self._tick)
        self._resting[worker.worker_id] = self._clock() + pause

    async def _lose(self, view: OperationView, worker: WorkerRecord, reason: str) -> Dispatch:
        """The worker was never reached: the attempt is lost (queued again, or failed)."""
        self._rest(worker)
        self._registry.operation_ended(worker.worker_id, view.id)  # it never got it
        lost = f"worker {worker.worker_id} was {reason} at dispatch"
        try:
            after = await asyncio.to_thread(
                self._service.lose,
                view.id,
                worker_id=worker.worker_id,
                attempt=view.attempt,
                reason=lost,
                cause=AttemptLoss.UNREACHABLE,
            )
        except (InvalidTransition, OperationNotFound) as exc:
            logger.info("operation %s not re-queued: %s", view.id, exc)
        else:
            level = logging.WARNING if after.status is OperationStatus.PENDING else logging.ERROR
            logger.log(level, "operation %s %s: %s", view.id, after.status.value, after.error)
            self.wake()  # another idle worker may take it now
        return Dispatch(
            operation_id=view.id,
            worker_id=worker.worker_id,
            outcome=DispatchOutcome.LOST,
            detail=reason,
        )

    async def _release(self, view: OperationView, worker: WorkerRecord, reason: str) -> Dispatch:
        try:
            await self._put_back(view.id, worker, view.attempt, reason)
        except (InvalidTransition, OperationNotFound) as exc:
            logger.info("operation %s not re-queued: %s", view.id, exc)
        return Dispatch(
            operation_id=view.id,
            worker_id=worker.worker_id,
            outcome=DispatchOutcome.RELEASED,
            detail=reason,
        )

    async def give_back(
        self, operation_id: str, worker: WorkerRecord, *, attempt: int, reason: str
    ) -> OperationView:
        """``worker`` could not start ``attempt`` of ``operation_id``, handed to it with
        its report's answer: back in the queue as if its start request had been
        answered busy. Raises :class:`InvalidTransition` (or ``StaleAttempt``, a 409)
        when that attempt is not running there any more (cancelled meanwhile), or
        :class:`OperationNotFound`.
        """
        with operation_context(operation_id, attempt=attempt):
            self._unconfirmed.pop(operation_id, None)  # nothing for a cancel to resend
            self._registry.operation_ended(worker.worker_id, operation_id)
            return await self._put_back(operation_id, worker, attempt, reason)

    async def _put_back(
        self, operation_id: str, worker: WorkerRecord, attempt: int, reason: str
    ) -> OperationView:
        """Running ``attempt`` → pending in its old place, attempt given back; the worker
        rests until about its next heartbeat. Raises the store's refusals.
        """
        self._rest(worker)
        view = await asyncio.to_thread(
            self._service.release, operation_id, worker_id=worker.worker_id, attempt=attempt
        )
        logger.warning(
            "operation %s could not start on worker %s (%s); back in the queue",
            operation_id,
            worker.worker_id,
            reason,
        )
        self.wake()  # another idle worker may take it now
        return view

    async def _fail(self, view: OperationView, worker: WorkerRecord, reason: str) -> Dispatch:
        error = f"worker {worker.worker_id} refused the operation: {reason}"
        try:
            await asyncio.to_thread(
                self._service.finish,
                view.id,
                status=OperationStatus.FAILED,
                worker_id=worker.worker_id,
                attempt=view.attempt,
                error=error,
            )
        except (InvalidTransition, OperationNotFound) as exc:
            logger.info("operation %s not failed: %s", view.id, exc)
        else:
            logger.error("operation %s failed: %s", view.id, error)
        self._registry.operation_ended(worker.worker_id, view.id)
        return Dispatch(
            operation_id=view.id,
            worker_id=worker.worker_id,
            outcome=DispatchOutcome.FAILED,
            detail=reason,
        )

    # --- reads ------------------------------------------------------------------------

    async def read_from_worker(
        self, worker: WorkerRecord, path: str, *, max_bytes: int
    ) -> WorkerAnswer | None:
        """``GET path`` on ``worker`` (worker token, no redirects), reading at most
        ``max_bytes`` of the body; None when the worker cannot be reached.
        """
        url = worker_url(worker, path)
        if url is None:
            return None
        chunks: list[bytes] = []
        size = 0
        truncated = False
        try:
            async with self._http.stream(
                "GET", url, headers=self._headers, timeout=self._timeout_s, follow_redirects=False
            ) as response:
                async for chunk in response.aiter_bytes():
                    chunks.append(chunk[: max_bytes - size])
                    size += len(chunk)
                    if size > max_bytes:
                        truncated = True
                        break
        except httpx.HTTPError as exc:
            logger.info(
                "worker %s could not be read (%s %s)", worker.worker_id, type(exc).__name__, path
            )
            return None
        return WorkerAnswer(
            status_code=response.status_code, body=b"".join(chunks), truncated=truncated
        )

    # --- cancellation -----------------------------------------------------------------

    async def stop_attempt(self, operation_id: str, worker_id: str, attempt: int) -> bool:
        """Tell ``worker_id`` that ``attempt`` of ``operation_id`` is no longer current
        (timed out, stalled): it kills the job at once. See :meth:`cancel_on_worker`.
        """
        return await self.cancel_on_worker(
            operation_id, worker_id, attempt=attempt, superseded=True
        )

    async def cancel_on_worker(
        self,
        operation_id: str,
        worker_id: str,
        *,
        attempt: int | None = None,
        superseded: bool = False,
    ) -> bool:
        """Ask ``worker_id`` to stop ``attempt`` of ``operation_id`` (already ended or
        retried in the store).

        ``superseded`` (the attempt is no longer current: lost and retried, timed out,
        stalled) makes the worker kill the job at once and write no more checkpoints
        for it; otherwise the job stops at its next step and saves a checkpoint.
        Waits first for a start of the operation still being claimed or sent, so the
        cancel never overtakes it. True when the worker accepted; False when it is
        gone, does not run the attempt, never got it, or did not answer (each
        logged). If the start got no answer, the worker may receive it later: the
        cancel is then sent again in the background until the worker confirms it
        (or :data:`CANCEL_RESEND_WINDOW` passes). A worker that still runs a
        superseded attempt also learns it from its next heartbeat's answer, and its
        report is refused.
        """
        body = CancelOperationRequest(attempt=attempt, superseded=superseded)
        with operation_context(operation_id, attempt=attempt or 1):
            return await self._cancel_on_worker(operation_id, worker_id, body)

    async def _cancel_on_worker(
        self, operation_id: str, worker_id: str, body: CancelOperationRequest
    ) -> bool:
        for claim in list(self._claims):
            await asyncio.shield(claim)
        start = self._starts.get(operation_id)
        started = None if start is None else await asyncio.shield(start)
        unanswered_at = self._unconfirmed.pop(operation_id, None)
        if unanswered_at is not None and self._clock() - unanswered_at < CANCEL_RESEND_WINDOW:
            started = DispatchOutcome.UNCONFIRMED
        if started in (DispatchOutcome.RELEASED, DispatchOutcome.LOST, DispatchOutcome.FAILED):
            logger.info(
                "operation %s cancelled; worker %s never started it", operation_id, worker_id
            )
            return False
        told = await self._send_cancel(operation_id, worker_id, body)
        if told is None:
            return False
        if not told and started is DispatchOutcome.UNCONFIRMED and not self._closing.is_set():
            task = asyncio.create_task(
                self._resend_cancel(operation_id, worker_id, body),
                name=f"ktrdr-cancel-{operation_id}",
            )
            self._resends.add(task)
            task.add_done_callback(self._resends.discard)
        return told

    async def _resend_cancel(
        self, operation_id: str, worker_id: str, body: CancelOperationRequest
    ) -> None:
        """Send the cancel every tick until the worker confirms it, is gone, or time is up."""
        with operation_context(operation_id, attempt=body.attempt or 1):
            await self._resend_cancel_rounds(operation_id, worker_id, body)

    async def _resend_cancel_rounds(
        self, operation_id: str, worker_id: str, body: CancelOperationRequest
    ) -> None:
        rounds = max(1, int(CANCEL_RESEND_WINDOW / self._tick))
        for _ in range(rounds):
            if await wait_or_stop(self._closing, self._tick.total_seconds()):
                return
            told = await self._send_cancel(operation_id, worker_id, body, quiet=True)
            if told is None or told:
                return
        logger.warning(
            "operation %s cancelled; worker %s never confirmed it within %gs (its start got "
            "no answer): if it runs the operation anyway, its outcome will be refused",
            operation_id,
            worker_id,
            CANCEL_RESEND_WINDOW.total_seconds(),
        )

    async def _send_cancel(
        self,
        operation_id: str,
        worker_id: str,
        body: CancelOperationRequest,
        *,
        quiet: bool = False,
    ) -> bool | None:
        """One cancel request: True accepted, False not (yet) running there or no answer,
        None when the worker is gone (nothing left to tell).
        """
        try:
            worker = self._registry.get(worker_id)
        except LookupError:
            logger.info("operation %s cancelled; its worker %s is gone", operation_id, worker_id)
            return None
        url = worker_url(worker, f"{WORKER_OPERATIONS_PATH}/{quote(operation_id, safe='')}/cancel")
        if url is None:
            return None
        log = logger.debug if quiet else logger.info
        try:
            response = await self._http.post(
                url,
                content=body.model_dump_json().encode(),
                headers=self._headers,
                timeout=self._timeout_s,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            (logger.debug if quiet else logger.warning)(
                "operation %s stopped, but worker %s could not be told (%s)",
                operation_id,
                worker_id,
                type(exc).__name__,
            )
            return False
        if response.is_success:
            logger.info("operation %s: worker %s is stopping it", operation_id, worker_id)
            return True
        log(
            "operation %s cancelled; worker %s answered %s",
            operation_id,
            worker_id,
            _reason(response),
        )
        return False
