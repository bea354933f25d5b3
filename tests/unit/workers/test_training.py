"""The training runner: a real fit, progress, checkpoints, stop and resume, clear failures."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runner_helpers import FakeClock, Harness, make_runner, run

from ktrdr.config import CheckpointSettings
from ktrdr.protocol import OperationStatus, OperationType, Progress
from ktrdr.workers.bars import generate_bars
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.runner import OperationRunner, StopReason
from ktrdr.workers.training import TrainingRunner, features_and_targets, predict_up_probability

PARAMS: dict[str, Any] = {"bars": 300, "epochs": 20, "seed": 11, "hidden_units": 8}
OP = "train-1"


def test_runner_satisfies_the_runner_protocol(tmp_path: Path) -> None:
    """TrainingRunner is an OperationRunner for training operations."""
    runner: OperationRunner = make_runner(TrainingRunner, tmp_path)
    assert runner.operation_type is OperationType.TRAINING


def test_training_completes_with_metrics_and_a_model(tmp_path: Path) -> None:
    """A run completes with loss, accuracy, epochs and a usable model in the result."""
    outcome = run(make_runner(TrainingRunner, tmp_path), OP, PARAMS)
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
    outcome = run(make_runner(TrainingRunner, tmp_path), OP, PARAMS)
    assert outcome.result is not None
    bars = generate_bars(count=300, seed=11)
    p = predict_up_probability(outcome.result["model"], bars)
    _, y = features_and_targets(bars)
    valid = slice(round(len(y) * 0.8), None)
    accuracy = float(np.mean((p[valid] > 0.5) == (y[valid] > 0.5)))
    assert accuracy == outcome.result["validation_accuracy"]


def test_training_is_deterministic_per_seed(tmp_path: Path) -> None:
    """Two runs with the same seed give the same result; another seed does not."""
    runner = make_runner(TrainingRunner, tmp_path)
    first = run(runner, OP, PARAMS).result
    again = run(runner, OP, PARAMS).result
    other = run(runner, OP, {**PARAMS, "seed": 12}).result
    assert first == again
    assert first != other


def test_progress_is_reported_every_epoch(tmp_path: Path) -> None:
    """One progress report per epoch, with epoch, epochs, loss and accuracy, ending at 100%."""
    harness = Harness()
    make_runner(TrainingRunner, tmp_path).run(harness.context(OP, PARAMS))
    assert len(harness.progress) == 20
    assert [p.details["epoch"] for p in harness.progress] == list(range(1, 21))
    last = harness.progress[-1]
    assert last.percent == 100.0
    assert last.details["epochs"] == 20
    assert set(last.details) == {"epoch", "epochs", "loss", "accuracy"}
    assert harness.progress[4].percent == 25.0


@pytest.mark.parametrize("reason", [StopReason.SHUTDOWN, StopReason.CANCELLED])
def test_stop_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, reason: StopReason
) -> None:
    """Stopped midway: checkpoint saved, CANCELLED; resumed: the uninterrupted run's result."""
    uninterrupted = run(make_runner(TrainingRunner, tmp_path / "a"), OP, PARAMS)
    runner = make_runner(TrainingRunner, tmp_path / "b")
    harness = Harness(stop_after=7, reason=reason)
    stopped = runner.run(harness.context(OP, PARAMS))
    assert stopped.status is OperationStatus.CANCELLED
    assert stopped.checkpoint_saved is True
    assert stopped.error == f"checkpoint saved at epoch 7/20 ({reason.value})"
    assert runner.checkpoints.load(OP, kind="training").step == 7

    resumed_harness = Harness()
    resumed = runner.run(resumed_harness.context(OP, PARAMS, resume=True))
    assert resumed.status is OperationStatus.COMPLETED, resumed.error
    assert resumed.result == uninterrupted.result
    assert resumed_harness.progress[0].message == "resumed at epoch 7"
    assert resumed_harness.progress[1].details["epoch"] == 8
    assert not runner.checkpoints.exists(OP)


def test_stop_twice_then_resume_still_matches(tmp_path: Path) -> None:
    """Two interruptions in a row still end with the uninterrupted result."""
    uninterrupted = run(make_runner(TrainingRunner, tmp_path / "a"), OP, PARAMS)
    runner = make_runner(TrainingRunner, tmp_path / "b")
    runner.run(Harness(stop_after=3).context(OP, PARAMS))
    second = runner.run(Harness(stop_after=9).context(OP, PARAMS, resume=True))
    assert second.error == "checkpoint saved at epoch 12/20 (shutdown)"
    final = runner.run(Harness().context(OP, PARAMS, resume=True))
    assert final.result == uninterrupted.result


def test_completed_run_deletes_its_checkpoint(tmp_path: Path) -> None:
    """A successful run leaves no checkpoint behind, including the periodic ones."""
    runner = make_runner(TrainingRunner, tmp_path, epoch_interval=2)
    outcome = run(runner, OP, PARAMS)
    assert outcome.status is OperationStatus.COMPLETED
    assert not (tmp_path / "ckpt" / OP).exists()


def test_fresh_run_discards_a_stale_checkpoint(tmp_path: Path) -> None:
    """Starting without resume removes an old checkpoint instead of continuing from it."""
    runner = make_runner(TrainingRunner, tmp_path)
    runner.run(Harness(stop_after=5).context(OP, PARAMS))
    harness = Harness()
    outcome = runner.run(harness.context(OP, PARAMS))
    assert outcome.status is OperationStatus.COMPLETED
    assert harness.progress[0].details["epoch"] == 1


def crash_at(epoch: int) -> Callable[[Progress], None]:
    def report(progress: Progress) -> None:
        if progress.details.get("epoch") == epoch:
            raise RuntimeError("worker lost its network")

    return report


