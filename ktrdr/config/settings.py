"""The settings classes: one frozen attrs class per concern.

Each field's environment variable is the class ``PREFIX`` plus the field name
upper-cased, with no exceptions. Defaults live here and only here (the worker port
default is ``DEFAULT_WORKER_PORT``). Nothing here reads the environment: the loader
builds these objects, and tests construct them directly. Annotations are evaluated
eagerly (no ``from __future__ import annotations``) so the converter sees real types.
"""

import datetime
import socket
from pathlib import Path
from typing import Any, ClassVar

import attrs

from ktrdr.config import checks
from ktrdr.config.fields import Inference, old, setting
from ktrdr.config.mappings import BoolChoice, FormatString, Label, Spellings, TrimSuffix
from ktrdr.config.types import (
    ByteSize,
    DbEngine,
    Environment,
    LogFormat,
    LogLevel,
    Secret,
    WorkerType,
)

#: The one authoritative worker port default (the previous release had two that disagreed).
DEFAULT_WORKER_PORT = 5003
DEV_WORKER_TOKEN = "local-dev-worker-token"  # noqa: S105 - flagged insecure below
DEV_OPERATOR_TOKEN = "local-dev-operator-token"  # noqa: S105 - flagged insecure below
DEV_DB_PASSWORD = "localdev"  # noqa: S105 - flagged insecure below


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


#: The old environment names were labels (tracing, dashboards), never strictness: a
#: value KTRDR_ENV cannot take is reported and ignored; production-like names map to
#: production (stricter, never weaker than meant).
_ENVIRONMENT_LABEL = Label(
    accepted=tuple(e.value for e in Environment),
    table=(
        ("staging", "production"),
        ("stage", "production"),
        ("prod", "production"),
        ("dev", "development"),
        ("local", "development"),
    ),
    hint="set KTRDR_ENV (development, production or test) to choose the strictness",
)
#: Before ktrdr 0.4 clients were given the API root (``.../api/v1``), not the server.
_API_ROOT = TrimSuffix("/api/v1")


@attrs.frozen(kw_only=True)
class EnvironmentSettings:
    """Which kind of deployment this is, and so how strict validation is."""

    PREFIX: ClassVar[str] = "KTRDR_"

    env: Environment = setting(
        Environment.DEVELOPMENT,
        help="how strict validation is about insecure defaults and unknown variables",
        deprecated=(
            old("ENVIRONMENT", _ENVIRONMENT_LABEL),
            old("KTRDR_ENVIRONMENT", _ENVIRONMENT_LABEL),
            old("KTRDR_API_ENVIRONMENT", _ENVIRONMENT_LABEL),
        ),
    )
    acknowledge_insecure_defaults: bool = setting(
        False,
        help="silence the insecure-default warning in development (no effect in production)",
    )


def _default_worker_id(self: "WorkerSettings") -> str:
    kind = self.type.value if self.type is not None else "worker"
    return f"{kind}-{socket.gethostname()}-{self.port}"


def _default_public_url(self: "WorkerSettings") -> str:
    return f"http://{socket.gethostname()}:{self.port}"


