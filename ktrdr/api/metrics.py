"""The backend's Prometheus metrics: the fleet, the operations, dispatch, reports, the store.

One :class:`BackendMetrics` per app, on a registry it is given (or its own), never the
library's global one. The names the system ktrdr replaces exported are kept, so its
Grafana dashboards keep working: ``ktrdr_workers_registered_total``,
``ktrdr_workers_available``, ``ktrdr_operations_active``, ``ktrdr_operations_total``
and ``ktrdr_operation_duration_seconds``. The rest are new (docs/monitoring.md lists
them all).

Two kinds of figures:

- events are counted where they happen (a heartbeat, a finished operation, a
  dispatch, a refused report, a store error, a retried attempt); each is an
  increment under prometheus-client's own lock, cheap enough for the heartbeat path;
- states (workers by type, operations active and queued) are read when Prometheus
  scrapes (:meth:`BackendMetrics.observe_fleet`, :meth:`BackendMetrics.observe_queue`),
  so nothing on the hot paths keeps them up to date.

:class:`DisabledBackendMetrics` (``KTRDR_METRICS_ENABLED=false``) counts nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.engine import ExceptionContext

from ktrdr.protocol import OperationStatus, OperationType, WorkerStatus

__all__ = [
    "DISPATCH_BUCKETS",
    "DISPATCH_OUTCOMES",
    "DURATION_BUCKETS",
    "AttemptLoss",
    "BackendMetrics",
    "DisabledBackendMetrics",
    "FinishedOperation",
    "ReportRejection",
    "instrument_store",
]

#: Operation durations, 1 s to 1 h (as the system ktrdr replaces had them) plus 6 h, 1 day.
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)
#: What can come of a start (``ktrdr.api.dispatcher.DispatchOutcome``'s values): a start
#: request, or ``handed_off`` in the answer to a report.
DISPATCH_OUTCOMES = ("started", "released", "lost", "failed", "unconfirmed", "handed_off")
#: A start request's round trip to a worker: milliseconds normally, seconds when it stalls.
DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ReportRejection:
    """Why the backend refused a worker's operation report (the ``reason`` label)."""

    WRONG_WORKER = "wrong_worker"  # the credential is another worker's
    NOT_CURRENT = "not_current"  # it already ended, or runs on another worker (409)
    UNKNOWN_OPERATION = "unknown_operation"  # no such operation (404)
    STALE_ATTEMPT = "stale_attempt"  # an attempt that is no longer the current one


class AttemptLoss:
    """Why an attempt was lost and retried (the ``reason`` label of attempts retried)."""

    ORPHANED = "orphaned"  # its worker stopped reporting it
    WORKER_GONE = "worker_gone"  # its worker shut down or unregistered while running it
    UNREACHABLE = "unreachable"  # the worker could not be reached to start it


class FinishedOperation:
    """What the finish counter and histogram need from an operation that just ended."""

    __slots__ = ("created_at", "finished_at", "started_at", "status", "type")

    def __init__(
        self,
        *,
        type: OperationType,
        status: OperationStatus,
        created_at: datetime.datetime,
        started_at: datetime.datetime | None,
        finished_at: datetime.datetime | None,
    ) -> None:
        self.type = type
        self.status = status
        self.created_at = created_at
        self.started_at = started_at
        self.finished_at = finished_at

    @classmethod
    def of(cls, record: Any) -> FinishedOperation:
        """From anything with the operation's fields (a store record, an operation view)."""
        return cls(
            type=record.type,
            status=record.status,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
        )

    @property
    def duration_s(self) -> float:
        """Start (or creation, if it never started) to finish; 0 when unknown."""
        begin = self.started_at if self.started_at is not None else self.created_at
        if self.finished_at is None:
            return 0.0
        return max(0.0, (self.finished_at - begin).total_seconds())


