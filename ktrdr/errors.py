"""The one exception tree: every error ktrdr raises on purpose, and its HTTP answer.

Every class is defined here, once, so a name means one thing across the code base,
and one ``except KtrdrError`` catches anything ktrdr raises deliberately. The
number after a class is the HTTP status a server answers with when that error ends
a request (the :data:`HTTP_STATUSES` table, the only place that mapping is made;
``ktrdr.web`` turns it into an ``ErrorBody``); an error without one reaching a server
is a bug there and becomes a logged 500::

    KtrdrError
    ├── ConfigurationError (ValueError)   the configuration cannot be used
    ├── MigrationError                    a file ``ktrdr config migrate`` cannot work on
    ├── BackendError                      a call to the backend did not succeed
    │   ├── BackendUnavailable            no usable answer (5xx, 429): try again later
    │   │   └── BackendUnreachable        no answer at all (down, wrong URL, timeout)
    │   └── BackendRejected               a 4xx: sent unchanged it will never succeed
    │       ├── OperatorTokenRefused      401 on an operator route: not the operator token
    │       ├── WorkerNotRegistered       404/401 on a worker path: register again
    │       └── AttemptNotCurrent         409 stale_attempt: stop that attempt, report nothing
    ├── UnknownWorker (LookupError)       404  no worker with this id is registered
    ├── WorkerIdConflict                  409  a live worker holds this id at another endpoint
    ├── TooManyOperations                 429  live operations reach the configured bound
    ├── InvalidCursor (ValueError)        422  a listing cursor this backend cannot use
    ├── ListingTooFrequent                429  listings exceed their budget (Retry-After)
    ├── StoreError                        the operations store refused a request
    │   ├── OperationNotFound (LookupError)  404  no operation with this id
    │   ├── InvalidTransition             409  not allowed in the operation's status
    │   │   └── StaleAttempt              409  not the operation's current attempt (or worker)
    │   ├── DuplicateOperation            an operation with this id exists
    │   └── LiveLimitReached              creating would pass the bound on live operations
    ├── WorkerRefusal                     a worker will not start this operation now
    │   ├── WorkerBusy                    409  it runs another operation
    │   ├── WorkerStopping                503  it is shutting down
    │   └── WrongOperationType (ValueError)  422  it runs another type of operation
    ├── UnknownOperation (LookupError)    404  the worker runs no operation with this id
    ├── JobFailed                         a job ends its operation as failed (the reason)
    ├── BarsError (ValueError)            bars cannot be produced from the input
    │   └── DataFileRefused               a data file breaks a rule of the data directory
    └── CheckpointError                   a checkpoint cannot be used to resume
        ├── CheckpointMissing             none exists for the operation
        ├── CheckpointCorrupt             it exists but cannot be read
        └── CheckpointFenced              a newer attempt owns the checkpoint

Messages are for people: they name the environment variable to change where there
is one (the caller passes its name: this module imports nothing from ktrdr, so the
configuration can import it). Built in a variable, then raised. An id a client sent
is quoted through :func:`shown_id`: at most :data:`MAX_SHOWN_ID` characters of it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # annotations only: at run time this module imports nothing from ktrdr
    from ktrdr.vocabulary import OperationStatus


#: How much of an id a message quotes: ids are at most 128 characters by the id rule,
#: so a longer one came from a client and is cut, not echoed back whole.
MAX_SHOWN_ID = 128


def shown_id(value: str) -> str:
    """``value`` quoted for a message: its first :data:`MAX_SHOWN_ID` characters, repr'd."""
    if len(value) <= MAX_SHOWN_ID:
        return repr(value)
    return f"{value[:MAX_SHOWN_ID]!r}... ({len(value)} characters)"


class KtrdrError(Exception):
    """Root of every error ktrdr raises on purpose."""


class ConfigurationError(KtrdrError, ValueError):
    """The configuration cannot be used; ``problems`` holds one line per problem.

    It is also a ``ValueError`` so generic callers that guard against bad values
    catch it too. The message is the full report, safe to print: secret values
    are masked before they reach it.
    """

    def __init__(
        self,
        problems: Sequence[str],
        *,
        header: str = "Invalid configuration",
        warnings: Sequence[str] = (),
    ) -> None:
        self.problems = tuple(problems)
        #: Non-fatal lines found on the way (deprecated names used), to print first.
        self.warnings = tuple(warnings)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{header} ({count} {noun}):", *(f"  - {p}" for p in self.problems)]
        message = "\n".join(lines)
        super().__init__(message)


class MigrationError(KtrdrError):
    """A file ``config migrate`` cannot work on; the message is one line."""


# --- calls to the backend (the worker's client and the operator's fleet client) ---------


