"""The step loop every job runs in: when checkpoints are due, the state encoding, and the
contract both jobs keep (stop, resume to the same result, corrupt checkpoints fail cleanly).
"""

from __future__ import annotations

import datetime
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import pytest
from job_helpers import FakeClock, Harness, run, store

from ktrdr.config import CheckpointSettings, DataSettings
from ktrdr.errors import JobFailed
from ktrdr.job_messages import CheckpointData, JobRequest, SeriesUpdate, StopReason
from ktrdr.jobs.backtest import BacktestJob
from ktrdr.jobs.step_loop import (
    CheckpointPolicy,
    Job,
    decode_state,
    encode_state,
    run_steps,
)
from ktrdr.jobs.training import TrainingJob
from ktrdr.protocol import OperationStatus, OperationType, Progress
from ktrdr.tracing import SpanRecord
from ktrdr.tracing.job import job_tracing

OP = "op-1"

# --- policy ---------------------------------------------------------------------------


def test_policy_is_due_every_n_steps() -> None:
    """With a long time interval, a checkpoint is due exactly every ``every`` steps."""
    policy = CheckpointPolicy(every=3, interval=datetime.timedelta(hours=1), clock=FakeClock())
    assert [policy.due(step) for step in (1, 2, 3)] == [False, False, True]
    policy.saved(3)
    assert [policy.due(step) for step in (4, 5, 6)] == [False, False, True]


def test_policy_is_due_when_the_time_interval_passed_first() -> None:
    """With many steps to go, a checkpoint is due once the time interval has passed."""
    clock = FakeClock()
    policy = CheckpointPolicy(every=1000, interval=datetime.timedelta(seconds=60), clock=clock)
    clock.now += 59.9
    assert not policy.due(1)
    clock.now += 0.1
    assert policy.due(2)
    policy.saved(2)
    clock.now += 30
    assert not policy.due(3)


def test_policy_counts_from_the_start_step() -> None:
    """A resumed run counts steps from where it resumed, not from zero."""
    policy = CheckpointPolicy(
        every=5, interval=datetime.timedelta(hours=1), clock=FakeClock(), start_step=20
    )
    assert not policy.due(24)
    assert policy.due(25)


# --- state encoding -------------------------------------------------------------------


def test_encoded_state_decodes_to_the_same_arrays() -> None:
    """Arrays survive an encode and decode with their values, shapes and dtypes."""
    arrays = {"w": np.arange(6, dtype=np.float64).reshape(2, 3), "n": np.array([1, 2])}
    decoded = decode_state(encode_state(arrays))
    assert sorted(decoded) == ["n", "w"]
    for name, value in arrays.items():
        assert decoded[name].dtype == value.dtype
        np.testing.assert_array_equal(decoded[name], value)


def test_object_arrays_are_refused() -> None:
    """Arrays of Python objects would need pickle, so encoding them is refused."""
    with pytest.raises(ValueError, match="'bad' holds Python objects"):
        encode_state({"ok": np.zeros(2), "bad": np.array([{}], dtype=object)})


def _npy(array: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"garbage" * 10, id="garbage"),
        pytest.param(encode_state({"w": np.zeros(50)})[:60], id="truncated"),
        pytest.param(_npy(np.zeros(3)), id="npy-not-npz"),
    ],
)
def test_unreadable_state_is_a_value_error(state: bytes) -> None:
    """Bytes that are not an encoded state raise ValueError, never another exception."""
    with pytest.raises(ValueError, match="the state is not readable"):
        decode_state(state)


UNPICKLED: list[str] = []


def _record_unpickling() -> str:
    UNPICKLED.append("unpickled")
    return "payload"


