"""What an operation computes when nothing interrupts it: the result to compare with.

A training run in this process (no worker, no job process), with a job channel that
never asks to stop and drops everything but the outcome.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ktrdr.config import CheckpointSettings
from ktrdr.job_messages import CheckpointData, JobRequest, SeriesUpdate, StopReason
from ktrdr.jobs import TrainingJob, run_steps
from ktrdr.protocol import OperationStatus, OperationType, Progress


class _Uninterrupted:
    """A job channel that never asks to stop and drops progress, checkpoints and series."""

    def progress(self, progress: Progress) -> None:
        """Dropped."""

    def checkpoint(self, data: CheckpointData) -> None:
        """Dropped."""

    def series(self, update: SeriesUpdate) -> None:
        """Dropped."""

    def stop_requested(self) -> StopReason | None:
        return None


def uninterrupted_training(directory: Path, parameters: dict[str, Any]) -> Any:
    """The result (as JSON reads it back) of a training with ``parameters``, run here."""
    request = JobRequest(
        operation_id="reference",
        operation_type=OperationType.TRAINING,
        parameters=parameters,
        checkpoint_settings=CheckpointSettings(dir=directory, epoch_interval=50),
    )
    outcome = run_steps(TrainingJob(), request, _Uninterrupted(), clock=time.monotonic)
    assert outcome.status is OperationStatus.COMPLETED, outcome.error
    return json.loads(json.dumps(outcome.result))


__all__ = ["uninterrupted_training"]
