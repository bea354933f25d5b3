"""The SQLite store's hot transactions below SQLAlchemy's Connection (``store_driver``).

Each transition run on the pooled DB-API connection must give exactly what the same
transition gives through SQLAlchemy (the records, the refusals), roll back whole when
a statement fails, and still report an outage as one. The reference store is the
same store with a ``before_cursor_execute`` listener on its engine, the condition
under which the store keeps to SQLAlchemy (as when tracing instruments the engine).
Statements run on the driver path reach ``after_cursor_execute`` listeners without an
execution context; that tells the tests which path ran (and ``executemany``, that the
series upsert ran there).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from support.tmpfs import fill, small_tmpfs

from ktrdr.api.store import (
    InvalidTransition,
    LiveLimitReached,
    OperationNotFound,
    OperationStore,
    StaleAttempt,
)
from ktrdr.api.store_health import StoreHealth, is_store_outage
from ktrdr.protocol import OperationStatus, OperationType

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 5, 1, 8, 30, 15, 123456, tzinfo=UTC)
PROGRESS = {"percent": 12.5, "message": "epoch 2", "details": {"epoch": 2, "loss": [0.7, 0.5]}}


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


class Watched:
    """A SQLite store and the execution contexts its engine's statements reported."""

    def __init__(self, path: Path, *, driver: bool) -> None:
        self.store = OperationStore.open_url(f"sqlite+pysqlite:///{path}")
        self.contexts: list[Any] = []
        #: Whether each statement with no execution context was an executemany.
        self.driver_many: list[bool] = []
        engine = self.store.engine
        if not driver:
            sa.event.listen(engine, "before_cursor_execute", lambda *_: None)
        sa.event.listen(engine, "after_cursor_execute", self._executed)

    def _executed(self, *args: Any) -> None:
        self.contexts.append(args[4])
        if args[4] is None:
            self.driver_many.append(args[5])

    @property
    def on_driver(self) -> int:
        """Statements run on the driver path since the last :meth:`clear`."""
        return sum(context is None for context in self.contexts)

    @property
    def upserts_on_driver(self) -> int:
        """Series upserts (executemany) run on the driver path since :meth:`clear`."""
        return sum(self.driver_many)

    def clear(self) -> None:
        self.contexts.clear()
        self.driver_many.clear()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Watched, Watched]]:
    """The same store twice: on the driver path, and kept to SQLAlchemy."""
    fast = Watched(tmp_path / "driver.db", driver=True)
    slow = Watched(tmp_path / "sqlalchemy.db", driver=False)
    yield fast, slow
    fast.store.close()
    slow.store.close()


