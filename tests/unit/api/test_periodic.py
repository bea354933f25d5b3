"""run_periodically: the housekeeping loop survives failing rounds and stops on cancel."""

from __future__ import annotations

import asyncio
import datetime
import logging

import pytest

from ktrdr.api.periodic import run_periodically

pytestmark = pytest.mark.anyio


async def test_runs_the_job_after_each_interval_and_survives_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing round is logged and the loop continues; sleeps use the interval."""
    sleeps: list[float] = []
    rounds: list[int] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 3:
            raise asyncio.CancelledError

    async def job() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 2:
            raise RuntimeError("disk full")

    with pytest.raises(asyncio.CancelledError):
        await run_periodically("cleanup", datetime.timedelta(seconds=2), job, sleep=fake_sleep)

    assert sleeps == [2.0, 2.0, 2.0, 2.0]
    assert rounds == [0, 1, 2]
    assert "periodic job cleanup failed" in caplog.text
    assert "disk full" in caplog.text
    assert caplog.records[0].levelno == logging.ERROR
