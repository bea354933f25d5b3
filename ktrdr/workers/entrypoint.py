"""What every worker entrypoint does: validate, log who we are, serve until told to stop.

``training_worker.py`` and ``backtest_worker.py`` are a few lines each around
:func:`run_worker`; the jobs themselves run in processes of their own, started from
``job_entry`` (by default ktrdr's own jobs, named, never imported here).

Order matters: the exit-signal handlers go in first (a SIGTERM during startup still
ends in a clean exit), then the configuration is validated (exit 1 with the report,
never a traceback, and never at import time), then logging is configured, the
checkpoint directory is checked (an unwritable ``KTRDR_CHECKPOINT_DIR`` is exit 1
now, not a failed checkpoint hours later) and purged of files older than
``KTRDR_CHECKPOINT_MAX_AGE_DAYS`` (again every :data:`CHECKPOINT_PURGE_INTERVAL`
while serving), and the server runs on the port the settings name.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import httpx

from ktrdr.config import (
    DEFAULT_ENV_FILE,
    CheckpointSettings,
    DataSettings,
    WorkerConfig,
    WorkerSettings,
    WorkerType,
    env_name,
)
from ktrdr.errors import ConfigurationError
from ktrdr.job_messages import JOB_ENTRY, JobEntry
from ktrdr.logs import configure_logging
from ktrdr.protocol import OperationType
from ktrdr.startup import EXIT_CONFIG_ERROR, load_or_exit
from ktrdr.tracing import Tracing, build_tracing, instrument_client, log_trace_ids
from ktrdr.web import ExitSignals, ensure_bindable
from ktrdr.web.http_client import client_limits
from ktrdr.workers.backend_client import BackendClient
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.job_host import JobHost
from ktrdr.workers.job_process import JobLauncher
from ktrdr.workers.metrics import DisabledWorkerMetrics, WorkerMetrics
from ktrdr.workers.server import build_worker_server
from ktrdr.workers.worker import Worker

logger = logging.getLogger("ktrdr.workers")

#: How often a serving worker deletes checkpoints older than KTRDR_CHECKPOINT_MAX_AGE_DAYS.
CHECKPOINT_PURGE_INTERVAL = datetime.timedelta(hours=1)
#: How long the last spans may take to leave at exit (an endpoint that does not answer).
TRACING_SHUTDOWN_S = 2.0


def utc_now() -> datetime.datetime:
    """The wall clock checkpoint ages are measured with: aware UTC."""
    return datetime.datetime.now(datetime.timezone.utc)


def purge_checkpoints(checkpoints: CheckpointStore, now: datetime.datetime) -> int:
    """Delete expired checkpoint files; log and return how many (never raises OSError)."""
    try:
        removed = checkpoints.purge_expired(now)
    except OSError as exc:
        logger.warning("could not purge old checkpoints in %s: %s", checkpoints.root, exc)
        return 0
    if removed:
        logger.info(
            "removed %d checkpoint file(s) older than %s=%d from %s",
            len(removed),
            env_name(attrs.fields(CheckpointSettings).max_age_days),
            checkpoints.settings.max_age_days,
            checkpoints.root,
        )
    return len(removed)


def prepare_checkpoints(checkpoints: CheckpointStore, now: datetime.datetime) -> None:
    """Startup: the directory must be writable (else ``ConfigurationError``); purge it."""
    checkpoints.ensure_writable()
    purge_checkpoints(checkpoints, now)


async def purge_checkpoints_forever(
    checkpoints: CheckpointStore,
    *,
    clock: Callable[[], datetime.datetime] = utc_now,
    interval: datetime.timedelta = CHECKPOINT_PURGE_INTERVAL,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Purge every ``interval`` (in a thread) until cancelled."""
    while True:
        await sleep(interval.total_seconds())
        await asyncio.to_thread(purge_checkpoints, checkpoints, clock())


def warn_about_data_dir(config: WorkerConfig) -> bool:
    """Log a warning when ``KTRDR_DATA_DIR`` is not a directory; True when it is.

    Not an error: operations without a ``csv_path`` need no data directory, and one
    with it fails naming the variable. The warning says so before the first one does.
    """
    if config.data.dir.is_dir():
        return True
    logger.warning(
        "%s=%s is not a directory: operations with a csv_path will fail until it exists",
        env_name(attrs.fields(DataSettings).dir),
        config.data.dir,
    )
    return False


