"""Series points in the store, on SQLite and PostgreSQL: upserts, owners, restarts, retention."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from ktrdr.api.store import InvalidTransition, OperationNotFound, OperationStore, ProgressStamp
from ktrdr.protocol import OperationStatus, OperationType

if TYPE_CHECKING:
    from tests.unit.api.conftest import StoreFactory

T0 = datetime.datetime(2026, 5, 1, 8, 30, tzinfo=datetime.timezone.utc)


def running(store: OperationStore, worker: str = "w-1") -> str:
    """A backtest running on ``worker``; its id."""
    record = store.create(operation_type=OperationType.BACKTEST, parameters={}, now=T0)
    store.mark_running(record.id, worker_id=worker, now=T0)
    return record.id


def test_a_point_sent_twice_is_stored_once_with_the_latest_value(store: OperationStore) -> None:
    """Upserts keyed by (operation, series, step): repeats and duplicates fold into one row."""
    op = running(store)
    assert store.record_series(op, worker_id="w-1", points={"equity": [(2, 1.0), (1, 5.0)]})
    assert store.record_series(op, worker_id="w-1", points={"equity": [(2, 2.0), (2, 3.0)]})
    series = store.series(op)
    assert series.type is OperationType.BACKTEST
    assert series.points == {"equity": [(1, 5.0), (2, 3.0)]}


def test_only_the_operations_worker_adds_points(store: OperationStore) -> None:
    """Another worker's points are refused (False, nothing written); a finished run's owner may."""
    op = running(store)
    assert not store.record_series(op, worker_id="w-2", points={"equity": [(1, 1.0)]})
    store.finish(op, status=OperationStatus.CANCELLED, now=T0, error="cancelled by request")
    assert store.record_series(op, worker_id="w-1", points={"equity": [(1, 1.0)]})
    assert not store.record_series("gone", worker_id="w-1", points={"equity": [(1, 1.0)]})
    assert store.series(op).points == {"equity": [(1, 1.0)]}


def test_a_finish_writes_its_points_in_the_same_transaction(store: OperationStore) -> None:
    """finish(series=...) stores the worker's points with the outcome, in one transaction.

    Counted through SQLAlchemy's ``commit`` event: a statement listener keeps the
    transaction on SQLAlchemy's path (SQLite's driver path steps aside for one; that
    path's single transaction is checked in test_store_driver.py by a failing upsert).
    """
    op = running(store)
    commits: list[object] = []

    def committed(conn: object) -> None:
        commits.append(conn)

    def statement(*_args: object) -> None:
        pass

    sa.event.listen(store.engine, "commit", committed)
    sa.event.listen(store.engine, "before_cursor_execute", statement)
    try:
        done = store.finish(
            op,
            status=OperationStatus.COMPLETED,
            now=T0,
            worker_id="w-1",
            attempt=1,
            result={"sharpe": 1.2},
            series={"equity": [(1, 100.0), (2, 101.0)]},
        )
    finally:
        sa.event.remove(store.engine, "commit", committed)
        sa.event.remove(store.engine, "before_cursor_execute", statement)
    assert done.status is OperationStatus.COMPLETED
    assert len(commits) == 1
    assert store.series(op).points == {"equity": [(1, 100.0), (2, 101.0)]}


def test_a_refused_finish_still_keeps_its_workers_points_and_only_theirs(
    store: OperationStore,
) -> None:
    """Cancelled before the worker's outcome arrived: the outcome is refused, its points
    are kept (the whole curve of the run); another worker's points are never written."""
    op = running(store)
    store.finish(op, status=OperationStatus.CANCELLED, now=T0, error="cancelled by request")
    with pytest.raises(InvalidTransition):
        store.finish(
            op,
            status=OperationStatus.COMPLETED,
            now=T0,
            worker_id="w-1",
            attempt=1,
            series={"equity": [(1, 5.0)]},
        )
    with pytest.raises(InvalidTransition):
        store.finish(
            op,
            status=OperationStatus.COMPLETED,
            now=T0,
            worker_id="w-2",
            attempt=1,
            series={"equity": [(1, 9.0), (2, 9.0)]},
        )
    assert store.series(op).points == {"equity": [(1, 5.0)]}
    assert store.get(op).status is OperationStatus.CANCELLED
    with pytest.raises(ValueError, match="worker_id"):
        store.finish(op, status=OperationStatus.FAILED, now=T0, series={"equity": [(1, 1.0)]})


