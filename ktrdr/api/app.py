"""The backend's app factory: settings, clock and collaborators in, FastAPI app out.

Nothing is read from the environment or created at import time: ``main()`` builds
the configuration and the registry and passes them here; tests pass their own
(a fake clock, a pre-filled registry). The lifespan runs the liveness sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

import ktrdr
from ktrdr.api.liveness import LivenessPolicy, sweep
from ktrdr.api.periodic import run_periodically
from ktrdr.api.registry import WorkerRegistry
from ktrdr.api.workers_api import workers_routers
from ktrdr.config import BackendConfig
from ktrdr.protocol import MAX_BODY_BYTES
from ktrdr.web import BearerAuth, BodyLimitMiddleware, install_error_handlers

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
) -> FastAPI:
    """Build the backend app over ``registry``; ``clock`` returns aware UTC datetimes."""
    policy = LivenessPolicy.from_settings(config.worker)
    auth = BearerAuth(config.auth.worker_token)
    interval = sweep_interval(config)

    async def liveness_round() -> None:
        sweep(registry, clock(), policy)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(run_periodically("liveness", interval, liveness_round))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="ktrdr backend",
        version=ktrdr.__version__,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=MAX_BODY_BYTES)
    install_error_handlers(app)

    for router in workers_routers(registry=registry, clock=clock, policy=policy, auth=auth):
        app.include_router(router)

    @app.get("/health", tags=["health"], summary="Liveness of the backend itself")
    async def health() -> dict[str, object]:
        return {"status": "ok", "version": ktrdr.__version__, "workers": len(registry)}

    return app


__all__ = ["create_app", "sweep_interval", "utc_now"]
