"""Shared helpers of the checkpointed runner tests (imported as ``runner_helpers``).

The training and backtest runners share one shell (``ktrdr.workers.checkpointed``), so
their tests drive them the same way: a hand-moved clock, a harness that records
progress and answers stop polls, and checkpoint settings under ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ktrdr.config import CheckpointSettings
from ktrdr.protocol import Progress
from ktrdr.workers.checkpointed import CheckpointedRunner
from ktrdr.workers.runner import RunContext, RunOutcome, StopReason

RunnerT = TypeVar("RunnerT", bound=CheckpointedRunner)

#: Periodic checkpoints off: far more epochs and bars than any test runs. A test that
#: pins periodic checkpoints sets its own interval.
PERIODIC_OFF: dict[str, Any] = {"epoch_interval": 1000, "bar_interval": 1_000_000}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """Builds contexts and records what the runner reported.

    The runner polls ``stop`` once per step (epoch or bar); from poll ``stop_after + 1``
    on it answers ``reason``. ``on_progress`` and ``on_poll`` let a test act on a report
    or a poll (move a clock, crash).
    """

    def __init__(self, *, stop_after: int | None = None, reason: StopReason | None = None):
        self.progress: list[Progress] = []
        self.stop_after = stop_after
        self.reason = reason or StopReason.SHUTDOWN
        self.polls = 0
        self.on_progress: Callable[[Progress], None] | None = None
        self.on_poll: Callable[[int], None] | None = None

    def report(self, progress: Progress) -> None:
        """Record a progress report, then hand it to ``on_progress``."""
        self.progress.append(progress)
        if self.on_progress is not None:
            self.on_progress(progress)

    def stop(self) -> StopReason | None:
        """Count a poll, hand it to ``on_poll``, answer ``reason`` once past ``stop_after``."""
        self.polls += 1
        if self.on_poll is not None:
            self.on_poll(self.polls)
        if self.stop_after is not None and self.polls > self.stop_after:
            return self.reason
        return None

    def context(
        self, operation_id: str, parameters: Mapping[str, Any], *, resume: bool = False
    ) -> RunContext:
        """A run context for ``operation_id`` wired to this harness."""
        return RunContext(
            operation_id=operation_id,
            parameters=parameters,
            resume=resume,
            report_progress=self.report,
            stop_requested=self.stop,
        )


def checkpoint_settings(tmp_path: Path, **overrides: Any) -> CheckpointSettings:
    """Checkpoints under ``tmp_path/ckpt`` with periodic ones off, unless overridden."""
    values: dict[str, Any] = {"dir": tmp_path / "ckpt", **PERIODIC_OFF}
    values.update(overrides)
    return CheckpointSettings(**values)


def make_runner(
    runner_type: type[RunnerT],
    tmp_path: Path,
    clock: Callable[[], float] | None = None,
    **overrides: Any,
) -> RunnerT:
    """A runner on ``checkpoint_settings(tmp_path, **overrides)``; a still clock by default."""
    return runner_type(
        checkpoint=checkpoint_settings(tmp_path, **overrides), clock=clock or FakeClock()
    )


def run(
    runner: CheckpointedRunner,
    operation_id: str,
    parameters: Mapping[str, Any],
    *,
    resume: bool = False,
) -> RunOutcome:
    """One run with a fresh harness that never asks to stop."""
    return runner.run(Harness().context(operation_id, parameters, resume=resume))