def test_heartbeat_points_are_kept_only_for_running_operations_of_their_worker(
    store: OperationStore,
) -> None:
    """stamp_many writes the points of live stamps and skips stale ones, in one batch."""
    mine, theirs = running(store, "w-1"), running(store, "w-2")
    stamps = [
        ProgressStamp(
            operation_id=mine, worker_id="w-1", attempt=1, at=T0, series={"equity": [(1, 2.0)]}
        ),
        ProgressStamp(
            operation_id=theirs, worker_id="w-1", attempt=1, at=T0, series={"equity": [(1, 9.0)]}
        ),
    ]
    store.stamp_many(stamps)
    assert store.series(mine).points == {"equity": [(1, 2.0)]}
    assert store.series(theirs).points == {}


def test_points_survive_a_restart(store_factory: StoreFactory) -> None:
    """A new store on the same database (a backend restart) reads the same points."""
    first = store_factory.open()
    op = running(first)
    first.record_series(op, worker_id="w-1", points={"equity": [(1, 10_000.0), (2, 10_012.5)]})
    first.close()
    assert store_factory.open().series(op).points == {"equity": [(1, 10_000.0), (2, 10_012.5)]}


def test_retention_deletes_the_points_with_their_operation(store: OperationStore) -> None:
    """An operation removed by retention leaves no points behind; a newer one keeps its own."""
    old, new = running(store), running(store)
    for op in (old, new):
        store.record_series(op, worker_id="w-1", points={"equity": [(1, 1.0)]})
    store.finish(old, status=OperationStatus.COMPLETED, now=T0)
    assert store.delete_finished_before(T0 + datetime.timedelta(seconds=1)) == 1
    with pytest.raises(OperationNotFound):
        store.series(old)
    recreated = store.create(
        operation_type=OperationType.BACKTEST, parameters={}, now=T0, operation_id=old
    )
    assert store.series(recreated.id).points == {}
    assert store.series(new).points == {"equity": [(1, 1.0)]}


def test_a_failing_point_write_undoes_the_finish(store_factory: StoreFactory) -> None:
    """A trigger refuses every point: the finish written before it in the same
    transaction is rolled back too (on SQLite after the driver path's attempt and
    SQLAlchemy's), the database's error reaches the caller; without the trigger the
    same finish stores its outcome and its points."""
    store = store_factory.open()
    op = running(store)
    _refuse_points(store_factory, store)

    def finish() -> object:
        return store.finish(
            op,
            status=OperationStatus.COMPLETED,
            now=T0,
            worker_id="w-1",
            attempt=1,
            result={"sharpe": 1.2},
            series={"equity": [(1, 100.0), (2, 101.0)]},
        )

    with pytest.raises(sa.exc.DBAPIError, match="points refused"):
        finish()

    after = store.get(op)
    assert (after.status, after.result, after.finished_at) == (OperationStatus.RUNNING, None, None)
    assert store.series(op).points == {}
    assert store.current_attempt(op).accepts(worker_id="w-1", attempt=1)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_points" + _on_series(store_factory)))
    finish()
    assert store.get(op).status is OperationStatus.COMPLETED
    assert store.series(op).points == {"equity": [(1, 100.0), (2, 101.0)]}


def _on_series(factory: StoreFactory) -> str:
    return "" if factory.backend == "sqlite" else f' ON "{factory.schema}".operation_series'


def _refuse_points(factory: StoreFactory, store: OperationStore) -> None:
    """A trigger that fails every insert of a point (a fault inside the series write)."""
    with store.engine.begin() as conn:
        if factory.backend == "sqlite":
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse_points BEFORE INSERT ON operation_series "
                    "BEGIN SELECT RAISE(ABORT, 'points refused'); END"
                )
            )
            return
        schema = factory.schema
        conn.execute(
            sa.text(
                f'CREATE FUNCTION "{schema}".refuse_points() RETURNS trigger AS $$ BEGIN '
                "RAISE EXCEPTION 'points refused'; END $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            sa.text(
                f'CREATE TRIGGER refuse_points BEFORE INSERT ON "{schema}".operation_series '
                f'FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse_points()'
            )
        )