def outcome(call: Callable[[], Any]) -> Any:
    """What ``call`` returns, or the type and message of what it raises."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001  # compared, not handled
        return (type(exc), str(exc))


def life(store: OperationStore) -> list[Any]:
    """Every hot transition and its refusals, on fixed ids; what each gave."""
    results: list[Any] = []

    def run(call: Callable[[], Any]) -> None:
        results.append(outcome(call))

    def create(name: str, **kw: Any) -> None:
        params = {"seed": 1, "nested": {"a": [1, 2.5, None]}, "text": "é"}
        run(
            lambda: store.create(
                operation_type=OperationType.TRAINING,
                parameters=params,
                now=at(0),
                operation_id=name,
                **kw,
            )
        )

    create("plain")
    create("timed", timeout_s=30, trace_parent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    create("bounded", max_live=10)
    create("refused", max_live=2)  # LiveLimitReached, rolled back
    create("plain")  # DuplicateOperation
    run(lambda: store.get("refused"))  # OperationNotFound: nothing half-written
    run(lambda: store.mark_running("plain", worker_id="w-1", now=at(1)))
    run(lambda: store.mark_running("timed", worker_id="w-2", now=at(1)))  # with its deadline
    run(lambda: store.mark_running("plain", worker_id="w-1", now=at(2)))  # InvalidTransition
    run(lambda: store.mark_running("missing", worker_id="w-1", now=at(2)))  # OperationNotFound
    run(lambda: store.update_progress("plain", now=at(3)))  # only "still running"
    run(lambda: store.update_progress("plain", now=at(4), progress=PROGRESS, worker_id="w-1"))
    run(
        lambda: store.update_progress(
            "timed", now=at(4), progress={"percent": 1.0}, worker_id="w-2", attempt=1
        )
    )
    run(lambda: store.update_progress("plain", now=at(5), worker_id="w-9"))  # StaleAttempt
    run(lambda: store.update_progress("bounded", now=at(5)))  # InvalidTransition (pending)
    run(lambda: store.release("timed", worker_id="w-2", attempt=1))
    run(lambda: store.mark_running("timed", worker_id="w-3", now=at(6)))
    run(
        lambda: store.finish(
            "plain",
            status=OperationStatus.COMPLETED,
            now=at(7),
            result={"final_loss": 0.25, "curve": [1, 2]},
            worker_id="w-1",
            attempt=1,
        )
    )
    run(lambda: store.finish("plain", status=OperationStatus.FAILED, now=at(8), error="late"))
    run(lambda: store.finish("timed", status=OperationStatus.FAILED, now=at(8), error="boom"))
    run(lambda: store.finish("bounded", status=OperationStatus.CANCELLED, now=at(8)))
    run(lambda: store.requeue("timed"))
    run(lambda: store.mark_running("timed", worker_id="w-4", now=at(9)))
    run(lambda: [store.get(name) for name in ("plain", "timed", "bounded")])
    return results


def test_every_hot_transition_gives_what_sqlalchemy_gives(pair: tuple[Watched, Watched]) -> None:
    """Records (JSON, aware UTC datetimes, enums, booleans) and refusals are the same."""
    fast, slow = pair

    on_driver = life(fast.store)
    through_sqlalchemy = life(slow.store)

    assert on_driver == through_sqlalchemy
    kinds = {type(item) if not isinstance(item, tuple) else item[0] for item in on_driver}
    assert {LiveLimitReached, InvalidTransition, StaleAttempt, OperationNotFound} <= kinds
    plain = on_driver[-1][0]
    assert plain.result == {"final_loss": 0.25, "curve": [1, 2]}
    assert plain.progress == PROGRESS
    assert plain.finished_at == at(7)
    assert plain.finished_at.tzinfo is UTC
    timed = on_driver[-2]
    assert timed.deadline_at == at(9 + 30)
    assert fast.on_driver > 20
    assert slow.on_driver == 0


def test_a_statement_failing_midway_leaves_nothing_written(
    pair: tuple[Watched, Watched],
) -> None:
    """The claim's second statement (the deadline) fails in the database: the claim
    before it is rolled back too, and the error is SQLAlchemy's, as without the
    driver path; once the cause is gone, the claim works (on the driver path again).
    """
    errors: dict[str, list[Any]] = {"fast": [], "slow": []}
    for name, watched in zip(("fast", "slow"), pair, strict=True):
        store = watched.store
        sa.event.listen(store.engine, "handle_error", lambda ctx, n=name: errors[n].append(ctx))
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TRIGGER no_deadlines BEFORE UPDATE OF deadline_at ON operations"
                " WHEN NEW.deadline_at IS NOT NULL BEGIN SELECT RAISE(ABORT, 'no deadlines'); END"
            )
        store.create(
            operation_type=OperationType.TRAINING,
            parameters={},
            now=at(0),
            operation_id="op",
            timeout_s=5,
        )
    fast = pair[0]

    refused = [
        outcome(lambda w=w: w.store.mark_running("op", worker_id="w-1", now=at(1))) for w in pair
    ]
    after = [w.store.get("op") for w in pair]
    for watched in pair:
        with watched.store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER no_deadlines")
    fast.clear()
    claimed = fast.store.mark_running("op", worker_id="w-1", now=at(2))

    assert refused[0] == refused[1]
    assert refused[0][0] is sa.exc.IntegrityError
    assert "no deadlines" in refused[0][1]
    assert after[0] == after[1]
    assert after[0].status is OperationStatus.PENDING
    assert after[0].attempt == 0
    assert after[0].worker_id is None
    # SQLAlchemy ran it again and reported the failure once, like the reference store.
    assert len(errors["fast"]) == len(errors["slow"]) == 1
    assert claimed.status is OperationStatus.RUNNING
    assert claimed.deadline_at == at(2 + 5)
    assert fast.on_driver == 2  # the claim and its deadline


def test_a_refused_creation_is_rolled_back_on_the_driver_path(
    pair: tuple[Watched, Watched],
) -> None:
    """The live limit is checked after the insert: the insert is undone, the
    connection is left clean for the next transaction."""
    fast, _ = pair
    store = fast.store
    kept = store.create(operation_type=OperationType.TRAINING, parameters={}, now=at(0))
    fast.clear()

    with pytest.raises(LiveLimitReached):
        store.create(operation_type=OperationType.TRAINING, parameters={}, now=at(1), max_live=1)
    after = store.create(
        operation_type=OperationType.BACKTEST, parameters={}, now=at(2), max_live=2
    )

    assert store.count_live() == 2
    assert {r.id for r in store.pending()} == {kept.id, after.id}
    assert fast.on_driver == 4  # insert and count, twice


def test_concurrent_transitions_share_the_connection_or_use_sqlalchemy(
    pair: tuple[Watched, Watched],
) -> None:
    """Threads creating and claiming at once: every operation is written exactly once."""
    store = pair[0].store
    failures: list[BaseException] = []

    def work(worker: str) -> None:
        try:
            for step in range(25):
                record = store.create(
                    operation_type=OperationType.TRAINING, parameters={"step": step}, now=at(0)
                )
                store.mark_running(record.id, worker_id=worker, now=at(1))
                store.update_progress(record.id, now=at(2), progress={"step": step})
        except BaseException as exc:  # noqa: BLE001  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(f"w-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    running = store.running()
    assert len(running) == 100
    assert {r.progress["step"] for r in running if r.progress} == set(range(25))  # type: ignore[index]


#: A final report's series: several names, duplicates (the last wins), a step past
#: 32 bits, integers and negative values (stored as floats).
SERIES = {
    "loss": [(1, 0.69), (2, 0.5), (2, 0.45), (3_000_000_000, -1.25e-7)],
    "val_loss": [(1, 1), (2, -3)],
}


def series_life(store: OperationStore) -> list[Any]:
    """Finishes carrying series points, accepted and refused, and handoffs with them;
    what each gave and every operation's stored points."""
    results: list[Any] = []

    def run(call: Callable[[], Any]) -> None:
        results.append(outcome(call))

    def running(name: str, worker: str) -> None:
        store.create(
            operation_type=OperationType.TRAINING, parameters={}, now=at(0), operation_id=name
        )
        store.mark_running(name, worker_id=worker, now=at(1))

    def finish(name: str, worker: str, **kw: Any) -> None:
        run(
            lambda: store.finish(
                name,
                status=OperationStatus.COMPLETED,
                now=at(5),
                worker_id=worker,
                attempt=1,
                result={"loss": 0.45},
                series=SERIES,
                **kw,
            )
        )

    def finish_and_claim(name: str, worker: str, attempt: int = 1) -> None:
        run(
            lambda: store.finish_and_claim(
                name,
                status=OperationStatus.COMPLETED,
                now=at(6),
                worker_id=worker,
                attempt=attempt,
                next_type=OperationType.TRAINING,
                result={"loss": 0.45},
                series={**SERIES, "lr": [(1, 0.001)]},
            )
        )

    running("finished", "w-1")
    finish("finished", "w-1")
    running("cancelled", "w-2")
    run(lambda: store.finish("cancelled", status=OperationStatus.CANCELLED, now=at(2)))
    finish("cancelled", "w-2")  # InvalidTransition, its points kept
    finish("cancelled", "w-9")  # InvalidTransition, not its worker: nothing written
    running("handed", "w-3")
    store.create(
        operation_type=OperationType.TRAINING, parameters={}, now=at(3), operation_id="next"
    )
    finish_and_claim("handed", "w-3")  # finished, "next" claimed by w-3
    finish_and_claim("next", "w-3", attempt=1)  # finished, nothing left to claim
    running("stale", "w-4")
    finish_and_claim("stale", "w-5")  # StaleAttempt: nothing written
    names = ("finished", "cancelled", "handed", "next", "stale")
    run(lambda: [store.series(name) for name in names])
    run(lambda: [store.get(name) for name in names])
    return results


