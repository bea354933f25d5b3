"""Finish and claim the next operation in one store transaction (a report's handoff),
and create and claim in one (a creation while a worker waits), on SQLite and PostgreSQL.

The claim's fault is a real one: a database trigger refuses the pending → running
update, so the transaction fails after the finish was written, and the test checks
that the finish did not survive it.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from ktrdr.api.store import LiveLimitReached, OperationRecord, OperationStore, StaleAttempt
from ktrdr.protocol import OperationStatus, OperationType

if TYPE_CHECKING:
    from tests.unit.api.conftest import StoreFactory

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
TRAINING = OperationType.TRAINING
BACKTEST = OperationType.BACKTEST


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def new(store: OperationStore, seconds: float, kind: OperationType = TRAINING, **kw: Any) -> str:
    return store.create(operation_type=kind, parameters={"seed": 1}, now=at(seconds), **kw).id


def running(store: OperationStore, worker: str = "w-1") -> OperationRecord:
    return store.mark_running(new(store, 0), worker_id=worker, now=at(1))


def finish_and_claim(
    store: OperationStore, record: OperationRecord, *, worker: str = "w-1"
) -> tuple[OperationRecord, OperationRecord | None]:
    return store.finish_and_claim(
        record.id,
        status=OperationStatus.COMPLETED,
        now=at(10),
        worker_id=worker,
        attempt=record.attempt,
        next_type=TRAINING,
        result={"loss": 0.5},
    )


def transactions(store: OperationStore) -> list[int]:
    """A list that counts the transactions ``store`` begins from now on.

    A statement listener keeps every transaction on SQLAlchemy's path (SQLite's
    ``store_driver`` path steps aside for one), where each one fires ``begin``.
    """
    begun: list[int] = []
    sa.event.listen(store.engine, "begin", lambda _conn: begun.append(1))
    sa.event.listen(store.engine, "before_cursor_execute", lambda *_args: None)
    return begun


def test_finish_and_claim_take_the_oldest_pending_of_the_type_in_one_transaction(
    store: OperationStore,
) -> None:
    first = running(store)
    new(store, 2, BACKTEST)  # older, but not the worker's type
    oldest = new(store, 3, timeout_s=60)
    new(store, 4)
    begun = transactions(store)

    finished, claimed = finish_and_claim(store, first)

    assert len(begun) == 1
    assert (finished.status, finished.result) == (OperationStatus.COMPLETED, {"loss": 0.5})
    assert claimed is not None
    assert (claimed.id, claimed.status, claimed.worker_id) == (
        oldest,
        OperationStatus.RUNNING,
        "w-1",
    )
    assert (claimed.attempt, claimed.started_at) == (1, at(10))
    assert claimed.deadline_at == at(70)  # stamped in the same transaction
    assert store.get(oldest) == claimed
    state = store.known_attempt(oldest)  # the book of current attempts knows it
    assert state is not None
    assert state.accepts(worker_id="w-1", attempt=1)
    assert store.known_attempt(first.id) is None  # finished: not live any more


def test_a_failed_claim_undoes_the_finish(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    first = running(store)
    waiting = new(store, 2)
    _refuse_claims(store_factory, store)

    with pytest.raises(sa.exc.DBAPIError, match="claim refused"):
        finish_and_claim(store, first)

    after = store.get(first.id)
    assert (after.status, after.worker_id, after.attempt) == (OperationStatus.RUNNING, "w-1", 1)
    assert after.result is None
    assert after.finished_at is None
    assert store.get(waiting).status is OperationStatus.PENDING
    state = store.current_attempt(first.id)
    assert state.accepts(worker_id="w-1", attempt=1)


def test_the_finished_operations_points_are_written_with_the_handoff(
    store: OperationStore,
) -> None:
    """A final report's series points go with the finish and the claim (one transaction;
    on SQLite's driver path), folded like any upsert: the last value of a step wins."""
    first = running(store)
    waiting = new(store, 2)

    finished, claimed = store.finish_and_claim(
        first.id,
        status=OperationStatus.COMPLETED,
        now=at(10),
        worker_id="w-1",
        attempt=first.attempt,
        next_type=TRAINING,
        series={"loss": [(2, 0.5), (1, 0.7), (2, 0.4)], "acc": [(1, 0.6)]},
    )

    assert finished.status is OperationStatus.COMPLETED
    assert claimed is not None
    assert claimed.id == waiting
    assert store.series(first.id).points == {"acc": [(1, 0.6)], "loss": [(1, 0.7), (2, 0.4)]}
    assert store.series(waiting).points == {}


def test_nothing_is_claimed_for_a_worker_the_store_has_running_another(
    store: OperationStore,
) -> None:
    first = running(store)
    other = store.mark_running(new(store, 2), worker_id="w-1", now=at(3))
    waiting = new(store, 4)

    finished, claimed = finish_and_claim(store, first)

    assert finished.status is OperationStatus.COMPLETED
    assert claimed is None
    assert store.get(other.id).status is OperationStatus.RUNNING
    assert store.get(waiting).status is OperationStatus.PENDING


