"""FastAPI, httpx and SQLAlchemy, instrumented per object with the injected provider."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from opentelemetry.trace import SpanKind
from support.tracing import MemoryTracing, memory_tracing, trace_hex

from ktrdr.api.store import OperationStore
from ktrdr.protocol import OperationStatus, OperationType
from ktrdr.tracing import Tracing, instrument_app, instrument_client, instrument_engine

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def traced() -> Iterator[MemoryTracing]:
    """Tracing with an in-memory exporter."""
    memory = memory_tracing()
    yield memory
    memory.close()


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/operations")
    async def start() -> dict[str, str]:
        return {"status": "running"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def test_a_request_continues_the_trace_its_traceparent_names(traced: MemoryTracing) -> None:
    """The server span joins the caller's trace, as the child of the caller's span."""
    app = _app()
    instrument_app(app, traced.tracing, excluded=(r"/health$",))

    async def call() -> None:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            started = await client.post("/operations", headers={"traceparent": PARENT})
            assert started.status_code == 200
            assert (await client.get("/health")).status_code == 200

    asyncio.run(call())
    server = traced.named("POST /operations")
    assert server.kind is SpanKind.SERVER
    assert trace_hex(server) == "0af7651916cd43dd8448eb211c80319c"
    assert server.parent is not None
    assert server.parent.span_id == 0xB7AD6B7169203331
    assert [s.name for s in traced.spans()] == ["POST /operations"]  # /health: excluded


def test_tracing_off_leaves_the_app_alone() -> None:
    """With tracing off no middleware is added (nothing to pay per request)."""
    app = _app()
    before = list(app.user_middleware)
    instrument_app(app, Tracing.off())
    assert app.user_middleware == before
    assert app.build_middleware_stack.__func__ is FastAPI.build_middleware_stack  # type: ignore[attr-defined]


def test_a_client_request_carries_the_current_trace(traced: MemoryTracing) -> None:
    """httpx sends traceparent naming its client span, in the current trace."""
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent"))
        return httpx.Response(202)

    async def call() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            instrument_client(client, traced.tracing)
            with traced.tracing.span("dispatch"):
                await client.post("http://worker:5003/operations")

    asyncio.run(call())
    client_span = traced.named("POST")
    dispatch = traced.named("dispatch")
    span_id = f"{client_span.get_span_context().span_id:016x}"
    assert [value[:52] if value else value for value in seen] == [
        f"00-{trace_hex(dispatch)}-{span_id}"
    ]
    assert client_span.parent is not None
    assert client_span.parent.span_id == dispatch.get_span_context().span_id


def test_sql_statements_inside_a_trace_are_spans(traced: MemoryTracing) -> None:
    """The engine's statements are client spans of the current trace (SQLAlchemy 2.1 too)."""
    engine = sa.create_engine("sqlite+pysqlite:///:memory:")
    instrument_engine(engine, traced.tracing)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))  # no trace around it: not recorded
        with traced.tracing.span("request"):
            conn.execute(sa.text("SELECT 2"))
    engine.dispose()
    names = [s.name for s in traced.spans()]
    assert names[-1] == "request"
    statements = [s for s in traced.spans() if s.kind is SpanKind.CLIENT]
    assert len(statements) == 1
    assert statements[0].name.startswith("SELECT")
    assert trace_hex(statements[0]) == trace_hex(traced.named("request"))


def test_a_traced_store_keeps_its_hot_transitions_on_sqlalchemy(
    traced: MemoryTracing, tmp_path: Path
) -> None:
    """On SQLite the store runs its hot transitions below SQLAlchemy's Connection,
    except while the engine is traced: each statement is still a span."""
    store = OperationStore.open_url(f"sqlite+pysqlite:///{tmp_path / 'ops.db'}")
    instrument_engine(store.engine, traced.tracing)
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    try:
        with traced.tracing.span("request"):
            record = store.create(operation_type=OperationType.TRAINING, parameters={}, now=now)
            store.mark_running(record.id, worker_id="w-1", now=now)
            store.update_progress(record.id, now=now, progress={"percent": 5.0})
            store.finish(record.id, status=OperationStatus.COMPLETED, now=now)
    finally:
        store.close()
    statements = [s.name.split()[0] for s in traced.spans() if s.kind is SpanKind.CLIENT]
    assert statements == ["INSERT", "UPDATE", "UPDATE", "UPDATE"]
