"""The store's attempts on SQLite and PostgreSQL: numbering, fencing, retries, deadlines."""

from __future__ import annotations

import datetime
import threading
from typing import TYPE_CHECKING, Any

import pytest

from ktrdr.api.store import (
    InvalidTransition,
    OperationNotFound,
    OperationRecord,
    OperationStore,
    ProgressStamp,
    StaleAttempt,
)
from ktrdr.protocol import OperationStatus, OperationType

if TYPE_CHECKING:
    from tests.unit.api.conftest import StoreFactory

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def new(store: OperationStore, **kw: Any) -> OperationRecord:
    return store.create(operation_type=OperationType.TRAINING, parameters={}, now=T0, **kw)


def lose(store: OperationStore, record: OperationRecord, **kw: Any) -> OperationRecord:
    values: dict[str, Any] = {
        "worker_id": record.worker_id or "",
        "attempt": record.attempt,
        "now": at(100),
        "reason": "lost in a test",
        "max_attempts": 3,
    }
    values.update(kw)
    lost = store.lose(record.id, **values)
    assert lost is not None
    return lost


def test_each_dispatch_is_the_next_attempt(store: OperationStore) -> None:
    """Created at attempt 0; each start is the next number, recorded with its worker."""
    record = new(store)
    first = store.mark_running(record.id, worker_id="w-1", now=at(1))
    again = lose(store, first)
    second = store.mark_running(record.id, worker_id="w-2", now=at(2))

    assert (record.attempt, first.attempt, again.attempt, second.attempt) == (0, 1, 1, 2)
    assert (second.worker_id, second.lost_attempts, second.resume) == ("w-2", 1, True)
    assert store.current_attempt(record.id).accepts(worker_id="w-2", attempt=2)


def test_a_lost_attempt_is_retried_until_max_attempts_then_fails(store: OperationStore) -> None:
    """max 3: two losses queue it again (reason says how many are left), the third fails it
    naming the attempts and KTRDR_OPS_MAX_ATTEMPTS; its worker is kept each time.
    """
    record = new(store)
    verdicts = []
    for worker in ("w-1", "w-2", "w-3"):
        running = store.mark_running(record.id, worker_id=worker, now=at(1))
        lost = lose(store, running, reason=f"{worker} died")
        verdicts.append((lost.status, lost.worker_id, lost.lost_attempts, lost.error))

    assert verdicts[0] == (
        OperationStatus.PENDING,
        "w-1",
        1,
        "attempt 1 lost: w-1 died; retrying from its last checkpoint "
        "(2 of KTRDR_OPS_MAX_ATTEMPTS=3 attempts left)",
    )
    assert verdicts[1][:3] == (OperationStatus.PENDING, "w-2", 2)
    assert verdicts[1][3].endswith("(1 of KTRDR_OPS_MAX_ATTEMPTS=3 attempts left)")
    assert verdicts[2] == (
        OperationStatus.FAILED,
        "w-3",
        3,
        "attempt 3 lost: w-3 died; failed after 3 lost attempts (attempts 1-3; "
        "KTRDR_OPS_MAX_ATTEMPTS=3); resume it to continue from its last checkpoint",
    )
    assert store.get(record.id).finished_at == at(100)


def test_a_resume_by_hand_gives_max_attempts_again(store: OperationStore) -> None:
    """After failing for lost attempts, a resume counts lost attempts from zero again."""
    record = new(store)
    running = store.mark_running(record.id, worker_id="w-1", now=at(1))
    lose(store, running, max_attempts=1)
    store.requeue(record.id)
    again = store.mark_running(record.id, worker_id="w-1", now=at(2))
    retried = lose(store, again, max_attempts=2)

    assert (again.attempt, again.lost_attempts) == (2, 0)
    assert (retried.status, retried.lost_attempts) == (OperationStatus.PENDING, 1)