def test_nothing_pending_claims_nothing(store: OperationStore) -> None:
    finished, claimed = finish_and_claim(store, running(store))
    assert (finished.status, claimed) == (OperationStatus.COMPLETED, None)


def test_a_refused_finish_claims_nothing(store: OperationStore) -> None:
    first = running(store)
    waiting = new(store, 2)
    with pytest.raises(StaleAttempt):
        finish_and_claim(store, first, worker="w-2")
    assert store.get(first.id).status is OperationStatus.RUNNING
    assert store.get(waiting).status is OperationStatus.PENDING


def test_a_claimed_attempt_is_released_in_its_old_place(store: OperationStore) -> None:
    """A worker that cannot start the handed-off operation gives it back: pending again,
    before the operations created after it, with its attempt number given back.
    """
    first = running(store)
    waiting = new(store, 2)
    later = new(store, 3)
    _, claimed = finish_and_claim(store, first)
    assert claimed is not None

    released = store.release(waiting, worker_id="w-1", attempt=claimed.attempt)

    assert (released.status, released.attempt, released.worker_id) == (
        OperationStatus.PENDING,
        0,
        None,
    )
    assert [r.id for r in store.pending(operation_type=TRAINING)] == [waiting, later]


def _refuse_claims(factory: StoreFactory, store: OperationStore) -> None:
    """A trigger that fails every pending → running update (a fault inside the claim)."""
    with store.engine.begin() as conn:
        if factory.backend == "sqlite":
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse_claim BEFORE UPDATE OF status ON operations "
                    "WHEN OLD.status = 'pending' AND NEW.status = 'running' "
                    "BEGIN SELECT RAISE(ABORT, 'claim refused'); END"
                )
            )
            return
        schema = factory.schema
        conn.execute(
            sa.text(
                f'CREATE FUNCTION "{schema}".refuse_claim() RETURNS trigger AS $$ BEGIN '
                "IF OLD.status = 'pending' AND NEW.status = 'running' THEN "
                "RAISE EXCEPTION 'claim refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            sa.text(
                f'CREATE TRIGGER refuse_claim BEFORE UPDATE ON "{schema}".operations '
                f'FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse_claim()'
            )
        )


# --- create and claim -------------------------------------------------------------------


def create_and_claim(
    store: OperationStore, seconds: float, *claim_for: str, **kw: Any
) -> tuple[OperationRecord, tuple[OperationRecord, str] | None]:
    return store.create_and_claim(
        operation_type=TRAINING, parameters={"seed": 2}, now=at(seconds), claim_for=claim_for, **kw
    )


def test_a_creation_claims_itself_for_an_idle_worker_in_one_transaction(
    store: OperationStore,
) -> None:
    begun = transactions(store)

    created, claimed = create_and_claim(store, 5, "w-1", timeout_s=60)

    assert len(begun) == 1
    assert claimed is not None
    assert claimed == (created, "w-1")
    assert (created.status, created.worker_id, created.attempt) == (
        OperationStatus.RUNNING,
        "w-1",
        1,
    )
    assert created.deadline_at == at(65)  # stamped as a round's claim stamps it
    assert store.current_attempt(created.id).accepts(worker_id="w-1", attempt=1)
    assert store.get(created.id) == created


def test_a_creation_claims_the_oldest_waiting_operation_not_itself(store: OperationStore) -> None:
    waiting = new(store, 1)

    created, claimed = create_and_claim(store, 5, "w-1")

    assert claimed is not None
    assert (claimed[0].id, claimed[0].status, claimed[1]) == (
        waiting,
        OperationStatus.RUNNING,
        "w-1",
    )
    assert created.status is OperationStatus.PENDING
    assert store.get(created.id).status is OperationStatus.PENDING


def test_a_creation_skips_workers_the_store_has_running_something(store: OperationStore) -> None:
    busy = running(store, worker="w-1")

    created, claimed = create_and_claim(store, 5, "w-1", "w-2")

    assert claimed == (created, "w-2")
    assert store.get(busy.id).worker_id == "w-1"
    assert create_and_claim(store, 6, "w-1", "w-2")[1] is None  # both busy now


def test_a_creation_without_idle_workers_claims_nothing(store: OperationStore) -> None:
    created, claimed = create_and_claim(store, 5)

    assert claimed is None
    assert (created.status, created.attempt) == (OperationStatus.PENDING, 0)


def test_a_creation_over_the_live_limit_neither_inserts_nor_claims(store: OperationStore) -> None:
    waiting = new(store, 1)

    with pytest.raises(LiveLimitReached):
        create_and_claim(store, 5, "w-1", max_live=1)

    assert [record.id for record in store.list().items] == [waiting]
    assert store.get(waiting).status is OperationStatus.PENDING
