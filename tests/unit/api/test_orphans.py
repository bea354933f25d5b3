"""The orphan detector: timeout, grace after restart, races with reports, its loop."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from ktrdr.api.orphans import OrphanDetector
from ktrdr.api.store import OperationRecord, OperationStore
from ktrdr.config import OrphanDetectorSettings
from ktrdr.protocol import OperationStatus, OperationType

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 7, 1, 9, 0, tzinfo=UTC)


class FakeClock:
    """An aware-UTC wall clock the test moves by hand."""

    def __init__(self, now: datetime.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


def seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


def make_detector(store: OperationStore, clock: FakeClock, **overrides: Any) -> OrphanDetector:
    return OrphanDetector(store=store, settings=OrphanDetectorSettings(**overrides), clock=clock)


def start(store: OperationStore, clock: FakeClock, worker: str = "w-1") -> OperationRecord:
    record = store.create(operation_type=OperationType.TRAINING, parameters={}, now=clock())
    return store.mark_running(record.id, worker_id=worker, now=clock())


def test_unreported_operation_is_failed_naming_worker_and_last_seen(
    store: OperationStore,
) -> None:
    """A running operation silent for longer than the timeout is failed with a clear reason
    (the detector's default is one attempt: no retry).
    """
    clock = FakeClock()
    detector = make_detector(store, clock, timeout=seconds(60))
    record = start(store, clock, worker="training-gpu1-5003")
    clock.advance(61)
    failed = detector.check()
    assert [f.id for f in failed] == [record.id]
    stored = store.get(record.id)
    assert stored.status is OperationStatus.FAILED
    assert stored.finished_at == clock()
    assert stored.error == (
        "attempt 1 lost: orphaned: worker training-gpu1-5003 last reported it at "
        "2026-07-01T09:00:00+00:00 (61s ago), longer than KTRDR_ORPHAN_TIMEOUT=60s; the "
        "worker stopped or lost the operation; failed after 1 lost attempt (attempt 1; "
        "KTRDR_OPS_MAX_ATTEMPTS=1); resume it to continue from its last checkpoint"
    )


def test_an_orphaned_attempt_is_retried_until_max_attempts_then_failed(
    store: OperationStore,
) -> None:
    """With KTRDR_OPS_MAX_ATTEMPTS=3: attempts 1 and 2 orphaned go back to pending (resume,
    next attempt number); the third fails naming the attempts and the variable.
    """
    clock = FakeClock()
    detector = OrphanDetector(
        store=store,
        settings=OrphanDetectorSettings(timeout=seconds(60)),
        clock=clock,
        max_attempts=3,
    )
    record = start(store, clock, worker="w-a")
    verdicts = []
    for worker in ("w-b", "w-c"):
        clock.advance(61)
        [lost] = detector.check()
        # The lost attempt's worker is kept, so a late outcome of it is still accepted.
        verdicts.append((lost.status, lost.worker_id, lost.attempt, lost.lost_attempts))
        assert lost.resume is True
        store.mark_running(record.id, worker_id=worker, now=clock())
    clock.advance(61)
    [failed] = detector.check()

    assert verdicts == [
        (OperationStatus.PENDING, "w-a", 1, 1),
        (OperationStatus.PENDING, "w-b", 2, 2),
    ]
    assert (failed.status, failed.attempt, failed.lost_attempts) == (OperationStatus.FAILED, 3, 3)
    assert failed.error is not None
    assert failed.error.startswith("attempt 3 lost: orphaned: worker w-c last reported it")
    assert failed.error.endswith(
        "failed after 3 lost attempts (attempts 1-3; KTRDR_OPS_MAX_ATTEMPTS=3); "
        "resume it to continue from its last checkpoint"
    )


def test_reported_operations_and_pending_ones_are_left_alone(store: OperationStore) -> None:
    """Operations reported within the timeout, and pending ones, are not touched."""
    clock = FakeClock()
    detector = make_detector(store, clock, timeout=seconds(60))
    silent = start(store, clock, worker="w-silent")
    talking = start(store, clock, worker="w-talking")
    waiting = store.create(operation_type=OperationType.BACKTEST, parameters={}, now=clock())
    clock.advance(50)
    store.update_progress(talking.id, now=clock(), worker_id="w-talking")
    clock.advance(20)
    assert [f.id for f in detector.check()] == [silent.id]
    assert store.get(talking.id).status is OperationStatus.RUNNING
    assert store.get(waiting.id).status is OperationStatus.PENDING


def test_exactly_timeout_is_not_yet_orphaned(store: OperationStore) -> None:
    """Silence of exactly the timeout is tolerated; one microsecond more is not."""
    clock = FakeClock()
    detector = make_detector(store, clock, timeout=seconds(30))
    record = start(store, clock)
    clock.advance(30)
    assert detector.check() == []
    clock.now += datetime.timedelta(microseconds=1)
    assert [f.id for f in detector.check()] == [record.id]


@pytest.mark.parametrize(("timeout_s", "orphaned"), [(60, True), (120, False)])
def test_timeout_setting_is_read(store: OperationStore, timeout_s: int, orphaned: bool) -> None:
    """After 90 s of silence the operation is orphaned with a 60 s timeout, not with 120 s."""
    clock = FakeClock()
    detector = make_detector(store, clock, timeout=seconds(timeout_s))
    record = start(store, clock)
    clock.advance(90)
    assert bool(detector.check()) is orphaned
    expected = OperationStatus.FAILED if orphaned else OperationStatus.RUNNING
    assert store.get(record.id).status is expected


def test_workers_get_a_full_timeout_after_a_backend_restart(store: OperationStore) -> None:
    """Operations last reported before the backend (re)started are not failed at once."""
    clock = FakeClock()
    record = start(store, clock)
    clock.advance(3600)  # the backend was down for an hour
    detector = make_detector(store, clock, timeout=seconds(60))
    clock.advance(59)
    assert detector.check() == []
    clock.advance(2)
    assert [f.id for f in detector.check()] == [record.id]


def test_worker_that_reports_after_restart_keeps_its_operation(store: OperationStore) -> None:
    """A worker that reports within the grace period after a restart is never orphaned."""
    clock = FakeClock()
    record = start(store, clock)
    clock.advance(3600)
    detector = make_detector(store, clock, timeout=seconds(60))
    clock.advance(10)
    store.update_progress(record.id, now=clock(), worker_id="w-1")
    clock.advance(55)
    assert detector.check() == []
    assert store.get(record.id).status is OperationStatus.RUNNING


class ReportDuringCheck:
    """A store whose operation gets a report right after the detector read it."""

    def __init__(self, store: OperationStore, clock: FakeClock) -> None:
        self._store = store
        self._clock = clock

    def unreported_since(self, cutoff: datetime.datetime) -> list[OperationRecord]:
        records = self._store.unreported_since(cutoff)
        for record in records:
            self._store.update_progress(record.id, now=self._clock())
        return records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_report_racing_the_check_wins(store: OperationStore) -> None:
    """A report landing between the detector's read and its write keeps the operation."""
    clock = FakeClock()
    record = start(store, clock)
    racing: Any = ReportDuringCheck(store, clock)
    detector = OrphanDetector(
        store=racing, settings=OrphanDetectorSettings(timeout=seconds(10)), clock=clock
    )
    clock.advance(11)
    assert detector.check() == []
    assert store.get(record.id).status is OperationStatus.RUNNING


class FakeWait:
    """Stands in for the timed wait: records each interval, stops after ``rounds``."""

    def __init__(self, rounds: int, clock: FakeClock | None = None) -> None:
        self.rounds = rounds
        self.clock = clock
        self.intervals: list[float] = []

    async def __call__(self, stop_event: asyncio.Event, seconds: float) -> bool:
        self.intervals.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)
        if len(self.intervals) >= self.rounds:
            stop_event.set()
        return stop_event.is_set()


