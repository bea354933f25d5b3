"""A worker whose id another live worker holds: an ERROR naming KTRDR_WORKER_ID on every
refused attempt, retries until the backend accepts it, no unregister of the other.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from support.worker_fakes import FakeBackend, FakeTime, make_worker

from ktrdr.errors import WorkerIdConflict

pytestmark = pytest.mark.anyio


class HeldElsewhere(FakeBackend):
    """Answers ``conflicts`` registrations with the backend's 409, then accepts."""

    def __init__(self, conflicts: int) -> None:
        super().__init__()
        self.conflicts = conflicts

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/workers/register" and self.conflicts > 0:
            self.conflicts -= 1
            self.calls.append((request.method, request.url.path, None))
            error = WorkerIdConflict("training-test-5003", endpoint_url="http://127.0.0.1:9/other")
            return httpx.Response(409, json={"error": "worker_id_conflict", "detail": str(error)})
        return super().__call__(request)


async def test_every_refused_attempt_is_an_error_naming_the_variable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each 409 is logged at ERROR naming KTRDR_WORKER_ID; registration goes on until it works."""
    backend = HeldElsewhere(conflicts=12)
    worker = make_worker(backend, fake_time=FakeTime())

    with caplog.at_level(logging.INFO, logger="ktrdr.workers.worker"):
        registered = await worker.register_until_success()

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert registered is True
    assert worker.registered is True
    assert len(errors) == 12
    for attempt, message in enumerate(errors, start=1):
        assert message.startswith(
            f"registration refused (attempt {attempt}): KTRDR_WORKER_ID=training-test-5003 is "
            "held by another live worker at another endpoint; give each worker its own "
            "KTRDR_WORKER_ID. This worker takes no work until the backend accepts it"
        )
        assert "http://127.0.0.1:9/other" in message
    assert backend.paths().count("POST /api/v1/workers/register") == 13


async def test_stopping_a_worker_that_never_registered_does_not_unregister_the_id() -> None:
    """The refused worker holds no credential: its shutdown sends no DELETE for the id."""
    backend = HeldElsewhere(conflicts=1000)
    fake = FakeTime()
    worker = make_worker(backend, fake_time=fake)
    original_sleep = fake.sleep

    async def sleep_then_stop(seconds: float) -> None:
        await original_sleep(seconds)
        if len(fake.sleeps) == 3:
            worker.request_shutdown()

    worker._sleep = sleep_then_stop
    await worker.register_until_success()
    await worker.stop()

    assert not any(method == "DELETE" for method, _, _ in backend.calls)
