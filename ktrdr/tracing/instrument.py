"""FastAPI, httpx and SQLAlchemy instrumented with the maintained OpenTelemetry packages.

The backend is a FastAPI app (the FastAPI instrumentation); a worker's app is plain
Starlette, served through the same ASGI middleware that package is built on, with
spans named after the route the same way. Each function instruments one object (an
app, a client, an engine) with the provider
of the :class:`~ktrdr.tracing.Tracing` it is given, and does nothing when tracing is
off: no global patching (``FastAPIInstrumentor().instrument()``,
``SQLAlchemyInstrumentor().instrument()`` would patch every app and every
``create_engine`` of the process) and no global provider. The instrumentation
packages are imported only when tracing is on. Their metrics are not collected
(a no-op meter provider): ktrdr's metrics are Prometheus's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ktrdr.tracing.tracing import Tracing

if TYPE_CHECKING:
    import httpx
    import sqlalchemy as sa
    from starlette.applications import Starlette
    from starlette.types import Scope

__all__ = ["instrument_app", "instrument_client", "instrument_engine"]


def instrument_app(app: Starlette, tracing: Tracing, *, excluded: Sequence[str] = ()) -> None:
    """A server span per request to ``app`` (W3C ``traceparent`` read from the headers).

    ``app`` is a FastAPI or a plain Starlette app; spans are named ``METHOD /route``.
    ``excluded`` holds regular expressions of URLs served without a span (heartbeats,
    health checks, scrapes: one trace each would bury the operations' traces).
    """
    if not tracing.enabled:
        return
    from fastapi import FastAPI
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    if isinstance(app, FastAPI):
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=tracing.provider,
            meter_provider=NoOpMeterProvider(),
            excluded_urls=",".join(excluded),
            exclude_spans=["receive", "send"],
        )
        return
    app.add_middleware(
        OpenTelemetryMiddleware,
        excluded_urls=",".join(excluded),
        default_span_details=lambda scope: (_route_name(app, scope), {}),
        tracer_provider=tracing.provider,
        meter_provider=NoOpMeterProvider(),
        exclude_spans=["receive", "send"],
    )


def _route_name(app: Starlette, scope: Scope) -> str:
    """``POST /operations/{operation_id}/cancel``: the method and the matching route."""
    from starlette.routing import Match

    method = scope.get("method", "HTTP")
    for route in app.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return f"{method} {getattr(route, 'path', scope.get('path', ''))}"
    return str(method)


def instrument_client(client: httpx.AsyncClient, tracing: Tracing) -> None:
    """A client span per request ``client`` sends, with the ``traceparent`` header."""
    if not tracing.enabled:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    HTTPXClientInstrumentor.instrument_client(
        client, tracer_provider=tracing.provider, meter_provider=NoOpMeterProvider()
    )


def instrument_engine(engine: sa.Engine, tracing: Tracing) -> None:
    """A client span per SQL statement ``engine`` runs (inside a traced request).

    Uses the package's per-engine tracer (``EngineTracer``) rather than its
    instrumentor, which would also patch ``sqlalchemy.create_engine`` for the whole
    process. The package declares SQLAlchemy < 2.1; it only listens to engine events,
    which SQLAlchemy 2.1 keeps (``tests/unit/tracing`` runs it against the installed
    version).
    """
    if not tracing.enabled:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__ as version
    from opentelemetry.metrics import NoOpMeterProvider

    name = "opentelemetry.instrumentation.sqlalchemy"
    tracer = tracing.provider.get_tracer(name, version)
    meter = NoOpMeterProvider().get_meter(name)
    connections = meter.create_up_down_counter("db.client.connections.usage")
    EngineTracer(tracer, engine, connections)  # type: ignore[no-untyped-call]  # untyped package
