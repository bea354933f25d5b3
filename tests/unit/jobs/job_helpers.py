"""Shared harness of the job tests (imported as ``job_helpers``).

The worker runtime runs a job in a job process and, on its side, prepares the request,
stores each checkpoint the job sends and turns the end into the reported outcome
(``ktrdr.workers.job_host.JobHost``). :func:`run` does the same in the test's own
process, with a real ``JobHost`` and ``CheckpointStore`` under ``tmp_path`` (which is
also the data directory: a test's ``csv_path`` is a file name in it), so the
tests of a job see the real files, a hand-moved clock, and a :class:`Harness` channel
that records progress and answers stop polls.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ktrdr.config import CheckpointSettings, DataSettings, WorkerSettings
from ktrdr.job_messages import CheckpointData, JobOutcome, JobRequest, SeriesUpdate, StopReason
from ktrdr.jobs.step_loop import Job, run_steps
from ktrdr.protocol import Progress, StartOperationRequest
from ktrdr.tracing import Tracing
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.job_host import JobEnd, JobHost

#: Periodic checkpoints off: far more epochs and bars than any test runs. A test that
#: pins periodic checkpoints sets its own interval.
PERIODIC_OFF: dict[str, Any] = {"epoch_interval": 1000, "bar_interval": 1_000_000}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Killed(BaseException):
    """The worker killed the job (its checkpoint could not be stored); no job catches it."""


class Harness:
    """The job's channel: records what it sent, stores checkpoints, answers stop polls.

    The loop polls ``stop_requested`` once per step; from poll ``stop_after + 1`` on it
    answers ``reason``. ``on_progress`` and ``on_poll`` let a test act on a report or a
    poll (move a clock, crash). Once :func:`run` attaches a host, each checkpoint is
    stored through it; when the store refuses, the job is killed as the worker kills it.
    """

    def __init__(
        self, *, stop_after: int | None = None, reason: StopReason = StopReason.SHUTDOWN
    ) -> None:
        self.progress_reports: list[Progress] = []
        self.series_updates: list[SeriesUpdate] = []
        self.checkpoints: list[CheckpointData] = []
        self.stop_after = stop_after
        self.reason = reason
        self.polls = 0
        self.on_progress: Callable[[Progress], None] | None = None
        self.on_poll: Callable[[int], None] | None = None
        self.failure: str | None = None
        self._host: JobHost | None = None
        self._request: JobRequest | None = None

    def attach(self, host: JobHost, request: JobRequest) -> None:
        """Store this run's checkpoints through ``host``, as the worker does."""
        self._host = host
        self._request = request

    def progress(self, progress: Progress) -> None:
        """Record a progress report, then hand it to ``on_progress``."""
        self.progress_reports.append(progress)
        if self.on_progress is not None:
            self.on_progress(progress)

    def series(self, update: SeriesUpdate) -> None:
        """Record the series points."""
        self.series_updates.append(update)

    def points(self) -> dict[str, list[tuple[int, float]]]:
        """Every series point sent so far, by name, in the order sent."""
        merged: dict[str, list[tuple[int, float]]] = {}
        for update in self.series_updates:
            for name, values in update.points.items():
                merged.setdefault(name, []).extend(values)
        return merged

    def checkpoint(self, data: CheckpointData) -> None:
        """Record the checkpoint and store it; a refused save kills the job."""
        self.checkpoints.append(data)
        if self._host is None or self._request is None:
            return
        self.failure = self._host.save(self._request, data)
        if self.failure is not None:
            raise _Killed(self.failure)

    def stop_requested(self) -> StopReason | None:
        """Count a poll, hand it to ``on_poll``, answer ``reason`` once past ``stop_after``."""
        self.polls += 1
        if self.on_poll is not None:
            self.on_poll(self.polls)
        if self.stop_after is not None and self.polls > self.stop_after:
            return self.reason
        return None


def checkpoint_settings(tmp_path: Path, **overrides: Any) -> CheckpointSettings:
    """Checkpoints under ``tmp_path/ckpt`` with periodic ones off, unless overridden."""
    values: dict[str, Any] = {"dir": tmp_path / "ckpt", **PERIODIC_OFF, **overrides}
    return CheckpointSettings(**values)


def store(tmp_path: Path, **overrides: Any) -> CheckpointStore:
    """The checkpoint store :func:`run` uses with the same ``tmp_path`` and overrides."""
    return CheckpointStore(settings=checkpoint_settings(tmp_path, **overrides))


def run(
    job: Job,
    tmp_path: Path,
    operation_id: str,
    parameters: Mapping[str, Any],
    *,
    resume: bool = False,
    harness: Harness | None = None,
    clock: Callable[[], float] | None = None,
    tracing: Tracing | None = None,
    trace_parent: str | None = None,
    attempt: int = 1,
    retry: bool = False,
    **checkpoint_overrides: Any,
) -> JobOutcome:
    """One operation as a worker runs it: prepare, step loop, finish (a still clock)."""
    settings = checkpoint_settings(tmp_path, **checkpoint_overrides)
    host = JobHost(
        checkpoints=CheckpointStore(settings=settings),
        worker=WorkerSettings(),
        checkpoint_settings=settings,
        data=DataSettings(dir=tmp_path),
    )
    start = StartOperationRequest(
        operation_id=operation_id,
        operation_type=job.operation_type,
        parameters=dict(parameters),
        resume=resume,
        attempt=attempt,
        retry=retry,
    )
    request = host.prepare(start, trace_parent=trace_parent)
    if isinstance(request, JobOutcome):
        return request
    channel = harness or Harness()
    channel.attach(host, request)
    try:
        outcome = run_steps(job, request, channel, clock=clock or FakeClock(), tracing=tracing)
    except _Killed:
        end = JobEnd(outcome=None, exitcode=-signal.SIGKILL, failure=channel.failure)
    else:
        end = JobEnd(outcome=outcome, exitcode=0)
    return host.finish(request, end)