def test_epoch_interval_sets_when_periodic_checkpoints_are_written(tmp_path: Path) -> None:
    """After a crash at epoch 8 the checkpoint on disk is the last multiple of epoch_interval."""
    for interval, expected in ((3, 6), (5, 5)):
        runner = make_runner(TrainingRunner, tmp_path / str(interval), epoch_interval=interval)
        harness = Harness()
        harness.on_progress = crash_at(8)
        outcome = runner.run(harness.context(OP, PARAMS))
        assert outcome.status is OperationStatus.FAILED
        assert (
            outcome.error == "training failed unexpectedly: RuntimeError: worker lost its network"
        )
        assert runner.checkpoints.load(OP, kind="training").step == expected


def test_time_interval_triggers_checkpoints_before_epoch_interval(tmp_path: Path) -> None:
    """With 100 s per epoch, a 250 s (450 s) time interval checkpoints every 3 (5) epochs."""
    for seconds, expected in ((250, 6), (450, 5)):
        clock = FakeClock()
        runner = make_runner(
            TrainingRunner,
            tmp_path / str(seconds),
            clock=clock,
            epoch_interval=1000,
            time_interval=datetime.timedelta(seconds=seconds),
        )
        harness = Harness()

        def tick(progress: Progress, clock: FakeClock = clock) -> None:
            clock.now += 100.0
            crash_at(8)(progress)

        harness.on_progress = tick
        runner.run(harness.context(OP, PARAMS))
        assert runner.checkpoints.load(OP, kind="training").step == expected


def test_checkpoint_dir_setting_is_where_checkpoints_go(tmp_path: Path) -> None:
    """The stop checkpoint is written under ``dir/<operation id>/``."""
    runner = make_runner(TrainingRunner, tmp_path, dir=tmp_path / "elsewhere")
    runner.run(Harness(stop_after=2).context(OP, PARAMS))
    assert (tmp_path / "elsewhere" / OP / "checkpoint.npz").is_file()


def test_resume_without_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """Resuming an operation that has no checkpoint is FAILED with the reason."""
    outcome = run(make_runner(TrainingRunner, tmp_path), OP, PARAMS, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith("cannot resume: no checkpoint for operation train-1")


def test_resume_from_corrupt_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """A truncated checkpoint makes resume FAILED with 'corrupt', never a crash."""
    runner = make_runner(TrainingRunner, tmp_path)
    runner.run(Harness(stop_after=4).context(OP, PARAMS))
    path = runner.checkpoints.path_for(OP)
    path.write_bytes(path.read_bytes()[:100])
    outcome = run(runner, OP, PARAMS, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert "cannot resume: checkpoint" in outcome.error
    assert "corrupt" in outcome.error


def test_resume_with_other_parameters_fails_clearly(tmp_path: Path) -> None:
    """A checkpoint written for other parameters is not silently reused."""
    runner = make_runner(TrainingRunner, tmp_path)
    runner.run(Harness(stop_after=4).context(OP, PARAMS))
    outcome = run(runner, OP, {**PARAMS, "learning_rate": 0.5}, resume=True)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.endswith("was written for other parameters or bars")


def test_resume_with_inconsistent_state_fails_clearly(tmp_path: Path) -> None:
    """A checkpoint whose arrays do not fit its step is refused with the reason."""
    runner = make_runner(TrainingRunner, tmp_path)
    runner.run(Harness(stop_after=4).context(OP, PARAMS))
    good = runner.checkpoints.load(OP, kind="training")
    arrays = dict(good.arrays)
    arrays["losses"] = arrays["losses"][:2]
    runner.checkpoints.save(OP, kind="training", step=4, meta=good.meta, arrays=arrays)
    outcome = run(runner, OP, PARAMS, resume=True)
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
    outcome = run(make_runner(TrainingRunner, tmp_path), OP, parameters)
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(expected)


def test_missing_csv_fails_naming_the_file(tmp_path: Path) -> None:
    """A csv_path that does not exist ends as FAILED naming the path."""
    missing = tmp_path / "missing.csv"
    outcome = run(make_runner(TrainingRunner, tmp_path), OP, {**PARAMS, "csv_path": str(missing)})
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error == (
        f"bars file {missing} does not exist; expected a CSV file with a header row "
        "with the columns open, high, low, close, volume"
    )


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
    from_csv = run(make_runner(TrainingRunner, tmp_path), OP, {**PARAMS, "csv_path": str(path)})
    generated = run(make_runner(TrainingRunner, tmp_path), OP, PARAMS)
    assert from_csv.result is not None
    assert generated.result is not None
    assert from_csv.result["final_loss"] == generated.result["final_loss"]


def test_unwritable_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """When the checkpoint cannot be written, the outcome is FAILED naming the file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the directory should be")
    runner = make_runner(TrainingRunner, tmp_path, dir=blocker)
    outcome = runner.run(Harness(stop_after=2).context(OP, PARAMS))
    assert outcome.status is OperationStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot write checkpoint {blocker / OP / 'checkpoint.npz'}")


def test_shared_checkpoint_store_is_used(tmp_path: Path) -> None:
    """A CheckpointStore passed in is the one the runner writes to."""
    store = CheckpointStore(settings=CheckpointSettings(dir=tmp_path / "shared"))
    runner = TrainingRunner(
        checkpoint=CheckpointSettings(dir=tmp_path / "unused"), clock=FakeClock(), checkpoints=store
    )
    runner.run(Harness(stop_after=1).context(OP, PARAMS))
    assert runner.checkpoints is store
    assert store.exists(OP)
    assert not (tmp_path / "unused").exists()
