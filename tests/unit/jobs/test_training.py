"""The training job: a real fit, progress, checkpoints, stop and resume, clear failures."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from job_helpers import FakeClock, Harness, run, store

from ktrdr.config import CheckpointSettings
from ktrdr.job_messages import CheckpointData, StopReason
from ktrdr.jobs.bars import generate_bars
from ktrdr.jobs.step_loop import Job, decode_state, encode_state
from ktrdr.jobs.training import TrainingJob, features_and_targets, predict_up_probability
from ktrdr.protocol import OperationStatus, OperationType, Progress

PARAMS: dict[str, Any] = {"bars": 300, "epochs": 20, "seed": 11, "hidden_units": 8}
OP = "train-1"
JOB = TrainingJob()


def test_training_job_is_a_job_counting_epochs() -> None:
    """TrainingJob is the Job of training operations; its step is an epoch."""
    job: Job = JOB
    assert job.operation_type is OperationType.TRAINING
    assert job.unit == "epoch"


def test_checkpoint_every_reads_the_epoch_interval() -> None:
    """``epoch_interval`` (not ``bar_interval``) sets the steps between checkpoints."""
    settings = CheckpointSettings(epoch_interval=4, bar_interval=7)
    assert JOB.checkpoint_every(settings) == 4


def test_training_completes_with_metrics_and_a_model(tmp_path: Path) -> None:
    """A run completes with loss, accuracy, epochs and a usable model in the result."""
    outcome = run(JOB, tmp_path, OP, PARAMS)
    assert outcome.status is OperationStatus.COMPLETED, outcome.error
    result = outcome.result
    assert result is not None
    assert result["epochs"] == 20
    assert result["bars"] == 300
    assert result["samples"] == 300 - 21
    assert 0.0 < result["final_loss"] < result["initial_loss"]
    assert 0.0 <= result["accuracy"] <= 1.0
    assert 0.0 <= result["validation_accuracy"] <= 1.0
    assert result["model"]["features"][0] == "return_1"
    assert np.asarray(result["model"]["w1"]).shape == (6, 8)


def test_model_in_result_reproduces_the_reported_accuracy(tmp_path: Path) -> None:
    """Applying the result's model to the same bars gives the reported validation accuracy."""
    outcome = run(JOB, tmp_path, OP, PARAMS)
    assert outcome.result is not None
    bars = generate_bars(count=300, seed=11)
    p = predict_up_probability(outcome.result["model"], bars)
    _, y = features_and_targets(bars)
    valid = slice(round(len(y) * 0.8), None)
    accuracy = float(np.mean((p[valid] > 0.5) == (y[valid] > 0.5)))
    assert accuracy == outcome.result["validation_accuracy"]


def test_training_is_deterministic_per_seed(tmp_path: Path) -> None:
    """Two runs with the same seed give the same result; another seed does not."""
    first = run(JOB, tmp_path, OP, PARAMS).result
    again = run(JOB, tmp_path, OP, PARAMS).result
    other = run(JOB, tmp_path, OP, {**PARAMS, "seed": 12}).result
    assert first == again
    assert first != other


def test_progress_is_reported_every_epoch(tmp_path: Path) -> None:
    """One progress report per epoch, with epoch, epochs, loss and accuracy, ending at 100%."""
    harness = Harness()
    run(JOB, tmp_path, OP, PARAMS, harness=harness)
    reports = harness.progress_reports
    assert len(reports) == 20
    assert [p.details["epoch"] for p in reports] == list(range(1, 21))
    last = reports[-1]
    assert last.percent == 100.0
    assert last.details["epochs"] == 20
    assert set(last.details) == {"epoch", "epochs", "loss", "accuracy"}
    assert reports[4].percent == 25.0


