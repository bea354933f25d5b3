"""The retention loop: cleans at once, then every cleanup_interval, deleting what is due."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from ktrdr.api.operations import OperationsService
from ktrdr.api.retention import RetentionCleaner
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
