"""The worker's HTTP server: its app (health, start and cancel operations) and uvicorn.

The server is built from ``WorkerSettings`` (host and port), so the port the worker
listens on and the port it registers cannot drift apart. Shutdown is chained to
uvicorn's own: a signal marks the worker as stopping at once (new operations get
503), and the app's lifespan shutdown lets the operation stop and report, then
unregisters, all within ``KTRDR_WORKER_SHUTDOWN_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI

import ktrdr
from ktrdr.config import AuthSettings, LoggingSettings, LogLevel, MetricsSettings
from ktrdr.protocol import (
    MAX_BODY_BYTES,
    WORKER_OPERATIONS_PATH,
    ErrorBody,
    StartOperationRequest,
)
from ktrdr.web import (
    BearerAuth,
    BodyLimitMiddleware,
    GracefulServer,
    install_error_handlers,
)
from ktrdr.web.metrics import METRICS_PATH, ScrapeAuth, metrics_endpoint
from ktrdr.workers.worker import Worker

logger = logging.getLogger(__name__)

OPERATIONS_ROUTE = WORKER_OPERATIONS_PATH

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or wrong worker token"},
    413: {"model": ErrorBody, "description": "request body too large"},
    422: {"model": ErrorBody, "description": "invalid request"},
}


def create_worker_app(
    worker: Worker, *, auth: AuthSettings, metrics: MetricsSettings | None = None
) -> FastAPI:
    """The worker's FastAPI app; its lifespan shutdown stops ``worker``.

    When ``worker.metrics`` is enabled, ``GET /metrics`` serves them to a bearer of
    the worker token or of ``metrics.token`` (``KTRDR_METRICS_TOKEN``) when set.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await worker.stop()

    app = FastAPI(
        title=f"ktrdr {worker.worker_type.value} worker",
        version=ktrdr.__version__,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=MAX_BODY_BYTES)
    install_error_handlers(app)

    @app.get("/health", tags=["health"], summary="Id, type, status and current operation")
    async def health() -> dict[str, Any]:
        return worker.health()

    writes = APIRouter(route_class=BearerAuth(auth.worker_token).route_class(), tags=["operations"])

    @writes.post(
        OPERATIONS_ROUTE,
        status_code=202,
        responses={
            409: {"model": ErrorBody, "description": "busy with another operation"},
            503: {"model": ErrorBody, "description": "shutting down"},
            **_ERRORS,
        },
        summary="Start (or resume) an operation",
    )
    async def start_operation(body: StartOperationRequest) -> dict[str, str]:
        # A refusal (busy, stopping, wrong type) answers with its ktrdr.errors status.
        await worker.start_operation(body)
        return {"operation_id": body.operation_id, "status": "running"}

    @writes.post(
        OPERATIONS_ROUTE + "/{operation_id}/cancel",
        status_code=202,
        responses={404: {"model": ErrorBody, "description": "not running here"}, **_ERRORS},
        summary="Ask the running operation to stop",
    )
    async def cancel_operation(operation_id: str) -> dict[str, str]:
        worker.cancel_operation(operation_id)  # UnknownOperation answers 404
        return {"operation_id": operation_id, "status": "cancelling"}

    app.include_router(writes)
    if worker.metrics.enabled:
        scrape_token = metrics.token if metrics is not None else None
        scrape_auth = ScrapeAuth.of(BearerAuth(auth.worker_token), scrape_token)

        async def refresh() -> None:
            worker.refresh_metrics()

        app.add_api_route(
            METRICS_PATH,
            metrics_endpoint(worker.metrics.registry, auth=scrape_auth, refresh=refresh),
            methods=["GET"],
            tags=["monitoring"],
            summary="Prometheus metrics (worker token, or KTRDR_METRICS_TOKEN when set)",
            responses={401: {"model": ErrorBody, "description": "missing or wrong token"}},
        )
    return app


def graceful_requests_timeout(worker: Worker) -> int:
    """Seconds uvicorn waits for requests in flight: a fifth of the shutdown budget."""
    return max(1, int(worker.settings.shutdown_timeout.total_seconds() / 5))


def build_worker_server(
    worker: Worker,
    *,
    auth: AuthSettings,
    logging_settings: LoggingSettings,
    metrics: MetricsSettings | None = None,
) -> GracefulServer:
    """uvicorn on exactly ``KTRDR_WORKER_HOST:KTRDR_WORKER_PORT``, hooked to ``worker``."""
    settings = worker.settings

    async def on_listening() -> None:
        logger.info(
            "worker %s listening on %s:%d, public URL %s",
            settings.id,
            settings.host,
            settings.port,
            settings.public_url,
        )
        await worker.start()

    config = uvicorn.Config(
        create_worker_app(worker, auth=auth, metrics=metrics),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=logging_settings.level is LogLevel.DEBUG,
        lifespan="on",
        timeout_graceful_shutdown=graceful_requests_timeout(worker),
    )
    return GracefulServer(
        config, on_listening=on_listening, on_exit_requested=worker.request_shutdown
    )


__all__ = [
    "OPERATIONS_ROUTE",
    "build_worker_server",
    "create_worker_app",
    "graceful_requests_timeout",
]