@pytest.mark.parametrize("reason", [StopReason.SHUTDOWN, StopReason.CANCELLED])
def test_stop_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, reason: StopReason
) -> None:
    """Stopped midway: checkpoint saved, CANCELLED; resumed: the uninterrupted run's result."""
    uninterrupted = run(JOB, tmp_path / "a", OP, PARAMS)
    work = tmp_path / "b"
    stopped = run(JOB, work, OP, PARAMS, harness=Harness(stop_after=7, reason=reason))
    assert stopped.status is OperationStatus.CANCELLED
    assert stopped.checkpoint_saved is True
    assert stopped.error == f"checkpoint saved at epoch 7/20 ({reason.value})"
    assert store(work).load(OP, kind="training").step == 7

    harness = Harness()
    resumed = run(JOB, work, OP, PARAMS, resume=True, harness=harness)
    assert resumed.status is OperationStatus.COMPLETED, resumed.error
    assert resumed.result == uninterrupted.result
    assert harness.progress_reports[0].message == "resumed at epoch 7"
    assert harness.progress_reports[1].details["epoch"] == 8
    assert store(work).exists(OP)  # until the backend acknowledges the outcome


def test_a_retry_resumes_from_the_checkpoint_or_starts_over_without_one(
    tmp_path: Path,
) -> None:
    """Attempt 2 retrying a lost attempt: from attempt 1's checkpoint when there is one,
    from scratch when there is none (not a failure); both give the uninterrupted result.
    """
    uninterrupted = run(JOB, tmp_path / "a", OP, PARAMS)
    work = tmp_path / "b"
    run(JOB, work, OP, PARAMS, harness=Harness(stop_after=7), attempt=1)
    harness = Harness()
    resumed = run(JOB, work, OP, PARAMS, harness=harness, attempt=2, retry=True)
    fresh = Harness()
    started_over = run(JOB, tmp_path / "c", OP, PARAMS, harness=fresh, attempt=2, retry=True)

    assert resumed.result == uninterrupted.result
    assert harness.progress_reports[0].message == "resumed at epoch 7"
    assert started_over.status is OperationStatus.COMPLETED, started_over.error
    assert started_over.result == uninterrupted.result
    assert fresh.progress_reports[0].details["epoch"] == 1


def test_an_attempt_older_than_the_checkpoints_claim_does_not_run(tmp_path: Path) -> None:
    """Attempt 3 claimed the checkpoint: a late start of attempt 2 fails as superseded
    before its job runs, and attempt 3's checkpoint is untouched.
    """
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=5), attempt=3)

    late = run(JOB, tmp_path, OP, PARAMS, resume=True, attempt=2)

    assert late.status is OperationStatus.FAILED
    assert late.error is not None
    assert late.error.startswith("superseded: attempt 2 of operation train-1 may not touch")
    assert store(tmp_path).load(OP, kind="training").step == 5


def test_stop_twice_then_resume_still_matches(tmp_path: Path) -> None:
    """Two interruptions in a row still end with the uninterrupted result."""
    uninterrupted = run(JOB, tmp_path / "a", OP, PARAMS)
    work = tmp_path / "b"
    run(JOB, work, OP, PARAMS, harness=Harness(stop_after=3))
    second = run(JOB, work, OP, PARAMS, resume=True, harness=Harness(stop_after=9))
    assert second.error == "checkpoint saved at epoch 12/20 (shutdown)"
    final = run(JOB, work, OP, PARAMS, resume=True)
    assert final.result == uninterrupted.result


def test_a_completed_run_keeps_its_last_checkpoint_for_the_outbox(tmp_path: Path) -> None:
    """A successful run keeps its last periodic checkpoint: the worker's outbox removes it
    once the backend has the result, so a lost result can still be recomputed from it.
    """
    harness = Harness()
    outcome = run(JOB, tmp_path, OP, PARAMS, harness=harness, epoch_interval=2)
    assert outcome.status is OperationStatus.COMPLETED
    assert [c.step for c in harness.checkpoints] == list(range(2, 20, 2))
    assert store(tmp_path).load(OP, kind="training").step == 18


