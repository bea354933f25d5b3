"""PLACEHOLDER being replaced by a teammate: the backtest runner (see workers/runner.py)."""

from __future__ import annotations

from collections.abc import Callable

from ktrdr.config import CheckpointSettings
from ktrdr.protocol import OperationStatus, OperationType
from ktrdr.workers.runner import RunContext, RunOutcome


class BacktestRunner:
    """Runs backtest operations (placeholder: always fails until implemented)."""

    operation_type = OperationType.BACKTEST

    def __init__(self, *, checkpoint: CheckpointSettings, clock: Callable[[], float]) -> None:
        self._checkpoint = checkpoint
        self._clock = clock

    def run(self, context: RunContext) -> RunOutcome:
        """Not implemented yet."""
        return RunOutcome(status=OperationStatus.FAILED, error="not implemented yet")
