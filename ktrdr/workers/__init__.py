"""The worker runtime: registration, heartbeats, operations and graceful shutdown.

Entrypoints live in ``training_worker`` / ``backtest_worker`` (``python -m``); the
HTTP server in ``ktrdr.workers.server``. This package never imports ``ktrdr.api``:
what both sides share is ``ktrdr.protocol``.
"""

from ktrdr.workers.backend_client import (
    BackendClient,
    BackendError,
    BackendRejected,
    BackendUnavailable,
    UnknownWorker,
)
from ktrdr.workers.backoff import Backoff, registration_backoff
from ktrdr.workers.base import (
    UnknownOperation,
    Worker,
    WorkerBusy,
    WorkerRefusal,
    WorkerStopping,
    WrongOperationType,
)
from ktrdr.workers.fingerprint import config_fingerprint
from ktrdr.workers.runner import OperationRunner, RunContext, RunOutcome, StopReason

__all__ = [
    "BackendClient",
    "BackendError",
    "BackendRejected",
    "BackendUnavailable",
    "Backoff",
    "OperationRunner",
    "RunContext",
    "RunOutcome",
    "StopReason",
    "UnknownOperation",
    "UnknownWorker",
    "Worker",
    "WorkerBusy",
    "WorkerRefusal",
    "WorkerStopping",
    "WrongOperationType",
    "config_fingerprint",
    "registration_backoff",
]