def test_fresh_run_discards_a_stale_checkpoint(tmp_path: Path) -> None:
    """Starting without resume removes an old checkpoint instead of continuing from it."""
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=5))
    assert store(tmp_path).exists(OP)
    harness = Harness()
    present: list[bool] = []
    harness.on_poll = lambda _: present.append(store(tmp_path).exists(OP))
    outcome = run(JOB, tmp_path, OP, PARAMS, harness=harness)
    assert outcome.status is OperationStatus.COMPLETED
    assert present[0] is False
    assert harness.progress_reports[0].details["epoch"] == 1


def crash_at(epoch: int) -> Callable[[Progress], None]:
    """A progress hook that raises when ``epoch`` is reported (a job crashing there)."""

    def report(progress: Progress) -> None:
        if progress.details.get("epoch") == epoch:
            raise RuntimeError("worker lost its network")

    return report


@pytest.mark.parametrize(("interval", "expected"), [(3, 6), (5, 5)])
def test_epoch_interval_sets_when_periodic_checkpoints_are_written(
    tmp_path: Path, interval: int, expected: int
) -> None:
    """After a crash at epoch 8 the checkpoint on disk is the last multiple of epoch_interval."""
    harness = Harness()
    harness.on_progress = crash_at(8)
    outcome = run(JOB, tmp_path, OP, PARAMS, harness=harness, epoch_interval=interval)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == "training failed unexpectedly: RuntimeError: worker lost its network"
    assert store(tmp_path).load(OP, kind="training").step == expected


@pytest.mark.parametrize(("seconds", "expected"), [(250, 6), (450, 5)])
def test_time_interval_triggers_checkpoints_before_epoch_interval(
    tmp_path: Path, seconds: int, expected: int
) -> None:
    """With 100 s per epoch, a 250 s (450 s) time interval checkpoints every 3 (5) epochs."""
    clock = FakeClock()
    harness = Harness()
    crash = crash_at(8)

    def tick(progress: Progress) -> None:
        clock.now += 100.0
        crash(progress)

    harness.on_progress = tick
    run(
        JOB,
        tmp_path,
        OP,
        PARAMS,
        harness=harness,
        clock=clock,
        time_interval=datetime.timedelta(seconds=seconds),
    )
    assert store(tmp_path).load(OP, kind="training").step == expected


def test_checkpoint_dir_setting_is_where_checkpoints_go(tmp_path: Path) -> None:
    """The stop checkpoint is written under ``dir/<operation id>/``."""
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=2), dir=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / OP / "checkpoint.zip").is_file()


def test_resume_without_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """Resuming an operation that has no checkpoint is FAILED with the reason."""
    outcome = run(JOB, tmp_path, OP, PARAMS, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith("cannot resume: no checkpoint for operation train-1")


def test_resume_from_corrupt_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """A truncated checkpoint makes resume FAILED with 'corrupt', never a crash."""
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=4))
    path = store(tmp_path).path_for(OP)
    path.write_bytes(path.read_bytes()[:100])
    outcome = run(JOB, tmp_path, OP, PARAMS, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot resume: checkpoint {path} is corrupt")


def test_resume_with_other_parameters_fails_clearly(tmp_path: Path) -> None:
    """A checkpoint written for other parameters is not silently reused."""
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=4))
    outcome = run(JOB, tmp_path, OP, {**PARAMS, "learning_rate": 0.5}, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == (
        f"cannot resume: checkpoint {store(tmp_path).path_for(OP)} was written for other "
        "parameters or bars"
    )


def test_resume_with_inconsistent_state_fails_clearly(tmp_path: Path) -> None:
    """A checkpoint whose arrays do not fit its step is refused with the reason."""
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=4))
    checkpoints = store(tmp_path)
    good = checkpoints.load(OP, kind="training")
    arrays = decode_state(good.state)
    arrays["losses"] = arrays["losses"][:2]
    bad = CheckpointData(step=4, meta=good.meta, state=encode_state(arrays))
    checkpoints.save(OP, kind="training", data=bad)
    outcome = run(JOB, tmp_path, OP, PARAMS, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == (
        "cannot resume: the checkpoint's training state is unusable "
        "(it records 2 losses for epoch 4)"
    )


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"epochs": 0}, "invalid training parameters: epochs: Input should be greater than"),
        ({"bars": 50}, "invalid training parameters: bars: Input should be greater than"),
        ({"learning_rate": 0}, "invalid training parameters: learning_rate:"),
        ({"epoch": 5}, "invalid training parameters: epoch: Extra inputs are not permitted"),
    ],
)
def test_bad_parameters_fail_with_the_field_named(
    tmp_path: Path, parameters: dict[str, Any], expected: str
) -> None:
    """Invalid parameters end as FAILED naming the field, not as an exception."""
    outcome = run(JOB, tmp_path, OP, parameters)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(expected)


