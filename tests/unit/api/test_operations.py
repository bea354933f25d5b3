"""The operations service: limits, read cache, cancel, resume, worker reports, cleanup."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from ktrdr.api import operations as operations_module
from ktrdr.api.operations import (
    InvalidTransition,
    OperationNotFound,
    OperationsService,
    TooManyOperations,
)
from ktrdr.api.store import OperationStore, StaleAttempt
from ktrdr.config import OperationsSettings
from ktrdr.protocol import OperationStatus, OperationType, OperationView, Progress

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TRAINING = OperationType.TRAINING


class FakeClock:
    """An aware-UTC wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_service(store: OperationStore, clock: FakeClock, **overrides: Any) -> OperationsService:
    return OperationsService(store=store, settings=OperationsSettings(**overrides), clock=clock)


def run_to_end(service: OperationsService, view: OperationView, status: OperationStatus) -> None:
    service.start(view.id, worker_id="w-1")
    service.finish(view.id, status=status, worker_id="w-1", error="x", result={"r": 1})


# --- create ---------------------------------------------------------------------------


def test_create_stores_validated_parameters_with_defaults(
    store: OperationStore, clock: FakeClock
) -> None:
    """Created operations are pending and hold the full, validated parameters."""
    view = make_service(store, clock).create("training", {"epochs": 5, "seed": 3})
    assert view.status is OperationStatus.PENDING
    assert view.type is TRAINING
    assert view.created_at == T0
    assert view.parameters == {
        "symbol": "SYNTH",
        "bars": 2000,
        "seed": 3,
        "epochs": 5,
        "learning_rate": 0.1,
        "hidden_units": 16,
        "csv_path": None,
    }
    assert store.get(view.id).parameters == view.parameters


def test_create_with_bad_parameters_raises_validation_error(
    store: OperationStore, clock: FakeClock
) -> None:
    """Bad parameters raise pydantic's ValidationError (HTTP 422) and store nothing."""
    service = make_service(store, clock)
    with pytest.raises(ValidationError) as caught:
        service.create(OperationType.BACKTEST, {"bars": 10, "sharpness": 1})
    fields = {error["loc"][0] for error in caught.value.errors()}
    assert fields == {"bars", "sharpness"}
    assert store.count_live() == 0


def test_create_with_unknown_type_names_the_accepted_ones(
    store: OperationStore, clock: FakeClock
) -> None:
    """An unknown operation type is a ValueError listing the known types."""
    with pytest.raises(ValueError, match=r"unknown operation type 'mining'.*training, backtest"):
        make_service(store, clock).create("mining", {})


@pytest.mark.parametrize("limit", [2, 3])
def test_max_operations_bounds_live_operations(
    store: OperationStore, clock: FakeClock, limit: int
) -> None:
    """Beyond ``max_operations`` live operations creation is refused naming the variable."""
    service = make_service(store, clock, max_operations=limit)
    views = [service.create("training", {}) for _ in range(limit)]
    with pytest.raises(TooManyOperations) as caught:
        service.create("training", {})
    assert caught.value.live == limit
    assert str(caught.value).startswith(
        f"cannot create an operation: {limit} operations are already pending or running "
        f"and KTRDR_OPS_MAX_OPERATIONS={limit}"
    )
    service.cancel(views[0].id)
    assert service.create("training", {}).status is OperationStatus.PENDING


# --- read cache -----------------------------------------------------------------------


def test_get_serves_a_cached_view_for_at_most_cache_ttl(
    store: OperationStore, clock: FakeClock
) -> None:
    """A change made behind the service is invisible within cache_ttl and visible at it."""
    service = make_service(store, clock, cache_ttl=datetime.timedelta(seconds=10))
    view = service.create("training", {})
    assert service.get(view.id).status is OperationStatus.PENDING
    store.mark_running(view.id, worker_id="w-9", now=clock())
    clock.advance(seconds=9.999)
    assert service.get(view.id).status is OperationStatus.PENDING
    clock.advance(seconds=0.001)
    fresh = service.get(view.id)
    assert fresh.status is OperationStatus.RUNNING
    assert fresh.worker_id == "w-9"


def test_cache_ttl_is_counted_from_the_read(store: OperationStore, clock: FakeClock) -> None:
    """A value read at t is served until t + ttl, never longer."""
    service = make_service(store, clock, cache_ttl=datetime.timedelta(seconds=4))
    view = service.create("training", {})
    clock.advance(seconds=3)
    store.mark_running(view.id, worker_id="w", now=clock())
    assert service.get(view.id).status is OperationStatus.PENDING  # cached at creation
    clock.advance(seconds=1)
    assert service.get(view.id).status is OperationStatus.RUNNING


