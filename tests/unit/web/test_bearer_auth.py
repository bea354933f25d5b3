"""Bearer-token checks: constant-time comparison, 401 before the body is read."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from ktrdr.config import Secret
from ktrdr.web import BearerAuth, BearerAuthMiddleware, install_error_handlers

TOKEN = "the-real-token"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer {TOKEN} ", True),
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        (f"Basic {TOKEN}", False),
        (f"Bearer {TOKEN[:-1]}", False),
        ("Bearer ünïcode", False),
    ],
)
def test_is_authorized_accepts_only_the_exact_bearer_token(
    header: str | None, expected: bool
) -> None:
    """Only 'Bearer <token>' (scheme case-insensitive) is accepted."""
    assert BearerAuth(Secret(TOKEN)).is_authorized(header) is expected


class _Body(BaseModel):
    value: int


@pytest.mark.anyio
async def test_route_class_refuses_before_parsing_and_names_the_variable() -> None:
    """A protected route answers 401 (naming the variable, not the token) to bad bodies too."""
    auth = BearerAuth(Secret(TOKEN), variable="KTRDR_AUTH_WORKER_TOKEN")
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter(route_class=auth.route_class())
    calls: list[int] = []

    @router.post("/write")
    async def write(body: _Body) -> dict[str, int]:
        calls.append(body.value)
        return {"value": body.value}

    app.include_router(router)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        refused = await client.post(
            "/write", content=b"{oops", headers={"Content-Type": "application/json"}
        )
        accepted = await client.post(
            "/write", json={"value": 3}, headers={"Authorization": f"Bearer {TOKEN}"}
        )

    assert refused.status_code == 401
    assert "KTRDR_AUTH_WORKER_TOKEN" in refused.json()["detail"]
    assert TOKEN not in refused.text
    assert accepted.json() == {"value": 3}
    assert calls == [3]


@pytest.mark.anyio
async def test_the_middleware_refuses_every_path_it_does_not_exempt() -> None:
    """Closed by default: exempt paths pass, every other one (unknown ones too) needs the token."""
    auth = BearerAuth(Secret(TOKEN), variable="KTRDR_AUTH_OPERATOR_TOKEN")
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {"ok": "open"}

    @app.get("/closed")
    async def closed_route() -> dict[str, str]:
        return {"ok": "closed"}

    app.add_middleware(BearerAuthMiddleware, auth=auth, exempt=lambda m, p: p == "/open")
    transport = httpx.ASGITransport(app)
    good = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        codes = [
            (await client.get("/open")).status_code,
            (await client.get("/closed")).status_code,
            (await client.get("/closed", headers={"Authorization": "Bearer x"})).status_code,
            (await client.get("/closed", headers=good)).status_code,
            (await client.get("/nowhere")).status_code,
            (await client.get("/nowhere", headers=good)).status_code,
        ]
        refused = await client.get("/closed")
    assert codes == [200, 401, 401, 200, 401, 404]
    assert refused.json()["error"] == "unauthorized"
    assert "KTRDR_AUTH_OPERATOR_TOKEN" in refused.json()["detail"]
    assert TOKEN not in refused.text
