"""What every worker entrypoint does: validate, log who we are, serve until told to stop.

``training_worker.py`` and ``backtest_worker.py`` are a few lines each around
:func:`run_worker`. Order matters: the exit-signal handlers go in first (a SIGTERM
during startup still ends in a clean exit), then the configuration is validated
(exit 1 with the report, never a traceback, and never at import time), then logging
is configured and the server runs on the port the settings name.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from ktrdr.config import DEFAULT_ENV_FILE, WorkerConfig, WorkerType
from ktrdr.errors import ConfigurationError
from ktrdr.logs import configure_logging
from ktrdr.startup import EXIT_CONFIG_ERROR, load_or_exit
from ktrdr.web import ExitSignals
from ktrdr.workers.backend_client import BackendClient
from ktrdr.workers.base import Worker
from ktrdr.workers.runner import OperationRunner
from ktrdr.workers.server import build_worker_server

logger = logging.getLogger("ktrdr.workers")

#: Builds the runner of one worker type from the validated configuration.
RunnerFactory = Callable[[WorkerConfig], OperationRunner]


async def serve_worker(
    config: WorkerConfig, runner: OperationRunner, *, signals: ExitSignals
) -> None:
    """Build the backend client, the worker and its server; serve until shutdown."""
    settings = config.worker
    async with httpx.AsyncClient() as http:
        backend = BackendClient(
            http=http,
            base_url=settings.backend_url,
            token=config.auth.worker_token,
            timeout=settings.registration_timeout,
            clock=time.monotonic,
        )
        worker = Worker(
            settings=settings,
            checkpoint=config.checkpoint,
            runner=runner,
            backend=backend,
            clock=time.monotonic,
        )
        server = build_worker_server(worker, auth=config.auth, logging_settings=config.logging)
        signals.attach(server)
        await server.serve()


def run_worker(
    worker_type: WorkerType,
    environ: Mapping[str, str],
    *,
    make_runner: RunnerFactory,
    env_file: str | Path | None = DEFAULT_ENV_FILE,
) -> int:
    """Run a ``worker_type`` worker configured by ``environ``; returns the exit code."""
    with ExitSignals() as signals:
        config = load_or_exit("worker", environ, worker_type=worker_type, env_file=env_file)
        configure_logging(config.logging)
        settings = config.worker
        logger.info(
            "worker %s (%s) starting on %s:%d, public URL %s, backend %s",
            settings.id,
            worker_type.value,
            settings.host,
            settings.port,
            settings.public_url,
            settings.backend_url,
        )
        try:
            asyncio.run(serve_worker(config, make_runner(config), signals=signals))
        except ConfigurationError as exc:
            sys.stderr.write(f"ktrdr: {exc}\n")
            return EXIT_CONFIG_ERROR
    return 0


__all__ = ["RunnerFactory", "run_worker", "serve_worker"]
