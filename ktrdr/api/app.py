"""The backend's app factory: settings, clock and collaborators in, FastAPI app out.

Nothing is read from the environment or created at import time: ``main()`` builds
the configuration, the store and every collaborator and passes them here; tests pass
their own (a fake clock, a store in a temporary directory, a dispatcher over
``httpx.MockTransport``). The lifespan runs the background loops (liveness sweep,
dispatch, heartbeat stamps, orphan detection, retention) and stops them on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import FastAPI

import ktrdr
from ktrdr.api.dispatcher import Dispatcher
from ktrdr.api.liveness import LivenessPolicy, sweep
from ktrdr.api.operations import OperationsService
from ktrdr.api.operations_api import operations_routers
from ktrdr.api.orphans import OrphanDetector
from ktrdr.api.periodic import run_until_stopped
from ktrdr.api.registry import WorkerRegistry
from ktrdr.api.reports import OperationReports
from ktrdr.api.retention import RetentionCleaner
from ktrdr.api.workers_api import workers_routers
from ktrdr.config import BackendConfig
from ktrdr.protocol import MAX_BODY_BYTES
from ktrdr.web import BearerAuth, BodyLimitMiddleware, install_error_handlers

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
) -> FastAPI:
    """Build the backend app; ``clock`` returns aware UTC datetimes.

    The app's lifespan owns the background loops and closes ``dispatcher`` (and its
    HTTP client) on shutdown; the caller owns the store behind ``service``.
    """
    policy = LivenessPolicy.from_settings(config.worker)
    auth = BearerAuth(config.auth.worker_token)
    interval = sweep_interval(config)

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
            "orphans": orphan_detector.run_forever(stop),
            "retention": retention.run_forever(stop),
        }
        tasks = [asyncio.create_task(loop, name=f"ktrdr-{name}") for name, loop in loops.items()]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await dispatcher.aclose()
            logger.info("background loops stopped")

    app = FastAPI(
        title="ktrdr backend",
        version=ktrdr.__version__,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=MAX_BODY_BYTES)
    install_error_handlers(app)

    # Flat, heartbeat first: FastAPI matches included routers level by level.
    for router in workers_routers(
        registry=registry, clock=clock, policy=policy, auth=auth, events=reports
    ):
        app.include_router(router)
    for router in operations_routers(
        service=service, dispatcher=dispatcher, reports=reports, auth=auth
    ):
        app.include_router(router)

    @app.get("/health", tags=["health"], summary="Liveness of the backend itself")
    async def health() -> dict[str, object]:
        return {"status": "ok", "version": ktrdr.__version__, "workers": len(registry)}

    return app


__all__ = ["create_app", "sweep_interval", "utc_now"]
