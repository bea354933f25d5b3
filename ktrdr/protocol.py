"""The messages on the wire between workers and the backend, and their paths.

Both ``ktrdr.workers`` and ``ktrdr.api`` import this module and never each other.
Models are pydantic (FastAPI validates request bodies with them and publishes them
in the OpenAPI schema); unknown fields are refused so typos fail loudly.
"""

from __future__ import annotations

import datetime
import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

API_PREFIX = "/api/v1"
WORKERS_PATH = f"{API_PREFIX}/workers"
REGISTER_PATH = f"{WORKERS_PATH}/register"
OPERATIONS_PATH = f"{API_PREFIX}/operations"
MAX_BODY_BYTES = 1024 * 1024

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class WorkerStatus(str, enum.Enum):
    """A worker's state as the backend sees it (``unavailable``: heartbeats missed)."""

    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    UNAVAILABLE = "unavailable"


class OperationStatus(str, enum.Enum):
    """Lifecycle of an operation; the last three are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (
            OperationStatus.COMPLETED,
            OperationStatus.FAILED,
            OperationStatus.CANCELLED,
        )


_FINISHED = frozenset(
    {OperationStatus.COMPLETED, OperationStatus.FAILED, OperationStatus.CANCELLED}
)


class OperationType(str, enum.Enum):
    """What an operation does; each runs on the worker type of the same name."""

    TRAINING = "training"
    BACKTEST = "backtest"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Progress(_Message):
    """How far a running operation is (sent with heartbeats)."""

    percent: float = Field(ge=0, le=100)
    message: str = Field(default="", max_length=500)
    #: Step counters and metrics so far, e.g. ``{"epoch": 3, "loss": 0.41}``.
    details: dict[str, Any] = Field(default_factory=dict)


class RegisterRequest(_Message):
    """``POST /api/v1/workers/register``: a worker announces itself (idempotent per id)."""

    worker_id: str = Field(pattern=_ID)
    worker_type: OperationType
    endpoint_url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://")
    capabilities: dict[str, Any] = Field(default_factory=dict)
    heartbeat_interval_s: float = Field(gt=0, le=3600)
    config_fingerprint: str = Field(min_length=1, max_length=128)
    current_operation_id: str | None = Field(default=None, pattern=_ID)


class HeartbeatRequest(_Message):
    """``POST /api/v1/workers/{id}/heartbeat``: status and the running operation's progress."""

    status: WorkerStatus
    current_operation_id: str | None = Field(default=None, pattern=_ID)
    progress: Progress | None = None


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


class StartOperationRequest(_Message):
    """Backend → worker ``POST /operations``: run (or resume) an operation."""

    operation_id: str = Field(pattern=_ID)
    operation_type: OperationType
    parameters: dict[str, Any] = Field(default_factory=dict)
    resume: bool = False


class OperationReport(_Message):
    """Worker → backend ``POST /api/v1/operations/{id}/report``: how an operation ended."""

    worker_id: str = Field(pattern=_ID)
    status: OperationStatus
    result: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=4000)
    checkpoint_saved: bool = False


class ErrorBody(_Message):
    """Every 4xx/5xx body: a machine-readable code and a sentence for a person."""

    error: str
    detail: Any = None
