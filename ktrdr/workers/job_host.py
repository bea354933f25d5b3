"""The worker's side of one job: its checkpoint going in, checkpoints coming back, its end.

A job process computes; the worker keeps the files. Before a job starts, the host
claims the operation's checkpoint for this attempt and loads the checkpoint to resume
from (or removes a stale one for a fresh start); while it runs, the host stores every
checkpoint the job sends, fenced by the attempt number (a later attempt's checkpoint
is never overwritten by an earlier one); when it ends, the host turns
what happened (an outcome, a stop the job ignored, a crash) into the one
:class:`~ktrdr.job_messages.JobOutcome` the worker reports. The checkpoint of a
completed operation stays until the backend has acknowledged its outcome (the
worker's outbox removes it then). All of it is blocking file I/O: the caller runs it
off the event loop. Nothing here knows how the job process is started.
"""

from __future__ import annotations

import datetime
import logging
import signal
import time

import attrs

from ktrdr.config import CheckpointSettings, DataSettings, WorkerSettings, env_name
from ktrdr.config.fields import format_duration
from ktrdr.errors import CheckpointFenced, CheckpointMissing
from ktrdr.job_messages import CheckpointData, JobOutcome, JobRequest, StopReason
from ktrdr.protocol import OperationStatus, OperationType, StartOperationRequest
from ktrdr.workers.checkpoints import CheckpointError, CheckpointStore
from ktrdr.workers.metrics import DisabledWorkerMetrics, WorkerMetrics

__all__ = ["JobEnd", "JobHost"]

logger = logging.getLogger(__name__)

_WORKER = attrs.fields(WorkerSettings)
STOP_GRACE = env_name(_WORKER.stop_grace)
SHUTDOWN_TIMEOUT = env_name(_WORKER.shutdown_timeout)


class JobEnd:
    """How a job process ended, as its supervisor saw it."""

    def __init__(
        self,
        *,
        outcome: JobOutcome | None,
        exitcode: int | None,
        killed_for: StopReason | None = None,
        failure: str | None = None,
    ) -> None:
        #: What the job reported, if it got that far.
        self.outcome = outcome
        #: The process's exit code (negative: the signal that ended it).
        self.exitcode = exitcode
        #: Set when the worker killed the job because it ignored a stop request.
        self.killed_for = killed_for
        #: Set when the worker itself failed the job (a checkpoint it could not write).
        self.failure = failure


