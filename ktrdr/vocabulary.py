"""The words the configuration and the wire share: types, statuses and the id rule.

``ktrdr.config`` (a worker's ``KTRDR_WORKER_TYPE`` and ``KTRDR_WORKER_ID``) and
``ktrdr.protocol`` (the messages between workers and the backend) must agree on what
a worker type is, what an id may contain and which statuses are final. Each of these
is defined here once, so the two cannot drift. This module sits below both: it
imports nothing from ktrdr, holds no settings and speaks no HTTP.
"""

from __future__ import annotations

import enum
import re


class OperationType(str, enum.Enum):
    """What an operation does; a worker runs the operations of its own type."""

    TRAINING = "training"
    BACKTEST = "backtest"


#: A worker's type is the type of operation it runs: the same enum, under its config name.
WorkerType = OperationType


class OperationStatus(str, enum.Enum):
    """Lifecycle of an operation; see :data:`FINISHED_STATUSES` for the final ones."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for a final status (nothing will change the operation any more)."""
        return self in FINISHED_STATUSES


#: Final statuses, in lifecycle order (tuples, so messages listing them read the same
#: in every process). A failed or cancelled operation is resumed as a new run.
FINISHED_STATUSES: tuple[OperationStatus, ...] = (
    OperationStatus.COMPLETED,
    OperationStatus.FAILED,
    OperationStatus.CANCELLED,
)
#: Statuses of an operation still waiting or running.
LIVE_STATUSES: tuple[OperationStatus, ...] = (OperationStatus.PENDING, OperationStatus.RUNNING)


class WorkerStatus(str, enum.Enum):
    """A worker's state as the backend sees it (``unavailable``: heartbeats missed)."""

    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    UNAVAILABLE = "unavailable"


#: Longest worker or operation id.
ID_MAX_LENGTH = 128
#: Worker and operation ids: safe in a URL path, a log line and a directory name.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
#: :data:`ID_PATTERN` in words, for messages and the configuration docs.
ID_RULE = (
    f"an id of 1 to {ID_MAX_LENGTH} letters, digits, '.', '_', ':' or '-', "
    "starting with a letter or digit"
)
_ID = re.compile(ID_PATTERN)
_ID_CHARACTER = re.compile(r"[A-Za-z0-9._:-]")


def id_problem(value: str) -> str | None:
    """None when ``value`` is a valid id; otherwise ``expected ...`` and what is wrong.

    The message is for a person (it names the first offending character) and never
    repeats the whole value, which the caller shows next to the variable's name.
    """
    if _ID.fullmatch(value):
        return None
    if not value:
        why = "it is empty"
    elif len(value) > ID_MAX_LENGTH:
        why = f"it has {len(value)} characters"
    elif not value[0].isascii() or not value[0].isalnum():
        why = f"it starts with {value[0]!r}"
    else:
        bad = next(c for c in value if not _ID_CHARACTER.fullmatch(c))
        why = f"it contains {bad!r}"
    return f"expected {ID_RULE} ({why})"


__all__ = [
    "FINISHED_STATUSES",
    "ID_MAX_LENGTH",
    "ID_PATTERN",
    "ID_RULE",
    "LIVE_STATUSES",
    "OperationStatus",
    "OperationType",
    "WorkerStatus",
    "WorkerType",
    "id_problem",
]