@attrs.frozen(kw_only=True)
class WorkerSettings:
    """A worker process: where it listens, who it is, how it talks to the backend.

    The backend reads the liveness fields (``stale_after``, ``removal_threshold``).
    """

    PREFIX: ClassVar[str] = "KTRDR_WORKER_"

    type: WorkerType | None = setting(
        None,
        help="the kind of worker; the entrypoint sets it, and a conflicting value is an error",
        deprecated=("WORKER_TYPE",),
        old_values=Spellings((("backtesting", "backtest"),)),
        default_doc="(set by the entrypoint)",
    )
    host: str = setting(
        "0.0.0.0", help="address the worker's HTTP server binds to", check=checks.HOST
    )
    port: int = setting(
        DEFAULT_WORKER_PORT,
        help="port the worker listens on and registers with",
        deprecated=("WORKER_PORT",),
        check=checks.PORT,
    )
    id: str = setting(
        help="worker id, stable across restarts",
        deprecated=("WORKER_ID",),
        factory=_default_worker_id,
        default_doc="<type>-<hostname>-<port>",
        check=checks.IDENTIFIER,
    )
    public_url: str = setting(
        help="URL where the backend reaches this worker",
        deprecated=(
            "WORKER_PUBLIC_BASE_URL",
            "WORKER_ENDPOINT_URL",
            "KTRDR_WORKER_PUBLIC_BASE_URL",
            "KTRDR_WORKER_ENDPOINT_URL",
        ),
        factory=_default_public_url,
        default_doc="http://<hostname>:<port>",
        check=checks.HTTP_URL,
    )
    backend_url: str = setting(
        "http://localhost:8000",
        help="URL of the backend (the server, without /api/v1)",
        deprecated=(old("KTRDR_API_CLIENT_BASE_URL", _API_ROOT), old("KTRDR_API_URL", _API_ROOT)),
        check=checks.HTTP_URL,
    )
    heartbeat_interval: datetime.timedelta = setting(
        _seconds(10),
        help="time between heartbeats",
        check=checks.DurationRange(_seconds(0.05), _seconds(3600)),
    )
    registration_timeout: datetime.timedelta = setting(
        _seconds(10),
        help="timeout of one registration attempt",
        check=checks.POSITIVE_DURATION,
    )
    shutdown_timeout: datetime.timedelta = setting(
        _seconds(25),
        help="grace period after SIGTERM before the worker exits",
        check=checks.POSITIVE_DURATION,
    )
    stop_grace: datetime.timedelta = setting(
        _seconds(10),
        help="time a job has to stop after a cancel or SIGTERM before its process is killed",
        check=checks.POSITIVE_DURATION,
    )
    max_memory: ByteSize | None = setting(
        None,
        help="memory cap of each job's process (512M, 2G, bytes); a job over it fails",
        default_doc="(unlimited)",
    )
    stale_after: int = setting(
        3,
        help="missed heartbeats after which the backend marks a worker unavailable",
        unit="heartbeats",
        check=checks.IntRange(1, 1000),
    )
    removal_threshold: datetime.timedelta = setting(
        _seconds(300),
        help="silence after which the backend forgets a worker",
        deprecated=("WORKER_REMOVAL_THRESHOLD",),
        check=checks.POSITIVE_DURATION,
    )


@attrs.frozen(kw_only=True)
class CheckpointSettings:
    """When and where workers save the state needed to resume an operation."""

    PREFIX: ClassVar[str] = "KTRDR_CHECKPOINT_"

    epoch_interval: int = setting(
        10,
        help="training epochs between checkpoints",
        unit="epochs",
        deprecated=("CHECKPOINT_EPOCH_INTERVAL",),
        check=checks.IntRange(1),
    )
    time_interval: datetime.timedelta = setting(
        _seconds(300),
        help="time after which a checkpoint is due regardless of progress",
        deprecated=("CHECKPOINT_TIME_INTERVAL_SECONDS", "KTRDR_CHECKPOINT_TIME_INTERVAL_SECONDS"),
        check=checks.POSITIVE_DURATION,
    )
    bar_interval: int = setting(
        10000,
        help="backtest bars between checkpoints",
        unit="bars",
        check=checks.IntRange(1),
    )
    dir: Path = setting(
        Path("data/checkpoints"),
        help=(
            "directory holding one subdirectory per operation, and in .outbox/<worker id> "
            "the outcomes each worker keeps until the backend has them (keep it on "
            "persistent storage)"
        ),
        deprecated=("CHECKPOINT_DIR",),
    )
    max_age_days: int = setting(
        30,
        help="checkpoints older than this are deleted (undelivered outcomes never are)",
        unit="days",
        deprecated=("CHECKPOINT_MAX_AGE_DAYS",),
        check=checks.IntRange(1, 36500),
    )


@attrs.frozen(kw_only=True)
class DataSettings:
    """Where jobs read data files (an operation's ``csv_path`` is relative to it), and
    how large one may be.
    """

    PREFIX: ClassVar[str] = "KTRDR_DATA_"

    dir: Path = setting(
        Path("data"),
        help="directory jobs read data files from; an operation's csv_path is relative to it",
        deprecated=("DATA_DIR",),
    )
    max_file_size: ByteSize = setting(
        ByteSize(1024**3),
        help="largest data file a job reads (512M, 1G, bytes); a larger one fails the operation",
        check=checks.IntRange(1),
    )


