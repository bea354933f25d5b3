"""The shell shared by runners that step through work and checkpoint it.

A subclass implements ``_run`` (the computation) and uses ``_resume_from`` /
``_save`` / ``_stopped`` for its checkpoints. This base turns every failure into a
FAILED outcome (``RunFailed`` carries the user's message), so nothing raised inside
a run escapes to the worker runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ktrdr.config import CheckpointSettings
from ktrdr.protocol import OperationStatus, OperationType
from ktrdr.workers.checkpoints import Checkpoint, CheckpointError, CheckpointStore
from ktrdr.workers.runner import RunContext, RunOutcome, StopReason

__all__ = ["CheckpointedRunner", "RunFailed"]

logger = logging.getLogger(__name__)

FloatArrays = Mapping[str, Any]


class RunFailed(Exception):
    """Ends a run as FAILED with a message for the user."""


class CheckpointedRunner:
    """Runs one operation type with checkpoints and resume.

    ``clock`` is a monotonic clock in seconds (checkpoint time interval). Pass
    ``checkpoints`` to share a :class:`CheckpointStore` with the runtime; by default
    one is built from ``checkpoint``.
    """

    operation_type: OperationType  # set by each subclass

    def __init__(
        self,
        *,
        checkpoint: CheckpointSettings,
        clock: Callable[[], float],
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        self._checkpoint = checkpoint
        self._clock = clock
        self._checkpoints = checkpoints or CheckpointStore(settings=checkpoint)

    @property
    def kind(self) -> str:
        """The checkpoint kind: the operation type's name."""
        return self.operation_type.value

    @property
    def checkpoints(self) -> CheckpointStore:
        """The checkpoint store (the runtime purges expired files through it)."""
        return self._checkpoints

    def run(self, context: RunContext) -> RunOutcome:
        """Do the work; stop with a checkpoint when asked; FAILED (never raise) on any error."""
        try:
            return self._run(context)
        except RunFailed as exc:
            return RunOutcome(status=OperationStatus.FAILED, error=str(exc))
        except Exception as exc:
            logger.exception("%s operation %s crashed", self.kind, context.operation_id)
            error = f"{self.kind} failed unexpectedly: {type(exc).__name__}: {exc}"
            return RunOutcome(status=OperationStatus.FAILED, error=error)

    def _run(self, context: RunContext) -> RunOutcome:
        raise NotImplementedError

    def _resume_from(self, context: RunContext, fingerprint: dict[str, Any]) -> Checkpoint | None:
        """The checkpoint to resume from; None for a fresh start (a stale one is removed)."""
        if not context.resume:
            self._checkpoints.delete(context.operation_id)
            return None
        try:
            checkpoint = self._checkpoints.load(context.operation_id, kind=self.kind)
        except CheckpointError as exc:
            raise RunFailed(f"cannot resume: {exc}") from None
        if checkpoint.meta != fingerprint:
            path = self._checkpoints.path_for(context.operation_id)
            message = f"cannot resume: checkpoint {path} was written for other parameters or bars"
            raise RunFailed(message)
        return checkpoint

    def _unusable(self, exc: Exception) -> RunFailed:
        """The failure for a checkpoint that loaded but whose state cannot be used."""
        return RunFailed(f"cannot resume: the checkpoint's {self.kind} state is unusable ({exc})")

    def _save(
        self, operation_id: str, step: int, arrays: FloatArrays, fingerprint: dict[str, Any]
    ) -> None:
        try:
            self._checkpoints.save(
                operation_id, kind=self.kind, step=step, meta=fingerprint, arrays=dict(arrays)
            )
        except OSError as exc:
            path = self._checkpoints.path_for(operation_id)
            message = f"cannot write checkpoint {path}: {exc.strerror or exc}"
            raise RunFailed(message) from None

    def _stopped(
        self,
        operation_id: str,
        *,
        step: int,
        arrays: FloatArrays,
        fingerprint: dict[str, Any],
        where: str,
        reason: StopReason,
    ) -> RunOutcome:
        """Save a checkpoint and end CANCELLED with ``checkpoint saved at <where>``."""
        self._save(operation_id, step, arrays, fingerprint)
        error = f"checkpoint saved at {where} ({reason.value})"
        return RunOutcome(status=OperationStatus.CANCELLED, error=error, checkpoint_saved=True)

    def _completed(self, operation_id: str, result: dict[str, Any]) -> RunOutcome:
        """Remove the checkpoint (no longer needed) and end COMPLETED."""
        self._checkpoints.delete(operation_id)
        return RunOutcome(status=OperationStatus.COMPLETED, result=result)
