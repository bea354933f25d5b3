"""The backend's app factory: settings, clock and collaborators in, FastAPI app out.

Nothing is read from the environment or created at import time: ``main()`` builds
the configuration, the store and every collaborator and passes them here; tests pass
their own (a fake clock, a store in a temporary directory, a dispatcher over
``httpx.MockTransport``). The lifespan runs the background loops (liveness sweep,
dispatch, heartbeat stamps, orphan detection, retention) and stops them on shutdown.

Every route needs the operator token (``KTRDR_AUTH_OPERATOR_TOKEN``) except
``GET /health``, the API description when it is served (``KTRDR_API_DOCS``), and
the routes of the workers' own routers, which check the workers' credentials. The
rule is closed by default: a route added later is an operator route unless it sits
in a workers' router.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

import attrs
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from starlette.routing import Route

import ktrdr
from ktrdr.api.cursors import CursorCodec
from ktrdr.api.dashboard import (
    DashboardSessions,
    OperatorGate,
    dashboard_open,
    dashboard_router,
    mount_static,
)
from ktrdr.api.deadlines import DeadlineWatch
from ktrdr.api.dispatcher import Dispatcher
from ktrdr.api.list_budget import ListBudgets
from ktrdr.api.liveness import LivenessPolicy, sweep
from ktrdr.api.metrics import BackendMetrics
from ktrdr.api.operations import OperationsService
from ktrdr.api.operations_api import operations_routers
from ktrdr.api.operations_listing import OperationListing
from ktrdr.api.orphans import OrphanDetector
from ktrdr.api.periodic import run_until_stopped
from ktrdr.api.registry import WorkerRegistry
from ktrdr.api.reports import OperationReports
from ktrdr.api.retention import RetentionCleaner
from ktrdr.api.store_health import (
    StoreHealth,
    install_store_error_handlers,
    store_unavailable_response,
)
from ktrdr.api.worker_auth import WorkerCredentialAuth
from ktrdr.api.workers_api import workers_routers
from ktrdr.api.workers_listing import WorkerListing
from ktrdr.config import AuthSettings, BackendConfig, Environment, env_name
from ktrdr.protocol import MAX_BODY_BYTES, ErrorBody, OperationStatus
from ktrdr.web import BearerAuth, BodyLimitMiddleware, install_error_handlers
from ktrdr.web.metrics import METRICS_PATH, ScrapeAuth, metrics_endpoint

logger = logging.getLogger(__name__)

#: Bounds of the liveness sweep period (derived from the heartbeat interval).
MIN_SWEEP_INTERVAL = datetime.timedelta(milliseconds=50)
MAX_SWEEP_INTERVAL = datetime.timedelta(seconds=5)


def utc_now() -> datetime.datetime:
    """The production clock: aware UTC."""
    return datetime.datetime.now(datetime.timezone.utc)


def sweep_interval(config: BackendConfig) -> datetime.timedelta:
    """Half the configured heartbeat interval, within [50 ms, 5 s].

    Reads sweep on their own, so this only bounds how late the log line and the
    removal of a dead worker can be.
    """
    half = config.worker.heartbeat_interval / 2
    return max(MIN_SWEEP_INTERVAL, min(MAX_SWEEP_INTERVAL, half))


def docs_enabled(config: BackendConfig) -> bool:
    """``KTRDR_API_DOCS`` when set; otherwise on, except in production."""
    if config.api.docs is not None:
        return config.api.docs
    return config.environment.env is not Environment.PRODUCTION


def require_operator_token(
    app: FastAPI,
    auth: BearerAuth,
    *,
    worker_routers: Iterable[APIRouter],
    self_checked: Iterable[str] = (),
    sessions: DashboardSessions | None = None,
) -> None:
    """Every request to ``app`` needs ``auth``'s token but /health, the docs and the workers'.

    A request matching one of ``worker_routers``' routes (path and method) passes
    through to that route's own check; any other is refused before anything reads
    it, unknown paths included, so a route added later is an operator route unless
    it sits in a workers' router. ``self_checked`` paths check their own tokens
    (``/metrics`` takes the operator token or the scrape token). With ``sessions``,
    a signed-in dashboard's cookie stands for the token (writes also need its CSRF
    token), and the dashboard's sign-in page and static files are open.
    """
    worker_routes = [
        (route.path_regex, frozenset(route.methods or ()))
        for router in worker_routers
        for route in router.routes
        if isinstance(route, Route)
    ]
    described = [app.openapi_url, app.docs_url, app.redoc_url]
    if app.docs_url:
        described.append(app.swagger_ui_oauth2_redirect_url)
    open_paths = frozenset({"/health", *self_checked, *(path for path in described if path)})

    def exempt(method: str, path: str) -> bool:
        if path in open_paths:
            return True
        if any(method in methods and regex.match(path) for regex, methods in worker_routes):
            return True
        return sessions is not None and dashboard_open(method, path)

    app.add_middleware(OperatorGate, auth=auth, exempt=exempt, sessions=sessions)


def create_app(
    config: BackendConfig,
    *,
    clock: Callable[[], datetime.datetime],
    registry: WorkerRegistry,
    service: OperationsService,
    dispatcher: Dispatcher,
    reports: OperationReports,
    orphan_detector: OrphanDetector,
    retention: RetentionCleaner,
    store_health: StoreHealth,
    metrics: BackendMetrics | None = None,
    cursors: CursorCodec | None = None,
    budgets: ListBudgets | None = None,
    deadlines: DeadlineWatch | None = None,
) -> FastAPI:
    """Build the backend app; ``clock`` returns aware UTC datetimes.

    The app's lifespan owns the background loops and closes ``dispatcher`` (and its
    HTTP client) on shutdown; the caller owns the store behind ``service`` and
    ``store_health``, which watches it: while it is unreachable, requests that need it
    answer 503 ``store_unavailable`` and ``GET /health`` answers 503. With
    ``metrics`` (enabled), ``GET /metrics`` serves them (the caller hands the same
    object to the dispatcher and the reports, and instruments the store).
    ``cursors`` signs the listings' cursors (default: a random key for this run);
    ``budgets`` bound how many items listings may return per second (default:
    :data:`~ktrdr.api.list_budget.WORKERS_LIST_RATE` and
    :data:`~ktrdr.api.list_budget.OPERATIONS_LIST_RATE`). With ``deadlines``,
    timed-out and stalled attempts are failed and stopped.
    """
    policy = LivenessPolicy.from_settings(config.worker)
    auth = BearerAuth(config.auth.worker_token)
    credentials = WorkerCredentialAuth(registry)
    operator_auth = BearerAuth(
        config.auth.operator_token, variable=env_name(attrs.fields(AuthSettings).operator_token)
    )
    interval = sweep_interval(config)
    cursors = cursors if cursors is not None else CursorCodec.random(clock)
    budgets = budgets if budgets is not None else ListBudgets.default()

    async def liveness_round() -> None:
        sweep(registry, clock(), policy)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        loops: dict[str, Coroutine[Any, Any, object]] = {
            "liveness": run_until_stopped(
                "liveness sweep", liveness_round, interval=interval, stop_event=stop
            ),
            "dispatch": dispatcher.run_forever(stop),
            "heartbeats": reports.run_forever(stop),
            # Heartbeat stamps still in memory are written before orphans are judged.
            "orphans": orphan_detector.run_forever(stop, prepare=reports.flush),
            "retention": retention.run_forever(stop),
        }
        if deadlines is not None:  # timeouts and stalls, on fresh progress too
            loops["deadlines"] = deadlines.run_forever(stop, prepare=reports.flush)
        tasks = [asyncio.create_task(loop, name=f"ktrdr-{name}") for name, loop in loops.items()]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await dispatcher.aclose()
            logger.info("background loops stopped")

    docs = docs_enabled(config)
    app = FastAPI(
        title="ktrdr backend",
        version=ktrdr.__version__,
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=MAX_BODY_BYTES)
    install_error_handlers(app)
    install_store_error_handlers(app, store_health)

    *worker_routers, worker_reads = workers_routers(
        registry=registry,
        clock=clock,
        policy=policy,
        auth=auth,
        credentials=credentials,
        events=reports,
        listing=WorkerListing(registry=registry, codec=cursors, budget=budgets.workers),
    )
    report_routes, operations_routes = operations_routers(
        service=service,
        dispatcher=dispatcher,
        reports=reports,
        auth=credentials,
        listing=OperationListing(service=service, codec=cursors, budget=budgets.operations),
        registry=registry,
    )
    # The workers' frequent requests (heartbeats, reports) are matched first, by
    # routes in the app's own router: FastAPI finds a route of an included router
    # through a walk of that router on every request.
    own_routes, register_routes = worker_routers
    for router in (own_routes, report_routes):
        app.router.routes.extend(router.routes)
    app.include_router(register_routes)
    refused = {"model": ErrorBody, "description": f"missing or wrong {operator_auth.variable}"}
    for router in (worker_reads, operations_routes):
        app.include_router(router, responses={401: refused})

    @app.get(
        "/health",
        tags=["health"],
        summary="Liveness of the backend and its operations store",
        responses={503: {"model": ErrorBody, "description": "the operations store is unavailable"}},
    )
    async def health() -> JSONResponse:
        body: dict[str, object] = {"version": ktrdr.__version__, "workers": len(registry)}
        if await store_health.check():
            return JSONResponse({"status": "ok", **body, "store": "ok"})
        return store_unavailable_response(
            store_health.retry_after, status="unavailable", **body, store="unavailable"
        )

    sessions = DashboardSessions(config.auth.operator_token)
    app.include_router(
        dashboard_router(
            auth=operator_auth,
            sessions=sessions,
            service=service,
            registry=registry,
            policy=policy,
            clock=clock,
        )
    )
    mount_static(app)

    self_checked: list[str] = []
    if metrics is not None and metrics.enabled:
        scrape_auth = ScrapeAuth.of(operator_auth, config.metrics.token)
        backend_metrics = metrics

        async def refresh() -> None:
            sweep(registry, clock(), policy)
            backend_metrics.observe_fleet(registry.records())
            try:
                counts = await asyncio.to_thread(service.live_counts)
            except Exception as exc:  # noqa: BLE001 - a store outage must not hide the rest
                logger.warning("metrics: operation counts not refreshed: %s", exc)
                return
            running = sum(n for (_, s), n in counts.items() if s is OperationStatus.RUNNING)
            pending = {k: n for (k, s), n in counts.items() if s is OperationStatus.PENDING}
            backend_metrics.observe_queue(running=running, pending=pending)

        endpoint = metrics_endpoint(metrics.registry, auth=scrape_auth, refresh=refresh)
        app.add_api_route(
            METRICS_PATH,
            endpoint,
            methods=["GET"],
            tags=["monitoring"],
            summary="Prometheus metrics (operator token, or KTRDR_METRICS_TOKEN when set)",
            response_class=Response,
            responses={
                200: {"content": {"text/plain": {}}, "description": "the text format"},
                401: {"model": ErrorBody, "description": "missing or wrong token"},
            },
        )
        self_checked.append(METRICS_PATH)
    require_operator_token(
        app,
        operator_auth,
        worker_routers=(*worker_routers, report_routes),
        self_checked=self_checked,
        sessions=sessions,
    )
    return app


__all__ = ["create_app", "docs_enabled", "require_operator_token", "sweep_interval", "utc_now"]
