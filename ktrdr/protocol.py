"""The messages on the wire between workers and the backend, and their paths.

Both ``ktrdr.workers`` and ``ktrdr.api`` import this module and never each other.
The words it shares with the configuration (types, statuses, the id rule) are defined
in ``ktrdr.vocabulary`` and re-exported here for the code that speaks the wire.
Models are pydantic (FastAPI validates request bodies with them and publishes them
in the OpenAPI schema); unknown fields are refused so typos fail loudly.

Two values on the wire name places and are checked here, where both sides see the
same rule: a worker's ``endpoint_url`` is a base URL the backend calls (scheme, host,
port and an optional path prefix, nothing a request could be smuggled through), and
an operation's ``csv_path`` is relative to the workers' data directory (it can never
name a file outside it).
"""

from __future__ import annotations

import datetime
import posixpath
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from ktrdr.vocabulary import (
    FINISHED_STATUSES,
    ID_PATTERN,
    OperationStatus,
    OperationType,
    WorkerStatus,
)

API_PREFIX = "/api/v1"
WORKERS_PATH = f"{API_PREFIX}/workers"
REGISTER_PATH = f"{WORKERS_PATH}/register"
OPERATIONS_PATH = f"{API_PREFIX}/operations"
#: The operator's dashboard on the backend (its home page).
DASHBOARD_PATH = "/ui/"
#: On a worker: ``POST`` starts (or resumes) an operation, ``/{id}/cancel`` stops it.
WORKER_OPERATIONS_PATH = "/operations"
MAX_BODY_BYTES = 1024 * 1024

_ID = ID_PATTERN


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: What a worker's ``endpoint_url`` must look like (in every refusal).
BASE_URL_RULE = "http(s)://host[:port][/path prefix]"


def base_url_problem(url: str) -> str | None:
    """Why ``url`` is not a worker base URL, or None when it is one.

    A base URL is a scheme (http or https), a host, an optional port and an optional
    path prefix: no user-info, query string or fragment (the backend appends its fixed
    paths, so anything after the path would change the request it makes), no dot
    segments, and visible ASCII only.
    """
    if not url.isascii() or any(c <= " " or c in "\\\x7f" for c in url):
        return "only visible ASCII characters, no spaces or backslashes"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        return "a valid host and port"
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "the http or https scheme"
    elif "@" in parts.netloc:
        problem = "no user-info (user:password@)"
    elif "?" in url:
        problem = "no query string"
    elif "#" in url:
        problem = "no fragment"
    elif not parts.hostname:
        problem = "a host"
    elif port == 0:
        problem = "a port between 1 and 65535"
    elif any(segment in (".", "..") for segment in parts.path.split("/")):
        problem = "no '.' or '..' segments in the path prefix"
    return problem