def backend_tls(backend_url: str) -> ssl.SSLContext | bool:
    """The ``verify`` argument of the worker's HTTP client for ``backend_url``.

    An ``https`` backend gets httpx's default verification (True). A plain ``http``
    backend needs no TLS, so no certificate bundle is loaded (httpx's default costs
    about 40 ms of every worker's start): the context given instead verifies as
    strictly (hostname checked, certificate required) but trusts no authority, so
    anything that ever reached for TLS through it would fail closed.
    """
    if urlsplit(backend_url).scheme.lower() == "https":
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def backend_http_client(backend_url: str) -> httpx.AsyncClient:
    """The worker's HTTP client for the backend at ``backend_url`` (see :func:`backend_tls`);
    its idle connections expire before the backend's server closes them.
    """
    return httpx.AsyncClient(verify=backend_tls(backend_url), limits=client_limits())


def job_launcher(
    config: WorkerConfig, checkpoints: CheckpointStore, *, entry: JobEntry = JOB_ENTRY
) -> JobLauncher:
    """The launcher of this worker's job processes, storing checkpoints in ``checkpoints``.

    Its job host carries the worker's metrics (``KTRDR_METRICS_ENABLED``).
    """
    settings = config.worker
    kind = OperationType(settings.type.value if settings.type is not None else "training")
    metrics_class = WorkerMetrics if config.metrics.enabled else DisabledWorkerMetrics
    host = JobHost(
        checkpoints=checkpoints,
        worker=settings,
        checkpoint_settings=config.checkpoint,
        data=config.data,
        metrics=metrics_class(worker_id=settings.id, worker_type=kind),
    )
    return JobLauncher(entry=entry, host=host)


async def serve_worker(
    config: WorkerConfig,
    launcher: JobLauncher,
    *,
    signals: ExitSignals,
    purge: bool = True,
    tracing: Tracing | None = None,
) -> None:
    """Build the backend client, the worker and its server; serve until shutdown.

    With ``purge``, expired checkpoint files are purged periodically meanwhile. With
    ``tracing`` on, the server and the client to the backend are instrumented.
    """
    settings = config.worker
    tracing = tracing if tracing is not None else Tracing.off()
    async with backend_http_client(settings.backend_url) as http:
        instrument_client(http, tracing)
        backend = BackendClient(
            http=http,
            base_url=settings.backend_url,
            token=config.auth.worker_token,
            timeout=settings.registration_timeout,
        )
        worker = Worker(
            settings=settings,
            checkpoint=config.checkpoint,
            launcher=launcher,
            backend=backend,
            clock=time.monotonic,
            tracing=tracing,
        )
        server = build_worker_server(
            worker,
            auth=config.auth,
            logging_settings=config.logging,
            metrics=config.metrics,
            tracing=tracing,
        )
        signals.attach(server)
        purging = None
        if purge:
            checkpoints = launcher.host.checkpoints
            purging = asyncio.create_task(purge_checkpoints_forever(checkpoints))
        try:
            await server.serve()
        finally:
            if purging is not None:
                purging.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purging


def run_worker(
    worker_type: WorkerType,
    environ: Mapping[str, str],
    *,
    env_file: str | Path | None = DEFAULT_ENV_FILE,
    job_entry: JobEntry = JOB_ENTRY,
) -> int:
    """Run a ``worker_type`` worker configured by ``environ``; returns the exit code."""
    with ExitSignals() as signals:
        config = load_or_exit("worker", environ, worker_type=worker_type, env_file=env_file)
        configure_logging(config.logging, trace_id_source=log_trace_ids(config.tracing))
        settings = config.worker
        logger.info(
            "worker %s (%s) starting on %s:%d, public URL %s, backend %s, data from %s",
            settings.id,
            worker_type.value,
            settings.host,
            settings.port,
            settings.public_url,
            settings.backend_url,
            config.data.dir,
        )
        warn_about_data_dir(config)
        checkpoints = CheckpointStore(settings=config.checkpoint)
        tracing = build_tracing(
            config.tracing, component=f"{worker_type.value}-worker", instance=settings.id
        )
        try:
            ensure_bindable(
                settings.host, settings.port, variable=env_name(attrs.fields(WorkerSettings).port)
            )
            prepare_checkpoints(checkpoints, utc_now())
            launcher = job_launcher(config, checkpoints, entry=job_entry)
            asyncio.run(serve_worker(config, launcher, signals=signals, tracing=tracing))
        except ConfigurationError as exc:
            sys.stderr.write(f"ktrdr: {exc}\n")
            return EXIT_CONFIG_ERROR
        finally:
            tracing.shutdown(TRACING_SHUTDOWN_S)
    return 0


__all__ = [
    "CHECKPOINT_PURGE_INTERVAL",
    "backend_http_client",
    "backend_tls",
    "job_launcher",
    "prepare_checkpoints",
    "purge_checkpoints",
    "purge_checkpoints_forever",
    "run_worker",
    "serve_worker",
    "utc_now",
    "warn_about_data_dir",
]