class Tripwire:
    """Records its own unpickling, so a test can tell whether pickle ran."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _record_unpickling, ()


def test_pickled_state_is_never_unpickled() -> None:
    """A state holding a pickled object array is refused without running pickle."""
    buffer = io.BytesIO()
    np.savez(buffer, payload=np.array([Tripwire()], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        decode_state(buffer.getvalue())
    assert UNPICKLED == []


# --- the contract both jobs keep ------------------------------------------------------


@attrs.frozen
class Case:
    """One job with small parameters, and where a test stops it."""

    job: Job
    parameters: Mapping[str, Any]
    stop_after: int
    total: int


CASES = [
    pytest.param(
        Case(
            job=TrainingJob(),
            parameters={"bars": 150, "epochs": 6, "seed": 5, "hidden_units": 4},
            stop_after=3,
            total=6,
        ),
        id="training",
    ),
    pytest.param(
        Case(
            job=BacktestJob(),
            parameters={"bars": 300, "seed": 3, "fast_window": 5, "slow_window": 20},
            stop_after=123,
            total=300,
        ),
        id="backtest",
    ),
]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> Case:
    """Each contract test runs once per job."""
    value: Case = request.param
    return value


def stop(case: Case, tmp_path: Path) -> None:
    """Run the case and cancel it after ``stop_after`` steps (leaves its checkpoint)."""
    harness = Harness(stop_after=case.stop_after, reason=StopReason.CANCELLED)
    run(case.job, tmp_path, OP, case.parameters, harness=harness)


def test_stop_saves_a_checkpoint_and_cancels(case: Case, tmp_path: Path) -> None:
    """A stop request ends the run CANCELLED, naming where the checkpoint was saved."""
    harness = Harness(stop_after=case.stop_after, reason=StopReason.CANCELLED)
    outcome = run(case.job, tmp_path, OP, case.parameters, harness=harness)
    assert outcome.status is OperationStatus.CANCELLED
    assert outcome.checkpoint_saved is True
    where = f"{case.job.unit} {case.stop_after}/{case.total}"
    assert outcome.error == f"checkpoint saved at {where} (cancelled)"
    assert [c.step for c in harness.checkpoints] == [case.stop_after]
    assert store(tmp_path).load(OP, kind=case.job.operation_type.value).step == case.stop_after


def test_resume_after_a_stop_gives_the_uninterrupted_result(case: Case, tmp_path: Path) -> None:
    """Stopping and resuming changes nothing in the result."""
    uninterrupted = run(case.job, tmp_path / "a", OP, case.parameters)
    assert uninterrupted.status is OperationStatus.COMPLETED, uninterrupted.error
    stop(case, tmp_path / "b")
    resumed = run(case.job, tmp_path / "b", OP, case.parameters, resume=True)
    assert resumed.status is OperationStatus.COMPLETED, resumed.error
    assert resumed.result == uninterrupted.result


def test_a_resumed_run_sends_the_series_of_an_uninterrupted_one(case: Case, tmp_path: Path) -> None:
    """Stopped and resumed, a run's points (history re-sent, then new) equal a whole run's."""
    whole = Harness()
    run(case.job, tmp_path / "a", OP, case.parameters, harness=whole)
    first = Harness(stop_after=case.stop_after, reason=StopReason.CANCELLED)
    run(case.job, tmp_path / "b", OP, case.parameters, harness=first)
    second = Harness()
    run(case.job, tmp_path / "b", OP, case.parameters, resume=True, harness=second)
    expected = whole.points()
    assert expected
    assert all(len(points) == case.total for points in expected.values())
    stopped_at = {n: [p for p in v if p[0] <= case.stop_after] for n, v in expected.items()}
    assert first.points() == stopped_at
    assert second.points() == expected


def test_truncated_checkpoint_fails_the_resume(case: Case, tmp_path: Path) -> None:
    """A checkpoint file cut short ends the resume FAILED with 'cannot resume: ...'."""
    stop(case, tmp_path)
    path = store(tmp_path).path_for(OP)
    path.write_bytes(path.read_bytes()[:80])
    outcome = run(case.job, tmp_path, OP, case.parameters, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot resume: checkpoint {path} is corrupt")


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(b"not an encoded state", id="undecodable"),
        pytest.param(encode_state({"other": np.zeros(3)}), id="other-arrays"),
        pytest.param(encode_state({}), id="no-arrays"),
    ],
)
def test_unusable_state_fails_the_resume(case: Case, tmp_path: Path, state: bytes) -> None:
    """A readable checkpoint whose state the job cannot use ends FAILED, never raising."""
    stop(case, tmp_path)
    checkpoints = store(tmp_path)
    kind = case.job.operation_type.value
    good = checkpoints.load(OP, kind=kind)
    checkpoints.save(
        OP, kind=kind, data=CheckpointData(step=good.step, meta=good.meta, state=state)
    )
    outcome = run(case.job, tmp_path, OP, case.parameters, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot resume: the checkpoint's {kind} state is unusable (")


# --- failures of a job ----------------------------------------------------------------


class _CountingRun:
    """Three steps over a counter; raises ``error`` at the second step, if given."""

    total = 3
    fingerprint: Mapping[str, Any] = {"job": "counting"}

    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def initial_state(self) -> list[int]:
        return [0]

    def restore(self, step: int, arrays: Mapping[str, npt.NDArray[Any]]) -> list[int]:
        return [int(arrays["count"][0])]

    def position(self, state: list[int]) -> int:
        return state[0]

    def step(self, state: list[int]) -> bool:
        if state[0] == 1 and self.error is not None:
            raise self.error
        state[0] += 1
        return False

    def arrays(self, state: list[int]) -> dict[str, npt.NDArray[Any]]:
        return {"count": np.array(state)}

    def progress(self, state: list[int], message: str) -> Progress:
        return Progress(percent=100.0 * state[0] / self.total, message=message)

    def series_at(self, state: list[int], step: int) -> dict[str, float]:
        return {"count": float(step), "broken": math.nan}

    def result(self, state: list[int]) -> dict[str, Any]:
        return {"count": state[0]}


class CountingJob:
    """A test double of a job (not of the loop): counts to three, or fails on the way."""

    operation_type = OperationType.TRAINING
    unit = "step"

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def checkpoint_every(self, settings: CheckpointSettings) -> int:
        return settings.epoch_interval

    def prepare(self, parameters: Mapping[str, Any], data: DataSettings) -> _CountingRun:
        return _CountingRun(self.error)


def request_for(tmp_path: Path, **overrides: Any) -> JobRequest:
    """A fresh request for the counting job, checkpointing every step."""
    values: dict[str, Any] = {
        "operation_id": OP,
        "operation_type": OperationType.TRAINING,
        "parameters": {},
        "checkpoint_settings": CheckpointSettings(dir=tmp_path, epoch_interval=1),
        **overrides,
    }
    return JobRequest(**values)


def test_the_loop_reports_the_last_step_and_checkpoints_only_before_it(tmp_path: Path) -> None:
    """Progress is always sent after the last step; no periodic checkpoint precedes the result."""
    harness = Harness()
    outcome = run_steps(CountingJob(), request_for(tmp_path), harness, clock=FakeClock())
    assert outcome.status is OperationStatus.COMPLETED
    assert outcome.result == {"count": 3}
    assert [p.message for p in harness.progress_reports] == ["step 3"]
    assert [c.step for c in harness.checkpoints] == [1, 2]


def test_series_points_go_before_the_progress_they_belong_to(tmp_path: Path) -> None:
    """Every sampled step's finite values are sent, before the progress report that covers them."""
    sent: list[str] = []
    harness = Harness()
    harness.on_progress = lambda progress: sent.append(progress.message)
    original = harness.series

    def series(update: SeriesUpdate) -> None:
        sent.append(f"series {sorted(update.points)}")
        original(update)

    harness.series = series  # type: ignore[method-assign]
    run_steps(CountingJob(), request_for(tmp_path), harness, clock=FakeClock())
    assert sent == ["series ['count']", "step 3"]
    assert harness.points() == {"count": [(1, 1.0), (2, 2.0), (3, 3.0)]}


