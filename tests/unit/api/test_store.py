"""The operations store, on SQLite and PostgreSQL: persistence and atomic transitions."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import sqlalchemy as sa

from ktrdr.api.store import (
    DuplicateOperation,
    InvalidTransition,
    LiveLimitReached,
    OperationNotFound,
    OperationRecord,
    OperationStore,
    ProgressStamp,
    StaleAttempt,
    StoreError,
    UtcDateTime,
    database_url,
)
from ktrdr.config import ConfigurationError, DatabaseSettings, DbEngine, Secret
from ktrdr.protocol import OperationStatus, OperationType

if TYPE_CHECKING:
    from tests.unit.api.conftest import StoreFactory

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 5, 1, 8, 30, 15, 123456, tzinfo=UTC)
TRAINING = OperationType.TRAINING
BACKTEST = OperationType.BACKTEST


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def new(
    store: OperationStore, *, seconds: float = 0, kind: OperationType = TRAINING, **kw: Any
) -> OperationRecord:
    return store.create(operation_type=kind, parameters={"seed": 1}, now=at(seconds), **kw)


def running(store: OperationStore, *, worker: str = "w-1", seconds: float = 0) -> OperationRecord:
    record = new(store, seconds=seconds)
    return store.mark_running(record.id, worker_id=worker, now=at(seconds + 1))


# --- create and read ------------------------------------------------------------------


def test_create_returns_a_pending_operation(store: OperationStore) -> None:
    """A new operation is pending, has a uuid4 hex id, its parameters and creation time."""
    record = store.create(
        operation_type=BACKTEST, parameters={"bars": 500, "nested": {"a": [1, 2]}}, now=T0
    )
    assert len(record.id) == 32
    int(record.id, 16)
    assert record.type is BACKTEST
    assert record.status is OperationStatus.PENDING
    assert record.parameters == {"bars": 500, "nested": {"a": [1, 2]}}
    assert record.created_at == T0
    assert (record.progress, record.result, record.error, record.worker_id) == (None,) * 4
    assert (record.started_at, record.finished_at, record.last_reported_at) == (None,) * 3
    assert record.resume is False
    assert store.get(record.id) == record


def test_ids_are_unique(store: OperationStore) -> None:
    """Each creation gets a new id."""
    ids = {new(store).id for _ in range(20)}
    assert len(ids) == 20


def test_explicit_id_and_duplicate(store: OperationStore) -> None:
    """An explicit id is used; creating it again is refused, naming the id."""
    assert new(store, operation_id="op-7").id == "op-7"
    with pytest.raises(DuplicateOperation, match="'op-7' already exists"):
        new(store, operation_id="op-7")


def test_get_unknown_id(store: OperationStore) -> None:
    """Reading an unknown id raises OperationNotFound naming it."""
    with pytest.raises(OperationNotFound, match="no operation with id 'nope'"):
        store.get("nope")


def test_times_come_back_as_aware_utc(store: OperationStore) -> None:
    """A time given in another zone is stored as the same instant and read back in UTC."""
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    local = datetime.datetime(2026, 5, 1, 10, 30, 15, 123456, tzinfo=plus_two)
    record = store.create(operation_type=TRAINING, parameters={}, now=local)
    stored = store.get(record.id).created_at
    assert stored == T0
    assert stored.tzinfo is UTC


def test_naive_time_is_refused(store: OperationStore) -> None:
    """A naive datetime is refused with the argument named, before touching the database."""
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        store.create(operation_type=TRAINING, parameters={}, now=datetime.datetime(2026, 1, 1))
    assert store.count_live() == 0


def test_times_are_stored_on_sqlite_as_sqlalchemys_datetime_stores_them() -> None:
    """The store's own SQLite text for a time is SQLAlchemy's DATETIME text for it in UTC
    (rows written before and after it was hand-written compare and sort alike), and a
    naive time is still refused."""
    dialect = sa.create_engine("sqlite+pysqlite://").dialect
    ours = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None
    assert theirs is not None
    east = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    times = [
        T0,
        T0.replace(microsecond=0),
        datetime.datetime(1, 1, 1, tzinfo=UTC),
        datetime.datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime.datetime(2026, 3, 1, 2, 0, 0, 500, tzinfo=east),
    ]
    for moment in times:
        assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None))
    assert ours(None) is None
    with pytest.raises(ValueError, match="expected an aware datetime"):
        ours(datetime.datetime(2026, 1, 1))


def test_non_json_parameters_are_refused(store: OperationStore) -> None:
    """NaN or non-JSON values are refused with the field named."""
    with pytest.raises(ValueError, match="operation parameters must be JSON"):
        store.create(operation_type=TRAINING, parameters={"x": float("nan")}, now=T0)
    with pytest.raises(ValueError, match="operation parameters must be JSON"):
        store.create(operation_type=TRAINING, parameters={"x": {1, 2}}, now=T0)


def test_operations_survive_a_restart(store_factory: StoreFactory) -> None:
    """Close the store, open a new one on the same database: every operation is there."""
    store = store_factory.open()
    done = running(store)
    done = store.finish(done.id, status=OperationStatus.COMPLETED, now=at(9), result={"a": 1.5})
    waiting = new(store, seconds=2)
    store.close()
    reopened = store_factory.open()
    assert reopened.get(done.id) == done
    assert reopened.get(waiting.id) == waiting
    assert reopened.list().total == 2


def test_list_is_newest_first_with_total(store: OperationStore) -> None:
    """Listing pages newest first and reports the total that matched."""
    ids = [new(store, seconds=i).id for i in range(5)]
    page = store.list(limit=2, offset=1)
    assert [r.id for r in page.items] == [ids[3], ids[2]]
    assert page.total == 5
    assert store.list(limit=10, offset=5).items == ()


def test_list_filters_by_status_and_type(store: OperationStore) -> None:
    """Status and type filters apply to the items and to the total."""
    train = new(store, kind=TRAINING)
    back = new(store, kind=BACKTEST, seconds=1)
    store.mark_running(back.id, worker_id="w", now=at(2))
    assert [r.id for r in store.list(status=OperationStatus.PENDING).items] == [train.id]
    assert [r.id for r in store.list(operation_type=BACKTEST).items] == [back.id]
    empty = store.list(status=OperationStatus.RUNNING, operation_type=TRAINING)
    assert (empty.items, empty.total) == ((), 0)


def test_list_can_leave_the_results_unread(store: OperationStore) -> None:
    """include_result=False pages the same records with every result None."""
    done = new(store)
    store.finish(done.id, status=OperationStatus.COMPLETED, now=at(1), result={"x": 1})
    full = store.list()
    bare = store.list(include_result=False)
    assert full.items[0].result == {"x": 1}
    assert bare.items[0].result is None
    assert attrs.evolve(bare.items[0], result={"x": 1}) == full.items[0]
    assert bare.total == full.total == 1


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (1001, 0), (10, -1)])
def test_list_refuses_bad_paging(store: OperationStore, limit: int, offset: int) -> None:
    """Out-of-range limit or offset is a ValueError saying what is expected."""
    with pytest.raises(ValueError, match="expected 1 <= limit <= 1000, offset >= 0"):
        store.list(limit=limit, offset=offset)


def test_count_live_counts_pending_and_running(store: OperationStore) -> None:
    """Live means pending or running; finished operations do not count."""
    new(store)
    run = running(store)
    done = running(store)
    store.finish(done.id, status=OperationStatus.FAILED, now=at(5), error="x")
    assert store.count_live() == 2
    store.finish(run.id, status=OperationStatus.CANCELLED, now=at(5))
    assert store.count_live() == 1


def test_pending_is_oldest_first_by_type(store: OperationStore) -> None:
    """The dispatch queue is oldest first and can be limited to one type."""
    late = new(store, seconds=5)
    early = new(store, seconds=1)
    back = new(store, seconds=0, kind=BACKTEST)
    running(store)
    assert [r.id for r in store.pending()] == [back.id, early.id, late.id]
    assert [r.id for r in store.pending(operation_type=TRAINING, limit=1)] == [early.id]


# --- transitions ----------------------------------------------------------------------


def test_mark_running_records_worker_and_times(store: OperationStore) -> None:
    """Starting sets the worker, the start time and the report time."""
    record = running(store, worker="train-host-5003")
    assert record.status is OperationStatus.RUNNING
    assert record.worker_id == "train-host-5003"
    assert record.started_at == at(1)
    assert record.last_reported_at == at(1)


def test_mark_running_twice_is_refused(store: OperationStore) -> None:
    """An operation already running cannot be started again (two dispatchers race)."""
    record = running(store)
    with pytest.raises(InvalidTransition, match=r"cannot start operation .*: it is running"):
        store.mark_running(record.id, worker_id="w-2", now=at(3))
    assert store.get(record.id).worker_id == "w-1"


def test_update_progress_stamps_last_reported_at(store: OperationStore) -> None:
    """Progress is stored and the report time stamped; a bare report only stamps."""
    record = running(store)
    progress = {"percent": 40.0, "message": "epoch 4", "details": {"loss": 0.5}}
    updated = store.update_progress(record.id, progress=progress, now=at(10), worker_id="w-1")
    assert updated.progress == progress
    assert updated.last_reported_at == at(10)
    stamped = store.update_progress(record.id, now=at(20))
    assert stamped.progress == progress
    assert stamped.last_reported_at == at(20)


def test_stamp_many_records_heartbeats_in_one_go(store: OperationStore) -> None:
    """Batched heartbeats: time and progress per operation, the others untouched."""
    first = running(store, worker="w-1")
    second = running(store, worker="w-2")
    untouched = running(store, worker="w-3")
    store.stamp_many(
        [
            ProgressStamp(
                operation_id=first.id, worker_id="w-1", attempt=1, at=at(10), progress={"p": 1}
            ),
            ProgressStamp(operation_id=second.id, worker_id="w-2", attempt=1, at=at(11)),
        ]
    )
    one, two, three = (store.get(r.id) for r in (first, second, untouched))
    assert (one.last_reported_at, one.progress) == (at(10), {"p": 1})
    assert (two.last_reported_at, two.progress) == (at(11), None)
    assert three.last_reported_at == at(1)


def test_stamp_many_skips_stale_news_and_keeps_the_rest(store: OperationStore) -> None:
    """Finished, foreign, other-attempt, unknown and NaN stamps never spoil the batch."""
    done = running(store, worker="w-1")
    store.finish(done.id, status=OperationStatus.COMPLETED, now=at(5), result={})
    mine = running(store, worker="w-2")
    nan = running(store, worker="w-3")
    store.stamp_many(
        [
            ProgressStamp(
                operation_id=done.id, worker_id="w-1", attempt=1, at=at(10), progress={"p": 1}
            ),
            ProgressStamp(operation_id=mine.id, worker_id="w-other", attempt=1, at=at(10)),
            ProgressStamp(operation_id=mine.id, worker_id="w-2", attempt=2, at=at(11)),
            ProgressStamp(operation_id="unknown", worker_id="w-2", attempt=1, at=at(10)),
            ProgressStamp(
                operation_id=nan.id,
                worker_id="w-3",
                attempt=1,
                at=at(12),
                progress={"x": float("nan")},
            ),
        ]
    )
    finished = store.get(done.id)
    assert (finished.status, finished.progress, finished.last_reported_at) == (
        OperationStatus.COMPLETED,
        None,
        at(5),
    )
    assert store.get(mine.id).last_reported_at == at(1)
    assert (store.get(nan.id).last_reported_at, store.get(nan.id).progress) == (at(12), None)
    store.stamp_many([])


def test_progress_of_a_pending_operation_is_refused(store: OperationStore) -> None:
    """Only running operations take progress."""
    record = new(store)
    with pytest.raises(InvalidTransition, match=r"it is pending \(only running operations"):
        store.update_progress(record.id, progress={"percent": 1}, now=at(1))


def test_progress_from_another_worker_is_refused(store: OperationStore) -> None:
    """A worker that does not own the operation cannot report for it."""
    record = running(store, worker="w-1")
    with pytest.raises(StaleAttempt, match=r"worker w-2 does not run it; the current attempt "
                       r"is 1 \(running on worker w-1\)"):  # fmt: skip
        store.update_progress(record.id, progress={"percent": 1}, now=at(5), worker_id="w-2")
    assert store.get(record.id).progress is None


def test_finish_stores_result_once(store: OperationStore) -> None:
    """Finishing stores the outcome; finishing again is refused and the first one stands."""
    record = running(store)
    done = store.finish(
        record.id, status=OperationStatus.COMPLETED, now=at(30), result={"loss": 0.25}
    )
    assert done.status is OperationStatus.COMPLETED
    assert done.result == {"loss": 0.25}
    assert done.finished_at == at(30)
    with pytest.raises(
        InvalidTransition, match=r"cannot mark failed operation .*: it is completed"
    ):
        store.finish(record.id, status=OperationStatus.FAILED, now=at(31), error="late")
    assert store.get(record.id) == done


def test_finish_needs_a_final_status(store: OperationStore) -> None:
    """Finishing with a non-final status is a ValueError listing the final ones."""
    record = running(store)
    with pytest.raises(ValueError, match="expected a final status"):
        store.finish(record.id, status=OperationStatus.RUNNING, now=at(2))


def test_finish_a_pending_operation(store: OperationStore) -> None:
    """A pending operation can be cancelled before any worker took it."""
    record = new(store)
    cancelled = store.finish(
        record.id, status=OperationStatus.CANCELLED, now=at(3), error="cancelled"
    )
    assert cancelled.status is OperationStatus.CANCELLED
    assert cancelled.error == "cancelled"


def test_finish_unknown_operation(store: OperationStore) -> None:
    """Transitions of an unknown id raise OperationNotFound."""
    with pytest.raises(OperationNotFound):
        store.finish("ghost", status=OperationStatus.FAILED, now=at(1))


def test_non_json_result_is_refused(store: OperationStore) -> None:
    """A result with NaN is refused naming the result, and the operation stays running."""
    record = running(store)
    with pytest.raises(ValueError, match="operation result must be JSON"):
        store.finish(
            record.id, status=OperationStatus.COMPLETED, now=at(2), result={"x": float("inf")}
        )
    assert store.get(record.id).status is OperationStatus.RUNNING


def test_requeue_makes_a_failed_operation_pending_for_resume(store: OperationStore) -> None:
    """Resume: failed → pending with resume=True, worker and outcome cleared, progress kept."""
    record = running(store)
    store.update_progress(record.id, progress={"percent": 50}, now=at(4))
    store.finish(record.id, status=OperationStatus.FAILED, now=at(5), error="worker died")
    again = store.requeue(record.id)
    assert again.status is OperationStatus.PENDING
    assert again.resume is True
    assert (again.worker_id, again.error, again.finished_at, again.started_at) == (None,) * 4
    assert again.progress == {"percent": 50}
    assert [r.id for r in store.pending()] == [record.id]


def test_requeue_of_a_completed_operation_is_refused(store: OperationStore) -> None:
    """Only failed or cancelled operations can be resumed."""
    record = running(store)
    store.finish(record.id, status=OperationStatus.COMPLETED, now=at(2), result={})
    with pytest.raises(InvalidTransition, match="only failed or cancelled operations can be"):
        store.requeue(record.id)


def test_release_puts_a_running_operation_back_in_the_queue(store: OperationStore) -> None:
    """A refused dispatch: running → pending, worker cleared, queue place and resume kept."""
    older = running(store, worker="w-1", seconds=0)
    store.finish(older.id, status=OperationStatus.CANCELLED, now=at(2), error="stop")
    store.requeue(older.id)
    store.mark_running(older.id, worker_id="w-1", now=at(3))
    younger = new(store, seconds=1)
    released = store.release(older.id, worker_id="w-1", attempt=2)
    assert released.attempt == 1  # attempt 2 never ran: its number is given back
    assert released.status is OperationStatus.PENDING
    assert (released.worker_id, released.started_at, released.last_reported_at) == (None,) * 3
    assert released.resume is True
    assert [r.id for r in store.pending()] == [older.id, younger.id]


def test_release_by_another_worker_or_when_not_running_is_refused(
    store: OperationStore,
) -> None:
    """Only the worker it was dispatched to can release a running operation."""
    record = running(store, worker="w-1")
    with pytest.raises(StaleAttempt, match="attempt 1 is not worker w-2's"):
        store.release(record.id, worker_id="w-2", attempt=1)
    store.finish(record.id, status=OperationStatus.CANCELLED, now=at(2), error="x")
    with pytest.raises(InvalidTransition, match="cannot release"):
        store.release(record.id, worker_id="w-1", attempt=1)
    assert store.get(record.id).status is OperationStatus.CANCELLED


def test_lose_if_unreported_before_the_cutoff(store: OperationStore) -> None:
    """With a cutoff (the orphan detector), only an attempt unreported since then is lost."""
    stale = running(store, worker="w-old")
    fresh = running(store, worker="w-new")
    store.update_progress(fresh.id, now=at(100))

    def lose(record: OperationRecord, cutoff: float) -> OperationRecord | None:
        return store.lose(
            record.id,
            worker_id=record.worker_id or "",
            attempt=1,
            now=at(cutoff + 60),
            reason="orphaned",
            max_attempts=1,
            cutoff=at(cutoff),
        )

    failed = lose(stale, 50)
    assert failed is not None
    assert failed.status is OperationStatus.FAILED
    assert failed.error == (
        "attempt 1 lost: orphaned; failed after 1 lost attempt (attempt 1; "
        "KTRDR_OPS_MAX_ATTEMPTS=1); resume it to continue from its last checkpoint"
    )
    assert failed.finished_at == at(110)
    assert lose(fresh, 50) is None
    assert lose(stale, 500) is None  # already failed: nothing to lose
    assert store.get(fresh.id).status is OperationStatus.RUNNING


def test_running_lists_least_recently_reported_first(store: OperationStore) -> None:
    """The orphan detector sees running operations only, stalest first."""
    first = running(store, seconds=0)
    second = running(store, seconds=10)
    store.update_progress(first.id, now=at(20))
    new(store)
    assert [r.id for r in store.running()] == [second.id, first.id]


def test_delete_finished_before(store: OperationStore) -> None:
    """Only finished operations that finished before the cutoff are deleted."""
    old_done = running(store)
    store.finish(old_done.id, status=OperationStatus.COMPLETED, now=at(10), result={})
    new_done = running(store)
    store.finish(new_done.id, status=OperationStatus.FAILED, now=at(100), error="x")
    old_live = new(store, seconds=-1000)
    assert store.delete_finished_before(at(50)) == 1
    with pytest.raises(OperationNotFound):
        store.get(old_done.id)
    assert store.get(new_done.id).status is OperationStatus.FAILED
    assert store.get(old_live.id).status is OperationStatus.PENDING
    assert store.delete_finished_before(at(50)) == 0


# --- concurrency ----------------------------------------------------------------------


def in_threads(count: int, task: Callable[[int], Any]) -> list[Any]:
    """Run ``task(i)`` in ``count`` threads released together; results or exceptions."""
    barrier = threading.Barrier(count)

    def call(index: int) -> Any:
        barrier.wait()
        try:
            return task(index)
        except StoreError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(call, range(count)))


def test_concurrent_creations_respect_the_live_bound(store: OperationStore) -> None:
    """Creations racing from many threads never exceed ``max_live``."""
    outcomes = in_threads(
        8,
        lambda i: [_attempt(lambda: new(store, seconds=i, max_live=12)) for _ in range(3)],
    )
    flat = [o for batch in outcomes for o in batch]
    assert sum(isinstance(o, OperationRecord) for o in flat) == 12
    assert sum(isinstance(o, LiveLimitReached) for o in flat) == 12
    assert store.count_live() == 12


def _attempt(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except LiveLimitReached as exc:
        return exc


def test_live_limit_error_carries_the_numbers(store: OperationStore) -> None:
    """The refusal says how many are live and the limit; finished ones free room."""
    first = new(store, max_live=1)
    with pytest.raises(LiveLimitReached, match="1 operations are live; the limit is 1") as caught:
        new(store, max_live=1)
    assert (caught.value.live, caught.value.limit) == (1, 1)
    store.finish(first.id, status=OperationStatus.CANCELLED, now=at(1))
    assert new(store, max_live=1).status is OperationStatus.PENDING


def test_racing_finishes_have_one_winner(store: OperationStore) -> None:
    """Of many threads finishing the same operation, exactly one succeeds."""
    record = running(store)
    statuses = [OperationStatus.COMPLETED, OperationStatus.FAILED, OperationStatus.CANCELLED]
    outcomes = in_threads(
        6, lambda i: store.finish(record.id, status=statuses[i % 3], now=at(5 + i))
    )
    winners = [o for o in outcomes if isinstance(o, OperationRecord)]
    assert len(winners) == 1
    assert all(isinstance(o, InvalidTransition) for o in outcomes if o not in winners)
    assert store.get(record.id).status is winners[0].status


# --- settings and URLs ----------------------------------------------------------------


def test_database_url_for_sqlite_reads_path() -> None:
    """The SQLite URL points at KTRDR_DB_PATH."""
    url = database_url(DatabaseSettings(path=Path("var/lib/ktrdr.db")))
    assert url.drivername == "sqlite+pysqlite"
    assert url.database == "var/lib/ktrdr.db"


def test_database_url_for_postgresql_reads_every_field_and_hides_the_password() -> None:
    """Host, port, name, user and password reach the URL; its text shows no password."""
    settings = DatabaseSettings(
        engine=DbEngine.POSTGRESQL,
        host="db.internal",
        port=6543,
        name="ops",
        user="ktrdr_app",
        password=Secret("hunter2-very-secret"),
    )
    url = database_url(settings)
    assert (url.drivername, url.host, url.port, url.database, url.username) == (
        "postgresql+psycopg",
        "db.internal",
        6543,
        "ops",
        "ktrdr_app",
    )
    assert url.password == "hunter2-very-secret"
    assert "hunter2" not in str(url)
    assert "hunter2" not in repr(url)


def test_open_from_settings_creates_the_sqlite_directory(tmp_path: Path) -> None:
    """A SQLite path in a missing directory works: the directory is created."""
    settings = DatabaseSettings(path=tmp_path / "a" / "b" / "ops.db", echo=True)
    store = OperationStore.open(settings)
    try:
        record = new(store)
        assert store.get(record.id) == record
        assert (tmp_path / "a" / "b" / "ops.db").is_file()
        assert store.engine.echo is True
    finally:
        store.close()


def test_unusable_sqlite_directory_names_the_variable(tmp_path: Path) -> None:
    """A database path under a file is a ConfigurationError naming KTRDR_DB_PATH."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    settings = DatabaseSettings(path=blocker / "ops.db")
    with pytest.raises(ConfigurationError, match=r"KTRDR_DB_PATH=.*cannot create the database"):
        OperationStore.open(settings)


