"""Training worker entrypoint (``python -m`` this module, or ``ktrdr worker training``)."""

from __future__ import annotations

import os
import time

from ktrdr.config import WorkerConfig, WorkerType
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.entrypoint import run_worker
from ktrdr.workers.runner import OperationRunner
from ktrdr.workers.training import TrainingRunner


def make_runner(config: WorkerConfig, checkpoints: CheckpointStore) -> OperationRunner:
    """The training runner, saving and loading through the runtime's checkpoint store."""
    return TrainingRunner(
        checkpoint=config.checkpoint, clock=time.monotonic, checkpoints=checkpoints
    )


def main() -> None:
    """Console entry point: the process environment is read here and only here."""
    raise SystemExit(run_worker(WorkerType.TRAINING, os.environ, make_runner=make_runner))


if __name__ == "__main__":
    main()
