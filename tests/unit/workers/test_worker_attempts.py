"""A worker's attempts: the number on the wire, and a superseded attempt killed at once."""

from __future__ import annotations

import logging
import os

import pytest
from support.scripted_jobs import ScriptedJob
from support.worker_fakes import FakeBackend, make_worker, start_request, wait_for

from ktrdr.errors import UnknownOperation
from ktrdr.protocol import WorkerStatus
from ktrdr.workers.worker import Worker

pytestmark = pytest.mark.anyio


def alive(pid: int) -> bool:
    """True while process ``pid`` exists (and is not a zombie we already reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def running_job(backend: FakeBackend, **start: object) -> tuple[Worker, ScriptedJob, int]:
    """A registered worker running a scripted job that ignores stop requests; its pid."""
    job = ScriptedJob(behaviour="ignore_stop")
    worker = make_worker(backend, job=job)
    await worker.register_until_success()
    await worker.start_operation(start_request(**start))
    await wait_for(job.started.is_set)
    pid = worker.health()["job_pid"]
    assert isinstance(pid, int)
    return worker, job, pid


async def test_heartbeats_carry_the_attempt_the_start_request_named() -> None:
    """Attempt 3 in the start request: the heartbeat and the report say attempt 3."""
    backend = FakeBackend()
    job = ScriptedJob()
    worker = make_worker(backend, job=job)
    await worker.register_until_success()
    await worker.start_operation(start_request(attempt=3, retry=True))
    await wait_for(job.started.is_set)

    await worker.heartbeat_once()
    job.release.set()
    await wait_for(lambda: backend.reports())

    beats = [body for _, path, body in backend.calls if path.endswith("/heartbeat")]
    assert (beats[0]["current_operation_id"], beats[0]["attempt"]) == ("op-1", 3)
    assert backend.reports()[0]["attempt"] == 3
    assert worker.health()["attempt"] is None  # idle again


async def test_a_stale_attempt_answer_kills_the_job_at_once_and_reports_nothing() -> None:
    """A heartbeat answered 409 stale_attempt: the job (which ignores stops) is killed
    without waiting for the stop grace, nothing is reported, the next heartbeat is idle.
    """
    backend = FakeBackend()
    worker, job, pid = await running_job(backend)
    backend.stale.add("op-1")

    await worker.heartbeat_once()
    await wait_for(lambda: worker.status is WorkerStatus.IDLE, timeout_s=5)
    await worker.heartbeat_once()

    await wait_for(lambda: not alive(pid), timeout_s=5)
    assert backend.reports() == []
    assert job.seen_stop is None  # killed, never asked to stop (and save a checkpoint)
    beats = [body for _, path, body in backend.calls if path.endswith("/heartbeat")]
    assert beats[-1] == {"status": "idle", "current_operation_id": None, "progress": None}


async def test_a_superseded_cancel_kills_the_job_and_other_attempts_are_left_alone() -> None:
    """cancel(attempt=2) for attempt 1 is UnknownOperation (the job goes on); cancel with
    superseded=True for attempt 1 kills it at once and nothing is reported.
    """
    backend = FakeBackend()
    worker, job, pid = await running_job(backend)

    with pytest.raises(UnknownOperation, match=r"not running operation op-1 \(attempt 2\)"):
        worker.cancel_operation("op-1", attempt=2, superseded=True)
    assert worker.status is WorkerStatus.BUSY
    worker.cancel_operation("op-1", attempt=1, superseded=True)
    await wait_for(lambda: worker.status is WorkerStatus.IDLE, timeout_s=5)
    await wait_for(lambda: not alive(pid), timeout_s=5)

    assert backend.reports() == []
    assert job.seen_stop is None


async def test_a_stale_answer_about_another_attempt_changes_nothing() -> None:
    """supersede() for an attempt this worker does not run (a late answer) is a no-op."""
    backend = FakeBackend()
    worker, job, pid = await running_job(backend, attempt=2)

    assert worker.supersede("op-1", 1, reason="late answer") is False
    assert worker.supersede("op-other", 2, reason="late answer") is False

    assert worker.status is WorkerStatus.BUSY
    assert alive(pid)
    job.release.set()
    await wait_for(lambda: backend.reports())
    assert backend.reports()[0]["attempt"] == 2


async def test_an_outcome_of_a_stale_attempt_is_dropped_from_the_outbox_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The report of attempt 2 answered 409 stale_attempt (a later attempt runs
    elsewhere): sent once, dropped from the outbox with a warning naming the attempt,
    never retried; the later attempt's checkpoint claim is left alone.
    """
    backend = FakeBackend()
    backend.stale.add("op-1")
    job = ScriptedJob()
    job.release.set()
    worker = make_worker(backend, job=job)
    await worker.register_until_success()

    with caplog.at_level(logging.INFO, logger="ktrdr.workers"):
        await worker.start_operation(start_request(attempt=2, retry=True))
        await wait_for(lambda: backend.reports())
        await wait_for(lambda: not worker.health()["pending_outcomes"])
        await worker.heartbeat_once()
        await worker.stop()

    assert [r["attempt"] for r in backend.reports()] == [2]
    assert worker.outbox.scan().entries == ()
    dropped = [r.getMessage() for r in caplog.records if "not taken by the backend" in r.message]
    assert len(dropped) == 1
    assert "HTTP 409 stale_attempt: attempt 2 is no longer current" in dropped[0]
    assert dropped[0].endswith("dropped (the backend's outcome stands)")