@pytest.mark.parametrize("interval_s", [5, 15])
def test_loop_checks_every_check_interval(store: OperationStore, interval_s: int) -> None:
    """The loop waits ``check_interval`` between checks and fails the orphan when due."""
    clock = FakeClock()
    wait = FakeWait(rounds=4, clock=clock)
    detector = OrphanDetector(
        store=store,
        settings=OrphanDetectorSettings(timeout=seconds(20), check_interval=seconds(interval_s)),
        clock=clock,
        wait=wait,
    )
    record = start(store, clock)
    rounds = asyncio.run(detector.run_forever(asyncio.Event()))
    assert rounds == 4
    assert wait.intervals == [float(interval_s)] * 4
    # Checks ran at 0, i, 2i, 3i seconds: with i=15 the orphan (silent > 20 s) was found.
    expected = OperationStatus.FAILED if 3 * interval_s > 20 else OperationStatus.RUNNING
    assert store.get(record.id).status is expected


def test_loop_does_not_start_when_already_stopped(store: OperationStore) -> None:
    """A stop event set before the loop starts means no check at all."""
    stop = asyncio.Event()
    stop.set()
    detector = OrphanDetector(
        store=store, settings=OrphanDetectorSettings(), clock=FakeClock(), wait=FakeWait(1)
    )
    assert asyncio.run(detector.run_forever(stop)) == 0