def test_zero_cache_ttl_disables_the_cache(store: OperationStore, clock: FakeClock) -> None:
    """With cache_ttl=0 every read sees the store."""
    service = make_service(store, clock, cache_ttl=datetime.timedelta(0))
    view = service.create("training", {})
    service.get(view.id)
    store.mark_running(view.id, worker_id="w", now=clock())
    assert service.get(view.id).status is OperationStatus.RUNNING


def test_changes_through_the_service_are_visible_at_once(
    store: OperationStore, clock: FakeClock
) -> None:
    """The service's own writes refresh the cache (cancel, then read: cancelled)."""
    service = make_service(store, clock, cache_ttl=datetime.timedelta(hours=1))
    view = service.create("training", {})
    service.get(view.id)
    service.cancel(view.id)
    assert service.get(view.id).status is OperationStatus.CANCELLED


def test_cache_stays_bounded(
    store: OperationStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its size bound the cache drops expired entries instead of growing."""
    monkeypatch.setattr(operations_module, "_CACHE_PRUNE_AT", 3)
    service = make_service(store, clock, cache_ttl=datetime.timedelta(seconds=1))
    for _ in range(3):
        service.create("training", {})
    clock.advance(seconds=2)
    last = service.create("training", {})
    assert list(service._cache) == [last.id]


def test_get_unknown_operation(store: OperationStore, clock: FakeClock) -> None:
    """An unknown id raises OperationNotFound (HTTP 404)."""
    with pytest.raises(OperationNotFound):
        make_service(store, clock).get("missing")


# --- list, cancel, resume -------------------------------------------------------------


def test_list_returns_views_and_paging(store: OperationStore, clock: FakeClock) -> None:
    """Listing returns views newest first with total, limit and offset."""
    service = make_service(store, clock)
    first = service.create("training", {})
    clock.advance(seconds=1)
    second = service.create("backtest", {})
    page = service.list(limit=1)
    assert [v.id for v in page.items] == [second.id]
    assert (page.total, page.limit, page.offset) == (2, 1, 0)
    only = service.list(operation_type=TRAINING)
    assert [v.id for v in only.items] == [first.id]
    assert service.list(status=OperationStatus.RUNNING).total == 0


def test_cancel_pending_and_running(store: OperationStore, clock: FakeClock) -> None:
    """Cancelling says whether the operation had started; a running one keeps its worker."""
    service = make_service(store, clock)
    waiting = service.create("training", {})
    busy = service.create("training", {})
    service.start(busy.id, worker_id="w-3")
    cancelled = service.cancel(waiting.id)
    assert (cancelled.status, cancelled.error) == (
        OperationStatus.CANCELLED,
        "cancelled before it started",
    )
    stopped = service.cancel(busy.id)
    assert (stopped.error, stopped.worker_id) == ("cancelled by request", "w-3")


def test_cancel_of_a_finished_operation_is_a_conflict(
    store: OperationStore, clock: FakeClock
) -> None:
    """Cancelling a completed operation raises InvalidTransition (HTTP 409) and changes nothing."""
    service = make_service(store, clock)
    view = service.create("training", {})
    run_to_end(service, view, OperationStatus.COMPLETED)
    with pytest.raises(InvalidTransition, match="it is completed") as caught:
        service.cancel(view.id)
    assert caught.value.current is OperationStatus.COMPLETED
    assert service.get(view.id).status is OperationStatus.COMPLETED


@pytest.mark.parametrize("status", [OperationStatus.FAILED, OperationStatus.CANCELLED])
def test_resume_requeues_with_the_resume_flag(
    store: OperationStore, clock: FakeClock, status: OperationStatus
) -> None:
    """A failed or cancelled operation goes back to pending with resume=True."""
    service = make_service(store, clock)
    view = service.create("training", {})
    run_to_end(service, view, status)
    resumed = service.resume(view.id)
    assert (resumed.status, resumed.resume, resumed.worker_id) == (
        OperationStatus.PENDING,
        True,
        None,
    )
    assert [v.id for v in service.pending(operation_type=TRAINING)] == [view.id]


def test_resume_of_completed_or_running_is_a_conflict(
    store: OperationStore, clock: FakeClock
) -> None:
    """Only failed or cancelled operations can be resumed."""
    service = make_service(store, clock)
    done = service.create("training", {})
    run_to_end(service, done, OperationStatus.COMPLETED)
    busy = service.create("training", {})
    service.start(busy.id, worker_id="w")
    for view in (done, busy):
        with pytest.raises(InvalidTransition, match="only failed or cancelled operations"):
            service.resume(view.id)


# --- worker reports -------------------------------------------------------------------


def test_worker_lifecycle_start_progress_finish(store: OperationStore, clock: FakeClock) -> None:
    """Start, progress and finish are recorded with the clock's times."""
    service = make_service(store, clock)
    view = service.create("training", {})
    clock.advance(seconds=1)
    assert service.start(view.id, worker_id="w-1").started_at == T0 + datetime.timedelta(seconds=1)
    clock.advance(seconds=5)
    progress = Progress(percent=30, message="epoch 3", details={"epoch": 3, "loss": 0.6})
    reported = service.report_progress(view.id, worker_id="w-1", progress=progress)
    assert reported.progress == progress
    assert reported.last_reported_at == T0 + datetime.timedelta(seconds=6)
    clock.advance(seconds=5)
    bare = service.report_progress(view.id, worker_id="w-1", progress=None)
    assert bare.progress == progress
    assert bare.last_reported_at == T0 + datetime.timedelta(seconds=11)
    done = service.finish(
        view.id, status=OperationStatus.COMPLETED, worker_id="w-1", result={"loss": 0.2}
    )
    assert (done.status, done.result) == (OperationStatus.COMPLETED, {"loss": 0.2})
    with pytest.raises(InvalidTransition):
        service.finish(view.id, status=OperationStatus.FAILED, worker_id="w-1", error="late")


def test_reports_from_another_worker_are_refused(store: OperationStore, clock: FakeClock) -> None:
    """A worker that does not own the operation (or its attempt) cannot report or finish it."""
    service = make_service(store, clock)
    view = service.create("training", {})
    service.start(view.id, worker_id="w-1")
    with pytest.raises(StaleAttempt, match="worker w-2 does not run it"):
        service.report_progress(view.id, worker_id="w-2", progress=None)
    with pytest.raises(StaleAttempt, match="attempt 1 is not worker w-2's"):
        service.finish(view.id, status=OperationStatus.COMPLETED, worker_id="w-2", attempt=1)
    with pytest.raises(StaleAttempt, match="attempt 2 does not exist; the current attempt is 1"):
        service.finish(view.id, status=OperationStatus.COMPLETED, worker_id="w-1", attempt=2)
    assert service.get(view.id).status is OperationStatus.RUNNING


def test_release_requeues_and_is_visible_at_once(store: OperationStore, clock: FakeClock) -> None:
    """A failed dispatch puts the operation back to pending; a cached read shows it."""
    service = make_service(store, clock, cache_ttl=datetime.timedelta(seconds=60))
    view = service.create("training", {})
    service.start(view.id, worker_id="w-1")
    assert service.get(view.id).status is OperationStatus.RUNNING

    released = service.release(view.id, worker_id="w-1", attempt=1)

    assert released.status is OperationStatus.PENDING
    assert released.worker_id is None
    assert service.get(view.id).status is OperationStatus.PENDING
    assert [v.id for v in service.pending()] == [view.id]


def test_busy_workers_are_those_running_an_operation(
    store: OperationStore, clock: FakeClock
) -> None:
    """busy_workers names every worker with a running operation, and only those."""
    service = make_service(store, clock)
    first, second, third = (service.create("training", {}) for _ in range(3))
    service.start(first.id, worker_id="w-1")
    service.start(second.id, worker_id="w-2")
    service.finish(second.id, status=OperationStatus.COMPLETED, worker_id="w-2", result={})

    assert service.busy_workers() == {"w-1"}
    assert service.get(third.id).status is OperationStatus.PENDING


# --- retention ------------------------------------------------------------------------


def finished_days_ago(
    service: OperationsService, store: OperationStore, clock: FakeClock, days: float
) -> str:
    view = service.create("training", {})
    service.start(view.id, worker_id="w")
    store.finish(
        view.id,
        status=OperationStatus.COMPLETED,
        now=clock() - datetime.timedelta(days=days),
        result={},
    )
    return view.id


def test_cleanup_deletes_finished_operations_older_than_retention_days(
    store: OperationStore, clock: FakeClock
) -> None:
    """With retention_days=7, an 8-day-old result goes, a 6-day-old one and live ones stay."""
    service = make_service(store, clock, retention_days=7)
    old = finished_days_ago(service, store, clock, 8)
    recent = finished_days_ago(service, store, clock, 6)
    live = service.create("training", {})
    assert service.cleanup() == 1
    with pytest.raises(OperationNotFound):
        service.get(old)
    assert store.get(recent).status is OperationStatus.COMPLETED
    assert store.get(live.id).status is OperationStatus.PENDING


def test_cleanup_reads_retention_days(store: OperationStore, clock: FakeClock) -> None:
    """With retention_days=10 the same 8-day-old result is kept."""
    service = make_service(store, clock, retention_days=10)
    old = finished_days_ago(service, store, clock, 8)
    assert service.cleanup() == 0
    assert store.get(old).status is OperationStatus.COMPLETED


def test_cleanup_at_an_explicit_time(store: OperationStore, clock: FakeClock) -> None:
    """cleanup(now) measures age from the given time."""
    service = make_service(store, clock, retention_days=7)
    finished_days_ago(service, store, clock, 1)
    assert service.cleanup(clock() + datetime.timedelta(days=5)) == 0
    assert service.cleanup(clock() + datetime.timedelta(days=7)) == 1
