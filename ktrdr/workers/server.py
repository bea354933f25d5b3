"""The worker's HTTP server: its app (health, start and cancel operations, an
operation's log, metrics) and uvicorn.

The app is plain Starlette: three routes do not need FastAPI, whose import (its
OpenAPI models above all) was the largest part of a worker's cold start. The routes
answer exactly as FastAPI body and path parameters did: the token is checked before
the body is read, bodies are validated by ``ktrdr.web.read_model`` (422 items under
``body``), and every error is a JSON ``ErrorBody``. The wire schema is published by
the backend's OpenAPI document (``ktrdr.protocol``), not by each worker.

The server is built from ``WorkerSettings`` (host and port), so the port the worker
listens on and the port it registers cannot drift apart. Shutdown is chained to
uvicorn's own: a signal marks the worker as stopping at once (new operations get
503), and the app's lifespan shutdown lets the operation stop and report, then
unregisters, all within ``KTRDR_WORKER_SHUTDOWN_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ktrdr.config import AuthSettings, LoggingSettings, LogLevel, MetricsSettings
from ktrdr.protocol import (
    MAX_BODY_BYTES,
    WORKER_OPERATIONS_PATH,
    CancelOperationRequest,
    StartOperationRequest,
)
from ktrdr.tracing import Tracing, instrument_app
from ktrdr.vocabulary import id_problem
from ktrdr.web import (
    ApiError,
    BearerAuth,
    BodyLimitMiddleware,
    GracefulServer,
    install_json_error_handlers,
    read_model,
)
from ktrdr.web.metrics import METRICS_PATH, ScrapeAuth, metrics_endpoint
from ktrdr.workers.worker import Worker

logger = logging.getLogger(__name__)

OPERATIONS_ROUTE = WORKER_OPERATIONS_PATH
#: Requests served without a span (health checks, scrapes).
UNTRACED_PATHS = (r"/health$", r"/metrics$")
#: Media type of an operation's log: one JSON object per line.
NDJSON = "application/x-ndjson"


def create_worker_app(
    worker: Worker, *, auth: AuthSettings, metrics: MetricsSettings | None = None
) -> Starlette:
    """The worker's Starlette app; its lifespan shutdown stops ``worker``.

    When ``worker.metrics`` is enabled, ``GET /metrics`` serves them to a bearer of
    the worker token or of ``metrics.token`` (``KTRDR_METRICS_TOKEN``) when set.
    """
    bearer = BearerAuth(auth.worker_token)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await worker.stop()

    async def health(request: Request) -> JSONResponse:
        """Id, type, status and current operation (no token needed)."""
        return JSONResponse(worker.health())

    async def start_operation(request: Request) -> JSONResponse:
        """Start (or resume) an operation: 202; 409 busy, 503 stopping, 422 invalid."""
        bearer.check(request)  # before the body is read
        body = await read_model(request, StartOperationRequest)
        # A refusal (busy, stopping, wrong type) answers with its ktrdr.errors status.
        await worker.start_operation(body)
        return JSONResponse({"operation_id": body.operation_id, "status": "running"}, 202)

    async def cancel_operation(request: Request) -> JSONResponse:
        """Ask the running operation (that attempt, if the optional body names one) to
        stop: 202; 404 when it is not running here. A body marked ``superseded`` kills
        the job at once (its attempt is no longer current).
        """
        bearer.check(request)
        operation_id: str = request.path_params["operation_id"]
        cancel = CancelOperationRequest()
        if await request.body():
            cancel = await read_model(request, CancelOperationRequest)
        # UnknownOperation (not running here, or another attempt) answers 404.
        worker.cancel_operation(operation_id, attempt=cancel.attempt, superseded=cancel.superseded)
        return JSONResponse({"operation_id": operation_id, "status": "cancelling"}, 202)

    async def operation_log(request: Request) -> Response:
        """The operation's own log lines (JSON lines, oldest first): 200; 404 when none."""
        bearer.check(request)
        operation_id: str = request.path_params["operation_id"]
        if id_problem(operation_id) is not None:
            raise ApiError(422, "invalid_request", f"not an operation id: {operation_id!r}")
        lines = await asyncio.to_thread(worker.operation_log, operation_id)
        if lines is None:
            message = f"worker {worker.worker_id} keeps no log of operation {operation_id}"
            raise ApiError(404, "log_not_found", message)
        return Response(lines, media_type=NDJSON)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route(OPERATIONS_ROUTE, start_operation, methods=["POST"]),
        Route(OPERATIONS_ROUTE + "/{operation_id}/cancel", cancel_operation, methods=["POST"]),
        Route(OPERATIONS_ROUTE + "/{operation_id}/logs", operation_log, methods=["GET"]),
    ]
    if worker.metrics.enabled:
        scrape_token = metrics.token if metrics is not None else None
        scrape_auth = ScrapeAuth.of(bearer, scrape_token)

        async def refresh() -> None:
            worker.refresh_metrics()

        # Checks its own tokens (the worker token, or KTRDR_METRICS_TOKEN when set).
        endpoint = metrics_endpoint(worker.metrics.registry, auth=scrape_auth, refresh=refresh)
        routes.append(Route(METRICS_PATH, endpoint, methods=["GET"]))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BodyLimitMiddleware, max_body_bytes=MAX_BODY_BYTES)],
        lifespan=lifespan,
    )
    install_json_error_handlers(app)
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
    tracing: Tracing | None = None,
) -> GracefulServer:
    """uvicorn on exactly ``KTRDR_WORKER_HOST:KTRDR_WORKER_PORT``, hooked to ``worker``.

    With ``tracing`` on, a start request continues the trace its ``traceparent``
    header names (the dispatcher's).
    """
    settings = worker.settings
    app = create_worker_app(worker, auth=auth, metrics=metrics)
    instrument_app(app, tracing if tracing is not None else Tracing.off(), excluded=UNTRACED_PATHS)

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
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=logging_settings.level is LogLevel.DEBUG,
        lifespan="on",
        # No websockets here: "auto" would import a websocket library when one is installed.
        ws="none",
        timeout_graceful_shutdown=graceful_requests_timeout(worker),
    )
    return GracefulServer(
        config, on_listening=on_listening, on_exit_requested=worker.request_shutdown
    )


__all__ = [
    "OPERATIONS_ROUTE",
    "UNTRACED_PATHS",
    "build_worker_server",
    "create_worker_app",
    "graceful_requests_timeout",
]
