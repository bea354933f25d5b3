"""What workers tell the backend about operations: progress in heartbeats, outcomes in reports.

The worker API calls :meth:`OperationReports.registered` and
:meth:`OperationReports.heartbeat` after updating the registry; the operations API
calls :meth:`OperationReports.report` for ``POST /api/v1/operations/{id}/report``.
Every heartbeat that names an operation stamps it in the store (the orphan detector
relies on that, progress or not). A heartbeat or report about an operation that has
moved on (cancelled by a user, failed as an orphan, deleted) changes nothing: the
worker's news came too late, and the first outcome stands. Whenever a worker may have
become free, the dispatcher is woken.
"""

from __future__ import annotations

import asyncio
import logging

from ktrdr.api.dispatcher import Dispatcher
from ktrdr.api.operations import OperationsService
from ktrdr.api.registry import WorkerRecord, WorkerRegistry
from ktrdr.api.store import InvalidTransition, OperationNotFound
from ktrdr.protocol import HeartbeatRequest, OperationReport, OperationView, WorkerStatus

__all__ = ["CHECKPOINT_SAVED", "OperationReports"]

logger = logging.getLogger(__name__)

#: Words a cancelled operation's error carries when its worker saved a checkpoint.
CHECKPOINT_SAVED = "checkpoint saved"


class OperationReports:
    """Applies workers' heartbeats and reports to the store, the registry and dispatch."""

    def __init__(
        self,
        *,
        service: OperationsService,
        registry: WorkerRegistry,
        dispatcher: Dispatcher,
    ) -> None:
        self._service = service
        self._registry = registry
        self._dispatcher = dispatcher

    async def registered(self, record: WorkerRecord) -> None:
        """A worker (re-)registered: if it is idle, it may take work now."""
        if record.status is WorkerStatus.IDLE:
            self._dispatcher.wake()

    async def heartbeat(
        self, previous: WorkerRecord, record: WorkerRecord, request: HeartbeatRequest
    ) -> None:
        """Stamp the named operation (with its progress); wake dispatch if newly idle."""
        operation_id = request.current_operation_id
        if operation_id is not None:
            await asyncio.to_thread(self._stamp, record.worker_id, request)
        if record.status is WorkerStatus.IDLE and previous.status is not WorkerStatus.IDLE:
            self._dispatcher.wake()

    def _stamp(self, worker_id: str, request: HeartbeatRequest) -> None:
        """In a thread: record the heartbeat's progress (or at least the time) in the store."""
        assert request.current_operation_id is not None
        try:
            try:
                self._service.report_progress(
                    request.current_operation_id, worker_id=worker_id, progress=request.progress
                )
            except ValueError as exc:  # progress the store cannot keep (NaN): the time still counts
                logger.warning("progress from worker %s not stored: %s", worker_id, exc)
                self._service.report_progress(
                    request.current_operation_id, worker_id=worker_id, progress=None
                )
        except (InvalidTransition, OperationNotFound) as exc:
            logger.debug("heartbeat of worker %s not applied: %s", worker_id, exc)

    async def report(self, operation_id: str, report: OperationReport) -> OperationView:
        """Store how the operation ended, if its worker still owns it.

        Raises :class:`InvalidTransition` (it already ended, or runs on another
        worker) or :class:`OperationNotFound`. Either way the worker is done with it.
        """
        error = report.error
        if report.checkpoint_saved and (error is None or CHECKPOINT_SAVED not in error):
            error = f"{error}; {CHECKPOINT_SAVED}" if error else CHECKPOINT_SAVED
        try:
            view = await asyncio.to_thread(
                self._service.finish,
                operation_id,
                status=report.status,
                worker_id=report.worker_id,
                result=report.result,
                error=error,
            )
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