def test_opening_never_logs_the_password(
    store_factory: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The store logs where it connects, with the password masked."""
    url = store_factory.url
    if store_factory.backend == "postgres":
        url = url.set(password="pw-never-logged-123")
    with caplog.at_level(logging.INFO, logger="ktrdr.api.store"):
        store = store_factory.open(url)
    assert store.count_live() == 0
    assert "operations store:" in caplog.text
    assert "pw-never-logged-123" not in caplog.text


def test_schema_creation_is_idempotent(store: OperationStore) -> None:
    """Creating the schema again keeps the data (every backend start does it)."""
    record = new(store)
    store.create_schema()
    assert store.get(record.id) == record
    assert "operations" in sa.inspect(store.engine).get_table_names(schema=store_schema(store))


def store_schema(store: OperationStore) -> str | None:
    return None if store.engine.dialect.name == "sqlite" else store._metadata.schema


def test_unreachable_postgresql_names_the_variables_and_hides_the_password() -> None:
    """A server that cannot be reached is a StoreError naming the variables, no password."""
    settings = DatabaseSettings(
        engine=DbEngine.POSTGRESQL,
        host="127.0.0.1",
        port=1,
        name="ops",
        user="ktrdr",
        password=Secret("pw-not-in-errors-42"),
    )
    with pytest.raises(StoreError) as caught:
        OperationStore.open(settings)
    message = str(caught.value)
    assert message.startswith(
        "cannot open the operations database postgresql+psycopg://ktrdr:***@127.0.0.1:1/ops ("
    )
    assert message.endswith(
        "check KTRDR_DB_HOST, KTRDR_DB_PORT, KTRDR_DB_NAME, KTRDR_DB_USER, KTRDR_DB_PASSWORD"
    )
    assert "pw-not-in-errors-42" not in message


def test_unopenable_sqlite_file_names_the_path_variable(tmp_path: Path) -> None:
    """A database path that is a directory is a StoreError naming KTRDR_DB_PATH."""
    (tmp_path / "ops.db").mkdir()
    with pytest.raises(StoreError, match=r"cannot open the operations database .*KTRDR_DB_PATH"):
        OperationStore.open(DatabaseSettings(path=tmp_path / "ops.db"))


# --- traces -----------------------------------------------------------------------

TRACE_1 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_2 = "00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"


def test_an_attempts_trace_is_stored_and_a_resume_replaces_it(store: OperationStore) -> None:
    """The create request's traceparent is kept; a resumed attempt has its own (or none)."""
    record = new(store, trace_parent=TRACE_1)
    assert record.trace_parent == TRACE_1
    assert store.trace_parent(record.id) == TRACE_1
    store.finish(record.id, status=OperationStatus.FAILED, now=at(2), error="lost")
    assert store.requeue(record.id, trace_parent=TRACE_2).trace_parent == TRACE_2
    store.finish(record.id, status=OperationStatus.CANCELLED, now=at(3))
    assert store.requeue(record.id).trace_parent is None


def test_a_dispatch_records_a_trace_only_where_none_is(store: OperationStore) -> None:
    """set_trace_parent fills an empty trace once and never replaces one."""
    record = new(store)
    assert record.trace_parent is None
    assert store.set_trace_parent(record.id, TRACE_1) is True
    assert store.set_trace_parent(record.id, TRACE_2) is False
    assert store.get(record.id).trace_parent == TRACE_1
    with pytest.raises(OperationNotFound):
        store.trace_parent("no-such-operation")
