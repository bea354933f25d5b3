"""The contract between the worker runtime and the code that does an operation's work.

The runtime (``ktrdr.workers.base``) owns HTTP, registration, heartbeats and signals;
a runner owns the computation (training, backtest) and its checkpoints. A runner's
``run`` is blocking and is called in a worker thread; it polls ``stop_requested`` at
every step and returns promptly (after saving a checkpoint) when it is set.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from ktrdr.protocol import OperationStatus, OperationType, Progress


class StopReason(str, enum.Enum):
    """Why the runtime asked a running operation to stop."""

    CANCELLED = "cancelled"  # POST /operations/{id}/cancel
    SHUTDOWN = "shutdown"  # SIGTERM: save a checkpoint, report "checkpoint saved"


@attrs.frozen(kw_only=True)
class RunContext:
    """What a runner receives: the request and the runtime's callbacks."""

    operation_id: str
    parameters: Mapping[str, Any]
    resume: bool
    report_progress: Callable[[Progress], None]
    #: The reason to stop, or None while the operation should keep going.
    stop_requested: Callable[[], StopReason | None]


@attrs.frozen(kw_only=True)
class RunOutcome:
    """How an operation ended, as reported to the backend."""

    status: OperationStatus
    result: Mapping[str, Any] | None = None
    error: str | None = None
    checkpoint_saved: bool = False


class OperationRunner(Protocol):
    """Runs operations of one type. Bad parameters end as a FAILED outcome, never a crash."""

    operation_type: OperationType

    def run(self, context: RunContext) -> RunOutcome:
        """Do the work; blocking; must honour ``context.stop_requested``."""
        ...