def test_series_points_written_with_a_finish_are_what_sqlalchemy_writes(
    pair: tuple[Watched, Watched],
) -> None:
    """finish and finish_and_claim with series points: the same records, refusals and
    stored points on both paths, the upserts run on the driver path."""
    fast, slow = pair

    on_driver = series_life(fast.store)
    through_sqlalchemy = series_life(slow.store)

    assert on_driver == through_sqlalchemy
    stored = {
        name: record.points
        for name, record in zip(
            ("finished", "cancelled", "handed", "next", "stale"), on_driver[-2], strict=True
        )
    }
    written = {
        "loss": [(1, 0.69), (2, 0.45), (3_000_000_000, -1.25e-7)],
        "val_loss": [(1, 1.0), (2, -3.0)],
    }
    assert stored == {
        "finished": written,
        "cancelled": written,
        "handed": {**written, "lr": [(1, 0.001)]},
        "next": {**written, "lr": [(1, 0.001)]},
        "stale": {},
    }
    assert all(
        isinstance(y, float)
        for points in stored.values()
        for series in points.values()
        for _, y in series
    )
    handed, claimed = on_driver[4]
    assert handed.status is OperationStatus.COMPLETED
    assert (claimed.id, claimed.worker_id) == ("next", "w-3")
    assert on_driver[5][0].status is OperationStatus.COMPLETED
    assert on_driver[5][1] is None
    assert [item[0] for item in on_driver[2:4]] == [InvalidTransition, InvalidTransition]
    assert on_driver[6][0] is StaleAttempt
    assert fast.upserts_on_driver == 4  # finished, cancelled, handed, next
    assert slow.on_driver == 0


