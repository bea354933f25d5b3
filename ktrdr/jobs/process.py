"""The job side of a job process: run one operation and tell the worker about it.

:func:`run_job_process` is the target the worker runtime starts in a child process
(``ktrdr.workers.job_process``). It caps its own memory (``KTRDR_WORKER_MAX_MEMORY``,
as ``RLIMIT_DATA``: the private writable memory numpy allocates, so a job over the cap
gets a ``MemoryError`` that the step loop turns into a clear failure), listens for a
stop request on a thread, runs the step loop and sends its outcome (a traced
operation's spans go first, as messages: ``ktrdr.tracing.job``). It leaves
signals to the worker: Ctrl-C in a terminal reaches the whole process group, and the
worker, not the job, decides how its operation stops. When the worker goes away (its
end of the pipe closes), the job exits at once rather than compute for nobody.

The job's log records go to the worker over the same pipe (a ``QueueHandler`` whose
queue is the pipe), each carrying the operation's id and attempt, so they appear in
the worker's log and in the operation's own log like the worker's lines; a traced
operation's records carry its trace id too (that of the worker's run span, which the
job's spans continue).
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import attrs

from ktrdr.job_messages import (
    CheckpointData,
    JobLog,
    JobMessage,
    JobRequest,
    SeriesUpdate,
    StopReason,
    StopRequest,
)
from ktrdr.jobs.backtest import BacktestJob
from ktrdr.jobs.step_loop import Job, run_steps
from ktrdr.jobs.training import TrainingJob
from ktrdr.log_context import OperationContextFilter, operation_context
from ktrdr.protocol import OperationType, Progress
from ktrdr.tracing import SpanRecord, Tracing, trace_id_of

__all__ = [
    "EXIT_WORKER_GONE",
    "JOBS",
    "PipeChannel",
    "log_to_worker",
    "memory_peak",
    "record_fields",
    "run_job_process",
]

#: Record attribute values that cross the pipe as they are; others become text.
_PLAIN = (str, int, float, bool, type(None))

#: Exit status of a job process whose worker went away.
EXIT_WORKER_GONE = 3

#: The job of each operation type.
JOBS: dict[OperationType, Job] = {
    OperationType.TRAINING: TrainingJob(),
    OperationType.BACKTEST: BacktestJob(),
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A prepared record's attributes as plain values (what ``makeLogRecord`` takes)."""
    return {
        key: value if isinstance(value, _PLAIN) else str(value)
        for key, value in vars(record).items()
        if key not in ("args", "exc_info")
    }


def log_to_worker(channel: PipeChannel, request: JobRequest) -> None:
    """Send this process's log records at the worker's level to the worker (the only
    handler), each stamped with the operation's id and attempt (and trace id).
    """
    handler = logging.handlers.QueueHandler(channel)  # type: ignore[arg-type]
    handler.addFilter(OperationContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(request.log_level)


def memory_peak() -> int:
    """This process's peak resident memory in bytes (``ru_maxrss``: kB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _exit_worker_gone() -> None:
    os._exit(EXIT_WORKER_GONE)


class PipeChannel:
    """The step loop's channel over the pipe to the worker.

    ``on_worker_gone`` runs on the listener thread when the worker's end closes: by
    default the process exits at once (tests of the entry point in-process pass
    something milder).
    """

    def __init__(
        self, conn: Connection, *, on_worker_gone: Callable[[], None] = _exit_worker_gone
    ) -> None:
        self._conn = conn
        self._on_worker_gone = on_worker_gone
        self._stop: StopReason | None = None
        #: The step loop and a logging job thread may send at once; a pipe is not
        #: safe for concurrent writers.
        self._send_lock = threading.Lock()

    def listen(self) -> None:
        """Receive stop requests on a daemon thread; exit when the worker is gone."""
        threading.Thread(target=self._listen, name="job-stop-listener", daemon=True).start()

    def _listen(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                self._on_worker_gone()
                return
            if isinstance(message, StopRequest) and self._stop is None:
                self._stop = message.reason

    def send(self, message: JobMessage) -> None:
        """Send one message to the worker (serialised with other senders)."""
        with self._send_lock:
            self._conn.send(message)

    def progress(self, progress: Progress) -> None:
        """Send progress to the worker."""
        self.send(progress)

    def checkpoint(self, data: CheckpointData) -> None:
        """Send a checkpoint for the worker to store."""
        self.send(data)

    def put_nowait(self, record: logging.LogRecord) -> None:
        """The ``QueueHandler`` queue interface: send a prepared log record to the worker."""
        # The worker is gone: nowhere to log; the listener thread ends the process.
        with contextlib.suppress(OSError, ValueError):
            self.send(JobLog(fields=record_fields(record)))

    def series(self, update: SeriesUpdate) -> None:
        """Send series points to the worker."""
        self._conn.send(update)

    def span(self, record: SpanRecord) -> None:
        """Send a finished span for the worker to export."""
        self._conn.send(record)

    def stop_requested(self) -> StopReason | None:
        """The worker's stop reason, once one arrived (a plain attribute read)."""
        return self._stop


def run_job_process(
    conn: Connection,
    request: JobRequest,
    *,
    on_worker_gone: Callable[[], None] = _exit_worker_gone,
) -> None:
    """Run ``request`` in this (child) process and send the outcome over ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = PipeChannel(conn, on_worker_gone=on_worker_gone)
    channel.listen()
    log_to_worker(channel, request)
    tracing = Tracing.off()
    if request.trace_parent is not None:  # the SDK is loaded only for a traced operation
        from ktrdr.tracing.job import job_tracing

        tracing = job_tracing(channel.span)
    if request.max_memory is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (request.max_memory, request.max_memory))
    job = JOBS[request.operation_type]
    trace_id = trace_id_of(request.trace_parent)
    with operation_context(request.operation_id, attempt=request.attempt, trace_id=trace_id):
        outcome = run_steps(job, request, channel, clock=time.monotonic, tracing=tracing)
    channel.send(attrs.evolve(outcome, memory_peak_bytes=memory_peak()))
    conn.close()