class BackendError(KtrdrError):
    """A call to the backend did not succeed; ``status_code`` is None without an answer."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class BackendUnavailable(BackendError):
    """No usable answer (5xx, 429, or none at all); worth retrying later."""


class BackendUnreachable(BackendUnavailable):
    """No answer at all: connection refused, wrong URL, timeout."""


class BackendRejected(BackendError):
    """The backend refused the request (4xx); retrying it unchanged will not help."""

    status_code: int

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message, status_code=status_code)


class OperatorTokenRefused(BackendRejected):
    """401 from an operator route: no token was sent, or not the backend's operator token."""


class WorkerNotRegistered(BackendRejected):
    """The backend does not know this worker (404: it restarted) or no longer accepts its
    credential (401: a newer registration replaced it); either way, register again.
    """


class AttemptNotCurrent(BackendRejected):
    """The backend answered ``stale_attempt``: the attempt this worker runs of an operation
    is not the current one (lost and retried elsewhere, timed out, stalled, finished).
    The worker stops that job at once and writes no more checkpoints for it.
    """


# --- the backend's own refusals ------------------------------------------------------------


class UnknownWorker(KtrdrError, LookupError):
    """No worker with this id is registered (never was, was removed, or the backend restarted)."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        super().__init__(f"no worker with id {shown_id(worker_id)} is registered")


class WorkerIdConflict(KtrdrError):
    """A registration for an id that a live worker holds at another endpoint."""

    def __init__(self, worker_id: str, *, endpoint_url: str) -> None:
        self.worker_id = worker_id
        message = (
            f"worker id {worker_id!r} is held by a live worker at another endpoint "
            f"({endpoint_url}); give this worker its own id, or stop the other one and "
            "register again once the backend marks it unavailable"
        )
        super().__init__(message)


class TooManyOperations(KtrdrError):
    """Creation refused: live operations already reach the bound set by ``variable``."""

    def __init__(self, *, live: int, limit: int, variable: str) -> None:
        self.live = live
        self.limit = limit
        message = (
            f"cannot create an operation: {live} operations are already pending or running "
            f"and {variable}={limit}; wait for some to finish, cancel some, "
            f"or raise {variable}"
        )
        super().__init__(message)


class InvalidCursor(KtrdrError, ValueError):
    """A listing's ``cursor`` is malformed, expired, altered or from another listing.

    The message says which and what to do; it never quotes the cursor.
    """


class ListingTooFrequent(KtrdrError):
    """A listing refused because listings used up their budget; retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class StoreError(KtrdrError):
    """The store refused a request; the message says why."""


class OperationNotFound(StoreError, LookupError):
    """No operation has this id (never created, or deleted by retention)."""

    def __init__(self, operation_id: str) -> None:
        self.operation_id = operation_id
        super().__init__(f"no operation with id {shown_id(operation_id)}")


class DuplicateOperation(StoreError):
    """An operation with this id already exists."""

    def __init__(self, operation_id: str) -> None:
        self.operation_id = operation_id
        super().__init__(f"an operation with id {shown_id(operation_id)} already exists")


class InvalidTransition(StoreError):
    """The operation is not in a status that allows the change."""

    def __init__(
        self,
        operation_id: str,
        *,
        current: OperationStatus,
        action: str,
        allowed: Collection[OperationStatus],
        reason: str | None = None,
    ) -> None:
        self.operation_id = operation_id
        self.current = current
        self.action = action
        if reason is None:
            names = " or ".join(s.value for s in allowed)
            reason = f"it is {current.value} (only {names} operations can be)"
        shown = operation_id if len(operation_id) <= MAX_SHOWN_ID else shown_id(operation_id)
        super().__init__(f"cannot {action} operation {shown}: {reason}")


class StaleAttempt(InvalidTransition):
    """A worker spoke for an attempt of an operation that is not the current one.

    Reports, heartbeats and checkpoint writes carry the attempt number; only the
    operation's current attempt, on the worker running it, may change it. The message
    names the operation and its current attempt.
    """

    def __init__(
        self,
        operation_id: str,
        *,
        attempt: int | None,
        worker_id: str,
        current_attempt: int,
        current_status: OperationStatus,
        current_worker_id: str | None,
    ) -> None:
        self.operation_id = operation_id
        self.attempt = attempt
        self.current_attempt = current_attempt
        shown = operation_id if len(operation_id) <= MAX_SHOWN_ID else shown_id(operation_id)
        where = f"{current_status.value}"
        if current_worker_id is not None:
            where += f" on worker {current_worker_id}"
        if attempt is None:
            what = f"worker {worker_id} does not run it"
        elif attempt > current_attempt:
            what = f"attempt {attempt} does not exist"
        elif attempt < current_attempt:
            what = f"attempt {attempt} is no longer current"
        elif current_worker_id != worker_id:
            what = f"attempt {attempt} is not worker {worker_id}'s"
        else:
            what = f"attempt {attempt} is not running"
        message = f"operation {shown}: {what}; the current attempt is {current_attempt} ({where})"
        self.current = current_status
        self.action = "report"
        StoreError.__init__(self, message)


