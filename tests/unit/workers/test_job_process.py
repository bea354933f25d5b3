"""Job processes with ktrdr's real jobs: each operation in a child the worker can cap and kill.

These start real processes (through the fork server) and inject real faults: a memory
cap, a SIGKILL from outside, a disk that fills up, a data file that would never answer
(a FIFO, refused before it can block). A job that ignores its stop request is killed
after the grace: ``test_worker.py`` pins that with a scripted job.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest
from support.worker_fakes import SETTINGS, wait_for

from ktrdr.config import ByteSize, CheckpointSettings, DataSettings, WorkerSettings
from ktrdr.job_messages import JOB_ENTRY, JobOutcome, StopReason
from ktrdr.protocol import OperationStatus, OperationType, Progress, StartOperationRequest
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.job_host import JobHost
from ktrdr.workers.job_process import JobLauncher, RunningJob

pytestmark = pytest.mark.anyio

#: Training that takes tens of seconds: long enough to be stopped or killed mid-way.
LONG_TRAINING = {"bars": 20000, "hidden_units": 64, "epochs": 10000}


def launcher(
    checkpoint_dir: Path,
    settings: WorkerSettings = SETTINGS,
    data: DataSettings | None = None,
    **checkpoint: Any,
) -> JobLauncher:
    """A launcher of ktrdr's own jobs with checkpoints under ``checkpoint_dir``."""
    checkpoint_settings = CheckpointSettings(dir=checkpoint_dir, **checkpoint)
    host = JobHost(
        checkpoints=CheckpointStore(settings=checkpoint_settings),
        worker=settings,
        checkpoint_settings=checkpoint_settings,
        data=data,
    )
    return JobLauncher(entry=JOB_ENTRY, host=host)


def start(
    job_launcher: JobLauncher, kind: OperationType, progress: list[Progress], **parameters: Any
) -> RunningJob:
    request = StartOperationRequest(operation_id="op-1", operation_type=kind, parameters=parameters)
    return job_launcher.launch(request, on_progress=progress.append)


async def finished(job: RunningJob) -> JobOutcome:
    return await asyncio.wait_for(job.done, timeout=120)


async def test_a_training_runs_in_its_own_process_and_sends_progress(tmp_path: Path) -> None:
    """The job runs in a child process; progress reaches the worker; the result comes back."""
    progress: list[Progress] = []
    job = start(launcher(tmp_path), OperationType.TRAINING, progress, epochs=5, bars=300)

    await wait_for(lambda: job.pid is not None)
    pid = job.pid
    outcome = await finished(job)

    assert pid != os.getpid()
    assert outcome.status is OperationStatus.COMPLETED, outcome.error
    assert outcome.result is not None
    assert outcome.result["epochs"] == 5
    assert [p.details["epoch"] for p in progress] == [1, 2, 3, 4, 5]


async def test_a_job_over_the_memory_cap_fails_naming_the_cap(tmp_path: Path) -> None:
    """KTRDR_WORKER_MAX_MEMORY=300M: a 1,000,000-bar, 256-unit training fails naming it."""
    settings = attrs.evolve(SETTINGS, max_memory=ByteSize(300 * 1024**2))
    job = start(
        launcher(tmp_path, settings),
        OperationType.TRAINING,
        [],
        bars=1_000_000,
        hidden_units=256,
        epochs=2,
    )

    outcome = await finished(job)

    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == (
        "training needs more memory than KTRDR_WORKER_MAX_MEMORY=300M allows; ask for less "
        "data (bars) or a smaller model, or raise the cap"
    )


async def test_a_job_killed_from_outside_fails_its_operation(tmp_path: Path) -> None:
    """SIGKILL to the job process (the OOM killer, an operator): FAILED, one line."""
    progress: list[Progress] = []
    job = start(launcher(tmp_path), OperationType.TRAINING, progress, **LONG_TRAINING)
    await wait_for(lambda: progress, timeout_s=60)

    assert job.pid is not None
    os.kill(job.pid, signal.SIGKILL)
    outcome = await finished(job)

    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == "the job process was killed (SIGKILL) from outside the worker"


