"""Heartbeat stamps: batched writes that survive a failed round and a shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.backend import Backend, make_backend, open_store

from ktrdr.protocol import HeartbeatRequest, Progress, WorkerStatus

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A backend with worker w1 running one training operation."""
    store = open_store(tmp_path)
    backend = make_backend(store)
    backend.register("w1")
    yield backend
    await backend.dispatcher.aclose()
    store.close()


async def beat(backend: Backend, operation_id: str, percent: float) -> None:
    """What the heartbeat route does: update the registry, then tell the reports."""
    previous = backend.registry.get("w1")
    request = HeartbeatRequest(
        status=WorkerStatus.BUSY,
        current_operation_id=operation_id,
        progress=Progress(percent=percent),
    )
    record = backend.registry.heartbeat("w1", request, now=backend.clock())
    await backend.reports.heartbeat(previous, record, request)


async def test_a_failed_write_keeps_the_stamps_for_the_next_round(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refusing one batch loses nothing: the next flush writes it."""
    operation = backend.service.create("training", {})
    backend.service.start(operation.id, worker_id="w1")
    backend.clock.advance(5)
    await beat(backend, operation.id, 30)
    real = backend.service.record_heartbeats

    def down(stamps: Any) -> None:
        raise OSError("database is locked")

    monkeypatch.setattr(backend.service, "record_heartbeats", down)
    with pytest.raises(OSError, match="locked"):
        await backend.reports.flush()
    monkeypatch.setattr(backend.service, "record_heartbeats", real)
    kept = backend.reports.unwritten
    written = await backend.reports.flush()

    record = backend.store.get(operation.id)
    assert (kept, written) == (1, 1)
    assert record.progress is not None
    assert record.progress["percent"] == 30
    assert record.last_reported_at == backend.clock()


async def test_newer_stamps_win_over_the_ones_kept_from_a_failed_write(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stamp noted during a failed write is not overwritten by the older, kept one."""
    operation = backend.service.create("training", {})
    backend.service.start(operation.id, worker_id="w1")
    await beat(backend, operation.id, 10)
    real = backend.service.record_heartbeats

    loop = asyncio.get_running_loop()

    def newer_arrives_then_fail(stamps: Any) -> None:
        # A heartbeat handled on the loop while this write runs in its thread.
        asyncio.run_coroutine_threadsafe(beat(backend, operation.id, 50), loop).result()
        raise OSError("database is locked")

    monkeypatch.setattr(backend.service, "record_heartbeats", newer_arrives_then_fail)
    with pytest.raises(OSError, match="locked"):
        await backend.reports.flush()
    monkeypatch.setattr(backend.service, "record_heartbeats", real)
    await backend.reports.flush()

    progress = backend.store.get(operation.id).progress
    assert progress is not None
    assert progress["percent"] == 50


async def test_stopping_writes_what_is_left(backend: Backend) -> None:
    """run_forever writes the last noted stamps when the app shuts down."""
    operation = backend.service.create("training", {})
    backend.service.start(operation.id, worker_id="w1")
    stop = asyncio.Event()
    stop.set()  # shutting down before the loop even ran a round
    await beat(backend, operation.id, 70)

    await backend.reports.run_forever(stop)

    progress = backend.store.get(operation.id).progress
    assert backend.reports.unwritten == 0
    assert progress is not None
    assert progress["percent"] == 70