def test_missing_csv_fails_naming_the_file(tmp_path: Path) -> None:
    """A csv_path that does not exist in the data directory ends as FAILED naming it."""
    outcome = run(JOB, tmp_path, OP, {**PARAMS, "csv_path": "missing.csv"})
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == "csv_path 'missing.csv' does not exist in KTRDR_DATA_DIR"


def test_training_on_a_csv_file(tmp_path: Path) -> None:
    """Bars from a CSV file train like generated ones (same bars, same result)."""
    bars = generate_bars(count=300, seed=11)
    path = tmp_path / "bars.csv"
    rows = ["open,high,low,close,volume"] + [
        ",".join(
            repr(float(c[i])) for c in (bars.open, bars.high, bars.low, bars.close, bars.volume)
        )
        for i in range(300)
    ]
    path.write_text("\n".join(rows) + "\n")
    from_csv = run(JOB, tmp_path, OP, {**PARAMS, "csv_path": path.name})
    generated = run(JOB, tmp_path, OP, PARAMS)
    assert from_csv.result is not None
    assert generated.result is not None
    assert from_csv.result["final_loss"] == generated.result["final_loss"]


def test_unwritable_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """When the checkpoint cannot be written, the outcome is FAILED naming the file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the directory should be")
    outcome = run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=2), dir=blocker)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.checkpoint_saved is False
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot write checkpoint {blocker / OP / 'checkpoint.zip'}")


def test_training_reports_loss_accuracy_and_validation_per_epoch(tmp_path: Path) -> None:
    """Four series, one point per epoch 1..N; the first loss is the result's initial_loss."""
    harness = Harness()
    outcome = run(JOB, tmp_path, OP, PARAMS, harness=harness)
    assert outcome.result is not None
    points = harness.points()
    assert sorted(points) == ["accuracy", "loss", "validation_accuracy", "validation_loss"]
    for values in points.values():
        assert [x for x, _ in values] == list(range(1, PARAMS["epochs"] + 1))
    assert points["loss"][0][1] == outcome.result["initial_loss"]
    for name in ("accuracy", "validation_accuracy"):
        assert all(0.0 <= y <= 1.0 for _, y in points[name])
    assert points["validation_loss"] != points["loss"]


def test_a_checkpoint_without_validation_history_resumes_with_a_gap(tmp_path: Path) -> None:
    """A checkpoint without per-epoch validation metrics resumes; those epochs have no points."""
    run(JOB, tmp_path, OP, PARAMS, harness=Harness(stop_after=4))
    checkpoints = store(tmp_path)
    good = checkpoints.load(OP, kind="training")
    arrays = decode_state(good.state)
    del arrays["validation_losses"], arrays["validation_accuracies"]
    older = CheckpointData(step=4, meta=good.meta, state=encode_state(arrays))
    checkpoints.save(OP, kind="training", data=older)
    harness = Harness()
    outcome = run(JOB, tmp_path, OP, PARAMS, resume=True, harness=harness)
    assert outcome.status is OperationStatus.COMPLETED, outcome.error
    points = harness.points()
    assert [x for x, _ in points["loss"]] == list(range(1, PARAMS["epochs"] + 1))
    assert [x for x, _ in points["validation_loss"]] == list(range(5, PARAMS["epochs"] + 1))