async def test_a_checkpoint_the_disk_refuses_fails_the_operation_naming_the_file(
    small_fs: Path,
) -> None:
    """A full disk at a periodic checkpoint: the job is stopped, FAILED naming the file."""
    job = start(
        launcher(small_fs / "checkpoints", bar_interval=20000),
        OperationType.BACKTEST,
        [],
        bars=200_000,
    )

    outcome = await finished(job)

    path = small_fs / "checkpoints" / "op-1" / "checkpoint.zip"
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot write checkpoint {path}: No space left on device")
    assert job.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(job.pid, 0)  # the job process is gone, not left computing


async def test_a_fifo_in_the_data_directory_fails_at_once_instead_of_blocking(
    tmp_path: Path,
) -> None:
    """A FIFO no one writes to would block a reader forever: refused, the job ends at once."""
    os.mkfifo(tmp_path / "bars.csv")
    data = DataSettings(dir=tmp_path)
    job = start(
        launcher(tmp_path / "checkpoints", data=data),
        OperationType.BACKTEST,
        [],
        csv_path="bars.csv",
    )

    outcome = await finished(job)

    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == (
        "csv_path 'bars.csv' is not a regular file (directories, FIFOs and devices are refused)"
    )


async def test_a_stopped_training_saves_its_checkpoint_through_the_worker(
    tmp_path: Path,
) -> None:
    """Cancel mid-run: the job's last state arrives and the worker's store holds it."""
    progress: list[Progress] = []
    job_launcher = launcher(tmp_path)
    job = start(job_launcher, OperationType.TRAINING, progress, **LONG_TRAINING)
    await wait_for(lambda: progress, timeout_s=60)

    job.request_stop(StopReason.CANCELLED)
    outcome = await finished(job)

    saved = job_launcher.host.checkpoints.load("op-1", kind="training")
    assert outcome.status is OperationStatus.CANCELLED
    assert outcome.checkpoint_saved is True
    assert outcome.error == f"checkpoint saved at epoch {saved.step}/10000 (cancelled)"


async def test_the_outcome_hook_runs_on_the_loop_after_all_progress_before_done(
    tmp_path: Path,
) -> None:
    """on_outcome gets the final outcome on the event loop once every progress callback
    has run and before ``done`` has it (the worker starts its durable write then); a
    job killed from outside hands over its failure the same way.
    """
    progress: list[Progress] = []
    seen: list[tuple[JobOutcome, bool, int, bool]] = []
    jobs: list[RunningJob] = []

    def hook(outcome: JobOutcome) -> None:
        on_loop = threading.current_thread() is threading.main_thread()
        seen.append((outcome, on_loop, len(progress), jobs[0].done.done()))

    request = StartOperationRequest(
        operation_id="op-1",
        operation_type=OperationType.TRAINING,
        parameters={"epochs": 5, "bars": 300},
    )
    jobs.append(launcher(tmp_path).launch(request, on_progress=progress.append, on_outcome=hook))
    outcome = await finished(jobs[0])

    [(announced, on_loop, progress_seen, resolved)] = seen
    assert outcome.status is OperationStatus.COMPLETED, outcome.error
    assert announced is outcome
    assert (on_loop, progress_seen, resolved) == (True, 5, False)

    long = StartOperationRequest(
        operation_id="op-2", operation_type=OperationType.TRAINING, parameters=LONG_TRAINING
    )
    jobs[0] = launcher(tmp_path).launch(long, on_progress=progress.append, on_outcome=hook)
    await wait_for(lambda: len(progress) > 5, timeout_s=60)
    assert jobs[0].pid is not None
    os.kill(jobs[0].pid, signal.SIGKILL)
    killed = await finished(jobs[0])

    assert seen[1][0] is killed
    assert killed.status is OperationStatus.FAILED