@attrs.frozen(kw_only=True)
class OrphanDetectorSettings:
    """How the backend finds running operations that no live worker reports."""

    PREFIX: ClassVar[str] = "KTRDR_ORPHAN_"

    timeout: datetime.timedelta = setting(
        _seconds(60),
        help="an operation unreported for longer than this is failed",
        deprecated=("ORPHAN_TIMEOUT_SECONDS", "KTRDR_ORPHAN_TIMEOUT_SECONDS"),
        check=checks.POSITIVE_DURATION,
    )
    check_interval: datetime.timedelta = setting(
        _seconds(15),
        help="time between orphan checks",
        deprecated=("ORPHAN_CHECK_INTERVAL_SECONDS", "KTRDR_ORPHAN_CHECK_INTERVAL_SECONDS"),
        check=checks.POSITIVE_DURATION,
    )
    batch_size: int = setting(
        100,
        help="orphaned operations handled per transaction; other requests run between batches",
        check=checks.IntRange(1, 10000),
    )


@attrs.frozen(kw_only=True)
class OperationsSettings:
    """Bounds and housekeeping of the backend's operations."""

    PREFIX: ClassVar[str] = "KTRDR_OPS_"

    cache_ttl: datetime.timedelta = setting(
        _seconds(1),
        help="how stale a served operation status may be; 0 disables the cache",
        deprecated=("OPERATIONS_CACHE_TTL",),
        check=checks.NON_NEGATIVE_DURATION,
    )
    max_operations: int = setting(
        10000,
        help="bound on live (pending or running) operations",
        check=checks.IntRange(1),
    )
    cleanup_interval: datetime.timedelta = setting(
        _seconds(3600),
        help="time between retention cleanups",
        deprecated=("KTRDR_OPS_CLEANUP_INTERVAL_SECONDS",),
        check=checks.POSITIVE_DURATION,
    )
    retention_days: int = setting(
        7,
        help="finished operations older than this are deleted",
        unit="days",
        check=checks.IntRange(1, 36500),
    )
    cleanup_batch_size: int = setting(
        100,
        help="finished operations deleted per retention transaction; other requests "
        "run between batches",
        check=checks.IntRange(1, 100000),
    )
    max_attempts: int = setting(
        3,
        help="attempts an operation gets when its worker is lost (orphaned, gone, "
        "unreachable); each retry resumes from the last checkpoint",
        unit="attempts",
        check=checks.IntRange(1, 1000),
    )
    default_timeout: datetime.timedelta = setting(
        _seconds(0),
        help="longest an attempt of an operation may run when its creation gives no "
        "timeout_s; 0: no limit",
        default_doc="0 (no limit)",
        check=checks.NON_NEGATIVE_DURATION,
    )
    stall_timeout: datetime.timedelta = setting(
        _seconds(30 * 60),
        help="a running operation whose progress has not changed for this long is failed "
        "as stalled (even while its worker heartbeats); 0 disables",
        default_doc="30m",
        check=checks.NON_NEGATIVE_DURATION,
    )


_POSTGRESQL = ("engine", DbEngine.POSTGRESQL)


@attrs.frozen(kw_only=True)
class DatabaseSettings:
    """The backend's store: embedded SQLite by default, PostgreSQL when configured."""

    PREFIX: ClassVar[str] = "KTRDR_DB_"

    engine: DbEngine = setting(
        DbEngine.SQLITE,
        help="which store the backend uses; sqlite needs no setup",
        inferred=Inference("host", DbEngine.POSTGRESQL, "a PostgreSQL host is set"),
    )
    path: Path = setting(
        Path("data/ktrdr.db"),
        help="SQLite database file",
        applies_when=("engine", DbEngine.SQLITE),
    )
    host: str = setting(
        "localhost",
        help="PostgreSQL host",
        deprecated=("DB_HOST",),
        check=checks.HOST,
        applies_when=_POSTGRESQL,
    )
    port: int = setting(
        5432,
        help="PostgreSQL port",
        deprecated=("DB_PORT",),
        check=checks.PORT,
        applies_when=_POSTGRESQL,
    )
    name: str = setting(
        "ktrdr",
        help="PostgreSQL database",
        deprecated=("DB_NAME",),
        check=checks.NON_EMPTY,
        applies_when=_POSTGRESQL,
    )
    user: str = setting(
        "ktrdr",
        help="PostgreSQL user",
        deprecated=("DB_USER",),
        check=checks.NON_EMPTY,
        applies_when=_POSTGRESQL,
    )
    password: Secret = setting(
        Secret(DEV_DB_PASSWORD),
        help="PostgreSQL password (checked only when the engine is postgresql)",
        deprecated=("DB_PASSWORD",),
        secret=True,
        insecure_default=True,
        applies_when=_POSTGRESQL,
    )
    echo: bool = setting(False, help="log every SQL statement", deprecated=("DB_ECHO",))


