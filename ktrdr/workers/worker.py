"""The worker runtime: one object that registers, heartbeats, runs operations, stops.

:class:`Worker` owns the conversation with the backend and the lifecycle of one
operation at a time; the computation itself runs in a job process of its own,
started by a :class:`~ktrdr.workers.job_process.JobLauncher`. The HTTP server
(``ktrdr.workers.server``) calls :meth:`Worker.start` once it listens, forwards
operation requests, calls :meth:`Worker.request_shutdown` from the server's own
signal handling and :meth:`Worker.stop` from its lifespan shutdown.

Everything is injected (settings, launcher, backend client, clock, sleep), nothing
reads the environment, and all state changes happen on the event loop: signal
handling only sets flags and schedules the job's stop on the loop.

Each operation the worker runs is one attempt (its number comes with the start
request); heartbeats and the report carry it. When the backend says the attempt is
no longer current (a heartbeat answered 409 ``stale_attempt``, or a cancel marked
``superseded``: it was lost and retried elsewhere, timed out or stalled), the worker
kills the job at once, stores none of its checkpoints any more and reports nothing.

A worker that is free when it reports an outcome (idle, not stopping) asks for its
next operation in the report (``take_next``, to a backend that offers it); an
operation the answer hands over is started by :meth:`Worker.start_operation`, exactly
as a start request would be, continuing the backend's ``dispatch`` span. If it cannot
start after all (the worker began stopping meanwhile, or its checks refuse it), it is
given back to the backend at once (``release``), so it waits for no orphan timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import attrs
from opentelemetry.trace import Span, Status, StatusCode
from pydantic import ValidationError

import ktrdr
from ktrdr.config import CheckpointSettings, WorkerSettings, env_name
from ktrdr.errors import (
    AttemptNotCurrent,
    BackendError,
    BackendRejected,
    ConfigurationError,
    UnknownOperation,
    WorkerBusy,
    WorkerNotRegistered,
    WorkerStopping,
    WrongOperationType,
)
from ktrdr.job_messages import JobOutcome, SeriesUpdate, StopReason
from ktrdr.log_context import OperationLogContext, operation_context
from ktrdr.protocol import (
    MAX_PENDING_OUTCOMES,
    Handoff,
    HeartbeatRequest,
    OperationReport,
    OperationStatus,
    OperationType,
    Progress,
    RegisterRequest,
    ReleaseOperationRequest,
    StartOperationRequest,
    WorkerStatus,
)
from ktrdr.tracing import Tracing, trace_id_of, traceparent_of
from ktrdr.workers.backend_client import BackendClient
from ktrdr.workers.backoff import registration_backoff
from ktrdr.workers.delivery import OutcomeDelivery
from ktrdr.workers.fingerprint import config_fingerprint
from ktrdr.workers.job_process import JobLauncher, RunningJob
from ktrdr.workers.metrics import WorkerMetrics, process_memory_peak
from ktrdr.workers.operation_logs import OperationLogs
from ktrdr.workers.outbox import Outbox, OutboxEntry
from ktrdr.workers.series_buffer import SeriesBuffer

logger = logging.getLogger(__name__)

#: Longest error text an operation report carries (``OperationReport.error``).
MAX_REPORT_ERROR = 4000
_FIELDS = attrs.fields(WorkerSettings)
_SHUTDOWN_TIMEOUT = env_name(_FIELDS.shutdown_timeout)
_WORKER_ID = env_name(_FIELDS.id)
#: Log a failed registration attempt at WARNING on the first try and every Nth.
_LOG_EVERY = 10


@attrs.define(kw_only=True, eq=False)
class _Running:
    """The operation in progress: its attempt, job process, latest progress and series."""

    operation_id: str
    operation_type: OperationType
    attempt: int
    loop: asyncio.AbstractEventLoop
    metrics: WorkerMetrics
    #: The operation's span on this worker (from the start request to the report).
    span: Span
    job: RunningJob | None = None
    progress: Progress | None = None
    series: SeriesBuffer = attrs.field(factory=SeriesBuffer)
    reporter: asyncio.Task[None] | None = None
    #: The final outcome, its report (built as soon as the outcome was known) and the
    #: report's durable write to the outbox (started while the job's process exits).
    prepared: tuple[JobOutcome, OperationReport, asyncio.Future[OutboxEntry]] | None = None
    #: The trace of the run span (None when tracing is off).
    trace_id: str | None = None

    def log_context(self) -> contextlib.AbstractContextManager[OperationLogContext]:
        """Log lines written inside name this operation, its attempt and its trace."""
        return operation_context(self.operation_id, attempt=self.attempt, trace_id=self.trace_id)

    #: Set when the backend said this attempt is no longer current.
    superseded: bool = False

    def set_progress(self, progress: Progress) -> None:
        self.progress = progress
        self.metrics.progress_reported(progress.percent)

    def add_series(self, update: SeriesUpdate) -> None:
        self.series.add(update)

    def stop(self, reason: StopReason) -> None:
        if self.job is not None:
            self.job.request_stop(reason)


class Worker:
    """One worker process's runtime; see the module docstring for who calls what."""

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        checkpoint: CheckpointSettings,
        launcher: JobLauncher,
        backend: BackendClient,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = random.random,
        tracing: Tracing | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        """``outbox`` defaults to ``<checkpoint directory>/.outbox/<worker id>``, beside
        the checkpoints the launcher's job host stores.
        """
        if settings.type is None:
            message = "WorkerSettings.type is not set; validate_all fills it from the entrypoint"
            raise ValueError(message)
        self.settings = settings
        self.worker_type = OperationType(settings.type.value)
        self.fingerprint = config_fingerprint(settings, checkpoint)
        self._launcher = launcher
        #: The launcher's metrics (its job host times the checkpoint writes).
        self.metrics: WorkerMetrics = launcher.host.metrics
        #: Each operation's own log, beside the checkpoints.
        self.logs = OperationLogs(root=launcher.host.checkpoints.root)
        self._backend = backend
        self._clock = clock
        self._sleep = sleep
        self._random = random
        self._tracing = tracing if tracing is not None else Tracing.off()
        self._running: _Running | None = None
        self._stopping = False
        self._stop_started: float | None = None
        self._registered = False
        self._registration_attempted = False
        #: One registration at a time: each answer replaces the credential.
        self._registering = asyncio.Lock()
        self._lifecycle: asyncio.Task[None] | None = None
        self._warm_up: asyncio.Task[None] | None = None
        #: Tasks that wait for an operation's outcome and put it in the outbox (stop()
        #: awaits them).
        self._reporters: set[asyncio.Task[None]] = set()
        self._check_identity()
        checkpoints = launcher.host.checkpoints
        self._delivery = OutcomeDelivery(
            outbox=outbox or Outbox.in_checkpoint_dir(checkpoints.root, settings.id),
            backend=backend,
            checkpoints=checkpoints,
            register_again=self._register_again,
            backoff=lambda: registration_backoff(settings.heartbeat_interval, random=random),
            sleep=sleep,
            take_next=self._can_take_next,
            on_handoff=self._take_handoff,
        )

    # -- identity -------------------------------------------------------------

    @property
    def worker_id(self) -> str:
        """``KTRDR_WORKER_ID`` (default ``<type>-<hostname>-<port>``)."""
        return self.settings.id

    @property
    def heartbeat_interval_s(self) -> float:
        """``KTRDR_WORKER_HEARTBEAT_INTERVAL`` in seconds."""
        return self.settings.heartbeat_interval.total_seconds()

    def _check_identity(self) -> None:
        """Fail at startup, naming the variables, if the backend would refuse us."""
        try:
            self.registration_request()
        except ValidationError as exc:
            names = {
                "worker_id": env_name(_FIELDS.id),
                "endpoint_url": env_name(_FIELDS.public_url),
            }
            problems = []
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else ""
                variable = names.get(field, field)
                value = getattr(self.settings, "id" if field == "worker_id" else "public_url", "")
                problems.append(f"{variable}={value!r}: {error['msg']}")
            raise ConfigurationError(problems) from None

    def capabilities(self) -> dict[str, Any]:
        """What this worker offers, sent with its registration."""
        return {"operation_types": [self.worker_type.value], "ktrdr_version": ktrdr.__version__}

    def registration_request(self) -> RegisterRequest:
        """The body of ``POST /api/v1/workers/register``."""
        return RegisterRequest(
            worker_id=self.settings.id,
            worker_type=self.worker_type,
            endpoint_url=self.settings.public_url,
            capabilities=self.capabilities(),
            heartbeat_interval_s=self.heartbeat_interval_s,
            config_fingerprint=self.fingerprint,
            current_operation_id=self.current_operation_id,
        )

    # -- state ----------------------------------------------------------------

    @property
    def status(self) -> WorkerStatus:
        """stopping after SIGTERM, busy while an operation runs, idle otherwise."""
        if self._stopping:
            return WorkerStatus.STOPPING
        if self._running is not None:
            return WorkerStatus.BUSY
        return WorkerStatus.IDLE

    @property
    def current_operation_id(self) -> str | None:
        """The running operation, if any."""
        running = self._running
        return running.operation_id if running is not None else None

    @property
    def pending_outcomes(self) -> list[str]:
        """Operations whose outcome is in the outbox, not yet acknowledged, oldest first."""
        return self._delivery.pending_ids

    @property
    def outbox(self) -> Outbox:
        """Where this worker keeps outcomes until the backend has them."""
        return self._delivery.outbox

    @property
    def registered(self) -> bool:
        """True once the backend accepted the registration (until it forgets us)."""
        return self._registered

    def heartbeat_request(self) -> HeartbeatRequest:
        """The body of a heartbeat: status, current operation, its progress and new points,
        and the operations whose outcome waits in the outbox.
        """
        running = self._running
        pending = self._delivery.pending_ids[:MAX_PENDING_OUTCOMES]
        if running is None:
            return HeartbeatRequest(status=self.status, pending_outcomes=pending)
        return HeartbeatRequest(
            status=self.status,
            current_operation_id=running.operation_id,
            attempt=running.attempt,
            progress=running.progress,
            series=running.series.unsent(),
            pending_outcomes=pending,
        )

    def health(self) -> dict[str, Any]:
        """``GET /health`` of the worker."""
        running = self._running
        progress = running.progress if running is not None else None
        return {
            "worker_id": self.worker_id,
            "worker_type": self.worker_type.value,
            "status": self.status.value,
            "current_operation_id": self.current_operation_id,
            "attempt": running.attempt if running is not None else None,
            "registered": self._registered,
            "progress": progress.model_dump(mode="json") if progress is not None else None,
            "job_pid": running.job.pid if running is not None and running.job else None,
            "pending_outcomes": self._delivery.pending_ids,
        }

    def refresh_metrics(self) -> None:
        """Scrape time: the running job's memory peak so far (Linux; else left as is)."""
        running = self._running
        pid = running.job.pid if running is not None and running.job is not None else None
        if pid is not None:
            peak = process_memory_peak(pid)
            if peak is not None:
                self.metrics.job_memory_seen(peak)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Begin registering and heartbeating in the background (the server listens).

        The job processes' server is warmed up once registration has succeeded: started
        alongside it, the server's imports competed with the registration for the CPU
        and about doubled the time until the backend listed the worker. Outcomes an
        earlier run left in the outbox are loaded first: heartbeats list them and they
        are delivered as soon as the registration succeeds.
        """
        if self._lifecycle is None and not self._stopping:
            await self._delivery.load()
            self._delivery.start()
            self._lifecycle = asyncio.create_task(self._lifecycle_loop(), name="worker-lifecycle")

    async def _warm_up_jobs(self) -> None:
        """Load the job modules in the job process server now, not at the first operation."""
        try:
            await asyncio.to_thread(self._launcher.warm_up)
        except Exception:  # the first operation will try again (and report what fails)
            logger.exception("could not prepare job processes ahead of the first operation")

    async def _lifecycle_loop(self) -> None:
        if not await self.register_until_success():
            return  # stopping before the backend ever answered
        self._warm_up = asyncio.create_task(self._warm_up_jobs(), name="job-warm-up")
        interval = self.heartbeat_interval_s
        next_due = self._clock() + interval
        while True:
            await self._sleep(max(0.0, next_due - self._clock()))
            next_due = max(next_due + interval, self._clock())
            await self.heartbeat_once()

    async def register_until_success(self) -> bool:
        """Register, retrying with capped exponential backoff; False if stopping first."""
        backoff = registration_backoff(self.settings.heartbeat_interval, random=self._random)
        attempt = 0
        while not self._stopping:
            attempt += 1
            self._registration_attempted = True
            try:
                async with self._registering:
                    await self._backend.register(self.registration_request())
            except BackendError as exc:
                delay = backoff.next_delay()
                level = logging.ERROR if isinstance(exc, BackendRejected) else logging.WARNING
                if isinstance(exc, BackendRejected) and exc.status_code == 409:
                    self._log_id_conflict(exc, attempt=attempt, delay=delay)
                elif attempt == 1 or attempt % _LOG_EVERY == 0:
                    logger.log(
                        level,
                        "registration with %s failed (attempt %d): %s; retrying in %.2gs",
                        self._backend.base_url,
                        attempt,
                        exc,
                        delay,
                    )
                await self._sleep(delay)
                continue
            self._registered = True
            logger.info(
                "worker %s registered with the backend at %s (attempt %d)",
                self.worker_id,
                self._backend.base_url,
                attempt,
            )
            self._delivery.wake(fresh=True)
            return True
        return False

    def _log_id_conflict(self, exc: BackendRejected, *, attempt: int, delay: float) -> None:
        """Every refused attempt, at ERROR: another live worker holds our id.

        Until the backend takes this registration it never sends this worker work
        (it knows only the other worker's endpoint); the retries go on, so once the
        other registration goes stale (that worker stopped or crashed) this one is
        accepted by itself.
        """
        logger.error(
            "registration refused (attempt %d): %s=%s is held by another live worker at "
            "another endpoint; give each worker its own %s. This worker takes no work "
            "until the backend accepts it; retrying in %.2gs (%s)",
            attempt,
            _WORKER_ID,
            self.worker_id,
            _WORKER_ID,
            delay,
            exc,
        )

    async def heartbeat_once(self) -> None:
        """Send one heartbeat; on 404 (the backend restarted) or 401 (our credential was
        replaced) register again at once.
        """
        running = self._running
        request = self.heartbeat_request()
        try:
            await self._backend.heartbeat(self.worker_id, request)
        except AttemptNotCurrent as exc:
            if request.current_operation_id is not None and request.attempt is not None:
                self.supersede(request.current_operation_id, request.attempt, reason=str(exc))
        except WorkerNotRegistered as exc:
            self._registered = False
            if exc.status_code == 401:
                logger.warning(
                    "the backend no longer accepts worker %s's credential (a newer "
                    "registration replaced it?); re-registering",
                    self.worker_id,
                )
            else:
                logger.info(
                    "the backend does not know worker %s (restarted?); re-registering",
                    self.worker_id,
                )
            await self.register_until_success()
        except BackendError as exc:
            level = logging.ERROR if isinstance(exc, BackendRejected) else logging.WARNING
            logger.log(level, "heartbeat failed: %s", exc)
        else:
            if running is not None and request.series is not None:
                running.series.acknowledge(request.series)

    def request_shutdown(self) -> None:
        """Stop taking work and ask the running operation to stop (signal-safe, idempotent).

        Called from the server's signal handling, so it only sets flags.
        """
        if self._stopping:
            return
        self._stopping = True
        self._stop_started = self._clock()
        running = self._running
        if running is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs
                running.loop.call_soon_threadsafe(running.stop, StopReason.SHUTDOWN)

    def _deadline(self) -> float:
        started = self._stop_started if self._stop_started is not None else self._clock()
        return started + self.settings.shutdown_timeout.total_seconds()

    def _unregister_reserve(self) -> float:
        """Time kept back from the shutdown budget for unregistering."""
        return min(1.0, 0.2 * self.settings.shutdown_timeout.total_seconds())

    async def stop(self) -> None:
        """Finish within ``KTRDR_WORKER_SHUTDOWN_TIMEOUT``: let the operation stop and
        put its outcome in the outbox, deliver what the outbox holds, stop heartbeating,
        unregister. Outcomes not delivered by then stay on disk for the next start.
        """
        self.request_shutdown()
        deadline = self._deadline()
        running = self._running
        reporters = [task for task in self._reporters if not task.done()]
        if reporters:
            wait_s = deadline - self._unregister_reserve() - self._clock()
            _, late = await asyncio.wait(reporters, timeout=max(0.0, wait_s))
            if late:
                if running is not None and running.reporter in late:
                    logger.error(
                        "operation %s did not stop within %s (%s); exiting without its outcome",
                        running.operation_id,
                        _SHUTDOWN_TIMEOUT,
                        self.settings.shutdown_timeout,
                    )
                for task in late:
                    task.cancel()
        await self._delivery.stop(deadline - self._unregister_reserve() - self._clock())
        giving_back = [task for task in self._reporters if not task.done()]
        if giving_back:  # operations handed over while stopping, being given back
            wait_s = deadline - self._unregister_reserve() - self._clock()
            await asyncio.wait(giving_back, timeout=max(0.05, wait_s))
        for background in (self._lifecycle, self._warm_up):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        if self._registration_attempted:
            remaining = max(0.05, deadline - self._clock())
            try:
                known = await self._backend.unregister(
                    self.worker_id, timeout_s=min(self._backend.timeout_s, remaining)
                )
            except BackendError as exc:
                logger.warning("could not unregister worker %s: %s", self.worker_id, exc)
            else:
                if known:
                    logger.info("worker %s unregistered", self.worker_id)
        self._registered = False
        logger.info("worker %s stopped", self.worker_id)

    # -- operations -----------------------------------------------------------

    async def start_operation(self, request: StartOperationRequest) -> None:
        """Run ``request`` in a job process; refuses when stopping, busy or mistyped."""
        self._start(request)

    def _start(
        self, request: StartOperationRequest, *, parent: str | None = None, root: bool = False
    ) -> None:
        """:meth:`start_operation` for a start request and a handoff alike (no await in
        it, so nothing else starts between its checks and the start).

        Its span continues ``parent`` (a ``traceparent``: a handoff's), else the
        current span (the start request's), or with ``root`` begins a trace.
        """
        if self._stopping:
            message = f"worker {self.worker_id} is shutting down and takes no new operations"
            raise WorkerStopping(message)
        if self._running is not None:
            message = f"worker {self.worker_id} is busy with operation {self._running.operation_id}"
            raise WorkerBusy(message)
        if request.operation_type is not self.worker_type:
            message = (
                f"this is a {self.worker_type.value} worker; it cannot run a "
                f"{request.operation_type.value} operation"
            )
            raise WrongOperationType(message)
        # Continues the start request's span (the dispatcher's trace) until the report.
        span = self._tracing.start(
            f"run {self.worker_type.value}",
            parent=parent,
            root=root,
            attributes={
                "ktrdr.operation.id": request.operation_id,
                "ktrdr.operation.type": request.operation_type.value,
                "ktrdr.operation.resume": request.resume,
                "ktrdr.operation.attempt": request.attempt,
                "ktrdr.worker.id": self.worker_id,
            },
        )
        trace_parent = traceparent_of(span)
        running = _Running(
            operation_id=request.operation_id,
            operation_type=request.operation_type,
            attempt=request.attempt,
            loop=asyncio.get_running_loop(),
            metrics=self.metrics,
            span=span,
            trace_id=trace_id_of(trace_parent),
        )
        # Everything logged for this operation from here on (the report task and the
        # job's supervising thread and process included) names it, and its trace when
        # traced (the run span is not made current: the context carries it), and goes
        # to its log.
        with running.log_context():
            capture = contextlib.ExitStack()
            capture.enter_context(self.logs.capture(request.operation_id))
            try:
                job = self._launcher.launch(
                    request,
                    on_progress=running.set_progress,
                    on_series=running.add_series,
                    trace_parent=trace_parent,
                    on_span=self._tracing.export_record if self._tracing.enabled else None,
                    on_outcome=lambda outcome: self._outcome_announced(running, outcome),
                )
            except BaseException:
                capture.close()
                span.end()
                raise
            running.job = job
            self._running = running
            self.metrics.operation_started()
            running.reporter = asyncio.create_task(self._report_when_done(running, job, capture))
            self._reporters.add(running.reporter)
            running.reporter.add_done_callback(self._reporters.discard)
            logger.info(
                "operation %s started (%s%s, attempt %d)",
                request.operation_id,
                self.worker_type.value,
                ", retrying" if request.retry else ", resuming" if request.resume else "",
                request.attempt,
            )

    def _can_take_next(self) -> bool:
        """A report may ask for the next operation: registered with a backend that hands
        one over, idle, not stopping.
        """
        return (
            self._backend.hands_off
            and self._registered
            and not self._stopping
            and self._running is None
        )

    def _take_handoff(self, handoff: Handoff) -> None:
        """Start the operation a report's answer handed over, as if its start request
        had arrived; if that is refused, give it back to the backend at once.
        """
        request = handoff.start
        with operation_context(request.operation_id, attempt=request.attempt):
            try:
                self._start(request, parent=handoff.traceparent, root=True)
            except (WorkerStopping, WorkerBusy, WrongOperationType) as exc:
                reason = str(exc)
                logger.warning(
                    "operation %s (attempt %d), handed over with a report's answer, cannot "
                    "start here (%s); giving it back",
                    request.operation_id,
                    request.attempt,
                    reason,
                )
            except Exception as exc:  # the start request's answer would be a 500
                reason = f"its start failed ({type(exc).__name__})"
                logger.exception(
                    "operation %s (attempt %d), handed over with a report's answer, could "
                    "not start; giving it back",
                    request.operation_id,
                    request.attempt,
                )
            else:
                return
        task = asyncio.create_task(self._give_back(request, reason))
        self._reporters.add(task)
        task.add_done_callback(self._reporters.discard)

    async def _give_back(self, request: StartOperationRequest, reason: str) -> None:
        """Tell the backend this worker will not run ``request`` (pending again there)."""
        release = ReleaseOperationRequest(
            worker_id=self.worker_id, attempt=request.attempt, reason=reason[:500]
        )
        with operation_context(request.operation_id, attempt=request.attempt):
            try:
                await self._backend.release_operation(request.operation_id, release)
            except BackendError as exc:
                logger.warning(
                    "operation %s could not be given back (%s); the backend's orphan "
                    "detector will queue it again",
                    request.operation_id,
                    exc,
                )
            else:
                logger.info("operation %s given back to the backend", request.operation_id)

    def operation_log(self, operation_id: str) -> bytes | None:
        """The operation's own log (JSON lines, blocking file I/O); None if there is none."""
        return self.logs.read(operation_id)

    def cancel_operation(
        self, operation_id: str, *, attempt: int | None = None, superseded: bool = False
    ) -> None:
        """Ask the running operation ``operation_id`` (that ``attempt``, if given) to stop.

        ``superseded``: the attempt is no longer current, so the job is killed at once
        (:meth:`supersede`). Raises ``UnknownOperation`` when it is not running here.
        """
        running = self._running
        if (
            running is None
            or running.operation_id != operation_id
            or (attempt is not None and running.attempt != attempt)
        ):
            which = operation_id if attempt is None else f"{operation_id} (attempt {attempt})"
            message = f"worker {self.worker_id} is not running operation {which}"
            raise UnknownOperation(message)
        with running.log_context():
            if superseded:
                self.supersede(operation_id, running.attempt, reason="the backend cancelled it")
                return
            running.stop(StopReason.CANCELLED)
            logger.info("operation %s: cancellation requested", operation_id)

    def supersede(self, operation_id: str, attempt: int, *, reason: str) -> bool:
        """Attempt ``attempt`` of ``operation_id`` is no longer current: kill its job now.

        None of its checkpoints is stored from here on and its outcome is not
        reported. False when that attempt is not running here (nothing to do).
        """
        running = self._running
        if running is None or running.operation_id != operation_id or running.attempt != attempt:
            return False
        with running.log_context():
            if not running.superseded:
                running.superseded = True
                logger.warning(
                    "operation %s attempt %d is no longer current (%s); killing its job",
                    operation_id,
                    attempt,
                    reason,
                )
            if running.job is not None:
                running.job.supersede()
        return True

    async def _report_when_done(
        self, running: _Running, job: RunningJob, capture: contextlib.ExitStack
    ) -> None:
        """Report the job's outcome; the operation's log is kept until the report is done."""
        with capture:
            await self._report_outcome(running, job)

    def _outcome_announced(self, running: _Running, outcome: JobOutcome) -> None:
        """The job's early outcome hook: write it ahead, unless the attempt is superseded
        (a stale attempt's outcome never reaches the outbox).
        """
        job = running.job
        if not running.superseded and (job is None or not job.superseded):
            self._outcome_known(running, outcome)

    def _outcome_known(
        self, running: _Running, outcome: JobOutcome
    ) -> tuple[JobOutcome, OperationReport, asyncio.Future[OutboxEntry]]:
        """The job's final outcome, before its process is reaped: build the report (every
        series point has arrived) and start writing it to the outbox in a thread, so
        the durable write overlaps the wait for the process.
        """
        report = self._report_for(outcome, attempt=running.attempt, series=running.series)
        body = report.model_dump(mode="json")
        written = asyncio.ensure_future(
            asyncio.to_thread(self._delivery.write, running.operation_id, body)
        )
        running.prepared = (outcome, report, written)
        return running.prepared

    async def _report_outcome(self, running: _Running, job: RunningJob) -> None:
        try:
            outcome = await job.done
        finally:
            # Free as soon as the outcome is known: the next operation need not wait
            # for the report's round trip (or its retries while the backend is away).
            if self._running is running:
                self._running = None
        prepared = running.prepared
        if running.superseded or job.superseded:  # told so, or a later attempt took over
            if prepared is not None:  # written before we knew: it must never be sent
                await asyncio.to_thread(self._delivery.outbox.remove, await prepared[2])
            running.span.set_attribute("ktrdr.operation.status", "superseded")
            running.span.end()
            logger.info(
                "operation %s attempt %d stopped; not reported (no longer current)",
                running.operation_id,
                running.attempt,
            )
            return
        if prepared is None or prepared[0] is not outcome:  # no early hook ran
            prepared = self._outcome_known(running, outcome)
        _, report, written = prepared
        self.metrics.operation_ended(
            running.operation_type, report.status, outcome.memory_peak_bytes
        )
        logger.info(
            "operation %s ended: %s%s (attempt %d)",
            running.operation_id,
            report.status.value,
            f" ({report.error})" if report.error else "",
            running.attempt,
        )
        span = running.span
        span.set_attribute("ktrdr.operation.status", report.status.value)
        if report.status is OperationStatus.FAILED:
            span.set_status(Status(StatusCode.ERROR, report.error))
        # On disk before it is sent; delivered (and retried) by the outbox's task, each
        # attempt within the operation's span (which ends when the outcome leaves) and
        # naming the operation (and its trace) in its log lines.
        entry = await written

        @contextlib.contextmanager
        def delivering() -> Iterator[None]:
            with (
                running.log_context(),
                self._tracing.within(span, end=False),
            ):
                yield

        delivered = self._delivery.enqueue(entry, context=delivering)
        delivered.add_done_callback(lambda _: span.end())

    async def _register_again(self, seen: int) -> None:
        """Register unless a registration happened since the client's counter read ``seen``
        (the backend no longer took our credential: it restarted, or a newer
        registration of our id replaced it). Raises ``BackendError`` when it fails.
        """
        async with self._registering:
            if self._backend.registrations == seen:
                logger.info("worker %s: credential refused; registering again", self.worker_id)
                await self._backend.register(self.registration_request())
                self._registered = True

    def _report_for(
        self, outcome: JobOutcome, *, attempt: int, series: SeriesBuffer | None = None
    ) -> OperationReport:
        """The wire report of ``outcome`` with every series point; an unserialisable
        result becomes a failure.
        """
        error = outcome.error[:MAX_REPORT_ERROR] if outcome.error is not None else None
        result = _plain(outcome.result)
        points = series.everything() if series is not None else None
        try:
            report = OperationReport(
                worker_id=self.worker_id,
                attempt=attempt,
                status=outcome.status,
                result=result,
                error=error,
                checkpoint_saved=outcome.checkpoint_saved,
                series=points,
            )
            report.model_dump_json()
        except (ValidationError, ValueError, TypeError) as exc:
            return OperationReport(
                worker_id=self.worker_id,
                attempt=attempt,
                status=OperationStatus.FAILED,
                error=f"the job's result could not be reported: {exc}"[:MAX_REPORT_ERROR],
                checkpoint_saved=outcome.checkpoint_saved,
            )
        return report


def _plain(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(result) if result is not None else None


__all__ = ["MAX_REPORT_ERROR", "Worker"]