def test_unexpected_exception_fails_the_run_with_its_kind(tmp_path: Path) -> None:
    """An exception a job did not expect ends FAILED '<kind> failed unexpectedly: ...'."""
    job = CountingJob(RuntimeError("disk vanished"))
    outcome = run_steps(job, request_for(tmp_path), Harness(), clock=FakeClock())
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == "training failed unexpectedly: RuntimeError: disk vanished"


def test_job_failed_is_the_reason_as_written(tmp_path: Path) -> None:
    """A JobFailed raised by a step ends FAILED with exactly its message."""
    job = CountingJob(JobFailed("training diverged at epoch 1; lower learning_rate"))
    outcome = run_steps(job, request_for(tmp_path), Harness(), clock=FakeClock())
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == "training diverged at epoch 1; lower learning_rate"


def test_memory_error_under_a_cap_names_the_variable_and_the_cap(tmp_path: Path) -> None:
    """A job out of memory under KTRDR_WORKER_MAX_MEMORY fails naming it and the cap."""
    request = request_for(tmp_path, max_memory=300 * 1024**2, max_memory_text="300M")
    outcome = run_steps(CountingJob(MemoryError()), request, Harness(), clock=FakeClock())
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == (
        "training needs more memory than KTRDR_WORKER_MAX_MEMORY=300M allows; ask for less "
        "data (bars) or a smaller model, or raise the cap"
    )


