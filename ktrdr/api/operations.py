"""The operations service: what the backend's operations API and dispatcher call.

It sits over :class:`~ktrdr.api.store.OperationStore` and applies
:class:`~ktrdr.config.OperationsSettings`: the bound on live operations
(``max_operations``), a read cache no staler than ``cache_ttl``, and retention
(``retention_days``; ``ktrdr.api.retention`` runs it periodically). It returns wire models
(:class:`~ktrdr.protocol.OperationView`) and raises pydantic ``ValidationError``
(bad parameters for the type, a 422) or the errors of ``ktrdr.errors`` whose HTTP
status ``ktrdr.errors.HTTP_STATUSES`` gives: ``OperationNotFound``,
``InvalidTransition`` (cancel a finished operation, resume a completed one, a stale
worker's report), ``TooManyOperations``.

Nothing here speaks HTTP or knows the workers; time comes from the injected clock.
"""

from __future__ import annotations

import builtins
import datetime
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs

from ktrdr.api.attempts import AttemptState
from ktrdr.api.series_store import Points
from ktrdr.api.store import (
    InvalidTransition,
    ListPosition,
    LiveLimitReached,
    OperationNotFound,
    OperationRecord,
    OperationStore,
    ProgressStamp,
)
from ktrdr.config import OperationsSettings, env_name
from ktrdr.errors import TooManyOperations
from ktrdr.protocol import (
    SERIES_AXES,
    OperationList,
    OperationSeries,
    OperationStatus,
    OperationType,
    OperationView,
    Progress,
    parse_parameters,
)
from ktrdr.tracing import trace_id_of

__all__ = [
    "InvalidTransition",
    "OperationNotFound",
    "OperationsService",
    "TooManyOperations",
    "to_view",
]

Clock = Callable[[], datetime.datetime]

#: Entries the read cache holds before it drops expired ones.
_CACHE_PRUNE_AT = 4096


def to_view(record: OperationRecord) -> OperationView:
    """The wire form of a stored operation."""
    progress = None if record.progress is None else Progress.model_validate(record.progress)
    return OperationView(
        id=record.id,
        type=record.type,
        status=record.status,
        parameters=dict(record.parameters),
        progress=progress,
        result=None if record.result is None else dict(record.result),
        error=record.error,
        worker_id=record.worker_id,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        last_reported_at=record.last_reported_at,
        resume=record.resume,
        trace_id=trace_id_of(record.trace_parent),
        attempt=record.attempt,
        lost_attempts=record.lost_attempts,
        timeout_s=record.timeout_s,
    )


@attrs.define
class _Cached:
    view: OperationView
    expires_at: datetime.datetime


