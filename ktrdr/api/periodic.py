"""Run a backend housekeeping job every interval until cancelled.

Used from the app lifespan (liveness sweeps; orphan detection and retention reuse it).
A failing round is logged with its traceback and the loop carries on: one bad round
must not silently stop housekeeping for the life of the process.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


async def run_periodically(
    name: str,
    interval: datetime.timedelta,
    job: Callable[[], Awaitable[None]],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Await ``job()`` every ``interval`` (after each round) until the task is cancelled."""
    seconds = interval.total_seconds()
    while True:
        await sleep(seconds)
        try:
            await job()
        except Exception:
            logger.exception("periodic job %s failed; retrying in %.3gs", name, seconds)


__all__ = ["run_periodically"]
