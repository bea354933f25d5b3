"""The body-size limit: 413 JSON for declared or streamed oversize, transparent otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

from ktrdr.web import BodyLimitMiddleware, install_error_handlers

pytestmark = pytest.mark.anyio

LIMIT = 100


def _app(seen: list[int]) -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=LIMIT)
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        body = await request.body()
        seen.append(len(body))
        return {"size": len(body)}

    return app


async def test_bodies_up_to_the_limit_pass_through() -> None:
    """A body of exactly the limit reaches the app unchanged."""
    seen: list[int] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(_app(seen)), base_url="http://t"
    ) as client:
        response = await client.post("/echo", content=b"x" * LIMIT)

    assert response.json() == {"size": LIMIT}
    assert seen == [LIMIT]


async def test_declared_oversize_is_refused_before_the_app_runs() -> None:
    """Content-Length over the limit: 413 JSON, and the endpoint never runs."""
    seen: list[int] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(_app(seen)), base_url="http://t"
    ) as client:
        response = await client.post("/echo", content=b"x" * (LIMIT + 1))

    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert f"{LIMIT} bytes" in response.json()["detail"]
    assert seen == []


async def test_streamed_oversize_is_refused_when_it_crosses_the_limit() -> None:
    """A chunked body without Content-Length is counted and refused with 413."""
    seen: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 30

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(_app(seen)), base_url="http://t"
    ) as client:
        response = await client.post("/echo", content=chunks())

    assert response.status_code == 413
    assert seen == []
