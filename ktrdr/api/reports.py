"""What workers tell the backend about operations: progress in heartbeats, outcomes in reports.

The worker API calls :meth:`OperationReports.registered` and
:meth:`OperationReports.heartbeat` after updating the registry; the operations API
calls :meth:`OperationReports.report` for ``POST /api/v1/operations/{id}/report``.

Every heartbeat that names an operation stamps it in the store (the orphan detector
relies on that, progress or not), with the series points it carries; so does a
heartbeat listing it among the worker's ``pending_outcomes``: an operation that ended
on a live worker whose report has not got through yet (the backend or its store was
away) is not an orphan, and its outcome is taken whenever it arrives while the
operation still runs on that worker. Heartbeats are
the hot path, so they are not written one transaction each: the heartbeat only notes
its stamp (the time it arrived and its progress, the latest per operation, and its
series points, merged with those not written yet), and :meth:`run_forever` writes
whatever has accumulated in one transaction, at most every :data:`FLUSH_SPACING`
(group commit: a bounded write load however many workers heartbeat). A stamp or report
about an operation that has moved on (cancelled by a user, failed as an orphan,
deleted) changes nothing: the worker's news came too late, and the first outcome
stands. Whenever a worker may have become free, the dispatcher is woken.

A report that asks for more (``take_next``: the worker is idle, not stopping, and
this is its live delivery) finishes the attempt and claims the oldest pending
operation of the worker's type for it in one store transaction; the answer carries
that operation's start (:class:`~ktrdr.protocol.Handoff`, prepared by the dispatcher's
:meth:`~ktrdr.api.dispatcher.Dispatcher.hand_off`) and no round is woken. Nothing is
handed to a worker that did not ask, nor to one the registry has stopping. If the
answer is lost, the worker's outbox sends the report again: while the handed-off
attempt still runs on that worker, the repeated report gets the same handoff again
(else the refusal any late report gets).

Fencing: a heartbeat or report speaks for one attempt of its operation. One that is
not the current attempt on that worker (lost and retried elsewhere, timed out, an
attempt that never existed) is answered 409 ``stale_attempt`` naming the current
attempt, and changes nothing; the worker stops that job. The heartbeat's check reads
the store's in-memory book of current attempts, so it costs no database read. A
worker that reports an attempt as cancelled (it shut down, saving a checkpoint) or
unregisters while running one has lost that attempt: it is retried elsewhere.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import attrs

from ktrdr.api.attempts import AttemptState, stale_attempt
from ktrdr.api.dispatcher import Dispatcher
from ktrdr.api.metrics import (
    AttemptLoss,
    BackendMetrics,
    DisabledBackendMetrics,
    ReportRejection,
)
from ktrdr.api.operations import InvalidTransition, OperationNotFound, OperationsService
from ktrdr.api.periodic import run_until_stopped, wait_or_stop, wait_or_wake
from ktrdr.api.registry import WorkerRecord, WorkerRegistry
from ktrdr.api.series_store import merge_points
from ktrdr.api.store import ProgressStamp
from ktrdr.errors import StaleAttempt
from ktrdr.log_context import attempt_of, operation_context
from ktrdr.protocol import (
    Handoff,
    HeartbeatRequest,
    OperationReport,
    OperationStatus,
    OperationView,
    ReportAnswer,
    SeriesPoints,
    WorkerStatus,
)
from ktrdr.web import ApiError

__all__ = ["CHECKPOINT_SAVED", "FLUSH_SPACING", "FLUSH_TICK", "OperationReports"]

logger = logging.getLogger(__name__)

#: Words a cancelled operation's error carries when its worker saved a checkpoint.
CHECKPOINT_SAVED = "checkpoint saved"
#: The stamp writer also runs this often when nothing woke it (a safety net).
FLUSH_TICK = datetime.timedelta(seconds=1)
#: Least time between two stamp writes: bounds the store's write load under any number
#: of heartbeats (progress is at most this much later; the orphan timeout is seconds).
FLUSH_SPACING = datetime.timedelta(milliseconds=100)


class OperationReports:
    """Applies workers' heartbeats and reports to the store, the registry and dispatch.

    Runs on the event loop; store writes go to threads. The app's lifespan runs
    :meth:`run_forever`; tests call :meth:`flush` to write the noted stamps now.
    """

    def __init__(
        self,
        *,
        service: OperationsService,
        registry: WorkerRegistry,
        dispatcher: Dispatcher,
        spacing: datetime.timedelta = FLUSH_SPACING,
        metrics: BackendMetrics | None = None,
    ) -> None:
        self._service = service
        self._metrics = metrics if metrics is not None else DisabledBackendMetrics()
        self._registry = registry
        self._dispatcher = dispatcher
        self._spacing_s = spacing.total_seconds()
        #: Heartbeat stamps not written yet, the latest per operation id.
        self._stamps: dict[str, ProgressStamp] = {}
        self._noted = asyncio.Event()
        #: One write at a time: a flush returns only once every stamp noted before it
        #: was called is written (the orphan detector relies on that), and an older
        #: batch can never overwrite a newer one.
        self._flushing = asyncio.Lock()
        #: The last handoff per worker, by the report (operation, attempt) it answered:
        #: a report sent again because its answer was lost gets it again.
        self._handoffs: dict[str, tuple[str, int, Handoff]] = {}

    # --- worker API hooks -------------------------------------------------------------

    async def registered(self, record: WorkerRecord) -> None:
        """A worker (re-)registered: if it is idle, it may take work now."""
        if record.status is WorkerStatus.IDLE:
            self._dispatcher.wake()

    async def heartbeat(
        self, previous: WorkerRecord, record: WorkerRecord, request: HeartbeatRequest
    ) -> None:
        """Note the stamp of the named attempt and of every operation whose outcome the
        worker still holds (``pending_outcomes``: ended, not delivered yet, so not an
        orphan); wake dispatch if the worker became idle.

        Raises :class:`~ktrdr.errors.StaleAttempt` (409) when the named attempt is not
        the operation's current one on this worker; its stamp is not noted then.
        """
        self._metrics.heartbeat_received(record.worker_type)
        if record.status is WorkerStatus.IDLE and previous.status is not WorkerStatus.IDLE:
            self._dispatcher.wake()
        operation_id = request.current_operation_id
        for pending in request.pending_outcomes:
            if pending != operation_id:
                await self._note_pending(pending, record)
        if operation_id is None:
            return
        state = self._service.known_attempt(operation_id)
        if state is None:
            state = await self._read_attempt(operation_id, record.worker_id)
        # A worker from before attempts names none: it speaks for the attempt it runs.
        attempt = state.attempt if request.attempt is None else request.attempt
        if not state.accepts(worker_id=record.worker_id, attempt=attempt):
            raise stale_attempt(state, worker_id=record.worker_id, attempt=attempt)
        progress: Mapping[str, Any] | None = None
        progressed_at = None
        if request.progress is not None and (
            previous.current_operation_id != operation_id or previous.progress != request.progress
        ):
            progress = request.progress.model_dump(mode="json")
            progressed_at = record.last_heartbeat_at
        self._note(operation_id, record, attempt, progress, progressed_at, request.series)

    async def _note_pending(self, operation_id: str, record: WorkerRecord) -> None:
        """Stamp an operation whose outcome ``record``'s worker holds, if its current
        attempt still runs there (else the outcome is stale and the stamp pointless).
        """
        state = self._service.known_attempt(operation_id)
        if state is None:
            try:
                state = await asyncio.to_thread(self._service.current_attempt, operation_id)
            except OperationNotFound:
                return
        if state.accepts(worker_id=record.worker_id, attempt=state.attempt):
            self._note(operation_id, record, state.attempt, None, None, None)

    def _note(
        self,
        operation_id: str,
        record: WorkerRecord,
        attempt: int,
        progress: Mapping[str, Any] | None,
        progressed_at: datetime.datetime | None,
        series: SeriesPoints | None,
    ) -> None:
        earlier = self._stamps.get(operation_id)
        if (
            earlier is not None
            and earlier.worker_id == record.worker_id
            and earlier.attempt == attempt
        ):
            if progress is None:  # a heartbeat without news must not drop unwritten progress
                progress, progressed_at = earlier.progress, earlier.progressed_at
            if earlier.series:
                series = merge_points(earlier.series, series)  # nor unwritten points
        self._stamps[operation_id] = ProgressStamp(
            operation_id=operation_id,
            worker_id=record.worker_id,
            attempt=attempt,
            at=record.last_heartbeat_at,
            progress=progress,
            progressed_at=progressed_at,
            series=series or None,
        )
        self._noted.set()

    async def _read_attempt(self, operation_id: str, worker_id: str) -> AttemptState:
        """The current attempt from the database (not in memory); 409 for an unknown id."""
        try:
            return await asyncio.to_thread(self._service.current_attempt, operation_id)
        except OperationNotFound:
            message = (
                f"operation {operation_id} does not exist (deleted, or never created); "
                f"worker {worker_id} runs no current attempt of it"
            )
            raise ApiError(409, "stale_attempt", message) from None

    async def unregistered(self, record: WorkerRecord) -> None:
        """A worker left while the registry had it running an operation: that attempt is lost.

        A worker that shuts down cleanly reports first (so the registry no longer
        names an operation); this catches one whose report did not get through.
        """
        self._handoffs.pop(record.worker_id, None)
        operation_id = record.current_operation_id
        if operation_id is None:
            return
        try:
            state = await asyncio.to_thread(self._service.current_attempt, operation_id)
            if not state.accepts(worker_id=record.worker_id, attempt=state.attempt):
                return
            view = await asyncio.to_thread(
                self._service.lose,
                operation_id,
                worker_id=record.worker_id,
                attempt=state.attempt,
                reason=f"worker {record.worker_id} unregistered while running it",
                cause=AttemptLoss.WORKER_GONE,
            )
        except (InvalidTransition, OperationNotFound):
            return
        logger.warning("operation %s %s: %s", operation_id, view.status.value, view.error)
        self._dispatcher.wake()

    # --- writing the stamps -----------------------------------------------------------

    @property
    def unwritten(self) -> int:
        """How many operations have noted stamps waiting to be written."""
        return len(self._stamps)

    async def flush(self) -> int:
        """Write every noted stamp now, in one transaction; how many were written.

        If the write fails, the stamps are kept (unless newer ones arrived meanwhile)
        for the next round, and the error propagates to the caller's loop, which logs it.
        A flush called while another is writing waits for it, then writes the rest.
        """
        async with self._flushing:
            self._noted.clear()
            batch, self._stamps = self._stamps, {}
            if not batch:
                return 0
            try:
                await asyncio.to_thread(self._service.record_heartbeats, list(batch.values()))
            except BaseException:
                for operation_id, stamp in batch.items():
                    newer = self._stamps.setdefault(operation_id, stamp)
                    if newer is stamp or (newer.worker_id, newer.attempt) != (
                        stamp.worker_id,
                        stamp.attempt,
                    ):
                        continue
                    if newer.progress is None:  # keep the unwritten progress and its time
                        newer = attrs.evolve(
                            newer, progress=stamp.progress, progressed_at=stamp.progressed_at
                        )
                    if stamp.series:
                        newer = attrs.evolve(newer, series=merge_points(stamp.series, newer.series))
                    self._stamps[operation_id] = newer
                raise
            return len(batch)

    async def run_forever(self, stop_event: asyncio.Event) -> None:
        """Write stamps when there are some (at most every ``spacing``) until stopped;
        then write the rest.
        """
        noted = wait_or_wake(self._noted)

        async def wait(stop: asyncio.Event, seconds: float) -> bool:
            return await wait_or_stop(stop, self._spacing_s) or await noted(stop, seconds)

        await run_until_stopped(
            "heartbeat progress writer",
            self.flush,
            interval=FLUSH_TICK,
            stop_event=stop_event,
            wait=wait,
        )
        try:
            await self.flush()
        except Exception:
            logger.exception("last heartbeat stamps not written")

    # --- outcomes ---------------------------------------------------------------------

    async def report(
        self, operation_id: str, report: OperationReport, *, worker: WorkerRecord
    ) -> ReportAnswer:
        """Store how the attempt ended, if ``worker`` (who sent it) runs the current attempt.

        ``worker`` is the worker the request authenticated as; a report naming another
        worker is refused with 401 and changes nothing. A completed or failed attempt
        finishes the operation; a cancelled one (the worker stopped it: it shut down)
        is a lost attempt, queued again to resume from its checkpoint (or failed after
        ``KTRDR_OPS_MAX_ATTEMPTS``). Raises :class:`InvalidTransition` (409: it
        already ended), :class:`~ktrdr.errors.StaleAttempt` (409: not the current
        attempt on this worker) or :class:`OperationNotFound`. Either way the worker
        is done with it. With ``take_next`` the answer may carry the worker's next
        operation (see the module docstring).
        """
        with operation_context(operation_id, attempt=attempt_of(report)):
            return await self._report(operation_id, report, worker=worker)

    def _may_take_next(self, report: OperationReport, worker: WorkerRecord) -> bool:
        """The worker asked for more, finished this attempt (did not give it up) and is
        not stopping (or gone) as far as the registry knows.
        """
        if not report.take_next or report.status is OperationStatus.CANCELLED:
            return False
        try:
            current = self._registry.get(worker.worker_id)
        except LookupError:
            return False
        return current.status in (WorkerStatus.IDLE, WorkerStatus.BUSY)

    async def _report(
        self, operation_id: str, report: OperationReport, *, worker: WorkerRecord
    ) -> ReportAnswer:
        if report.worker_id != worker.worker_id:
            self._metrics.report_rejected(ReportRejection.WRONG_WORKER)
            message = (
                f"the credential is worker {worker.worker_id!r}'s; it cannot report "
                "for another worker"
            )
            raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
        # PostgreSQL text cannot hold NUL; a worker may quote input that contains one.
        error = None if report.error is None else report.error.replace("\x00", "\\x00")
        if report.checkpoint_saved and (error is None or CHECKPOINT_SAVED not in error):
            error = f"{error}; {CHECKPOINT_SAVED}" if error else CHECKPOINT_SAVED
        noted = self._stamps.get(operation_id)
        if noted is not None and noted.worker_id == report.worker_id:
            # The outcome supersedes its progress; its points are the worker's whole
            # record, which holds every point a heartbeat carried.
            del self._stamps[operation_id]
        attempt = report.attempt
        if attempt is None:  # a worker from before attempts: the attempt it runs
            attempt = (await self._read_attempt(operation_id, report.worker_id)).attempt
        take_next = self._may_take_next(report, worker)
        gave_up = False
        following: OperationView | None = None
        try:
            if report.status is OperationStatus.CANCELLED:
                view = await asyncio.to_thread(
                    self._service.lose,
                    operation_id,
                    worker_id=report.worker_id,
                    attempt=attempt,
                    reason=f"worker {report.worker_id} stopped it ({error or 'no reason given'})",
                    cause=AttemptLoss.WORKER_GONE,
                    series=report.series,
                )
                gave_up = True
            else:
                # With take_next, the worker's next operation is claimed in the finish's
                # transaction; a cancel arriving meanwhile waits until it is tracked.
                async with self._dispatcher.claiming():
                    view, following = await asyncio.to_thread(
                        self._service.finish_and_claim,
                        operation_id,
                        status=report.status,
                        worker_id=report.worker_id,
                        attempt=attempt,
                        next_type=worker.worker_type if take_next else None,
                        result=report.result,
                        error=error,
                        series=report.series,
                    )
                    if following is not None:
                        self._dispatcher.track(following, report.worker_id)
        except OperationNotFound:
            self._metrics.report_rejected(ReportRejection.UNKNOWN_OPERATION)
            raise
        except InvalidTransition as exc:  # StaleAttempt is one too
            again = await self._handed_again(operation_id, attempt, report, worker)
            if again is not None:
                return again
            stale = isinstance(exc, StaleAttempt)
            self._metrics.report_rejected(
                ReportRejection.STALE_ATTEMPT if stale else ReportRejection.NOT_CURRENT
            )
            raise
        finally:
            # The worker is free (whatever the store made of its news): its next
            # operation need not wait for a heartbeat or the tick. Except a worker that
            # gave its attempt up: it is shutting down (its heartbeat will say so), and
            # must not be handed the operation it just gave up; and one that was just
            # handed its next operation (the registry has it busy with that one).
            if following is None:
                if not gave_up:
                    self._registry.operation_ended(report.worker_id, operation_id)
                self._dispatcher.wake()
        logger.info(
            "operation %s %s (attempt %d on worker %s)%s",
            operation_id,
            view.status.value,
            attempt,
            report.worker_id,
            f": {view.error}" if view.error else "",
        )
        handoff = None
        if following is not None:
            handoff = await self._dispatcher.hand_off(following, report.worker_id)
            self._remember_handoff(report.worker_id, (operation_id, attempt, handoff))
        return _answer(view, handoff)

    def _remember_handoff(self, worker_id: str, handed: tuple[str, int, Handoff]) -> None:
        """Keep a worker's latest handoff (for a report sent again); forget those of
        workers no longer registered once they outnumber the registered ones, so the
        memory follows the fleet, not every worker id ever seen (a worker removed for
        silence never unregisters).
        """
        self._handoffs[worker_id] = handed
        if len(self._handoffs) > 2 * len(self._registry) + 16:
            self._handoffs = {w: h for w, h in self._handoffs.items() if w in self._registry}

    async def _handed_again(
        self, operation_id: str, attempt: int, report: OperationReport, worker: WorkerRecord
    ) -> ReportAnswer | None:
        """The answer a report sent again gets when its first answer handed the worker
        an operation it never received: the same handoff, while that attempt still runs
        on this worker (else None: the report is refused as usual).
        """
        handed = self._handoffs.get(worker.worker_id)
        if not report.take_next or handed is None or handed[:2] != (operation_id, attempt):
            return None
        start = handed[2].start
        try:
            state = await asyncio.to_thread(self._service.current_attempt, start.operation_id)
            view = await asyncio.to_thread(self._service.get, operation_id)
        except OperationNotFound:
            return None
        if not state.accepts(worker_id=worker.worker_id, attempt=start.attempt):
            return None
        with operation_context(start.operation_id, attempt=start.attempt):
            logger.info(
                "operation %s attempt %d handed to worker %s again (the answer to its "
                "report of operation %s was lost)",
                start.operation_id,
                start.attempt,
                worker.worker_id,
                operation_id,
            )
        return _answer(view, handed[2])


def _answer(view: OperationView, handoff: Handoff | None) -> ReportAnswer:
    """The report's answer: ``view`` and, if any, the next operation."""
    return ReportAnswer.model_construct(**dict(view), next_operation=handoff)