@attrs.frozen(kw_only=True)
class LoggingSettings:
    """Log level and format of every process."""

    PREFIX: ClassVar[str] = "KTRDR_LOG_"

    level: LogLevel = setting(
        LogLevel.INFO,
        help="lowest level of the log records written",
        deprecated=("LOG_LEVEL", "KTRDR_LOGGING_LEVEL"),
    )
    format: LogFormat = setting(
        LogFormat.TEXT,
        help="text for people, json for log collectors",
        deprecated=(
            "KTRDR_LOGGING_FORMAT",
            old("KTRDR_LOG_JSON_OUTPUT", BoolChoice(true="json", false="text")),
        ),
        old_values=FormatString(),
    )


@attrs.frozen(kw_only=True)
class APISettings:
    """Where the backend's HTTP server listens."""

    PREFIX: ClassVar[str] = "KTRDR_API_"

    host: str = setting("127.0.0.1", help="address the backend binds to", check=checks.HOST)
    port: int = setting(8000, help="port the backend listens on", check=checks.PORT)
    docs: bool | None = setting(
        None,
        help="serve the API description (/docs, /redoc, /openapi.json) without a token",
        default_doc="true; false when KTRDR_ENV=production",
    )


@attrs.frozen(kw_only=True)
class AuthSettings:
    """The bearer tokens: workers and backend (worker token), operators (operator token).

    Workers read only the worker token; the operator token is the backend's and the
    ``ktrdr`` command's (see docs/security.md for who holds which).
    """

    PREFIX: ClassVar[str] = "KTRDR_AUTH_"

    worker_token: Secret = setting(
        Secret(DEV_WORKER_TOKEN),
        help="bearer token workers and backend use with each other",
        secret=True,
        insecure_default=True,
        check=checks.TOKEN,
    )
    operator_token: Secret = setting(
        Secret(DEV_OPERATOR_TOKEN),
        help="bearer token of the operator routes (operations, worker list) and the ktrdr command",
        secret=True,
        insecure_default=True,
        check=checks.TOKEN,
    )


@attrs.frozen(kw_only=True)
class MetricsSettings:
    """Prometheus metrics at ``GET /metrics`` on the backend and on every worker.

    The backend's needs the operator token, a worker's the worker token; either also
    takes ``token`` when it is set, so Prometheus can hold a read-only credential
    instead of one that runs operations (see docs/monitoring.md).
    """

    PREFIX: ClassVar[str] = "KTRDR_METRICS_"

    enabled: bool = setting(
        True,
        help="count and serve Prometheus metrics at /metrics (false: no /metrics, no counting)",
    )
    token: Secret | None = setting(
        None,
        help=(
            "bearer token that may read /metrics only, for Prometheus (unset: the backend's "
            "takes the operator token, a worker's the worker token)"
        ),
        secret=True,
        check=checks.OPTIONAL_TOKEN,
    )


@attrs.frozen(kw_only=True)
class TracingSettings:
    """OpenTelemetry tracing: one trace per operation attempt, exported over OTLP (gRPC).

    Off by default. The names and the endpoint default are those of the system ktrdr
    replaces, whose tracing was on by default: an OTLP endpoint set without
    ``KTRDR_OTEL_ENABLED`` still means tracing on.
    """

    PREFIX: ClassVar[str] = "KTRDR_OTEL_"

    enabled: bool = setting(
        False,
        help="export OpenTelemetry traces (one per operation attempt, backend and workers)",
        inferred=Inference("otlp_endpoint", True, "an OTLP endpoint is set"),
    )
    otlp_endpoint: str = setting(
        "http://jaeger:4317",
        help="OTLP gRPC receiver spans are sent to (Jaeger, an OpenTelemetry Collector)",
        deprecated=("OTLP_ENDPOINT",),
        check=checks.HTTP_URL,
    )
    service_name: str = setting(
        "ktrdr",
        help="service.name of the spans (backend and workers; the component is an attribute)",
        check=checks.NON_EMPTY,
    )
    console_output: bool = setting(
        False, help="also write every span to standard output, as JSON (for debugging)"
    )


#: Every settings class, in the order the docs list them.
ALL_SETTINGS: tuple[type[Any], ...] = (
    EnvironmentSettings,
    WorkerSettings,
    CheckpointSettings,
    DataSettings,
    OrphanDetectorSettings,
    OperationsSettings,
    DatabaseSettings,
    LoggingSettings,
    APISettings,
    AuthSettings,
    MetricsSettings,
    TracingSettings,
)