class JobHost:
    """Checkpoints and outcomes of the jobs of one worker."""

    def __init__(
        self,
        *,
        checkpoints: CheckpointStore,
        worker: WorkerSettings,
        checkpoint_settings: CheckpointSettings,
        data: DataSettings | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        """``data`` defaults to ``DataSettings()`` (``KTRDR_DATA_DIR`` and its size limit);
        ``metrics`` times the checkpoint writes (none counted by default).
        """
        self.checkpoints = checkpoints
        self.metrics = metrics if metrics is not None else _no_metrics(worker)
        self._worker = worker
        self._checkpoint_settings = checkpoint_settings
        self._data = data if data is not None else DataSettings()

    def grace_s(self, reason: StopReason) -> float:
        """Seconds a job asked to stop for ``reason`` has before it is killed.

        ``KTRDR_WORKER_STOP_GRACE``; on shutdown at most half of
        ``KTRDR_WORKER_SHUTDOWN_TIMEOUT``, so the worker still reports the operation
        (with its last checkpoint) and unregisters before its own deadline.
        """
        grace = self._worker.stop_grace.total_seconds()
        if reason is StopReason.SHUTDOWN:
            return min(grace, self._worker.shutdown_timeout.total_seconds() / 2)
        return grace

    def prepare(
        self, start: StartOperationRequest, *, trace_parent: str | None = None
    ) -> JobRequest | JobOutcome:
        """The job's request, or the FAILED outcome when there is nothing to resume.

        A retry (``start.retry``) resumes from the checkpoint when there is one and
        starts over when there is none; a resume by hand needs one. ``trace_parent``
        is the span the job's spans continue (the worker's).
        """
        operation_id = start.operation_id
        kind = start.operation_type.value
        checkpoint = None
        resume = start.resume or start.retry
        try:
            self.checkpoints.claim(operation_id, attempt=start.attempt, fresh=not resume)
            if resume:
                checkpoint = self.checkpoints.load(operation_id, kind=kind)
        except CheckpointMissing as exc:
            if not start.retry:
                return JobOutcome(status=OperationStatus.FAILED, error=f"cannot resume: {exc}")
            resume = False  # nothing was saved before the attempt was lost: start over
            logger.info(
                "operation %s attempt %d: no checkpoint to resume from; starting over",
                operation_id,
                start.attempt,
            )
        except CheckpointFenced as exc:
            return JobOutcome(status=OperationStatus.FAILED, error=f"superseded: {exc}")
        except CheckpointError as exc:
            return JobOutcome(status=OperationStatus.FAILED, error=f"cannot resume: {exc}")
        except OSError as exc:
            path = self.checkpoints.path_for(operation_id)
            error = f"cannot write checkpoint {path}: {exc.strerror or exc}"
            return JobOutcome(status=OperationStatus.FAILED, error=error)
        if checkpoint is not None:
            logger.info(
                "operation %s attempt %d resumes from its checkpoint at step %d",
                operation_id,
                start.attempt,
                checkpoint.step,
            )
        cap = self._worker.max_memory
        return JobRequest(
            operation_id=operation_id,
            operation_type=start.operation_type,
            parameters=dict(start.parameters),
            checkpoint_settings=self._checkpoint_settings,
            resume=resume,
            checkpoint=checkpoint,
            checkpoint_path=str(self.checkpoints.path_for(operation_id)),
            max_memory=int(cap) if cap is not None else None,
            max_memory_text=str(cap) if cap is not None else "",
            data=self._data,
            trace_parent=trace_parent,
            attempt=start.attempt,
            # The job logs at the worker's level: lines below it never cross the pipe.
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    def save(self, request: JobRequest, data: CheckpointData) -> str | None:
        """Store a checkpoint the job sent; the failure reason when the disk refuses.

        Raises :class:`~ktrdr.errors.CheckpointFenced` when a later attempt took the
        checkpoint over: this attempt is superseded.
        """
        began = time.perf_counter()
        try:
            self.checkpoints.save(
                request.operation_id,
                kind=request.operation_type.value,
                data=data,
                attempt=request.attempt,
            )
            self.metrics.checkpoint_written(time.perf_counter() - began)
        except OSError as exc:
            path = self.checkpoints.path_for(request.operation_id)
            return f"cannot write checkpoint {path}: {exc.strerror or exc}"
        return None

    def finish(self, request: JobRequest, end: JobEnd) -> JobOutcome:
        """The outcome to report. The checkpoint stays, even of a completed operation,
        until the backend acknowledges the outcome (``ktrdr.workers.delivery``).
        """
        return self._outcome(request, end)

    def _outcome(self, request: JobRequest, end: JobEnd) -> JobOutcome:
        if end.failure is not None:
            return JobOutcome(
                status=OperationStatus.FAILED,
                error=end.failure,
                checkpoint_saved=self.checkpoints.exists(request.operation_id),
            )
        if end.killed_for is not None:
            grace = format_duration(self._worker.stop_grace)
            waited = format_duration(datetime.timedelta(seconds=self.grace_s(end.killed_for)))
            limit = f"{STOP_GRACE}={grace}"
            if waited != grace:
                limit = f"{waited} (half of {SHUTDOWN_TIMEOUT}, below {limit})"
            error = f"the job did not stop within {limit} and was killed ({end.killed_for.value})"
            return JobOutcome(
                status=OperationStatus.CANCELLED,
                error=error,
                checkpoint_saved=self.checkpoints.exists(request.operation_id),
            )
        if end.outcome is not None:
            return end.outcome
        return JobOutcome(status=OperationStatus.FAILED, error=_death(end.exitcode))


def _no_metrics(worker: WorkerSettings) -> WorkerMetrics:
    kind = OperationType(worker.type.value) if worker.type is not None else OperationType.TRAINING
    return DisabledWorkerMetrics(worker_id=worker.id, worker_type=kind)


def _death(exitcode: int | None) -> str:
    """One line on a job process that ended without an outcome."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if name == "SIGKILL":
            return "the job process was killed (SIGKILL) from outside the worker"
        return f"the job process died from {name}"
    return f"the job process exited with code {exitcode} before reporting an outcome"
