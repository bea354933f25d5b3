"""The periodic-loop helpers behind the backend's background jobs.

Liveness, dispatch, heartbeat stamps, orphan detection and retention each run as
:func:`run_until_stopped` over one round of their own; this module holds only the
loop and its waits, never a job.

A job runs, then the loop waits ``interval`` or until the stop event is set, whichever
comes first, so the app lifespan stops it promptly by setting the event. The wait is
injected: unit tests pass a fake that returns at once (and records the interval), so
they drive single rounds without real time passing. A failing round is logged with its
traceback and the loop carries on; one bad round must not end housekeeping for the
life of the process. A round failed by a store outage is logged at DEBUG only: the
outage itself is logged once, by :class:`~ktrdr.api.store_health.StoreHealth`.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ktrdr.api.store_health import is_store_outage

__all__ = ["Wait", "run_until_stopped", "wait_or_stop", "wait_or_wake"]

logger = logging.getLogger(__name__)

#: ``wait(stop_event, seconds)``: True when the event was set (stop), False on timeout.
Wait = Callable[[asyncio.Event, float], Awaitable[bool]]


async def wait_or_stop(stop_event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop_event``; True when it was set."""
    try:
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        return False
    return True


def wait_or_wake(wake: asyncio.Event) -> Wait:
    """A :data:`Wait` that also ends early (returning False) once ``wake`` is set.

    For loops that should run a round as soon as there is work, and on a tick anyway.
    The caller clears ``wake`` when its round starts.
    """

    async def wait(stop_event: asyncio.Event, seconds: float) -> bool:
        waiters = {
            asyncio.ensure_future(stop_event.wait()),
            asyncio.ensure_future(wake.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return stop_event.is_set()

    return wait


async def run_until_stopped(
    name: str,
    job: Callable[[], Any],
    *,
    interval: datetime.timedelta,
    stop_event: asyncio.Event,
    wait: Wait = wait_or_stop,
) -> int:
    """Run ``job`` now and every ``interval`` until stopped.

    A plain function is blocking work (the store) and runs in a thread; a coroutine
    function runs on the event loop (work on loop-only state, such as the registry).
    Returns the number of rounds run (for tests and the shutdown log line).
    """
    seconds = interval.total_seconds()
    on_loop = inspect.iscoroutinefunction(job)
    rounds = 0
    while not stop_event.is_set():
        try:
            if on_loop:
                await job()
            else:
                await asyncio.to_thread(job)
        except Exception as exc:
            if is_store_outage(exc):
                logger.debug("%s skipped: the operations store is unavailable", name)
            else:
                logger.exception("%s failed; next attempt in %gs", name, seconds)
        rounds += 1
        if await wait(stop_event, seconds):
            break
    return rounds
