"""The worker runtime: registration, heartbeats, job processes and graceful shutdown.

Entrypoints live in ``training_worker`` / ``backtest_worker`` (``python -m``); the
HTTP server in ``ktrdr.workers.server``; the :class:`Worker` in
``ktrdr.workers.worker``. Each operation runs in a job process of its own
(``ktrdr.workers.job_process``). This package never imports ``ktrdr.api``,
``ktrdr.jobs`` or numpy: what it shares with the backend is ``ktrdr.protocol``, and
with its jobs ``ktrdr.job_messages``. Its errors are in ``ktrdr.errors``.
"""

from ktrdr.workers.backend_client import BackendClient
from ktrdr.workers.backoff import Backoff, registration_backoff
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.fingerprint import config_fingerprint
from ktrdr.workers.job_host import JobHost
from ktrdr.workers.job_process import JobLauncher, RunningJob
from ktrdr.workers.worker import Worker

__all__ = [
    "BackendClient",
    "Backoff",
    "CheckpointStore",
    "JobHost",
    "JobLauncher",
    "RunningJob",
    "Worker",
    "config_fingerprint",
    "registration_backoff",
]