def _refuse_points(store: OperationStore) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER no_points BEFORE INSERT ON operation_series"
            " BEGIN SELECT RAISE(ABORT, 'no points'); END"
        )


def test_a_failing_series_write_undoes_the_finish_and_the_claim(
    pair: tuple[Watched, Watched],
) -> None:
    """The upsert fails in the database after the finish and the claim were written on
    the driver path: all of it is rolled back, SQLAlchemy runs it again and reports
    SQLAlchemy's error, as without the driver path; once the cause is gone, the
    handoff works on the driver path, its points with it."""
    errors: dict[str, list[Any]] = {"fast": [], "slow": []}
    for name, watched in zip(("fast", "slow"), pair, strict=True):
        store = watched.store
        sa.event.listen(store.engine, "handle_error", lambda ctx, n=name: errors[n].append(ctx))
        _refuse_points(store)
        for op in ("first", "waiting"):
            store.create(
                operation_type=OperationType.TRAINING, parameters={}, now=at(0), operation_id=op
            )
        store.mark_running("first", worker_id="w-1", now=at(1))
    fast = pair[0]
    fast.clear()

    def handoff(store: OperationStore, seconds: float) -> Any:
        return store.finish_and_claim(
            "first",
            status=OperationStatus.COMPLETED,
            now=at(seconds),
            worker_id="w-1",
            attempt=1,
            next_type=OperationType.TRAINING,
            result={"loss": 0.1},
            series={"loss": [(1, 0.5), (2, 0.1)]},
        )

    refused = [outcome(lambda w=w: handoff(w.store, 2)) for w in pair]
    tried_on_driver = fast.on_driver
    after = [[(w.store.get(op), w.store.series(op)) for op in ("first", "waiting")] for w in pair]
    for watched in pair:
        with watched.store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER no_points")
    fast.clear()
    finished, claimed = handoff(fast.store, 3)

    assert refused[0] == refused[1]
    assert refused[0][0] is sa.exc.IntegrityError
    assert "no points" in refused[0][1]
    assert tried_on_driver == 4  # finish, claim (oldest, running, deadline); upsert failed
    assert after[0] == after[1]
    (first, first_points), (waiting, _) = after[0]
    assert (first.status, first.result, first.finished_at) == (OperationStatus.RUNNING, None, None)
    assert first_points.points == {}
    assert (waiting.status, waiting.worker_id) == (OperationStatus.PENDING, None)
    # SQLAlchemy ran it again and reported the failure once, like the reference store.
    assert len(errors["fast"]) == len(errors["slow"]) == 1
    assert finished.status is OperationStatus.COMPLETED
    assert claimed is not None
    assert claimed.id == "waiting"
    assert fast.store.series("first").points == {"loss": [(1, 0.5), (2, 0.1)]}
    assert fast.upserts_on_driver == 1


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs that the test fills up (CI runs the suite as root)."""
    with small_tmpfs(tmp_path / "disk", "1m") as mount:
        yield mount


def test_a_full_disk_is_still_an_outage_and_its_end_is_seen(full_disk: Path) -> None:
    """Progress written on a full disk: SQLAlchemy's outage error, the health watch
    marks the store unavailable; space back: the next update succeeds on the driver
    path and the health watch sees the store available again."""
    watched = Watched(full_disk / "ops.db", driver=True)
    store = watched.store
    health = StoreHealth(engine=store.engine, clock=lambda: datetime.datetime.now(UTC))
    try:
        record = store.create(operation_type=OperationType.TRAINING, parameters={}, now=at(0))
        store.mark_running(record.id, worker_id="w-1", now=at(1))
        ballast = fill(full_disk)
        failures = []
        for step in range(40):
            big = {"percent": 1.0, "message": f"{step}" + "x" * 60_000}
            try:
                store.update_progress(record.id, now=at(2 + step), progress=big)
            except Exception as exc:  # noqa: BLE001  # the outage under test
                failures.append(exc)
                break
        down = health.available
        ballast.unlink()
        watched.clear()
        back = store.update_progress(record.id, now=at(100), progress={"percent": 50.0})
    finally:
        health.close()
        store.close()

    assert failures, "the disk never filled up"
    assert isinstance(failures[0], sa.exc.OperationalError)
    assert is_store_outage(failures[0])
    assert "full" in str(failures[0])
    assert not down
    assert back.progress == {"percent": 50.0}
    assert watched.on_driver == 1
    assert health.available


def test_a_store_logging_its_sql_keeps_to_sqlalchemy(tmp_path: Path) -> None:
    """With ``echo`` (KTRDR_DB_ECHO) every statement is logged by SQLAlchemy, so none
    runs on the driver path."""
    store = OperationStore.open_url(f"sqlite+pysqlite:///{tmp_path / 'ops.db'}", echo=True)
    contexts: list[Any] = []
    sa.event.listen(store.engine, "after_cursor_execute", lambda *args: contexts.append(args[4]))
    try:
        record = store.create(operation_type=OperationType.TRAINING, parameters={}, now=at(0))
        store.mark_running(record.id, worker_id="w-1", now=at(1))
    finally:
        store.close()
    assert len(contexts) == 2
    assert None not in contexts
