"""The one checkpointed step loop every job runs in.

A job (training, backtest) supplies only what is specific to it, through the
:class:`Job` and :class:`PreparedRun` protocols: parse the parameters and load the
data, an initial state, a state from a checkpoint, one step, progress, the values its
series take after a step, and the result. The loop owns the rest, the same for every
job: stop requests (checkpoint first), when a checkpoint is due (every N steps or after
a time interval, whichever first), progress reporting, series sampling
(``ktrdr.jobs.series``: sent before each progress report; a resumed run first sends
the points its checkpoint remembers), resume checks and completion. Whatever goes
wrong ends as a FAILED :class:`~ktrdr.job_messages.JobOutcome` with a one-line reason;
nothing raised by a job escapes :func:`run_steps`.
"""

from __future__ import annotations

import datetime
import functools
import io
import logging
import os
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import attrs
import numpy as np
import numpy.typing as npt
from opentelemetry.trace import Status, StatusCode

from ktrdr.config import CheckpointSettings, DataSettings, WorkerSettings, env_name
from ktrdr.errors import JobFailed
from ktrdr.job_messages import CheckpointData, JobOutcome, JobRequest, SeriesUpdate, StopReason
from ktrdr.jobs.series import SeriesRecorder
from ktrdr.protocol import OperationStatus, OperationType, Progress
from ktrdr.tracing import Tracing

__all__ = [
    "CheckpointPolicy",
    "Job",
    "JobChannel",
    "PreparedRun",
    "decode_state",
    "encode_state",
    "run_steps",
]

logger = logging.getLogger(__name__)

MAX_MEMORY = env_name(attrs.fields(WorkerSettings).max_memory)

StateT = TypeVar("StateT")
Arrays = Mapping[str, npt.NDArray[Any]]


class JobChannel(Protocol):
    """Where the loop sends progress and checkpoints and learns it should stop."""

    def progress(self, progress: Progress) -> None:
        """Report progress (the latest one wins)."""

    def checkpoint(self, data: CheckpointData) -> None:
        """Hand a checkpoint to the worker, which stores it."""

    def series(self, update: SeriesUpdate) -> None:
        """Send series points recorded since the last update."""

    def stop_requested(self) -> StopReason | None:
        """The reason to stop, or None while the job should go on."""


class PreparedRun(Protocol[StateT]):
    """One operation's parameters and data, ready to step through."""

    #: Steps in a whole run (epochs, bars).
    total: int
    #: What the state is computed from; a checkpoint for other inputs is refused.
    fingerprint: Mapping[str, Any]

    def initial_state(self) -> StateT:
        """The state before the first step."""

    def restore(self, step: int, arrays: Arrays) -> StateT:
        """The state saved at ``step``; raises ValueError/KeyError/TypeError if unusable."""

    def position(self, state: StateT) -> int:
        """Steps done so far."""

    def step(self, state: StateT) -> bool:
        """Do one step; True when progress should be reported now."""

    def arrays(self, state: StateT) -> dict[str, npt.NDArray[Any]]:
        """The state as numeric arrays, for a checkpoint."""

    def progress(self, state: StateT, message: str) -> Progress:
        """Progress as of ``state``."""

    def series_at(self, state: StateT, step: int) -> Mapping[str, float]:
        """Each series' value after ``step`` (1 to the position of ``state``)."""

    def result(self, state: StateT) -> dict[str, Any]:
        """The operation's result after the last step (JSON-ready)."""


class Job(Protocol):
    """An operation type: how to prepare one run of it, and its vocabulary."""

    operation_type: OperationType
    #: What one step is called in messages ("epoch", "bar").
    unit: str

    def checkpoint_every(self, settings: CheckpointSettings) -> int:
        """Steps between periodic checkpoints."""

    def prepare(self, parameters: Mapping[str, Any], data: DataSettings) -> PreparedRun[Any]:
        """Parse ``parameters`` and load the data (files from ``data.dir`` only);
        raises :class:`JobFailed`.
        """


