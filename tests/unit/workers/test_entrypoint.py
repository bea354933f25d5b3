"""Worker entrypoints: validation first, the right runner per type, no port from argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from ktrdr.config import WorkerType, validate_all
from ktrdr.workers import backtest_worker, training_worker
from ktrdr.workers.backtest import BacktestRunner
from ktrdr.workers.entrypoint import run_worker
from ktrdr.workers.training import TrainingRunner


def _never(config: object) -> object:
    raise AssertionError("no runner may be built for an invalid configuration")


def test_bad_configuration_exits_1_before_building_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """KTRDR_WORKER_PORT=abc: exit 1 with the report on stderr, no runner built."""
    with pytest.raises(SystemExit) as exited:
        run_worker(
            WorkerType.TRAINING,
            {"KTRDR_WORKER_PORT": "abc"},
            make_runner=_never,  # type: ignore[arg-type]
            env_file=None,
        )

    stderr = capsys.readouterr().err
    assert exited.value.code == 1
    assert "KTRDR_WORKER_PORT='abc'" in stderr
    assert "Traceback" not in stderr


def test_type_conflicting_with_the_entrypoint_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """KTRDR_WORKER_TYPE=training on the backtest entrypoint is refused with exit 1."""
    with pytest.raises(SystemExit) as exited:
        run_worker(
            WorkerType.BACKTEST,
            {"KTRDR_WORKER_TYPE": "training"},
            make_runner=_never,  # type: ignore[arg-type]
            env_file=None,
        )

    assert exited.value.code == 1
    assert "KTRDR_WORKER_TYPE='training'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "worker_type", "runner_class"),
    [
        (training_worker, WorkerType.TRAINING, TrainingRunner),
        (backtest_worker, WorkerType.BACKTEST, BacktestRunner),
    ],
)
def test_each_entrypoint_builds_its_runner_from_the_checkpoint_settings(
    module: object, worker_type: WorkerType, runner_class: type, tmp_path: Path
) -> None:
    """training_worker builds a TrainingRunner, backtest_worker a BacktestRunner."""
    config = validate_all(
        "worker",
        {"KTRDR_CHECKPOINT_DIR": str(tmp_path / "ckpt")},
        env_file=None,
        worker_type=worker_type,
    )

    runner = module.make_runner(config)  # type: ignore[attr-defined]

    assert isinstance(runner, runner_class)
    assert runner.operation_type.value == worker_type.value
