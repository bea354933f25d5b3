"""The retention loop: cleans at once, then every cleanup_interval, deleting what is due."""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from ktrdr.api.operations import OperationsService
from ktrdr.api.retention import RetentionCleaner, RetentionRound
from ktrdr.api.store import OperationNotFound, OperationStore
from ktrdr.config import OperationsSettings
from ktrdr.protocol import OperationStatus

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)


class FakeWait:
    """Stands in for the timed wait: records each interval, stops after ``rounds``."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.intervals: list[float] = []

    async def __call__(self, stop_event: asyncio.Event, seconds: float) -> bool:
        self.intervals.append(seconds)
        if len(self.intervals) >= self.rounds:
            stop_event.set()
        return stop_event.is_set()


def _service(store: OperationStore, **settings: Any) -> OperationsService:
    return OperationsService(
        store=store, settings=OperationsSettings(**settings), clock=lambda: NOW
    )


def _finished_days_ago(service: OperationsService, store: OperationStore, days: float) -> str:
    view = service.create("training", {})
    service.start(view.id, worker_id="w")
    when = NOW - datetime.timedelta(days=days)
    store.finish(view.id, status=OperationStatus.COMPLETED, now=when, result={})
    return view.id


@pytest.mark.parametrize("interval_s", [60, 7200])
def test_retention_loop_runs_every_cleanup_interval(store: OperationStore, interval_s: int) -> None:
    """The retention loop cleans at once, then waits ``cleanup_interval`` between rounds."""
    interval = datetime.timedelta(seconds=interval_s)
    service = _service(store, retention_days=7, cleanup_interval=interval)
    old = _finished_days_ago(service, store, 30)
    recent = _finished_days_ago(service, store, 1)
    wait = FakeWait(rounds=3)
    rounds = asyncio.run(RetentionCleaner(service=service, wait=wait).run_forever(asyncio.Event()))
    assert rounds == 3
    assert wait.intervals == [float(interval_s)] * 3
    with pytest.raises(OperationNotFound):
        store.get(old)
    assert store.get(recent).status is OperationStatus.COMPLETED


def test_retention_run_once(store: OperationStore) -> None:
    """One round deletes what is due and reports the count."""
    service = _service(store, retention_days=1)
    _finished_days_ago(service, store, 2)
    _finished_days_ago(service, store, 3)
    assert RetentionCleaner(service=service).run_once() == 2


class Transactions:
    """Counts, per committed transaction, the operations rows its DELETEs removed."""

    def __init__(self, engine: sa.Engine) -> None:
        self.deleted_per_commit: list[int] = []
        self._pending = 0
        self._engine = engine

    def __enter__(self) -> Transactions:
        sa.event.listen(self._engine, "after_cursor_execute", self._executed)
        sa.event.listen(self._engine, "commit", self._committed)
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self._engine, "after_cursor_execute", self._executed)
        sa.event.remove(self._engine, "commit", self._committed)

    def _executed(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split()
        if words[:2] == ["DELETE", "FROM"] and words[2].strip('"').endswith("operations"):
            self._pending += cursor.rowcount

    def _committed(self, conn: Any) -> None:
        if self._pending:
            self.deleted_per_commit.append(self._pending)
        self._pending = 0


class FakePause:
    """Stands in for the pause between batches: records each, stops when told to."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.pauses: list[float] = []
        self.stop_after = stop_after

    async def __call__(self, stop_event: asyncio.Event, seconds: float) -> bool:
        self.pauses.append(seconds)
        return self.stop_after is not None and len(self.pauses) >= self.stop_after


def test_a_round_deletes_in_batches_each_its_own_short_transaction(
    store: OperationStore, caplog: pytest.LogCaptureFixture
) -> None:
    """With KTRDR_OPS_CLEANUP_BATCH_SIZE=3, eight expired operations go in batches of
    3, 3 and 2, each committed on its own, with a pause after each full batch; the
    log line names the batches and the variable; recent ones stay."""
    service = _service(store, retention_days=7, cleanup_batch_size=3)
    expired = [_finished_days_ago(service, store, 30 + i) for i in range(8)]
    recent = _finished_days_ago(service, store, 1)
    pause = FakePause()
    cleaner = RetentionCleaner(service=service, pause=pause)

    with Transactions(store.engine) as transactions, caplog.at_level(logging.INFO):
        done = asyncio.run(cleaner.run_round(asyncio.Event()))

    assert done == RetentionRound(batches=(3, 3, 2), batch_size=3)
    assert done.deleted == 8
    assert transactions.deleted_per_commit == [3, 3, 2]
    assert len(pause.pauses) == 2
    assert "deleted 8 operations" in caplog.text
    assert "in 3 batches of at most 3 (KTRDR_OPS_CLEANUP_BATCH_SIZE)" in caplog.text
    for operation_id in expired:
        with pytest.raises(OperationNotFound):
            store.get(operation_id)
    assert store.get(recent).status is OperationStatus.COMPLETED


def test_the_oldest_expired_operations_go_first(store: OperationStore) -> None:
    """A batch takes the operations that finished longest ago."""
    service = _service(store, retention_days=7, cleanup_batch_size=2)
    by_age = {days: _finished_days_ago(service, store, days) for days in (10, 40, 20, 30)}

    assert service.cleanup_batch(service.retention_cutoff()) == 2

    remaining = {r.id for r in store.list().items}
    assert remaining == {by_age[10], by_age[20]}


def test_stopping_ends_a_round_between_batches(store: OperationStore) -> None:
    """Shutdown during a long round stops it after the batch in progress."""
    service = _service(store, retention_days=7, cleanup_batch_size=2)
    for i in range(6):
        _finished_days_ago(service, store, 30 + i)
    cleaner = RetentionCleaner(service=service, pause=FakePause(stop_after=1))

    done = asyncio.run(cleaner.run_round(asyncio.Event()))

    assert done.batches == (2,)
    assert store.list().total == 4


def test_run_once_deletes_every_batch(store: OperationStore) -> None:
    """run_once (no pauses) goes on until a batch comes back short."""
    service = _service(store, retention_days=7, cleanup_batch_size=2)
    for i in range(5):
        _finished_days_ago(service, store, 30 + i)

    assert RetentionCleaner(service=service).run_once() == 5
    assert store.list().total == 0