class OperationsService:
    """Creates, reads, cancels, resumes and expires operations.

    ``clock`` returns aware UTC datetimes. Safe to call from several threads (the HTTP
    server's thread pool and the housekeeping loops).
    """

    def __init__(
        self,
        *,
        store: OperationStore,
        settings: OperationsSettings,
        clock: Clock,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    @property
    def settings(self) -> OperationsSettings:
        """The settings this service applies."""
        return self._settings

    # --- the operations API -----------------------------------------------------------

    def create(
        self,
        operation_type: OperationType | str,
        parameters: Mapping[str, Any],
        *,
        trace_parent: str | None = None,
        timeout_s: float | None = None,
    ) -> OperationView:
        """Validate the parameters for the type and store a pending operation.

        The stored parameters are the validated ones with every default filled in, so
        the operation says exactly what it will run; so is its timeout: ``timeout_s``
        or else ``KTRDR_OPS_DEFAULT_TIMEOUT`` (0: none). ``trace_parent`` is the span
        its first attempt's trace continues (the create request's). Raises pydantic
        ``ValidationError`` (bad parameters), ``ValueError`` (unknown type, a timeout
        that is not a positive number) or :class:`TooManyOperations`.
        """
        view, _ = self.create_and_claim(
            operation_type, parameters, trace_parent=trace_parent, timeout_s=timeout_s
        )
        return view

    def create_and_claim(
        self,
        operation_type: OperationType | str,
        parameters: Mapping[str, Any],
        *,
        trace_parent: str | None = None,
        timeout_s: float | None = None,
        claim_for: Sequence[str] = (),
    ) -> tuple[OperationView, tuple[OperationView, str] | None]:
        """:meth:`create`, and in the same store transaction claim the oldest pending
        operation of its type (the new one unless older ones wait) for the first of
        ``claim_for`` (idle workers of the type) that runs nothing: the created
        operation as it then is, and the claimed one with its worker, if any.
        """
        model = parse_parameters(operation_type, parameters)
        if timeout_s is None and self._settings.default_timeout > datetime.timedelta(0):
            timeout_s = self._settings.default_timeout.total_seconds()
        try:
            record, claimed = self._store.create_and_claim(
                operation_type=OperationType(operation_type),
                parameters=model.model_dump(mode="json"),
                now=self._clock(),
                max_live=self._settings.max_operations,
                trace_parent=trace_parent,
                timeout_s=timeout_s,
                claim_for=claim_for,
            )
        except LiveLimitReached as exc:
            variable = env_name(attrs.fields(OperationsSettings).max_operations)
            raise TooManyOperations(live=exc.live, limit=exc.limit, variable=variable) from None
        view = self._remember(record)
        if claimed is None:
            return view, None
        running, worker_id = claimed
        return view, (view if running.id == record.id else self._remember(running), worker_id)

    def get(self, operation_id: str) -> OperationView:
        """The operation, at most ``cache_ttl`` old; raises :class:`OperationNotFound`.

        Changes made through this service are visible at once; changes made elsewhere
        (another backend, the orphan detector's direct store writes) within ``cache_ttl``.
        """
        ttl = self._settings.cache_ttl
        now = self._clock()
        if ttl > datetime.timedelta(0):
            with self._lock:
                cached = self._cache.get(operation_id)
            if cached is not None and now < cached.expires_at:
                return cached.view
        try:
            record = self._store.get(operation_id)
        except OperationNotFound:
            self._forget(operation_id)
            raise
        return self._remember(record, now=now)

    def list(
        self,
        *,
        status: OperationStatus | None = None,
        operation_type: OperationType | None = None,
        limit: int = 50,
        offset: int = 0,
        after: ListPosition | None = None,
        include_result: bool = True,
        cursor_for: Callable[[ListPosition], str] | None = None,
    ) -> OperationList:
        """A page of operations, newest first (never cached: listings are for people).

        ``after`` continues from the previous page's last item (keyset; any depth
        costs the same), ``offset`` skips rows. When more operations follow, the
        list's ``next_cursor`` is ``cursor_for`` the last item's position. Without
        ``include_result`` the results are not even read (each item's is None).
        """
        page = self._store.list(
            status=status,
            operation_type=operation_type,
            limit=limit,
            offset=offset,
            after=after,
            include_result=include_result,
        )
        next_cursor = None
        if page.more and page.items and cursor_for is not None:
            last = page.items[-1]
            next_cursor = cursor_for(ListPosition(created_at=last.created_at, id=last.id))
        return OperationList(
            items=[to_view(r) for r in page.items],
            total=page.total,
            limit=limit,
            offset=offset,
            next_cursor=next_cursor,
        )

    def cancel(self, operation_id: str) -> OperationView:
        """Cancel a pending or running operation; :class:`InvalidTransition` if finished.

        A running operation is marked cancelled here; the caller then asks its worker
        (the view's ``worker_id``) to stop, and the worker saves a checkpoint so the
        operation can be resumed.
        """
        record = self._store.get(operation_id)
        if record.status is not OperationStatus.PENDING:
            reason = "cancelled by request"
        elif record.attempt == 0:
            reason = "cancelled before it started"
        else:
            reason = "cancelled while waiting for its next attempt"
        record = self._store.finish(
            operation_id, status=OperationStatus.CANCELLED, now=self._clock(), error=reason
        )
        return self._remember(record)

    def resume(self, operation_id: str, *, trace_parent: str | None = None) -> OperationView:
        """Queue a failed or cancelled operation again, to continue from its checkpoint.

        The backend cannot see worker disks: the operation goes back to pending with
        ``resume=True``, and the worker that picks it up fails it with a clear reason if
        it has no usable checkpoint. Completed, pending or running operations raise
        :class:`InvalidTransition`. The new attempt's trace continues ``trace_parent``
        (the resume request's span).
        """
        return self._remember(self._store.requeue(operation_id, trace_parent=trace_parent))

    def trace_parent(self, operation_id: str) -> str | None:
        """The ``traceparent`` the operation's current attempt continues (the dispatcher's)."""
        return self._store.trace_parent(operation_id)

    def set_trace_parent(self, operation_id: str, trace_parent: str) -> None:
        """Record the trace of an attempt begun by its dispatch (none was recorded)."""
        if self._store.set_trace_parent(operation_id, trace_parent):
            self._forget(operation_id)

    # --- dispatch and worker reports --------------------------------------------------

    def pending(
        self, *, operation_type: OperationType | None = None, limit: int = 100
    ) -> builtins.list[OperationView]:
        """Operations waiting for a worker, oldest first."""
        records = self._store.pending(operation_type=operation_type, limit=limit)
        return [to_view(r) for r in records]

    def start(self, operation_id: str, *, worker_id: str) -> OperationView:
        """A worker accepted the operation: pending → running on ``worker_id``."""
        record = self._store.mark_running(operation_id, worker_id=worker_id, now=self._clock())
        return self._remember(record)

    def release(self, operation_id: str, *, worker_id: str, attempt: int) -> OperationView:
        """``worker_id`` refused the attempt for now: running → pending, attempt given back."""
        record = self._store.release(operation_id, worker_id=worker_id, attempt=attempt)
        return self._remember(record)

    def live_counts(self) -> dict[tuple[OperationType, OperationStatus], int]:
        """Pending and running operations by (type, status), read from the store now."""
        return self._store.count_live_by_type()

    def lose(
        self,
        operation_id: str,
        *,
        worker_id: str,
        attempt: int,
        reason: str,
        cause: str = "lost",
        series: Points | None = None,
    ) -> OperationView:
        """``attempt`` was lost with ``worker_id``: queued again to resume from its
        checkpoint, or failed once ``KTRDR_OPS_MAX_ATTEMPTS`` attempts were lost.

        ``cause`` labels the retry in the metrics; ``series`` (the points of a worker
        that gave the attempt up) is stored first, like :meth:`finish` does. Raises
        :class:`InvalidTransition` (:class:`StaleAttempt`) when that attempt is not
        running on that worker any more.
        """
        if series:
            self._store.record_series(operation_id, worker_id=worker_id, points=series)
        record = self._store.lose(
            operation_id,
            worker_id=worker_id,
            attempt=attempt,
            now=self._clock(),
            reason=reason,
            max_attempts=self._settings.max_attempts,
            cause=cause,
        )
        assert record is not None  # without a cutoff the store raises instead
        return self._remember(record)

    def known_attempt(self, operation_id: str) -> AttemptState | None:
        """The operation's current attempt if it is in memory (never reads the database)."""
        return self._store.known_attempt(operation_id)

    def current_attempt(self, operation_id: str) -> AttemptState:
        """The operation's current attempt (mostly from memory: the heartbeat path)."""
        return self._store.current_attempt(operation_id)

    def busy_workers(self) -> set[str]:
        """Ids of the workers the store says are running an operation.

        The dispatcher's guard against giving one worker two operations: it holds even
        when a stale heartbeat has just told the registry the worker is idle.
        """
        return self._store.busy_workers()

    def report_progress(
        self,
        operation_id: str,
        *,
        worker_id: str,
        attempt: int | None = None,
        progress: Progress | None,
    ) -> OperationView:
        """A heartbeat names the operation (with its progress, if any).

        Stamps ``last_reported_at``, which the orphan detector watches, for every
        heartbeat that carries ``current_operation_id``, even without progress. The
        backend's heartbeat route uses the batched :meth:`record_heartbeats` instead.
        """
        record = self._store.update_progress(
            operation_id,
            now=self._clock(),
            progress=None if progress is None else progress.model_dump(mode="json"),
            worker_id=worker_id,
            attempt=attempt,
        )
        return self._remember(record)

    def record_heartbeats(self, stamps: Collection[ProgressStamp]) -> None:
        """Many heartbeats' progress and times in one transaction (the backend's batch).

        Operations that are no longer running on the stamping worker are left alone.
        Their cached views are dropped, so the next read shows the new progress.
        """
        if not stamps:
            return
        self._store.stamp_many(stamps)
        with self._lock:
            for stamp in stamps:
                self._cache.pop(stamp.operation_id, None)

    def finish(
        self,
        operation_id: str,
        *,
        status: OperationStatus,
        worker_id: str | None = None,
        attempt: int | None = None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        series: Points | None = None,
    ) -> OperationView:
        """The operation ended (a worker's report); only once, only by its current attempt.

        Raises :class:`InvalidTransition` when it already finished (e.g. cancelled by a
        user before the worker's report arrived), or :class:`StaleAttempt` when
        ``attempt`` on ``worker_id`` is not its latest attempt. ``series`` (the worker's
        points) are stored in the same transaction, if the operation was given to
        ``worker_id``, so a run cancelled meanwhile still keeps its whole curve.
        """
        record = self._store.finish(
            operation_id,
            status=status,
            now=self._clock(),
            result=result,
            error=error,
            worker_id=worker_id,
            attempt=attempt,
            series=series if worker_id is not None else None,
        )
        return self._remember(record)

    def finish_and_claim(
        self,
        operation_id: str,
        *,
        status: OperationStatus,
        worker_id: str,
        attempt: int,
        next_type: OperationType | None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        series: Points | None = None,
    ) -> tuple[OperationView, OperationView | None]:
        """:meth:`finish` the worker's attempt and, in the same store transaction, claim
        the oldest pending operation of ``next_type`` (None: claim nothing) for that
        worker (its next attempt, as a dispatch claims it). The finished operation and
        the claimed one, if any (none pending, or the worker runs another). Refusals are
        :meth:`finish`'s, and then nothing is claimed.
        """
        record, claimed = self._store.finish_and_claim(
            operation_id,
            status=status,
            now=self._clock(),
            worker_id=worker_id,
            attempt=attempt,
            next_type=next_type,
            result=result,
            error=error,
            series=series,
        )
        return self._remember(record), None if claimed is None else self._remember(claimed)

    def series(self, operation_id: str) -> OperationSeries:
        """The operation's series points; raises :class:`OperationNotFound` (never cached:
        a chart wants the newest points).
        """
        stored = self._store.series(operation_id)
        return OperationSeries(x=SERIES_AXES[stored.type], series=dict(stored.points))

    # --- retention --------------------------------------------------------------------

    def retention_cutoff(self, now: datetime.datetime | None = None) -> datetime.datetime:
        """Operations finished before this are due for deletion (``retention_days`` ago)."""
        moment = now if now is not None else self._clock()
        return moment - datetime.timedelta(days=self._settings.retention_days)

    def cleanup_batch(self, cutoff: datetime.datetime) -> int:
        """Delete one batch (at most ``cleanup_batch_size``) of operations finished before
        ``cutoff``, in one transaction; how many were deleted.
        """
        deleted = self._store.delete_finished_batch(cutoff, limit=self._settings.cleanup_batch_size)
        if deleted:
            with self._lock:
                self._cache.clear()
        return deleted

    def cleanup(self, now: datetime.datetime | None = None) -> int:
        """Delete operations finished more than ``retention_days`` before ``now``.

        Batch after batch (:meth:`cleanup_batch`) without pausing; returns how many
        were deleted. Pending and running operations are never deleted.
        """
        cutoff = self.retention_cutoff(now)
        size = self._settings.cleanup_batch_size
        total = 0
        while True:
            deleted = self.cleanup_batch(cutoff)
            total += deleted
            if deleted < size:
                return total

    # --- cache ------------------------------------------------------------------------

    def _remember(
        self, record: OperationRecord, *, now: datetime.datetime | None = None
    ) -> OperationView:
        view = to_view(record)
        ttl = self._settings.cache_ttl
        if ttl <= datetime.timedelta(0):
            return view
        moment = now if now is not None else self._clock()
        with self._lock:
            if len(self._cache) >= _CACHE_PRUNE_AT:
                self._cache = {k: v for k, v in self._cache.items() if moment < v.expires_at}
                if len(self._cache) >= _CACHE_PRUNE_AT:
                    self._cache.clear()
            self._cache[record.id] = _Cached(view=view, expires_at=moment + ttl)
        return view

    def _forget(self, operation_id: str) -> None:
        with self._lock:
            self._cache.pop(operation_id, None)
