"""Scripted jobs for tests of the worker runtime: real job processes a test steers.

:class:`ScriptedJob` runs in a real job process (started by a real ``JobLauncher``)
and talks to the test through files in its control directory, because a child
process shares no memory with the test: ``started`` once it has sent its progress,
``request.json`` with the request it got, ``release`` to let it finish with its
scripted outcome, ``stop`` naming the stop reason it saw. ``behaviour`` scripts a
misbehaving job: ``ignore_stop`` (keeps going), ``raise`` (an exception escapes the
entry), ``exit`` (``os._exit(7)``), ``segfault`` (SIGSEGV), ``hog`` (allocates 1 GiB).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import attrs

from ktrdr.config import CheckpointSettings, WorkerSettings
from ktrdr.job_messages import JobEntry, JobOutcome, JobRequest, SeriesUpdate
from ktrdr.jobs.process import PipeChannel
from ktrdr.protocol import OperationStatus, Progress
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.job_host import JobHost
from ktrdr.workers.job_process import JobLauncher
from ktrdr.workers.metrics import WorkerMetrics

DEFAULT_OUTCOME = JobOutcome(status=OperationStatus.COMPLETED, result={"loss": 0.1})


class FileFlag:
    """An event a test and a job process share: a file that exists once set."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self) -> None:
        self.path.touch()

    def is_set(self) -> bool:
        return self.path.exists()


@attrs.frozen
class ScriptedEntry(JobEntry):
    """The entry of a scripted job: where its control files are and what it does."""

    control: str = ""
    outcome: JobOutcome = DEFAULT_OUTCOME
    behaviour: str = "obey"

    def __call__(self, conn: Connection, request: JobRequest) -> None:
        run_scripted(conn, request, self)


def run_scripted(conn: Connection, request: JobRequest, entry: ScriptedEntry) -> None:
    """The job process: a series point and progress, then wait for the release or a stop request."""
    control = Path(entry.control)
    channel = PipeChannel(conn)
    channel.listen()
    (control / "request.json").write_text(
        json.dumps({"parameters": dict(request.parameters), "resume": request.resume})
    )
    channel.series(SeriesUpdate(points={"loss": ((1, 0.5),)}))
    channel.progress(Progress(percent=25, message="epoch 1"))
    (control / "started").touch()
    if entry.behaviour == "raise":
        raise ZeroDivisionError("boom")
    if entry.behaviour == "exit":
        os._exit(7)
    if entry.behaviour == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if entry.behaviour == "hog":
        hog = bytearray(1024**3)
        conn.send(JobOutcome(status=OperationStatus.COMPLETED, result={"hog": len(hog)}))
        return
    while not (control / "release").exists():
        reason = channel.stop_requested()
        if reason is not None and entry.behaviour != "ignore_stop":
            (control / "stop").write_text(reason.value)
            conn.send(
                JobOutcome(
                    status=OperationStatus.CANCELLED,
                    error=f"stopped: {reason.value}",
                    checkpoint_saved=True,
                )
            )
            return
        time.sleep(0.005)
    conn.send(entry.outcome)


class ScriptedJob:
    """A test's handle on scripted job processes: control files and a launcher."""

    def __init__(self, *, outcome: JobOutcome | None = None, behaviour: str = "obey") -> None:
        self.control = Path(tempfile.mkdtemp(prefix="ktrdr-scripted-"))
        self.release = FileFlag(self.control / "release")
        self.started = FileFlag(self.control / "started")
        self.entry = ScriptedEntry(
            "support.scripted_jobs",
            "run_scripted",
            control=str(self.control),
            outcome=outcome or DEFAULT_OUTCOME,
            behaviour=behaviour,
        )

    @property
    def seen_stop(self) -> str | None:
        """The stop reason the job process saw, if any."""
        path = self.control / "stop"
        return path.read_text() if path.exists() else None

    def request(self) -> dict[str, object]:
        """The parameters and resume flag the job process received."""
        return json.loads((self.control / "request.json").read_text())  # type: ignore[no-any-return]

    def launcher(
        self, settings: WorkerSettings, *, metrics: WorkerMetrics | None = None
    ) -> JobLauncher:
        """A real launcher for this job, with checkpoints under the control directory."""
        checkpoint = CheckpointSettings(dir=self.control / "checkpoints")
        host = JobHost(
            checkpoints=CheckpointStore(settings=checkpoint),
            worker=settings,
            checkpoint_settings=checkpoint,
            metrics=metrics,
        )
        return JobLauncher(entry=self.entry, host=host)


__all__ = ["FileFlag", "ScriptedEntry", "ScriptedJob", "run_scripted"]