class LiveLimitReached(StoreError):
    """Creating would exceed the bound on live (pending or running) operations."""

    def __init__(self, *, live: int, limit: int) -> None:
        self.live = live
        self.limit = limit
        super().__init__(f"{live} operations are live; the limit is {limit}")


# --- a worker's refusals and its jobs --------------------------------------------------------


class WorkerRefusal(KtrdrError):
    """The worker will not start this operation now."""


class WorkerBusy(WorkerRefusal):
    """Another operation is running."""


class WorkerStopping(WorkerRefusal):
    """The worker is shutting down and takes no new work."""


class WrongOperationType(WorkerRefusal, ValueError):
    """The operation is of a type this worker does not run."""


class UnknownOperation(KtrdrError, LookupError):
    """The worker runs no operation with this id."""


class JobFailed(KtrdrError):
    """Ends a run as failed; the message is the one-line reason the user sees."""


class BarsError(KtrdrError, ValueError):
    """Bars cannot be produced: missing or malformed file, too few rows."""


class DataFileRefused(BarsError):
    """A data file is refused unread: outside the data directory, not a regular file,
    or too large. The message names the rule, never anything from the file.
    """


class CheckpointError(KtrdrError):
    """A checkpoint cannot be used to resume."""


class CheckpointMissing(CheckpointError):
    """No checkpoint exists for the operation."""


class CheckpointCorrupt(CheckpointError):
    """The checkpoint file exists but cannot be read (truncated, garbage, wrong kind)."""


class CheckpointFenced(CheckpointError):
    """A later attempt of the operation owns its checkpoint: an earlier one may not write it."""


# --- the HTTP answer of each domain error ---------------------------------------------------


class HttpStatus(NamedTuple):
    """How a server answers an error: the status and the ``ErrorBody.error`` code."""

    status_code: int
    error: str


#: The one mapping from domain errors to HTTP answers (subclasses inherit theirs).
HTTP_STATUSES: Mapping[type[KtrdrError], HttpStatus] = MappingProxyType(
    {
        UnknownWorker: HttpStatus(404, "unknown_worker"),
        WorkerIdConflict: HttpStatus(409, "worker_id_conflict"),
        OperationNotFound: HttpStatus(404, "unknown_operation"),
        UnknownOperation: HttpStatus(404, "unknown_operation"),
        InvalidTransition: HttpStatus(409, "invalid_transition"),
        StaleAttempt: HttpStatus(409, "stale_attempt"),
        WorkerBusy: HttpStatus(409, "busy"),
        WrongOperationType: HttpStatus(422, "wrong_operation_type"),
        TooManyOperations: HttpStatus(429, "too_many_operations"),
        InvalidCursor: HttpStatus(422, "invalid_request"),
        ListingTooFrequent: HttpStatus(429, "too_many_requests"),
        WorkerStopping: HttpStatus(503, "stopping"),
    }
)


def http_status(error: BaseException) -> HttpStatus | None:
    """The HTTP answer for ``error`` (its nearest mapped class), or None: not a client's fault."""
    for cls in type(error).__mro__:
        found = HTTP_STATUSES.get(cls)
        if found is not None:
            return found
    return None


__all__ = [
    "HTTP_STATUSES",
    "MAX_SHOWN_ID",
    "AttemptNotCurrent",
    "BackendError",
    "BackendRejected",
    "BackendUnavailable",
    "BackendUnreachable",
    "BarsError",
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointFenced",
    "CheckpointMissing",
    "ConfigurationError",
    "DataFileRefused",
    "DuplicateOperation",
    "HttpStatus",
    "InvalidCursor",
    "InvalidTransition",
    "JobFailed",
    "KtrdrError",
    "ListingTooFrequent",
    "LiveLimitReached",
    "MigrationError",
    "OperationNotFound",
    "OperatorTokenRefused",
    "StaleAttempt",
    "StoreError",
    "TooManyOperations",
    "UnknownOperation",
    "UnknownWorker",
    "WorkerBusy",
    "WorkerIdConflict",
    "WorkerNotRegistered",
    "WorkerRefusal",
    "WorkerStopping",
    "WrongOperationType",
    "http_status",
    "shown_id",
]
