"""What a worker and the process running one of its jobs say to each other.

The worker runtime (``ktrdr.workers``) starts each operation in a child process and
talks to it over one duplex pipe; the child side lives in ``ktrdr.jobs``. Both sides
import this module and nothing of each other, so the messages are defined once:

- worker -> job: the :class:`JobRequest` (the child's start argument), then at most
  one :class:`StopRequest`;
- job -> worker: any number of ``Progress`` (``ktrdr.protocol``),
  :class:`SeriesUpdate`, :class:`CheckpointData`, :class:`JobLog` and ``SpanRecord``
  (``ktrdr.tracing``: the job's spans, which the worker exports) messages, then exactly one
  :class:`JobOutcome`.

Checkpoints travel as bytes: the job encodes its state, the worker's checkpoint store
writes it (atomically, where the runtime can also delete and expire it). The worker
names the function a job process runs with a :class:`JobEntry` (module and attribute)
instead of importing it, so the worker process never loads the jobs or numpy.
Everything here is plain, picklable data; nothing here does I/O.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

import attrs

from ktrdr.config import CheckpointSettings, DataSettings
from ktrdr.protocol import OperationStatus, OperationType, Progress
from ktrdr.tracing.records import SpanRecord

__all__ = [
    "JOB_ENTRY",
    "CheckpointData",
    "JobEntry",
    "JobLog",
    "JobMessage",
    "JobOutcome",
    "JobRequest",
    "SeriesUpdate",
    "StopReason",
    "StopRequest",
]


class StopReason(str, enum.Enum):
    """Why the runtime asked a running job to stop."""

    CANCELLED = "cancelled"  # POST /operations/{id}/cancel
    SHUTDOWN = "shutdown"  # SIGTERM: save a checkpoint, report "checkpoint saved"


@attrs.frozen(kw_only=True)
class CheckpointData:
    """A job's state at ``step``: ``state`` is opaque to the runtime (the job's encoding).

    ``meta`` identifies what the state was computed from (parameters, data digest), so
    a resume with other inputs is refused instead of silently mixing them.
    """

    step: int
    meta: Mapping[str, Any]
    state: bytes = attrs.field(repr=lambda state: f"<{len(state)} bytes>")


@attrs.frozen(kw_only=True)
class SeriesUpdate:
    """Series points a job recorded since its last update: ``{name: ((x, y), ...)}``.

    ``x`` is the step count (epoch, bar) the value was taken after; values are finite.
    A resumed job first sends the points its checkpoint remembers.
    """

    points: Mapping[str, tuple[tuple[int, float], ...]]


@attrs.frozen(kw_only=True)
class JobRequest:
    """Everything a job process needs to run one operation.

    ``checkpoint`` is what to resume from (loaded by the worker), or None for a fresh
    start; ``checkpoint_path`` only names the file in messages. ``max_memory`` is the
    process's memory cap in bytes (``KTRDR_WORKER_MAX_MEMORY``), ``max_memory_text``
    how the operator wrote it. ``data`` says where the job may read data files
    (``KTRDR_DATA_DIR``) and how large one may be. ``trace_parent`` is the
    ``traceparent`` of the worker's span for this operation (None: not traced).
    """

    operation_id: str
    operation_type: OperationType
    parameters: Mapping[str, Any]
    checkpoint_settings: CheckpointSettings
    resume: bool = False
    checkpoint: CheckpointData | None = None
    checkpoint_path: str = ""
    max_memory: int | None = None
    max_memory_text: str = ""
    data: DataSettings = attrs.field(factory=DataSettings)
    trace_parent: str | None = None
    #: Which attempt of the operation this is (its log lines carry it; the worker
    #: fences checkpoints with it).
    attempt: int = 1
    #: The worker's log level: records below it are not even sent to the worker.
    log_level: int = 20


@attrs.frozen(kw_only=True)
class StopRequest:
    """Stop at the next step, saving a checkpoint first."""

    reason: StopReason


@attrs.frozen(kw_only=True)
class JobOutcome:
    """How a job ended, as the worker reports it to the backend."""

    status: OperationStatus
    result: Mapping[str, Any] | None = None
    error: str | None = None
    checkpoint_saved: bool = False
    #: Peak resident memory of the job's process, in bytes, when it could tell.
    memory_peak_bytes: int | None = None


@attrs.frozen
class JobLog:
    """One log record of the job process, for the worker's log (``logging.makeLogRecord``).

    ``fields`` are the record's attributes, its message already formatted, reduced to
    plain values; they include the operation's ``operation_id`` and ``attempt``.
    """

    fields: Mapping[str, Any]


#: Anything a job process sends to its worker.
JobMessage = Progress | SeriesUpdate | CheckpointData | SpanRecord | JobLog | JobOutcome


@attrs.frozen
class JobEntry:
    """The function a job process runs, by name: ``module.function(conn, request)``.

    Picklable by value, so the worker can hand it to a new process without importing
    ``module`` itself; the job process imports it.
    """

    module: str
    function: str

    def __call__(self, conn: Connection, request: JobRequest) -> None:
        target = getattr(importlib.import_module(self.module), self.function)
        target(conn, request)


#: The job processes of ktrdr's own workers: ``ktrdr.jobs.process.run_job_process``.
JOB_ENTRY = JobEntry("ktrdr.jobs.process", "run_job_process")