class CheckpointPolicy:
    """Says when a checkpoint is due: ``every`` steps or ``interval`` of clock time.

    Whichever comes first, counted from the last save (or the start). ``clock`` is a
    monotonic clock in seconds, injected so tests control time.
    """

    def __init__(
        self,
        *,
        every: int,
        interval: datetime.timedelta,
        clock: Callable[[], float],
        start_step: int = 0,
    ) -> None:
        self._every = every
        self._interval_s = interval.total_seconds()
        self._clock = clock
        self._last_step = start_step
        self._last_time = clock()

    def due(self, step: int) -> bool:
        """True when ``step`` is ``every`` steps past the last save, or time is up."""
        if step - self._last_step >= self._every:
            return True
        return self._clock() - self._last_time >= self._interval_s

    def saved(self, step: int) -> None:
        """Record a save at ``step`` (restarts both counters)."""
        self._last_step = step
        self._last_time = self._clock()


def encode_state(arrays: Arrays) -> bytes:
    """Arrays as ``.npz`` bytes; object arrays are refused, so nothing is ever pickled."""
    payload: dict[str, Any] = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in payload.items():
        if value.dtype.hasobject:
            message = f"array {name!r} holds Python objects; checkpoints store numbers only"
            raise ValueError(message)
    buffer = io.BytesIO()
    np.savez(buffer, **payload)
    return buffer.getvalue()


def decode_state(state: bytes) -> dict[str, npt.NDArray[Any]]:
    """The arrays of :func:`encode_state`, loaded without pickle; ValueError if garbage."""
    try:
        with np.load(io.BytesIO(state), allow_pickle=False) as archive:
            return {name: np.array(archive[name]) for name in archive.files}
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        message = f"the state is not readable ({exc})"
        raise ValueError(message) from None


def run_steps(
    job: Job,
    request: JobRequest,
    channel: JobChannel,
    *,
    clock: Callable[[], float],
    tracing: Tracing | None = None,
) -> JobOutcome:
    """Run ``request`` to completion, a stop, or a failure; never raises.

    With ``tracing``, the run is a ``job`` span continuing ``request.trace_parent``,
    with a ``checkpoint`` span per checkpoint sent.
    """
    tracing = tracing if tracing is not None else Tracing.off()
    attributes = {
        "ktrdr.operation.id": request.operation_id,
        "ktrdr.operation.type": job.operation_type.value,
        "ktrdr.operation.resume": request.resume,
        "process.pid": os.getpid(),
    }
    with tracing.span(
        f"job {job.operation_type.value}", parent=request.trace_parent, attributes=attributes
    ) as span:
        outcome = _outcome(job, request, channel, clock, tracing)
        span.set_attribute("ktrdr.operation.status", outcome.status.value)
        if outcome.status is OperationStatus.FAILED:
            span.set_status(Status(StatusCode.ERROR, outcome.error))
    return outcome


def _outcome(
    job: Job,
    request: JobRequest,
    channel: JobChannel,
    clock: Callable[[], float],
    tracing: Tracing,
) -> JobOutcome:
    kind = job.operation_type.value
    try:
        return _run(job, request, channel, clock, tracing)
    except JobFailed as exc:
        logger.warning("%s failed: %s", kind, exc)
        return JobOutcome(status=OperationStatus.FAILED, error=str(exc))
    except MemoryError:
        return JobOutcome(status=OperationStatus.FAILED, error=_out_of_memory(kind, request))
    except Exception as exc:
        logger.exception("%s operation %s crashed", kind, request.operation_id)
        error = f"{kind} failed unexpectedly: {type(exc).__name__}: {exc}"
        return JobOutcome(status=OperationStatus.FAILED, error=error)


