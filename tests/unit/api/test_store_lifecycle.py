"""The operations store's lifecycle fast paths, on SQLite and PostgreSQL: the busy set,
the orphan candidates and the prebuilt transition statements behave like the general ones.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from ktrdr.api.store import InvalidTransition, OperationRecord, OperationStore, StaleAttempt
from ktrdr.protocol import OperationStatus, OperationType

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 5, 1, 8, 30, 15, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def new(store: OperationStore, *, seconds: float = 0, **kw: Any) -> OperationRecord:
    return store.create(
        operation_type=OperationType.TRAINING, parameters={"seed": 1}, now=at(seconds), **kw
    )


def running(store: OperationStore, *, worker: str, seconds: float = 0) -> OperationRecord:
    record = new(store, seconds=seconds)
    return store.mark_running(record.id, worker_id=worker, now=at(seconds + 1))


# --- the busy set ---------------------------------------------------------------------


def test_busy_workers_are_the_workers_of_running_operations(store: OperationStore) -> None:
    """Pending, finished and released operations make no worker busy; running ones do."""
    assert store.busy_workers() == set()
    new(store)  # pending
    first = running(store, worker="w-1")
    running(store, worker="w-2")
    done = running(store, worker="w-3")
    store.finish(done.id, status=OperationStatus.COMPLETED, now=at(5), worker_id="w-3")
    gone = running(store, worker="w-4")
    store.release(gone.id, worker_id="w-4", attempt=gone.attempt)

    assert store.busy_workers() == {"w-1", "w-2"}
    store.finish(first.id, status=OperationStatus.FAILED, now=at(6), error="x")
    assert store.busy_workers() == {"w-2"}


# --- the orphan candidates ------------------------------------------------------------


def test_unreported_since_reads_only_running_operations_silent_before_the_cutoff(
    store: OperationStore,
) -> None:
    """Exactly the running operations whose last report is older than the cutoff,
    least recently reported first; a report at the cutoff itself is not silence."""
    oldest = running(store, worker="w-1", seconds=0)  # reported at 1
    older = running(store, worker="w-2", seconds=10)  # reported at 11
    at_cutoff = running(store, worker="w-3", seconds=19)  # reported at 20
    fresh = running(store, worker="w-4", seconds=30)  # reported at 31
    finished = running(store, worker="w-5", seconds=0)
    store.finish(finished.id, status=OperationStatus.COMPLETED, now=at(2), worker_id="w-5")
    new(store)  # pending: never an orphan

    found = store.unreported_since(at(20))

    assert [r.id for r in found] == [oldest.id, older.id]
    assert all(r.status is OperationStatus.RUNNING for r in found)
    assert found[0].worker_id == "w-1"
    assert found[0].last_reported_at == at(1)
    store.update_progress(oldest.id, now=at(25), worker_id="w-1")
    assert [r.id for r in store.unreported_since(at(20))] == [older.id]
    assert {r.id for r in store.unreported_since(at(40))} == {
        oldest.id,
        older.id,
        at_cutoff.id,
        fresh.id,
    }


# --- prebuilt transitions -------------------------------------------------------------


def test_prebuilt_transitions_keep_their_guards_across_calls(store: OperationStore) -> None:
    """The same statement shape, reused with other values, still checks the worker and
    attempt it is given each time (a statement built once must not keep old values)."""
    first = running(store, worker="w-1")
    second = running(store, worker="w-2")

    store.update_progress(first.id, now=at(3), progress={"percent": 10.0}, worker_id="w-1")
    store.update_progress(second.id, now=at(4), progress={"percent": 20.0}, worker_id="w-2")
    with pytest.raises(InvalidTransition):
        store.update_progress(second.id, now=at(5), progress={"percent": 30.0}, worker_id="w-1")
    with pytest.raises(StaleAttempt):
        store.finish(
            second.id,
            status=OperationStatus.COMPLETED,
            now=at(6),
            worker_id="w-2",
            attempt=second.attempt + 1,
        )

    assert store.get(first.id).progress == {"percent": 10.0}
    assert store.get(second.id).progress == {"percent": 20.0}
    done = store.finish(
        second.id,
        status=OperationStatus.COMPLETED,
        now=at(7),
        worker_id="w-2",
        attempt=second.attempt,
        result={"loss": 0.5},
    )
    assert done.status is OperationStatus.COMPLETED
    assert done.result == {"loss": 0.5}
    assert store.get(first.id).status is OperationStatus.RUNNING


# --- one transaction per claim --------------------------------------------------------


def statements_of(store: OperationStore, call: Callable[[], object]) -> list[str]:
    """The statements ``call()`` sends on the operations table, and how many commits."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "operations" in statement:
            sent.append(statement.split()[0].upper())

    def committed(_conn: Any) -> None:
        sent.append("COMMIT")

    sa.event.listen(store.engine, "before_cursor_execute", record)
    sa.event.listen(store.engine, "commit", committed)
    try:
        call()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
        sa.event.remove(store.engine, "commit", committed)
    return sent


def test_a_claim_is_one_statement_without_a_timeout(store: OperationStore) -> None:
    """mark_running of an operation without a timeout: one UPDATE, one commit."""
    record = new(store)

    sent = statements_of(store, lambda: store.mark_running(record.id, worker_id="w-1", now=at(1)))

    assert sent == ["UPDATE", "COMMIT"]
    assert store.get(record.id).deadline_at is None


def test_a_claim_sets_the_deadline_in_the_same_transaction(store: OperationStore) -> None:
    """With a timeout the deadline is set right after the claim, before its commit, and
    the returned record carries it."""
    record = new(store, timeout_s=30)
    claimed: list[OperationRecord] = []

    sent = statements_of(
        store,
        lambda: claimed.append(store.mark_running(record.id, worker_id="w-1", now=at(10))),
    )

    assert sent == ["UPDATE", "UPDATE", "COMMIT"]
    assert claimed[0].deadline_at == at(40)
    assert store.get(record.id).deadline_at == at(40)
    assert store.busy_workers() == {"w-1"}