def test_only_the_current_attempt_on_its_worker_changes_the_operation(
    store: OperationStore,
) -> None:
    """Progress, finish, release and lose of another attempt or worker: StaleAttempt naming
    the operation and the current attempt, and nothing changes.
    """
    record = new(store)
    store.mark_running(record.id, worker_id="w-1", now=at(1))
    lose(store, store.get(record.id))
    store.mark_running(record.id, worker_id="w-2", now=at(2))
    before = store.get(record.id)
    attempts = [
        lambda: store.update_progress(record.id, now=at(3), worker_id="w-1", attempt=1),
        lambda: store.finish(
            record.id, status=OperationStatus.COMPLETED, now=at(3), worker_id="w-1", attempt=1
        ),
        lambda: store.finish(
            record.id, status=OperationStatus.COMPLETED, now=at(3), worker_id="w-2", attempt=3
        ),
        lambda: store.release(record.id, worker_id="w-1", attempt=2),
        lambda: store.lose(
            record.id, worker_id="w-2", attempt=1, now=at(3), reason="x", max_attempts=3
        ),
    ]
    messages = []
    for attempt in attempts:
        with pytest.raises(StaleAttempt) as caught:
            attempt()
        messages.append(str(caught.value))

    assert messages[0] == (
        f"operation {record.id}: attempt 1 is no longer current; "
        "the current attempt is 2 (running on worker w-2)"
    )
    assert messages[2] == (
        f"operation {record.id}: attempt 3 does not exist; "
        "the current attempt is 2 (running on worker w-2)"
    )
    assert messages[3].endswith("attempt 2 is not worker w-1's; the current attempt is 2 "
                                "(running on worker w-2)")  # fmt: skip
    assert all(f"operation {record.id}:" in m and "current attempt is 2" in m for m in messages)
    assert store.get(record.id) == before


def test_a_late_outcome_is_accepted_until_the_next_attempt_starts(
    store_factory: StoreFactory,
) -> None:
    """Attempt 1 lost and queued again: its own outcome is still taken (one outcome, no
    second attempt); once attempt 2 started, attempt 1's outcome is refused.
    """
    store = store_factory.open()
    early, late = new(store), new(store)
    for record in (early, late):
        lose(store, store.mark_running(record.id, worker_id="w-1", now=at(1)))
    store.mark_running(late.id, worker_id="w-2", now=at(5))

    accepted = store.finish(
        early.id, status=OperationStatus.COMPLETED, now=at(6), result={"x": 1},
        worker_id="w-1", attempt=1,
    )  # fmt: skip
    with pytest.raises(StaleAttempt, match="attempt 1 is no longer current"):
        store.finish(
            late.id, status=OperationStatus.COMPLETED, now=at(6), result={"x": 1},
            worker_id="w-1", attempt=1,
        )  # fmt: skip

    assert (accepted.status, accepted.result, accepted.attempt) == (
        OperationStatus.COMPLETED,
        {"x": 1},
        1,
    )
    assert store.pending() == []
    assert store.get(late.id).status is OperationStatus.RUNNING


def test_a_refused_dispatch_gives_its_attempt_number_back(store: OperationStore) -> None:
    """A worker that answered busy never ran attempt 1: released, the next start is 1 again."""
    record = new(store)
    store.mark_running(record.id, worker_id="w-1", now=at(1))
    released = store.release(record.id, worker_id="w-1", attempt=1)
    again = store.mark_running(record.id, worker_id="w-2", now=at(2))

    assert (released.attempt, released.lost_attempts, released.status) == (
        0,
        0,
        OperationStatus.PENDING,
    )
    assert again.attempt == 1


def test_the_book_of_current_attempts_follows_every_transition(
    store_factory: StoreFactory,
) -> None:
    """current_attempt answers from memory after each transition, and from the database
    for an operation this store never moved (another store made it, a restart)."""
    store = store_factory.open()
    record = new(store)
    seen = [store.known_attempt(record.id)]
    store.mark_running(record.id, worker_id="w-1", now=at(1))
    seen.append(store.known_attempt(record.id))
    store.finish(record.id, status=OperationStatus.FAILED, now=at(2), error="x")
    seen.append(store.known_attempt(record.id))
    restarted = store_factory.open()

    state = restarted.current_attempt(record.id)

    assert seen[0] is None
    assert seen[1] is not None
    assert seen[1].accepts(worker_id="w-1", attempt=1)
    assert seen[2] is None  # finished: read from the database when asked
    assert (state.attempt, state.status, state.worker_id) == (1, OperationStatus.FAILED, "w-1")
    with pytest.raises(OperationNotFound):
        restarted.current_attempt("never-created")