def _out_of_memory(kind: str, request: JobRequest) -> str:
    if request.max_memory is None:
        return f"{kind} ran out of memory; ask for less data (bars) or a smaller model"
    return (
        f"{kind} needs more memory than {MAX_MEMORY}={request.max_memory_text} "
        "allows; ask for less data (bars) or a smaller model, or raise the cap"
    )


def _run(
    job: Job,
    request: JobRequest,
    channel: JobChannel,
    clock: Callable[[], float],
    tracing: Tracing,
) -> JobOutcome:
    run = job.prepare(request.parameters, request.data)
    state = _starting_state(job, run, request)
    position = run.position(state)
    policy = CheckpointPolicy(
        every=job.checkpoint_every(request.checkpoint_settings),
        interval=request.checkpoint_settings.time_interval,
        clock=clock,
        start_step=position,
    )
    recorder = SeriesRecorder(run.total)
    logger.info(
        "%s %s at %s %d of %d",
        job.operation_type.value,
        "resuming" if request.resume else "starting",
        job.unit,
        position,
        run.total,
    )
    if request.resume:
        recorder.replay(position, functools.partial(run.series_at, state))
        _send_series(channel, recorder)
        channel.progress(run.progress(state, f"resumed at {job.unit} {position}"))

    while position < run.total:
        reason = channel.stop_requested()
        if reason is not None:
            _send_series(channel, recorder)
            with tracing.span("checkpoint", attributes=_saved(position, reason.value)):
                channel.checkpoint(_checkpoint(run, state, position))
            where = f"{job.unit} {position}/{run.total}"
            logger.info("stop requested (%s): checkpoint sent at %s", reason.value, where)
            error = f"checkpoint saved at {where} ({reason.value})"
            return JobOutcome(status=OperationStatus.CANCELLED, error=error, checkpoint_saved=True)
        report = run.step(state)
        position = run.position(state)
        if recorder.is_sampled(position):
            recorder.record(position, run.series_at(state, position))
        if report or position == run.total:
            _send_series(channel, recorder)
            channel.progress(run.progress(state, f"{job.unit} {position}"))
        if position < run.total and policy.due(position):
            with tracing.span("checkpoint", attributes=_saved(position, "due")):
                channel.checkpoint(_checkpoint(run, state, position))
            policy.saved(position)
            logger.debug("checkpoint sent at %s %d", job.unit, position)

    _send_series(channel, recorder)
    logger.info("%s finished: %d %ss", job.operation_type.value, run.total, job.unit)
    return JobOutcome(status=OperationStatus.COMPLETED, result=run.result(state))


def _saved(step: int, why: str) -> dict[str, Any]:
    """A checkpoint span's attributes: the step saved and why (due, cancelled, shutdown)."""
    return {"ktrdr.checkpoint.step": step, "ktrdr.checkpoint.reason": why}


def _send_series(channel: JobChannel, recorder: SeriesRecorder) -> None:
    update = recorder.take()
    if update is not None:
        channel.series(update)


def _checkpoint(run: PreparedRun[Any], state: Any, position: int) -> CheckpointData:
    return CheckpointData(
        step=position, meta=dict(run.fingerprint), state=encode_state(run.arrays(state))
    )


def _starting_state(job: Job, run: PreparedRun[StateT], request: JobRequest) -> StateT:
    """The initial state, or the checkpoint's when resuming (checked against the inputs)."""
    checkpoint = request.checkpoint
    if not request.resume:
        return run.initial_state()
    if checkpoint is None:
        raise JobFailed(f"cannot resume: no checkpoint was given for {request.operation_id}")
    if checkpoint.meta != run.fingerprint:
        message = (
            f"cannot resume: checkpoint {request.checkpoint_path} was written for other "
            "parameters or bars"
        )
        raise JobFailed(message)
    try:
        return run.restore(checkpoint.step, decode_state(checkpoint.state))
    except (KeyError, ValueError, TypeError) as exc:
        kind = job.operation_type.value
        message = f"cannot resume: the checkpoint's {kind} state is unusable ({exc})"
        raise JobFailed(message) from None
