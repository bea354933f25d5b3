"""The worker runtime: registration, heartbeats, job processes and graceful shutdown.

Entrypoints live in ``training_worker`` / ``backtest_worker`` (``python -m``); the
HTTP server in ``ktrdr.workers.server``; the :class:`Worker` in
``ktrdr.workers.worker``; outcomes wait in its ``outbox`` until ``delivery`` has them
acknowledged by the backend. Each operation runs in a job process of its own
(``ktrdr.workers.job_process``). This package never imports ``ktrdr.api``,
``ktrdr.jobs`` or numpy: what it shares with the backend is ``ktrdr.protocol``, and
with its jobs ``ktrdr.job_messages``. Its errors are in ``ktrdr.errors``.

The names below are loaded on first use (PEP 562), so ``python -m
ktrdr.workers.training_worker``, which imports this package first, can prepare the
process (see ``ktrdr.startup.without_unused_imports``) before the runtime's own imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ktrdr.workers.backend_client import BackendClient
    from ktrdr.workers.backoff import Backoff, registration_backoff
    from ktrdr.workers.checkpoints import CheckpointStore
    from ktrdr.workers.delivery import Delivery, OutcomeDelivery
    from ktrdr.workers.fingerprint import config_fingerprint
    from ktrdr.workers.job_host import JobHost
    from ktrdr.workers.job_process import JobLauncher, RunningJob
    from ktrdr.workers.outbox import Outbox, OutboxEntry
    from ktrdr.workers.worker import Worker

#: Each public name and the module that defines it.
_HOMES = {
    "BackendClient": "ktrdr.workers.backend_client",
    "Backoff": "ktrdr.workers.backoff",
    "CheckpointStore": "ktrdr.workers.checkpoints",
    "Delivery": "ktrdr.workers.delivery",
    "JobHost": "ktrdr.workers.job_host",
    "JobLauncher": "ktrdr.workers.job_process",
    "Outbox": "ktrdr.workers.outbox",
    "OutboxEntry": "ktrdr.workers.outbox",
    "OutcomeDelivery": "ktrdr.workers.delivery",
    "RunningJob": "ktrdr.workers.job_process",
    "Worker": "ktrdr.workers.worker",
    "config_fingerprint": "ktrdr.workers.fingerprint",
    "registration_backoff": "ktrdr.workers.backoff",
}


def __getattr__(name: str) -> Any:
    """Import the module defining a public name on first access."""
    home = _HOMES.get(name)
    if home is None:
        message = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(message)
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily loaded ones included."""
    return sorted({*globals(), *_HOMES})


__all__ = [
    "BackendClient",
    "Backoff",
    "CheckpointStore",
    "Delivery",
    "JobHost",
    "JobLauncher",
    "Outbox",
    "OutboxEntry",
    "OutcomeDelivery",
    "RunningJob",
    "Worker",
    "config_fingerprint",
    "registration_backoff",
]
