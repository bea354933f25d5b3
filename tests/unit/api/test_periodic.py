"""The periodic loop: rounds, intervals, stopping, surviving a failing round."""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading

import pytest

from ktrdr.api.periodic import run_until_stopped, wait_or_stop


def test_wait_or_stop_returns_true_when_the_event_is_set() -> None:
    """A set stop event ends the wait with True."""

    async def scenario() -> bool:
        stop = asyncio.Event()
        stop.set()
        return await wait_or_stop(stop, 3600)

    assert asyncio.run(scenario()) is True


def test_wait_or_stop_returns_false_on_timeout() -> None:
    """Without a stop, the wait ends with False after its timeout (zero here)."""
    assert asyncio.run(wait_or_stop(asyncio.Event(), 0)) is False


def test_wait_or_stop_wakes_when_the_event_is_set_later() -> None:
    """Setting the event while waiting ends a long wait at once."""

    async def scenario() -> bool:
        stop = asyncio.Event()
        waiter = asyncio.create_task(wait_or_stop(stop, 3600))
        await asyncio.sleep(0)
        stop.set()
        return await waiter

    assert asyncio.run(scenario()) is True


def test_failing_round_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in one round is logged with the job's name; later rounds still run."""
    calls: list[int] = []

    def job() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("database is locked")

    waits: list[float] = []

    async def wait(stop: asyncio.Event, seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 3:
            stop.set()
        return stop.is_set()

    with caplog.at_level(logging.ERROR, logger="ktrdr.api.periodic"):
        rounds = asyncio.run(
            run_until_stopped(
                "nightly job",
                job,
                interval=datetime.timedelta(minutes=2),
                stop_event=asyncio.Event(),
                wait=wait,
            )
        )
    assert rounds == 3
    assert calls == [0, 1, 2]
    assert waits == [120.0, 120.0, 120.0]
    assert "nightly job failed; next attempt in 120s" in caplog.text
    assert "database is locked" in caplog.text


def test_a_coroutine_job_runs_on_the_event_loop_thread() -> None:
    """An async job is awaited on the loop (no thread hop); a plain one runs in a thread."""
    seen: dict[str, int] = {}

    async def on_loop() -> None:
        seen["async"] = threading.get_ident()

    def blocking() -> None:
        seen["sync"] = threading.get_ident()

    async def stop_at_once(stop: asyncio.Event, seconds: float) -> bool:
        stop.set()
        return True

    async def scenario() -> int:
        for job in (on_loop, blocking):
            await run_until_stopped(
                "job",
                job,
                interval=datetime.timedelta(seconds=1),
                stop_event=asyncio.Event(),
                wait=stop_at_once,
            )
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())

    assert seen["async"] == loop_thread
    assert seen["sync"] != loop_thread