def test_memory_error_without_a_cap_says_out_of_memory(tmp_path: Path) -> None:
    """Without a cap, running out of memory fails with what to ask for instead."""
    outcome = run_steps(
        CountingJob(MemoryError()), request_for(tmp_path), Harness(), clock=FakeClock()
    )
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == (
        "training ran out of memory; ask for less data (bars) or a smaller model"
    )


def test_resume_request_without_a_checkpoint_fails(tmp_path: Path) -> None:
    """A resume request that carries no checkpoint fails, naming the operation."""
    request = request_for(tmp_path, resume=True)
    outcome = run_steps(CountingJob(), request, Harness(), clock=FakeClock())
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == f"cannot resume: no checkpoint was given for {OP}"


# --- traces ---------------------------------------------------------------------------

WORKER_SPAN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_traced_run_is_a_job_span_with_a_span_per_checkpoint(tmp_path: Path) -> None:
    """Under the worker's span: one job span, a checkpoint span per checkpoint sent."""
    sent: list[SpanRecord] = []
    outcome = run(
        TrainingJob(),
        tmp_path,
        "op-traced",
        {"bars": 200, "epochs": 12, "hidden_units": 4},
        tracing=job_tracing(sent.append),
        trace_parent=WORKER_SPAN,
        epoch_interval=4,
    )
    assert outcome.status is OperationStatus.COMPLETED
    job = next(r for r in sent if r.name == "job training")
    checkpoints = [r for r in sent if r.name == "checkpoint"]
    assert (f"{job.trace_id:032x}", job.parent_span_id) == (
        "0af7651916cd43dd8448eb211c80319c",
        0xB7AD6B7169203331,
    )
    assert job.attributes["ktrdr.operation.id"] == "op-traced"
    assert job.attributes["ktrdr.operation.status"] == "completed"
    assert [r.attributes["ktrdr.checkpoint.step"] for r in checkpoints] == [4, 8]
    assert {r.parent_span_id for r in checkpoints} == {job.span_id}
    assert sent[-1] is job  # the job span ends last: it is on the pipe before the outcome


def test_a_stopped_run_records_its_last_checkpoint_and_why(tmp_path: Path) -> None:
    """A stop's checkpoint span says the reason; a failed run's span carries the error."""
    sent: list[SpanRecord] = []
    run(
        TrainingJob(),
        tmp_path,
        "op-stop",
        {"bars": 200, "epochs": 12, "hidden_units": 4},
        harness=Harness(stop_after=3, reason=StopReason.CANCELLED),
        tracing=job_tracing(sent.append),
        trace_parent=WORKER_SPAN,
    )
    [checkpoint] = [r for r in sent if r.name == "checkpoint"]
    assert checkpoint.attributes == {
        "ktrdr.checkpoint.step": 3,
        "ktrdr.checkpoint.reason": "cancelled",
    }
    failed: list[SpanRecord] = []
    run(
        TrainingJob(),
        tmp_path,
        "op-bad",
        {"bars": 200, "epochs": 2, "csv_path": "missing.csv"},
        tracing=job_tracing(failed.append),
        trace_parent=WORKER_SPAN,
    )
    [job] = failed
    assert job.error is not None
    assert "missing.csv" in job.error