class BackendMetrics:
    """Every metric the backend exports, on ``registry``."""

    enabled = True

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.workers_registered = Gauge(
            "ktrdr_workers_registered_total",
            "Registered workers, by type (any status)",
            ["worker_type"],
            registry=r,
        )
        self.workers_available = Gauge(
            "ktrdr_workers_available",
            "Workers that can take an operation now (idle and heard from), by type",
            ["worker_type"],
            registry=r,
        )
        self.workers_by_status = Gauge(
            "ktrdr_workers",
            "Registered workers, by type and status",
            ["worker_type", "status"],
            registry=r,
        )
        self.operations_active = Gauge(
            "ktrdr_operations_active", "Operations running on a worker", registry=r
        )
        self.operations_queued = Gauge(
            "ktrdr_operations_queued",
            "Operations waiting for a worker (pending), by type",
            ["operation_type"],
            registry=r,
        )
        self.operations_finished = Counter(
            "ktrdr_operations",
            "Operations that finished, by type and final status",
            ["operation_type", "status"],
            registry=r,
        )
        self.operation_duration = Histogram(
            "ktrdr_operation_duration_seconds",
            "Time from an operation's start (or creation, if it never started) to its end",
            ["operation_type", "status"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "ktrdr_dispatch_latency_seconds",
            "Round trip of a start request to a worker (of a handoff: its preparation), "
            "by type and what came of it",
            ["operation_type", "outcome"],
            buckets=DISPATCH_BUCKETS,
            registry=r,
        )
        self.heartbeats = Counter(
            "ktrdr_heartbeats_received",
            "Heartbeats accepted from workers, by worker type",
            ["worker_type"],
            registry=r,
        )
        self.reports_rejected = Counter(
            "ktrdr_reports_rejected",
            "Operation reports from workers that were refused, by reason",
            ["reason"],
            registry=r,
        )
        self.store_errors = Counter(
            "ktrdr_store_errors",
            "Errors raised by the operations database, by kind (unreachable or other)",
            ["kind"],
            registry=r,
        )
        self.attempts_retried = Counter(
            "ktrdr_attempts_retried",
            "Operation attempts lost with their worker and queued again, by type and reason",
            ["operation_type", "reason"],
            registry=r,
        )
        # Every type and status shows from the start (a 0 is news too, and rate() needs it).
        for kind in OperationType:
            self.workers_registered.labels(kind.value)
            self.workers_available.labels(kind.value)
            self.operations_queued.labels(kind.value)
            self.heartbeats.labels(kind.value)
            for status in OperationStatus:
                if status.finished:
                    self.operations_finished.labels(kind.value, status.value)
                    self.operation_duration.labels(kind.value, status.value)
        for kind_of_error in ("unreachable", "other"):
            self.store_errors.labels(kind_of_error)
        for reason in _values(ReportRejection):
            self.reports_rejected.labels(reason)
        for kind in OperationType:
            for reason in _values(AttemptLoss):
                self.attempts_retried.labels(kind.value, reason)
            for outcome in DISPATCH_OUTCOMES:
                self.dispatch_latency.labels(kind.value, outcome)
        self._heartbeats = {kind: self.heartbeats.labels(kind.value) for kind in OperationType}

    # --- events -----------------------------------------------------------------------

    def heartbeat_received(self, worker_type: OperationType) -> None:
        """A heartbeat was accepted (the hot path: one pre-bound increment)."""
        self._heartbeats[worker_type].inc()

    def operation_finished(self, operation: FinishedOperation) -> None:
        """An operation reached its final status (counted once, wherever it ended)."""
        labels = (operation.type.value, operation.status.value)
        self.operations_finished.labels(*labels).inc()
        self.operation_duration.labels(*labels).observe(operation.duration_s)

    def dispatched(self, operation_type: OperationType, outcome: str, seconds: float) -> None:
        """A start request to a worker ended with ``outcome`` after ``seconds``."""
        self.dispatch_latency.labels(operation_type.value, outcome).observe(seconds)

    def report_rejected(self, reason: str) -> None:
        """A worker's report was refused (a :class:`ReportRejection` value)."""
        self.reports_rejected.labels(reason).inc()

    def store_error(self, *, unreachable: bool) -> None:
        """The database raised an error (``unreachable``: a lost or refused connection)."""
        self.store_errors.labels("unreachable" if unreachable else "other").inc()

    def attempt_retried(self, operation_type: OperationType, reason: str) -> None:
        """An operation's attempt was lost and the operation queued for another."""
        self.attempts_retried.labels(operation_type.value, reason).inc()

    # --- states, read at scrape time --------------------------------------------------

    def observe_fleet(self, workers: Iterable[Any]) -> None:
        """Set the worker gauges from the registry's records (each has a type and status)."""
        registered = dict.fromkeys(OperationType, 0)
        available = dict.fromkeys(OperationType, 0)
        by_status: dict[tuple[OperationType, WorkerStatus], int] = {
            (kind, status): 0 for kind in OperationType for status in WorkerStatus
        }
        for worker in workers:
            registered[worker.worker_type] += 1
            by_status[(worker.worker_type, worker.status)] += 1
            if worker.status is WorkerStatus.IDLE:
                available[worker.worker_type] += 1
        for kind in OperationType:
            self.workers_registered.labels(kind.value).set(registered[kind])
            self.workers_available.labels(kind.value).set(available[kind])
        for (kind, status), count in by_status.items():
            self.workers_by_status.labels(kind.value, status.value).set(count)

    def observe_queue(self, *, running: int, pending: Mapping[OperationType, int]) -> None:
        """Set the operation gauges from the store's counts."""
        self.operations_active.set(running)
        for kind in OperationType:
            self.operations_queued.labels(kind.value).set(pending.get(kind, 0))


def _values(constants: type) -> list[str]:
    """The string constants a class of labels declares."""
    return [v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str)]


class DisabledBackendMetrics(BackendMetrics):
    """``KTRDR_METRICS_ENABLED=false``: the same interface, nothing counted or served."""

    enabled = False

    def heartbeat_received(self, worker_type: OperationType) -> None:
        """Not counted."""

    def operation_finished(self, operation: FinishedOperation) -> None:
        """Not counted."""

    def dispatched(self, operation_type: OperationType, outcome: str, seconds: float) -> None:
        """Not counted."""

    def report_rejected(self, reason: str) -> None:
        """Not counted."""

    def store_error(self, *, unreachable: bool) -> None:
        """Not counted."""

    def attempt_retried(self, operation_type: OperationType, reason: str) -> None:
        """Not counted."""


def instrument_store(store: Any, metrics: BackendMetrics) -> None:
    """Count ``store``'s finished operations, retried attempts and database errors into
    ``metrics``.

    Finishes are counted where the store makes them (reports, cancels, dispatch
    refusals, orphans, whatever path comes later), once per operation; errors come
    from SQLAlchemy's ``handle_error`` event on the store's engine, so every failed
    statement or connection counts, in requests and background loops alike.
    """
    if not metrics.enabled:
        return

    def finished(record: Any) -> None:
        metrics.operation_finished(FinishedOperation.of(record))

    def failed(context: ExceptionContext) -> None:
        # No connection: connecting failed; is_disconnect: a connection was lost.
        metrics.store_error(unreachable=context.is_disconnect or context.connection is None)

    def retried(record: Any, cause: str) -> None:
        metrics.attempt_retried(record.type, cause)

    store.add_finish_listener(finished)
    store.add_retry_listener(retried)
    sqlalchemy.event.listen(store.engine, "handle_error", failed)
