"""What an operation computes when nothing interrupts it: the result to compare with.

A training run without a worker, with a job channel that never asks to stop and drops
everything but the outcome. It runs in a child process with the workers' environment
(``base_env``: one BLAS thread), because the number of BLAS threads changes the order
of the floating-point sums and so the trained model's last digits: a reference computed
in the test runner (as many BLAS threads as cores) differs from what a worker computes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ktrdr.config import CheckpointSettings
from ktrdr.job_messages import CheckpointData, JobRequest, SeriesUpdate, StopReason
from ktrdr.jobs import TrainingJob, run_steps
from ktrdr.protocol import OperationStatus, OperationType, Progress


class _Uninterrupted:
    """A job channel that never asks to stop, drops progress and checkpoints and keeps
    the series points.
    """

    def __init__(self) -> None:
        self.points: dict[str, list[list[float]]] = {}

    def progress(self, progress: Progress) -> None:
        """Dropped."""

    def checkpoint(self, data: CheckpointData) -> None:
        """Dropped."""

    def series(self, update: SeriesUpdate) -> None:
        for name, values in update.points.items():
            self.points.setdefault(name, []).extend([x, y] for x, y in values)

    def stop_requested(self) -> StopReason | None:
        return None


def _train_here(directory: Path, parameters: dict[str, Any], epoch_interval: int) -> Any:
    request = JobRequest(
        operation_id="reference",
        operation_type=OperationType.TRAINING,
        parameters=parameters,
        checkpoint_settings=CheckpointSettings(dir=directory, epoch_interval=epoch_interval),
    )
    channel = _Uninterrupted()
    outcome = run_steps(TrainingJob(), request, channel, clock=time.monotonic)
    if outcome.status is not OperationStatus.COMPLETED:
        raise SystemExit(f"the reference training did not complete: {outcome.error}")
    return {"result": outcome.result, "series": channel.points}


def _in_child(directory: Path, parameters: dict[str, Any], epoch_interval: int) -> Any:
    """Run :func:`_train_here` in a child process with the workers' environment."""
    # Imported here: this file also runs as a script, where support is not importable.
    from support.processes import base_env

    done = subprocess.run(
        [sys.executable, __file__, str(directory), json.dumps(parameters), str(epoch_interval)],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def uninterrupted_training(directory: Path, parameters: dict[str, Any]) -> Any:
    """The result (as JSON reads it back) of a training with ``parameters``, run in a
    child process with the environment the workers get.
    """
    return _in_child(directory, parameters, 50)["result"]


def uninterrupted_series(
    directory: Path, parameters: dict[str, Any]
) -> dict[str, list[list[float]]]:
    """The series points (name -> [[x, y], ...]) of the same uninterrupted training, run
    in a child process with the workers' environment.
    """
    series: dict[str, list[list[float]]] = _in_child(directory, parameters, 10)["series"]
    return series


if __name__ == "__main__":
    print(json.dumps(_train_here(Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3]))))


__all__ = ["uninterrupted_series", "uninterrupted_training"]
