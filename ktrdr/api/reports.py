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
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import attrs

from ktrdr.api.dispatcher import Dispatcher
from ktrdr.api.metrics import BackendMetrics, DisabledBackendMetrics, ReportRejection
from ktrdr.api.operations import InvalidTransition, OperationNotFound, OperationsService
from ktrdr.api.periodic import run_until_stopped, wait_or_stop, wait_or_wake
from ktrdr.api.registry import WorkerRecord, WorkerRegistry
from ktrdr.api.series_store import merge_points
from ktrdr.api.store import ProgressStamp
from ktrdr.log_context import attempt_of, operation_context
from ktrdr.protocol import (
    HeartbeatRequest,
    OperationReport,
    OperationView,
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

    # --- worker API hooks -------------------------------------------------------------

    async def registered(self, record: WorkerRecord) -> None:
        """A worker (re-)registered: if it is idle, it may take work now."""
        if record.status is WorkerStatus.IDLE:
            self._dispatcher.wake()

    async def heartbeat(
        self, previous: WorkerRecord, record: WorkerRecord, request: HeartbeatRequest
    ) -> None:
        """Note the stamp of the named operation and of every operation whose outcome the
        worker still holds (``pending_outcomes``: ended, not delivered yet, so not an
        orphan); wake dispatch if the worker became idle.
        """
        self._metrics.heartbeat_received(record.worker_type)
        operation_id = request.current_operation_id
        if operation_id is not None:
            progress: Mapping[str, Any] | None = None
            if request.progress is not None:
                progress = request.progress.model_dump(mode="json")
            self._note(operation_id, record, progress, request.series)
        for pending in request.pending_outcomes:
            if pending != operation_id:
                self._note(pending, record, None, None)
        if record.status is WorkerStatus.IDLE and previous.status is not WorkerStatus.IDLE:
            self._dispatcher.wake()

    def _note(
        self,
        operation_id: str,
        record: WorkerRecord,
        progress: Mapping[str, Any] | None,
        series: SeriesPoints | None,
    ) -> None:
        earlier = self._stamps.get(operation_id)
        if earlier is not None and earlier.worker_id == record.worker_id:
            if progress is None:
                progress = earlier.progress  # a bare heartbeat must not drop unwritten progress
            if earlier.series:
                series = merge_points(earlier.series, series)  # nor unwritten points
        self._stamps[operation_id] = ProgressStamp(
            operation_id=operation_id,
            worker_id=record.worker_id,
            at=record.last_heartbeat_at,
            progress=progress,
            series=series or None,
        )
        self._noted.set()

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
                    if newer is not stamp and stamp.series and newer.worker_id == stamp.worker_id:
                        series = merge_points(stamp.series, newer.series)
                        self._stamps[operation_id] = attrs.evolve(newer, series=series)
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
    ) -> OperationView:
        """Store how the operation ended, if ``worker`` (who sent it) still runs it.

        ``worker`` is the worker the request authenticated as; a report naming another
        worker is refused with 401 and changes nothing. Raises
        :class:`InvalidTransition` (409: it already ended, or runs on another worker)
        or :class:`OperationNotFound`. Either way the worker is done with it.
        """
        with operation_context(operation_id, attempt=attempt_of(report)):
            return await self._report(operation_id, report, worker=worker)

    async def _report(
        self, operation_id: str, report: OperationReport, *, worker: WorkerRecord
    ) -> OperationView:
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
        try:
            view = await asyncio.to_thread(
                self._service.finish,
                operation_id,
                status=report.status,
                worker_id=report.worker_id,
                result=report.result,
                error=error,
                series=report.series,
            )
        except OperationNotFound:
            self._metrics.report_rejected(ReportRejection.UNKNOWN_OPERATION)
            raise
        except InvalidTransition:
            self._metrics.report_rejected(ReportRejection.NOT_CURRENT)
            raise
        finally:
            # The worker is free (whatever the store made of its news): its next
            # operation need not wait for a heartbeat or the tick.
            self._registry.operation_ended(report.worker_id, operation_id)
            self._dispatcher.wake()
        logger.info(
            "operation %s %s on worker %s%s",
            operation_id,
            view.status.value,
            report.worker_id,
            f": {view.error}" if view.error else "",
        )
        return view