def data_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file in the workers' data directory, or None.

    Only the text is checked (the backend has no data directory): no NUL byte, not
    absolute, and no ``..`` that climbs out of the directory. The worker checks again,
    on the real file system, where symbolic links are resolved.
    """
    if "\x00" in path:
        return "must not contain a NUL byte"
    if path.startswith("/"):
        return "must be relative to the workers' data directory, not absolute"
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        return "must stay inside the workers' data directory ('..' leaves it)"
    return None


def _checked_data_path(value: str | None) -> str | None:
    if value is not None:
        problem = data_path_problem(value)
        if problem is not None:
            raise ValueError(problem)
    return value


class Progress(_Message):
    """How far a running operation is (sent with heartbeats)."""

    percent: float = Field(ge=0, le=100)
    message: str = Field(default="", max_length=500)
    #: Step counters and metrics so far, e.g. ``{"epoch": 3, "loss": 0.41}``.
    details: dict[str, Any] = Field(default_factory=dict)


# --- Series: the curves a running operation draws (loss per epoch, equity per bar) ---------

#: Most points one series holds: jobs down-sample longer runs to this many.
MAX_SERIES_POINTS = 1000
#: Most series one operation reports.
MAX_SERIES_NAMES = 8
#: What a series is called: lower case, digits and ``_`` (``loss``, ``validation_loss``).
SERIES_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"

SeriesName = Annotated[str, StringConstraints(pattern=SERIES_NAME_PATTERN)]
#: One point: the step (epoch or bar number, from 1) and a finite value.
SeriesPoint = tuple[Annotated[int, Field(ge=0)], Annotated[float, Field(allow_inf_nan=False)]]
#: Points by series name, as heartbeats, reports and ``GET .../series`` carry them.
SeriesPoints = Annotated[
    dict[SeriesName, Annotated[list[SeriesPoint], Field(max_length=MAX_SERIES_POINTS)]],
    Field(max_length=MAX_SERIES_NAMES),
]
#: What a series' x counts, by operation type.
SeriesAxis = Literal["epoch", "bar"]
SERIES_AXES: Mapping[OperationType, SeriesAxis] = {
    OperationType.TRAINING: "epoch",
    OperationType.BACKTEST: "bar",
}


class _MaySendSeries(_Message):
    """A message with optional ``series``: left out of the JSON when there are none.

    So a worker without points sends exactly what a backend from before series
    expects (it refuses unknown fields). Subclasses name in ``_OMITTED_WHEN_EMPTY``
    their other fields added since, left out the same way when None, false or an
    empty list.
    """

    _OMITTED_WHEN_EMPTY: ClassVar[tuple[str, ...]] = ("series",)

    series: SeriesPoints | None = None

    @model_serializer(mode="wrap")
    def _drop_empty(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self._OMITTED_WHEN_EMPTY:
                value = data.get(name)
                if value is None or value is False or value == []:
                    data.pop(name, None)
        return data


class OperationSeries(_Message):
    """``GET /api/v1/operations/{id}/series``: every stored point, by series, x ascending.

    ``x`` names what the first coordinate counts: ``epoch`` for training (loss,
    accuracy, validation_loss, validation_accuracy after each epoch), ``bar`` for a
    backtest (equity after each bar, at most :data:`MAX_SERIES_POINTS` bars).
    """

    x: SeriesAxis
    series: SeriesPoints = Field(default_factory=dict)


class RegisterRequest(_Message):
    """``POST /api/v1/workers/register``: a worker announces itself (idempotent per id)."""

    worker_id: str = Field(pattern=_ID)
    worker_type: OperationType
    #: The base URL the backend calls the worker at (see :func:`base_url_problem`).
    endpoint_url: str = Field(min_length=8, max_length=2048)
    capabilities: dict[str, Any] = Field(default_factory=dict)
    heartbeat_interval_s: float = Field(gt=0, le=3600)
    config_fingerprint: str = Field(min_length=1, max_length=128)
    current_operation_id: str | None = Field(default=None, pattern=_ID)

    @field_validator("endpoint_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        problem = base_url_problem(value)
        if problem is not None:
            message = f"expected a base URL {BASE_URL_RULE} with {problem}"
            raise ValueError(message)
        return value


#: Most operation ids one heartbeat lists in ``pending_outcomes``.
MAX_PENDING_OUTCOMES = 1000
#: Largest attempt number on the wire (far beyond any ``KTRDR_OPS_MAX_ATTEMPTS``).
MAX_ATTEMPT = 1_000_000_000


class HeartbeatRequest(_MaySendSeries):
    """``POST /api/v1/workers/{id}/heartbeat``: status and the running operation's progress.

    ``pending_outcomes`` names the operations that ended on this worker whose outcome
    the backend has not acknowledged yet (kept in the worker's outbox, being retried):
    the backend counts them as reported, so it does not fail them as orphans while
    their worker is alive and still delivering. Left out of the JSON when empty, like
    ``series``, so a backend from before it still takes the heartbeat.

    ``attempt`` is the attempt of ``current_operation_id`` this worker runs (workers
    always send it with an operation): the backend answers 409 ``stale_attempt`` when
    it is not the current one, and the worker stops that job. Without it (a worker
    from before attempts, during an upgrade) the heartbeat speaks for the attempt its
    worker runs.
    """

    status: WorkerStatus
    current_operation_id: str | None = Field(default=None, pattern=_ID)
    attempt: int | None = Field(default=None, ge=1, le=MAX_ATTEMPT)
    progress: Progress | None = None
    # series: points of the current operation not acknowledged yet (answered 200).
    pending_outcomes: list[Annotated[str, Field(pattern=_ID)]] = Field(
        default_factory=list, max_length=MAX_PENDING_OUTCOMES
    )

    _OMITTED_WHEN_EMPTY = ("series", "pending_outcomes", "attempt")


class WorkerView(_Message):
    """One item of ``GET /api/v1/workers``."""

    worker_id: str
    worker_type: OperationType
    endpoint_url: str
    status: WorkerStatus
    current_operation_id: str | None
    last_heartbeat_at: datetime.datetime
    registered_at: datetime.datetime
    capabilities: dict[str, Any]
    config_fingerprint: str
    heartbeat_interval_s: float
    #: True when another worker of the same type runs with a different configuration.
    fingerprint_drift: bool = False


class RegisterResponse(WorkerView):
    """The answer to a registration: the worker's view and its credential.

    ``credential`` is bound to this worker id and this registration: the worker sends
    it as ``Authorization: Bearer <credential>`` on its heartbeats, reports and
    unregister. A new registration replaces it. It appears in no other answer.
    """

    credential: str = Field(min_length=16, max_length=256, repr=False)


class StartOperationRequest(_Message):
    """Backend → worker ``POST /operations``: run (or resume) one attempt of an operation.

    ``resume`` continues from the operation's checkpoint and fails without one;
    ``retry`` (an automatic retry of an attempt lost with its worker) continues from
    the checkpoint when there is one and starts over otherwise. The worker stamps
    ``attempt`` on its heartbeats, its report and its checkpoints.
    """

    operation_id: str = Field(pattern=_ID)
    operation_type: OperationType
    parameters: dict[str, Any] = Field(default_factory=dict)
    resume: bool = False
    attempt: int = Field(default=1, ge=1, le=MAX_ATTEMPT)
    retry: bool = False


class CancelOperationRequest(_Message):
    """Backend → worker ``POST /operations/{id}/cancel`` (the body is optional).

    ``attempt`` names the attempt to stop (a worker running another attempt of the
    operation leaves it alone). ``superseded`` says the attempt is no longer the
    operation's current one (lost and retried, timed out, stalled): the worker kills
    its job at once and writes no more checkpoints for it. Without it (a user's
    cancel) the job stops at its next step and saves a checkpoint.
    """

    attempt: int | None = Field(default=None, ge=1, le=MAX_ATTEMPT)
    superseded: bool = False


class OperationReport(_MaySendSeries):
    """Worker → backend ``POST /api/v1/operations/{id}/report``: how an attempt ended.

    Accepted only from the worker running ``attempt`` while it is the operation's
    current attempt (409 ``stale_attempt`` otherwise, and nothing changes). Workers
    always send ``attempt``; without it (a worker from before attempts, during an
    upgrade) the report speaks for the attempt its worker runs.
    """

    worker_id: str = Field(pattern=_ID)
    attempt: int | None = Field(default=None, ge=1, le=MAX_ATTEMPT)
    status: OperationStatus
    result: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=4000)
    checkpoint_saved: bool = False
    # series: every point of the operation (the worker's whole record of it).
    #: The worker is free and asks for its next operation in the answer
    #: (:class:`ReportAnswer`). Sent only as ``true``, and only to a backend whose
    #: registration answer carried :data:`HANDOFF_HEADER`: a backend from before it
    #: refuses unknown fields.
    take_next: bool = False

    _OMITTED_WHEN_EMPTY = ("series", "take_next")


#: Response header of a registration answer from a backend that hands the next
#: operation over in the answer to a report (its value is ``1``). Workers send
#: ``take_next`` only to such a backend; a header, because a field in the answer would
#: be refused by a worker from before it (its models refuse unknown fields).
HANDOFF_HEADER = "Ktrdr-Handoff"


class Handoff(_Message):
    """The next operation, handed to a worker in the answer to its report.

    ``start`` is exactly what a start request (``POST /operations``) would carry;
    ``traceparent`` the dispatch span its run continues (None: not traced).
    """

    start: StartOperationRequest
    traceparent: str | None = Field(default=None, max_length=55)


class ReleaseOperationRequest(_Message):
    """Worker → backend ``POST /api/v1/operations/{id}/release``: the worker could not
    start ``attempt``, handed to it with a report's answer (it began stopping, or its
    own checks refused it). The operation goes back to pending in its old place, the
    attempt given back, as when a start request is answered busy.
    """

    worker_id: str = Field(pattern=_ID)
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    reason: str = Field(default="", max_length=500)


class ErrorBody(_Message):
    """Every 4xx/5xx body: a machine-readable code and a sentence for a person."""

    error: str
    detail: Any = None


# --- Operations: parameters by type, the create request and the view ------------------

_SYMBOL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"


class TrainingParameters(_Message):
    """What a training operation fits: an MLP predicting next-bar direction from bars.

    Bars come from ``csv_path`` (a file in the workers' data directory; its last
    ``bars`` rows are used) or, without it, from the seeded synthetic generator.
    """

    symbol: str = Field(default="SYNTH", pattern=_SYMBOL)
    bars: int = Field(default=2000, ge=100, le=1_000_000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    epochs: int = Field(default=50, ge=1, le=10_000)
    learning_rate: float = Field(default=0.1, gt=0, le=10, allow_inf_nan=False)
    hidden_units: int = Field(default=16, ge=1, le=256)
    #: A file relative to the workers' data directory (see :func:`data_path_problem`).
    csv_path: str | None = Field(default=None, min_length=1, max_length=4096)

    _csv_path = field_validator("csv_path")(_checked_data_path)


class BacktestParameters(_Message):
    """What a backtest simulates: a long-only moving-average crossover with costs.

    ``commission`` and ``slippage`` are fractions of the traded value (0.001 = 0.1%).
    """

    symbol: str = Field(default="SYNTH", pattern=_SYMBOL)
    bars: int = Field(default=2000, ge=100, le=1_000_000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    fast_window: int = Field(default=10, ge=1, le=10_000)
    slow_window: int = Field(default=30, ge=2, le=10_000)
    commission: float = Field(default=0.001, ge=0, le=0.1, allow_inf_nan=False)
    slippage: float = Field(default=0.0005, ge=0, le=0.1, allow_inf_nan=False)
    initial_capital: float = Field(default=10_000.0, gt=0, le=1e12, allow_inf_nan=False)
    #: Bars per year, to annualise the Sharpe ratio (252: daily bars).
    bars_per_year: int = Field(default=252, ge=1, le=1_000_000)
    #: A file relative to the workers' data directory (see :func:`data_path_problem`).
    csv_path: str | None = Field(default=None, min_length=1, max_length=4096)

    _csv_path = field_validator("csv_path")(_checked_data_path)

    @model_validator(mode="after")
    def _windows_fit(self) -> BacktestParameters:
        if self.fast_window >= self.slow_window:
            message = (
                f"fast_window ({self.fast_window}) must be smaller than "
                f"slow_window ({self.slow_window})"
            )
            raise ValueError(message)
        if self.slow_window >= self.bars:
            message = f"slow_window ({self.slow_window}) must be smaller than bars ({self.bars})"
            raise ValueError(message)
        return self


OperationParameters = TrainingParameters | BacktestParameters

_PARAMETER_MODELS: dict[OperationType, type[TrainingParameters] | type[BacktestParameters]] = {
    OperationType.TRAINING: TrainingParameters,
    OperationType.BACKTEST: BacktestParameters,
}


def parse_parameters(
    operation_type: OperationType | str, parameters: Mapping[str, Any]
) -> OperationParameters:
    """Validate ``parameters`` for ``operation_type``; raises pydantic ``ValidationError``.

    Raises ``ValueError`` naming the accepted types when ``operation_type`` is unknown.
    """
    try:
        kind = OperationType(operation_type)
    except ValueError:
        accepted = ", ".join(t.value for t in OperationType)
        message = f"unknown operation type {operation_type!r}; expected one of: {accepted}"
        raise ValueError(message) from None
    return _PARAMETER_MODELS[kind].model_validate(dict(parameters))


def describe_validation_error(exc: ValidationError) -> str:
    """Every problem as ``field: message`` (joined by ``; ``), for errors shown to a person.

    Problems of the whole model (e.g. ``fast_window`` not below ``slow_window``) have
    no field; their message already names the fields.
    """
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


#: Longest ``timeout_s`` accepted on creation (about 31 years).
MAX_TIMEOUT_S = 1e9


class CreateOperationRequest(_Message):
    """``POST /api/v1/operations``: what to run; ``parameters`` are checked by type.

    ``timeout_s`` (seconds, positive) bounds how long each attempt may run; without
    it ``KTRDR_OPS_DEFAULT_TIMEOUT`` applies.
    """

    type: OperationType
    parameters: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)

    def typed_parameters(self) -> OperationParameters:
        """The parameters validated for this type; raises pydantic ``ValidationError``."""
        return parse_parameters(self.type, self.parameters)


class OperationView(_Message):
    """One operation as the backend reports it (``GET /api/v1/operations/{id}``)."""

    id: str
    type: OperationType
    status: OperationStatus
    parameters: dict[str, Any]
    progress: Progress | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    worker_id: str | None = None
    created_at: datetime.datetime
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    last_reported_at: datetime.datetime | None = None
    #: True when the operation was re-queued to continue from its checkpoint.
    resume: bool = False
    #: OpenTelemetry trace of the current attempt (32 hex digits); None when not traced.
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    #: The number of its latest dispatch to a worker (0: never dispatched).
    attempt: int = 0
    #: Attempts lost with their worker since creation or the last resume by hand.
    lost_attempts: int = 0
    #: How long each attempt may run, in seconds (None: no limit).
    timeout_s: float | None = None


class ReportAnswer(OperationView):
    """The answer to a report: the operation as it now is and, when the report asked
    (``take_next``) and one was pending, the worker's next operation.

    ``next_operation`` is left out when there is none, so the answer reads as an
    :class:`OperationView`.
    """

    next_operation: Handoff | None = None

    @model_serializer(mode="wrap")
    def _drop_no_next(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("next_operation") is None:
            data.pop("next_operation", None)
        return data


#: Most operations one ``GET /api/v1/operations`` page holds (``?limit`` at most).
MAX_PAGE_ITEMS = 200


#: Matches a listing counts for its ``total`` (above it, ``total`` is null).
MAX_COUNTED = 10_000
#: Largest ``offset`` of ``GET /api/v1/operations`` (deeper pages: follow ``next_cursor``).
MAX_OFFSET = MAX_COUNTED


class OperationList(_Message):
    """``GET /api/v1/operations``: one page, newest first, and how to get the next.

    ``total`` is how many operations match the filters, counted up to
    :data:`MAX_COUNTED` (null when more match). ``next_cursor`` is null on the last
    page; otherwise pass it as ``?cursor=`` (with the same filters) for the next one.
    """

    items: list[OperationView]
    total: int | None
    limit: int
    offset: int
    next_cursor: str | None = None


__all__ = [
    "API_PREFIX",
    "BASE_URL_RULE",
    "DASHBOARD_PATH",
    "FINISHED_STATUSES",
    "HANDOFF_HEADER",
    "ID_PATTERN",
    "MAX_ATTEMPT",
    "MAX_BODY_BYTES",
    "MAX_COUNTED",
    "MAX_OFFSET",
    "MAX_PAGE_ITEMS",
    "MAX_PENDING_OUTCOMES",
    "MAX_SERIES_NAMES",
    "MAX_SERIES_POINTS",
    "MAX_TIMEOUT_S",
    "OPERATIONS_PATH",
    "REGISTER_PATH",
    "SERIES_AXES",
    "SERIES_NAME_PATTERN",
    "WORKERS_PATH",
    "WORKER_OPERATIONS_PATH",
    "BacktestParameters",
    "CancelOperationRequest",
    "CreateOperationRequest",
    "ErrorBody",
    "Handoff",
    "HeartbeatRequest",
    "OperationList",
    "OperationParameters",
    "OperationReport",
    "OperationSeries",
    "OperationStatus",
    "OperationType",
    "OperationView",
    "Progress",
    "RegisterRequest",
    "RegisterResponse",
    "ReleaseOperationRequest",
    "ReportAnswer",
    "SeriesAxis",
    "SeriesPoint",
    "SeriesPoints",
    "StartOperationRequest",
    "TrainingParameters",
    "WorkerStatus",
    "WorkerView",
    "base_url_problem",
    "data_path_problem",
    "describe_validation_error",
    "parse_parameters",
]
