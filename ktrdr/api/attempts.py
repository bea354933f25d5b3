"""Attempts: which dispatch of an operation is current, and what a lost one becomes.

Every dispatch of an operation to a worker is an attempt with a number (1, 2, ...).
Heartbeats, reports and checkpoint writes carry it, and only the current attempt, on
the worker running it, may change the operation (fencing): a worker paused past the
orphan timeout, whose operation was retried elsewhere, is told its attempt is stale
and stops. An attempt lost with its worker (orphaned, the worker shut down or was
unreachable at dispatch) sends the operation back to the queue to resume from its
checkpoint, until ``KTRDR_OPS_MAX_ATTEMPTS`` attempts were lost.

:class:`CurrentAttempts` is the store's in-memory book of the current attempt of live
operations, so the heartbeat path answers "is this attempt current?" without a
database read. The store is the truth: it updates the book after every transition it
commits, under the one lock that serialises its transitions, and fills a missing entry
from the database under the same lock, so the book never runs behind a commit made by
this process. Only the backend process changes operations, so that is all of them.
This module does no I/O of its own and reads no clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs

from ktrdr.config import OperationsSettings, env_name
from ktrdr.errors import StaleAttempt
from ktrdr.protocol import OperationStatus
from ktrdr.vocabulary import LIVE_STATUSES

__all__ = [
    "AttemptState",
    "CurrentAttempts",
    "LostAttempt",
    "lost_attempt",
    "stale_attempt",
]

_MAX_ATTEMPTS = env_name(attrs.fields(OperationsSettings).max_attempts)


@attrs.frozen(kw_only=True)
class AttemptState:
    """An operation's current attempt: its number, status and worker."""

    operation_id: str
    attempt: int
    status: OperationStatus
    worker_id: str | None

    def accepts(self, *, worker_id: str, attempt: int) -> bool:
        """True when ``worker_id`` runs the current attempt and it is ``attempt``."""
        return (
            self.status is OperationStatus.RUNNING
            and self.worker_id == worker_id
            and self.attempt == attempt
        )


def stale_attempt(state: AttemptState, *, worker_id: str, attempt: int | None) -> StaleAttempt:
    """The 409 for a worker speaking for an attempt of ``state``'s operation that is not current."""
    return StaleAttempt(
        state.operation_id,
        attempt=attempt,
        worker_id=worker_id,
        current_attempt=state.attempt,
        current_status=state.status,
        current_worker_id=state.worker_id,
    )


@attrs.frozen(kw_only=True)
class LostAttempt:
    """What a lost attempt becomes: queued again (retry) or failed for good."""

    retry: bool
    error: str


def lost_attempt(*, attempt: int, lost_before: int, max_attempts: int, reason: str) -> LostAttempt:
    """The verdict on an attempt lost with its worker, and the reason the operation shows.

    ``lost_before`` counts the attempts already lost since creation (or the last resume
    by hand). With this one, fewer than ``max_attempts`` lost: queued again to resume
    from the checkpoint. Otherwise failed, naming the attempts and the variable.
    """
    lost = lost_before + 1
    if lost < max_attempts:
        left = max_attempts - lost
        error = (
            f"attempt {attempt} lost: {reason}; retrying from its last checkpoint "
            f"({left} of {_MAX_ATTEMPTS}={max_attempts} attempts left)"
        )
        return LostAttempt(retry=True, error=error)
    first = attempt - lost + 1
    attempts = f"attempt {attempt}" if lost == 1 else f"attempts {first}-{attempt}"
    error = (
        f"attempt {attempt} lost: {reason}; failed after {lost} lost "
        f"{'attempt' if lost == 1 else 'attempts'} ({attempts}; {_MAX_ATTEMPTS}={max_attempts}); "
        "resume it to continue from its last checkpoint"
    )
    return LostAttempt(retry=False, error=error)


class CurrentAttempts:
    """The current attempt of live operations, in memory (see the module docstring).

    ``lock`` is the store's transition lock: hold it while committing a transition
    and recording its outcome here, and while filling a missing entry.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._states: dict[str, AttemptState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, operation_id: str) -> AttemptState | None:
        """The known state, or None (then read the database). Lock-free."""
        return self._states.get(operation_id)

    def record(self, state: AttemptState) -> None:
        """A committed transition's outcome (caller holds :attr:`lock`)."""
        if state.status in LIVE_STATUSES:
            self._states[state.operation_id] = state
        else:
            self._states.pop(state.operation_id, None)

    def forget(self, operation_id: str) -> None:
        """The operation is gone (caller holds :attr:`lock`)."""
        self._states.pop(operation_id, None)

    def lookup(
        self, operation_id: str, read: Callable[[str], AttemptState | None]
    ) -> AttemptState | None:
        """The state of ``operation_id``, read with ``read`` (the database) when unknown."""
        state = self._states.get(operation_id)
        if state is not None:
            return state
        with self.lock:
            state = self._states.get(operation_id)
            if state is None:
                state = read(operation_id)
                if state is not None:
                    self.record(state)
        return state
