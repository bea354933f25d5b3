"""Backend entrypoint: ``python -m ktrdr.api.main`` (and ``ktrdr backend``).

Validates the configuration first (deprecation warnings on stderr, exit 1 with the
report on a bad configuration, no traceback), opens the operations store and
upgrades its schema to the newest revision (exit 1 with a message naming the
variables to check if it cannot), then serves the app on
``KTRDR_API_HOST:KTRDR_API_PORT``. Only :func:`main` reads ``os.environ``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import attrs
import uvicorn

from ktrdr.api.app import create_app, utc_now
from ktrdr.api.deadlines import DeadlineWatch
from ktrdr.api.dispatcher import Dispatcher, worker_client
from ktrdr.api.metrics import BackendMetrics, DisabledBackendMetrics, instrument_store
from ktrdr.api.operations import OperationsService
from ktrdr.api.orphans import OrphanDetector
from ktrdr.api.registry import WorkerRegistry
from ktrdr.api.reports import OperationReports
from ktrdr.api.retention import RetentionCleaner
from ktrdr.api.store import OperationStore, StoreError
from ktrdr.api.store_health import StoreHealth
from ktrdr.config import (
    DEFAULT_ENV_FILE,
    APISettings,
    BackendConfig,
    DatabaseSettings,
    LogLevel,
    env_name,
)
from ktrdr.errors import ConfigurationError
from ktrdr.logs import configure_logging
from ktrdr.startup import EXIT_CONFIG_ERROR, load_or_exit
from ktrdr.tracing import (
    Tracing,
    build_tracing,
    instrument_app,
    instrument_client,
    instrument_engine,
    log_trace_ids,
)
from ktrdr.web import ExitSignals, GracefulServer, ensure_bindable

logger = logging.getLogger("ktrdr.api")

#: How long uvicorn waits for requests in flight after SIGTERM.
GRACEFUL_REQUESTS_TIMEOUT_S = 5
#: How long the last spans may take to leave at exit (an endpoint that does not answer).
TRACING_SHUTDOWN_S = 2.0
#: Requests served without a span: one trace per heartbeat, health check or scrape
#: would bury the operations' traces (their counts and latencies are metrics).
UNTRACED_PATHS = (r"/api/v1/workers/[^/]+/heartbeat$", r"/health$", r"/metrics$")


def open_store_or_exit(
    settings: DatabaseSettings, *, stderr: TextIO | None = None
) -> OperationStore:
    """Open (and create or migrate the schema of) the store; exit 1 with the reason if not.

    The message names the variables to check and never the password; no traceback.
    """
    try:
        return OperationStore.open(settings)
    except (StoreError, ConfigurationError) as exc:
        stream = stderr if stderr is not None else sys.stderr
        stream.write(f"ktrdr: {exc}\n")
        stream.flush()
        raise SystemExit(EXIT_CONFIG_ERROR) from None


def build_server(
    config: BackendConfig, *, store: OperationStore, tracing: Tracing | None = None
) -> GracefulServer:
    """The backend's uvicorn server, bound to exactly the configured host and port.

    Every collaborator is built here from its settings: the metrics
    (``KTRDR_METRICS_*``), the operations service (``KTRDR_OPS_*``), the dispatcher,
    the heartbeat stamp writer, the orphan detector (``KTRDR_ORPHAN_*``), the
    deadline watch (timeouts, stalls), the retention cleaner, and the store's health
    watch (503s while the database is unreachable, a grace for orphans after it comes
    back).
    With ``tracing`` on, the app and the dispatcher's HTTP client are instrumented
    with its provider.
    """
    tracing = tracing if tracing is not None else Tracing.off()
    registry = WorkerRegistry()
    store_health = StoreHealth(engine=store.engine, clock=utc_now)
    metrics = BackendMetrics() if config.metrics.enabled else DisabledBackendMetrics()
    instrument_store(store, metrics)
    service = OperationsService(store=store, settings=config.operations, clock=utc_now)
    http = worker_client()
    instrument_client(http, tracing)
    dispatcher = Dispatcher(
        service=service,
        registry=registry,
        http=http,
        token=config.auth.worker_token,
        clock=utc_now,
        metrics=metrics,
        tracing=tracing,
    )
    app = create_app(
        config,
        clock=utc_now,
        registry=registry,
        service=service,
        dispatcher=dispatcher,
        reports=OperationReports(
            service=service, registry=registry, dispatcher=dispatcher, metrics=metrics
        ),
        orphan_detector=OrphanDetector(
            store=store,
            settings=config.orphan,
            clock=utc_now,
            health=store_health,
            max_attempts=config.operations.max_attempts,
        ),
        retention=RetentionCleaner(service=service),
        store_health=store_health,
        metrics=metrics,
        deadlines=DeadlineWatch(
            store=store,
            settings=config.operations,
            clock=utc_now,
            stop=dispatcher.stop_attempt,
            health=store_health,
        ),
    )
    instrument_app(app, tracing, excluded=UNTRACED_PATHS)
    host, port = config.api.host, config.api.port

    async def announce() -> None:
        logger.info("backend listening on %s:%d", host, port)

    uvicorn_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=config.logging.level is LogLevel.DEBUG,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_REQUESTS_TIMEOUT_S,
    )
    return GracefulServer(uvicorn_config, on_listening=announce)


def run(environ: Mapping[str, str], *, env_file: str | Path | None = DEFAULT_ENV_FILE) -> int:
    """Validate, then serve until SIGTERM/SIGINT; returns the exit code (0)."""
    with ExitSignals() as signals:
        config = load_or_exit("backend", environ, env_file=env_file)
        configure_logging(config.logging, trace_id_source=log_trace_ids(config.tracing))
        port_variable = env_name(attrs.fields(APISettings).port)
        try:
            ensure_bindable(config.api.host, config.api.port, variable=port_variable)
        except ConfigurationError as exc:
            sys.stderr.write(f"ktrdr: {exc}\n")
            return EXIT_CONFIG_ERROR
        store = open_store_or_exit(config.database)
        tracing = build_tracing(
            config.tracing,
            component="backend",
            instance=f"{socket.gethostname()}:{config.api.port}",
        )
        instrument_engine(store.engine, tracing)
        try:
            server = build_server(config, store=store, tracing=tracing)
            signals.attach(server)
            server.run()
        finally:
            tracing.shutdown(TRACING_SHUTDOWN_S)
            store.close()
    return 0


def main() -> None:
    """Console entry point: the process environment is read here and only here."""
    raise SystemExit(run(os.environ))


if __name__ == "__main__":
    main()