def test_concurrent_transitions_leave_the_book_equal_to_the_database(
    store: OperationStore,
) -> None:
    """Threads losing, restarting and reading many operations at once: afterwards the book
    agrees with the database for every one of them.
    """
    records = [new(store) for _ in range(12)]
    for record in records:
        store.mark_running(record.id, worker_id="w-0", now=at(1))
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def churn(worker: str) -> None:
        barrier.wait()
        for _ in range(3):
            for record in records:
                try:
                    current = store.get(record.id)
                    if current.status is OperationStatus.RUNNING:
                        lose(store, current, max_attempts=100)
                    else:
                        store.mark_running(record.id, worker_id=worker, now=at(2))
                except InvalidTransition:
                    continue  # another thread moved it first
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

    def read() -> None:
        barrier.wait()
        for _ in range(20):
            for record in records:
                store.current_attempt(record.id)

    threads = [threading.Thread(target=churn, args=(f"w-{i}",)) for i in (1, 2)]
    threads.append(threading.Thread(target=read))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    for record in records:
        stored = store.get(record.id)
        assert store.current_attempt(record.id) == stored.attempt_state()


def test_heartbeat_stamps_of_another_attempt_are_dropped(store: OperationStore) -> None:
    """A stamp for attempt 1 of an operation now at attempt 2 writes nothing; attempt 2's
    moves last_reported_at, and progressed_at only when its progress changed.
    """
    record = new(store)
    lose(store, store.mark_running(record.id, worker_id="w-1", now=at(1)))
    store.mark_running(record.id, worker_id="w-1", now=at(2))
    store.stamp_many(
        [ProgressStamp(operation_id=record.id, worker_id="w-1", attempt=1, at=at(10),
                       progress={"percent": 90}, progressed_at=at(10))]
    )  # fmt: skip
    stale = store.get(record.id)
    store.stamp_many(
        [ProgressStamp(operation_id=record.id, worker_id="w-1", attempt=2, at=at(20),
                       progress={"percent": 10})]
    )  # fmt: skip
    unchanged = store.get(record.id)
    store.stamp_many(
        [ProgressStamp(operation_id=record.id, worker_id="w-1", attempt=2, at=at(30),
                       progress={"percent": 20}, progressed_at=at(30))]
    )  # fmt: skip
    changed = store.get(record.id)

    assert (stale.last_reported_at, stale.progress) == (at(2), None)
    assert (unchanged.last_reported_at, unchanged.progressed_at) == (at(20), at(2))
    assert (changed.progress, changed.progressed_at) == ({"percent": 20}, at(30))


def test_deadlines_are_set_per_attempt_and_found_when_passed(store: OperationStore) -> None:
    """timeout_s=30: each start sets its deadline 30 s on; overdue() lists it only after."""
    timed = new(store, timeout_s=30)
    untimed = new(store)
    first = store.mark_running(timed.id, worker_id="w-1", now=at(0))
    store.mark_running(untimed.id, worker_id="w-2", now=at(0))
    lose(store, first)
    second = store.mark_running(timed.id, worker_id="w-1", now=at(100))

    assert first.deadline_at == at(30)
    assert second.deadline_at == at(130)
    assert store.overdue(at(129)) == []
    assert [r.id for r in store.overdue(at(131))] == [timed.id]


def test_a_timeout_must_be_a_positive_number(store: OperationStore) -> None:
    """0, negative, NaN or infinite timeouts are refused naming timeout_s."""
    for value in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout_s must be a positive number of seconds"):
            new(store, timeout_s=value)
    assert store.count_live() == 0


def test_fail_running_rechecks_its_condition_in_the_update(store: OperationStore) -> None:
    """A stall judged on old progress loses to progress written meanwhile (None, running);
    a timed-out attempt is failed once; a finished one is left alone.
    """
    stalled = new(store)
    timed = new(store, timeout_s=5)
    store.mark_running(stalled.id, worker_id="w-1", now=at(0))
    store.mark_running(timed.id, worker_id="w-2", now=at(0))
    store.update_progress(stalled.id, progress={"percent": 5}, now=at(50), worker_id="w-1")

    raced = store.fail_running(
        stalled.id, worker_id="w-1", attempt=1, now=at(70), error="stalled",
        progressed_before=at(10),
    )  # fmt: skip
    failed = store.fail_running(
        timed.id, worker_id="w-2", attempt=1, now=at(70), error="timed out",
        deadline_before=at(70),
    )  # fmt: skip
    again = store.fail_running(
        timed.id, worker_id="w-2", attempt=1, now=at(71), error="timed out",
        deadline_before=at(71),
    )  # fmt: skip

    assert raced is None
    assert store.get(stalled.id).status is OperationStatus.RUNNING
    assert failed is not None
    assert (failed.status, failed.error) == (
        OperationStatus.FAILED,
        "timed out",
    )
    assert again is None
    assert [r.id for r in store.stalled(at(50))] == []
    assert [r.id for r in store.stalled(at(51))] == [stalled.id]
