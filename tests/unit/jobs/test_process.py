"""The job side of a job process, run in this process against a real pipe.

The worker runtime's tests start real job processes; these call the child's entry
point directly so the pipe protocol (progress, checkpoints, stop, outcome) is pinned
where a debugger and coverage can see it.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from ktrdr.config import CheckpointSettings
from ktrdr.job_messages import (
    JOB_ENTRY,
    CheckpointData,
    JobLog,
    JobOutcome,
    JobRequest,
    StopReason,
    StopRequest,
)
from ktrdr.jobs import JOBS
from ktrdr.jobs.process import PipeChannel, run_job_process
from ktrdr.protocol import OperationStatus, OperationType, Progress
from ktrdr.tracing import SpanRecord

#: The worker's run span a traced job continues.
TRACE_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def restore_signals() -> Iterator[None]:
    """The entry point ignores SIGINT and SIGTERM (the worker decides); undo that here."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The entry point makes the pipe the root logger's only handler; undo that here."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _nothing() -> None:
    """What the test's job does when the pipe closes: nothing (the real one exits)."""


def request(tmp_path: Path, **parameters: Any) -> JobRequest:
    return JobRequest(
        operation_id="op-1",
        operation_type=OperationType.TRAINING,
        parameters=parameters,
        checkpoint_settings=CheckpointSettings(dir=tmp_path, epoch_interval=2),
    )


def test_the_entry_named_by_the_worker_is_this_function() -> None:
    """JOB_ENTRY names ktrdr.jobs.process.run_job_process; both job types are known."""
    assert (JOB_ENTRY.module, JOB_ENTRY.function) == ("ktrdr.jobs.process", "run_job_process")
    assert set(JOBS) == set(OperationType)


def test_a_closed_worker_end_runs_the_worker_gone_action() -> None:
    """When the worker's end of the pipe closes, the listener runs on_worker_gone."""
    worker_end, job_end = multiprocessing.Pipe(duplex=True)
    gone = threading.Event()
    channel = PipeChannel(job_end, on_worker_gone=gone.set)
    channel.listen()

    worker_end.send(StopRequest(reason=StopReason.CANCELLED))
    worker_end.close()

    assert gone.wait(timeout=10)
    assert channel.stop_requested() is StopReason.CANCELLED


def test_progress_checkpoints_then_the_outcome_go_over_the_pipe(tmp_path: Path) -> None:
    """A run sends a progress per epoch, a checkpoint every epoch_interval, then its outcome."""
    worker_end, job_end = multiprocessing.Pipe(duplex=True)

    run_job_process(job_end, request(tmp_path, epochs=5, bars=300), on_worker_gone=_nothing)

    messages: list[Any] = []
    while worker_end.poll():
        try:
            messages.append(worker_end.recv())
        except EOFError:  # the job closed its end: poll() reports that as readable
            break
    kinds = [type(m).__name__ for m in messages]
    assert kinds.count("Progress") == 5
    assert kinds.count("SeriesUpdate") == 5
    assert kinds.index("SeriesUpdate") < kinds.index("Progress")
    assert [m.step for m in messages if isinstance(m, CheckpointData)] == [2, 4]
    assert isinstance(messages[-1], JobOutcome)
    assert messages[-1].status is OperationStatus.COMPLETED


def test_a_stop_request_ends_the_run_with_a_checkpoint(tmp_path: Path) -> None:
    """A StopRequest from the worker stops the job at its next epoch, checkpoint first."""
    worker_end, job_end = multiprocessing.Pipe(duplex=True)
    received: list[Any] = []

    def worker() -> None:
        while True:
            message = worker_end.recv()
            received.append(message)
            if (
                isinstance(message, Progress)
                and sum(isinstance(m, Progress) for m in received) == 1
            ):
                worker_end.send(StopRequest(reason=StopReason.SHUTDOWN))
            if isinstance(message, JobOutcome):
                return

    reader = threading.Thread(target=worker)
    reader.start()
    run_job_process(job_end, request(tmp_path, epochs=10_000, bars=2000), on_worker_gone=_nothing)
    reader.join(timeout=60)

    outcome = received[-1]
    assert isinstance(outcome, JobOutcome)
    assert outcome.status is OperationStatus.CANCELLED
    assert outcome.checkpoint_saved is True
    assert outcome.error is not None
    assert outcome.error.endswith("/10000 (shutdown)")
    assert isinstance([m for m in received if not isinstance(m, JobLog)][-2], CheckpointData)


def test_the_jobs_log_records_go_to_the_worker_with_the_operation(tmp_path: Path) -> None:
    """Records at the worker's level cross the pipe as JobLog with id, attempt and message;
    records below it are not sent.
    """
    worker_end, job_end = multiprocessing.Pipe(duplex=True)
    job = attrs.evolve(request(tmp_path, epochs=3, bars=300), attempt=2, log_level=logging.INFO)

    run_job_process(job_end, job, on_worker_gone=_nothing)

    logs: list[JobLog] = []
    while worker_end.poll():
        message = worker_end.recv()
        if isinstance(message, JobLog):
            logs.append(message)
    lines = [(log.fields["levelname"], log.fields["message"]) for log in logs]
    assert ("INFO", "training starting at epoch 0 of 3") in lines
    assert ("INFO", "training finished: 3 epochs") in lines
    assert all(level != "DEBUG" for level, _ in lines)
    for log in logs:
        assert (log.fields["operation_id"], log.fields["attempt"]) == ("op-1", 2)
        record = logging.makeLogRecord(dict(log.fields))
        assert record.getMessage() == log.fields["message"]


@pytest.mark.parametrize("trace_parent", [None, TRACE_PARENT])
def test_a_traced_jobs_log_records_carry_its_trace_id(
    tmp_path: Path, trace_parent: str | None
) -> None:
    """A traced job's records carry the trace id of the span it continues, as its spans do;
    an untraced job's carry none.
    """
    worker_end, job_end = multiprocessing.Pipe(duplex=True)
    job = attrs.evolve(
        request(tmp_path, epochs=2, bars=300), log_level=logging.INFO, trace_parent=trace_parent
    )

    run_job_process(job_end, job, on_worker_gone=_nothing)

    messages: list[Any] = []
    while worker_end.poll():
        try:
            messages.append(worker_end.recv())
        except EOFError:
            break
    logs = [m for m in messages if isinstance(m, JobLog)]
    assert logs
    trace_ids = {log.fields["trace_id"] for log in logs}
    if trace_parent is None:
        assert trace_ids == {None}
        assert not [m for m in messages if isinstance(m, SpanRecord)]
    else:
        assert trace_ids == {TRACE_PARENT.split("-")[1]}
        spans = [m for m in messages if isinstance(m, SpanRecord)]
        assert spans
        assert {f"{span.trace_id:032x}" for span in spans} == trace_ids
