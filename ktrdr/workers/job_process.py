"""Each operation runs in a process of its own, which the worker can stop, cap and kill.

Why a process and not a thread: a job can block in a system call (its data file is a
FIFO, a dead network mount) or allocate without bound. In a thread neither can be
stopped, and either takes the worker's HTTP server and heartbeats down with it. A
child process can be killed after ``KTRDR_WORKER_STOP_GRACE``, capped by
``KTRDR_WORKER_MAX_MEMORY`` (the child sets its own rlimit) and can crash alone.

The processes come from a ``multiprocessing`` *forkserver* whose server process
preloads the job modules (numpy included) once, so starting a job costs a fork
(milliseconds) rather than a new interpreter, and the worker process itself never
imports numpy. The target function is injected by the entrypoint: this package
never imports ``ktrdr.jobs``. Written by hand around the standard library because no
maintained library runs one killable, memory-capped child per task with a message
pipe: ``concurrent.futures.ProcessPoolExecutor`` cannot kill one task and breaks the
whole pool when a child dies.

One supervising thread per job does the blocking parts: it prepares the job's request
(checkpoint files), starts the process, receives its messages (progress and series
points go to the event loop, checkpoints are stored by the
:class:`~ktrdr.workers.job_host.JobHost`),
waits for the process to end and resolves :attr:`RunningJob.done` with the outcome.
The event loop only sets flags, sends a stop request and arms the kill timer, or,
for an attempt the backend says is no longer current, kills the process at once
(:meth:`RunningJob.supersede`): from then on none of its checkpoints is stored.
The job's log records arrive on the pipe too and are handed to this process's
loggers, so they reach the worker's log (and the operation's log) as they are.

Jobs get one BLAS thread each unless the operator chose otherwise: numpy's BLAS
starts a thread per core by default, and a worker's jobs share the host with other
workers (training ran up to 20 times slower on 2 cores). The thread counts are read
when the fork server loads numpy, so :data:`BLAS_THREADS` go into this process's
environment, only where unset, before the fork server starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ktrdr.errors import CheckpointFenced
from ktrdr.job_messages import (
    CheckpointData,
    JobEntry,
    JobLog,
    JobOutcome,
    JobRequest,
    SeriesUpdate,
    StopReason,
    StopRequest,
)
from ktrdr.log_context import attempt_of, operation_context
from ktrdr.protocol import OperationStatus, Progress, StartOperationRequest
from ktrdr.tracing import SpanRecord, trace_id_of
from ktrdr.workers.job_host import JobEnd, JobHost

__all__ = ["BLAS_THREADS", "JobLauncher", "RunningJob"]

#: BLAS thread counts of the job processes, where the operator set none.
BLAS_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

logger = logging.getLogger(__name__)


class JobLauncher:
    """Starts job processes for one worker.

    ``entry`` is what the child runs; the fork server imports its module once, ahead
    of any job. A job asked to stop is killed after ``host.grace_s(reason)``.
    """

    def __init__(self, *, entry: JobEntry, host: JobHost) -> None:
        self.host = host
        self._entry = entry
        # "__main__" too: multiprocessing re-imports the parent's main module in every
        # child unless the fork server already holds it, which would cost each job
        # the worker's own imports (uvicorn, FastAPI, the CLI).
        self._preload = ["__main__", entry.module]
        self._context = multiprocessing.get_context("forkserver")

    def _prepare_server(self) -> None:
        """Before the fork server starts (it inherits both): its preloads, and one BLAS
        thread per job unless set (see the module docstring)."""
        for name, value in BLAS_THREADS.items():
            os.environ.setdefault(name, value)
        self._context.set_forkserver_preload(self._preload)

    def warm_up(self) -> None:
        """Start the fork server and let it import the job modules (blocking, idempotent).

        The worker calls it in a thread at startup, so the first operation does not
        pay for the imports.
        """
        self._prepare_server()
        process = self._context.Process(target=os.getpid, name="ktrdr-job-warm-up")
        process.start()
        process.join()

    def launch(
        self,
        start: StartOperationRequest,
        *,
        on_progress: Callable[[Progress], None],
        on_series: Callable[[SeriesUpdate], None] | None = None,
        trace_parent: str | None = None,
        on_span: Callable[[SpanRecord], None] | None = None,
        on_outcome: Callable[[JobOutcome], object] | None = None,
    ) -> RunningJob:
        """Start ``start`` in the background; its outcome arrives on ``RunningJob.done``.

        ``on_progress`` and ``on_series`` run on the event loop, for each message of
        that kind the job sends. The job's spans continue ``trace_parent`` and are
        handed to ``on_span`` (on the supervising thread) as they finish.
        ``on_outcome`` runs on the event loop with the outcome as soon as it is final,
        after every progress and series callback and before ``done`` has it: when the
        job reported it itself, while its process is still exiting (the worker starts
        its durable write then, so the write overlaps the wait for the process).
        """
        self._prepare_server()
        job = RunningJob(
            start=start,
            launcher=self,
            loop=asyncio.get_running_loop(),
            on_progress=on_progress,
            on_series=on_series,
            trace_parent=trace_parent,
            on_span=on_span,
            on_outcome=on_outcome,
        )
        job.begin()
        return job

    def new_process(self, conn: Connection, request: JobRequest) -> Any:
        """A job process (not started) running the entry on ``request``."""
        return self._context.Process(
            target=self._entry,
            args=(conn, request),
            name=f"ktrdr-job-{request.operation_id}",
            daemon=True,  # ended by multiprocessing if the worker exits first
        )

    def new_pipe(self) -> tuple[Connection, Connection]:
        """A duplex pipe: the worker's end, the job's end."""
        return self._context.Pipe(duplex=True)


class RunningJob:
    """One operation's process, from start to outcome; see the module docstring."""

    def __init__(
        self,
        *,
        start: StartOperationRequest,
        launcher: JobLauncher,
        loop: asyncio.AbstractEventLoop,
        on_progress: Callable[[Progress], None],
        on_series: Callable[[SeriesUpdate], None] | None = None,
        trace_parent: str | None = None,
        on_span: Callable[[SpanRecord], None] | None = None,
        on_outcome: Callable[[JobOutcome], object] | None = None,
    ) -> None:
        self.operation_id = start.operation_id
        self._trace_parent = trace_parent
        self._on_span = on_span
        self.done: asyncio.Future[JobOutcome] = loop.create_future()
        self._start = start
        self._launcher = launcher
        self._host = launcher.host
        self._loop = loop
        self._on_progress = on_progress
        self._on_series = on_series
        self._on_outcome = on_outcome
        #: Set once ``on_outcome`` is scheduled (the supervising thread does it once).
        self._announced = False
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None
        self._stop: StopReason | None = None
        self._killed_for: StopReason | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        #: Set when the attempt is no longer current: kill now, store no checkpoint.
        self.superseded = False

    @property
    def pid(self) -> int | None:
        """The job process's id once it started."""
        process = self._process
        return process.pid if process is not None else None

    def begin(self) -> None:
        """Start the supervising thread."""
        thread = threading.Thread(
            target=self._supervise, name=f"job-{self.operation_id}", daemon=True
        )
        thread.start()

    def request_stop(self, reason: StopReason) -> None:
        """Ask the job to stop at its next step; kill it if it has not after the grace.

        Call on the event loop. The first reason wins; later calls do nothing.
        """
        with self._lock:
            if self._stop is not None or self.done.done():
                return
            self._stop = reason
            self._send_stop()
        self._kill_timer = self._loop.call_later(self._host.grace_s(reason), self.kill)

    def supersede(self) -> None:
        """The attempt is no longer current: kill the job now and store none of its
        checkpoints from here on (call on the event loop; idempotent).
        """
        with self._lock:
            self.superseded = True
            if self._stop is None:
                self._stop = StopReason.CANCELLED
        self.kill()

    def kill(self) -> None:
        """End the job process now (SIGKILL); its outcome says it was killed."""
        with self._lock:
            if self.done.done():
                return
            self._killed_for = self._stop or StopReason.CANCELLED
            process = self._process
            if process is not None and process.is_alive():
                logger.warning(
                    "operation %s: the job did not stop within %gs; killing process %s",
                    self.operation_id,
                    self._host.grace_s(self._killed_for),
                    process.pid,
                )
                process.kill()

    def _send_stop(self) -> None:
        """Forward the stop request to a started process (caller holds the lock)."""
        if self._conn is not None and self._stop is not None:
            with contextlib.suppress(OSError, ValueError):  # the process already ended
                self._conn.send(StopRequest(reason=self._stop))

    # -- the supervising thread ------------------------------------------------

    def _supervise(self) -> None:
        # A new thread starts without the caller's context: bind the operation (and the
        # trace its job continues) again.
        with operation_context(
            self.operation_id,
            attempt=attempt_of(self._start),
            trace_id=trace_id_of(self._trace_parent),
        ):
            self._supervise_in_context()

    def _supervise_in_context(self) -> None:
        try:
            outcome = self._run()
        except Exception as exc:  # a bug here must end the operation, never hang it
            logger.exception("operation %s: the job could not be run", self.operation_id)
            error = f"the worker could not run the job: {type(exc).__name__}: {exc}"
            outcome = JobOutcome(status=OperationStatus.FAILED, error=error)
        with contextlib.suppress(RuntimeError):  # the loop is gone: the process is exiting
            self._announce(outcome)
            self._loop.call_soon_threadsafe(self._resolve, outcome)

    def _announce(self, outcome: JobOutcome) -> None:
        """Schedule ``on_outcome`` on the loop, once (the loop runs callbacks in order)."""
        if self._on_outcome is not None and not self._announced:
            self._announced = True
            self._loop.call_soon_threadsafe(self._on_outcome, outcome)

    def _resolve(self, outcome: JobOutcome) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        if not self.done.done():
            self.done.set_result(outcome)

    def _run(self) -> JobOutcome:
        prepared = self._host.prepare(self._start, trace_parent=self._trace_parent)
        if isinstance(prepared, JobOutcome):
            return prepared
        request = prepared
        parent_conn, child_conn = self._launcher.new_pipe()
        with self._lock:
            if self._stop is not None:  # stopped before it started
                parent_conn.close()
                child_conn.close()
                return JobOutcome(
                    status=OperationStatus.CANCELLED,
                    error=f"stopped before the job started ({self._stop.value})",
                    checkpoint_saved=self._host.checkpoints.exists(request.operation_id),
                )
        process = self._launcher.new_process(child_conn, request)
        process.start()
        child_conn.close()
        logger.info("operation %s: job process %d started", request.operation_id, process.pid)
        with self._lock:
            self._process = process
            self._conn = parent_conn
            self._send_stop()  # a stop that came while the process was starting
            if self._killed_for is not None:
                process.kill()
        try:
            outcome, failure = self._receive(request, parent_conn, process)
            if outcome is not None and failure is None:
                with contextlib.suppress(RuntimeError):  # the loop is gone
                    self._announce(outcome)  # final already: meanwhile the process exits
        finally:
            self._reap(process)
            with self._lock:
                self._conn = None
                parent_conn.close()
        end = JobEnd(
            outcome=outcome,
            exitcode=process.exitcode,
            killed_for=self._killed_for if outcome is None else None,
            failure=failure,
        )
        return self._host.finish(request, end)

    def _receive(
        self, request: JobRequest, conn: Connection, process: Any
    ) -> tuple[JobOutcome | None, str | None]:
        """Handle the job's messages until its outcome, a failure, or the pipe closing."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return None, None
            if isinstance(message, Progress):
                self._loop.call_soon_threadsafe(self._on_progress, message)
            elif isinstance(message, SeriesUpdate):
                if self._on_series is not None:
                    self._loop.call_soon_threadsafe(self._on_series, message)
            elif isinstance(message, CheckpointData):
                if self.superseded:
                    continue  # a stale attempt writes no checkpoint; it is being killed
                try:
                    failure = self._host.save(request, message)
                except CheckpointFenced as exc:
                    # A later attempt owns the checkpoint: this one is superseded.
                    logger.warning("operation %s: %s; killing its job", request.operation_id, exc)
                    self.superseded = True
                    process.kill()
                    return None, f"superseded: {exc}"
                if failure is not None:
                    process.kill()
                    return None, failure
            elif isinstance(message, SpanRecord):
                if self._on_span is not None:
                    self._on_span(message)
            elif isinstance(message, JobLog):
                _log_job_record(message)
            elif isinstance(message, JobOutcome):
                return message, None
            else:
                logger.error(
                    "operation %s: unexpected job message %r", request.operation_id, message
                )

    def _reap(self, process: Any) -> None:
        """Wait for the process to exit; kill it if it lingers after its outcome."""
        process.join(timeout=self._host.grace_s(StopReason.CANCELLED))
        if process.is_alive():
            process.kill()
            process.join()


def _log_job_record(message: JobLog) -> None:
    """Hand a job process's record to this process's logger of the same name."""
    try:
        record = logging.makeLogRecord(dict(message.fields))
    except (TypeError, ValueError):  # not a record's attributes: keep nothing of it
        return
    logging.getLogger(record.name).handle(record)
