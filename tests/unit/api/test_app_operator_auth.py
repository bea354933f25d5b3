"""The operator token in process: which routes need it, what a refusal says, the docs switch.

The same matrix runs against a real backend process in
``tests/integration/test_operator_auth.py``; here every route the app describes is
reached, so a route added without deciding who may call it fails
:func:`test_the_operator_routes_are_exactly_these`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.backend import (
    OPERATOR_TOKEN,
    TOKEN,
    Backend,
    backend_config,
    make_backend,
    open_store,
)

from ktrdr.api.store import OperationStore

pytestmark = pytest.mark.anyio

#: Every route that needs the operator token: (method, path template).
OPERATOR_ROUTES = {
    ("GET", "/api/v1/workers"),
    ("GET", "/api/v1/workers/{worker_id}"),
    ("POST", "/api/v1/operations"),
    ("GET", "/api/v1/operations"),
    ("GET", "/api/v1/operations/{operation_id}"),
    ("GET", "/api/v1/operations/{operation_id}/series"),
    ("POST", "/api/v1/operations/{operation_id}/cancel"),
    ("POST", "/api/v1/operations/{operation_id}/resume"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/operations/{operation_id}/logs"),
}
CREDENTIALS = {
    "none": None,
    "wrong": "Bearer not-the-token-at-all",
    "worker-token": f"Bearer {TOKEN}",
    "operator-token-as-basic": f"Basic {OPERATOR_TOKEN}",
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OperationStore]:
    """A fresh SQLite store."""
    store = open_store(tmp_path)
    yield store
    store.close()


@pytest.fixture
def backend(store: OperationStore) -> Backend:
    """A backend with one idle training worker (w1), a cancelled and a pending operation."""
    backend = make_backend(store)
    backend.register("w1")
    backend.service.cancel(backend.service.create("training", {}).id)
    backend.clock.advance(1)
    backend.service.create("training", {})
    return backend


def _url(path: str, backend: Backend) -> str:
    """``path`` for w1 and an operation the route can act on (resume: the cancelled one)."""
    wanted = "cancelled" if path.endswith("/resume") else "pending"
    operation = next(o for o in backend.store.list().items if o.status.value == wanted)
    return path.format(worker_id="w1", operation_id=operation.id)


def _state(backend: Backend) -> Any:
    """Everything a request could change: the operations and the registry."""
    return backend.store.list(limit=1000), [r.view() for r in backend.registry.records()]


def _body(method: str, path: str) -> Any:
    return {"type": "training", "parameters": {}} if path == "/api/v1/operations" else None


async def _call(backend: Backend, method: str, path: str, authorization: str | None) -> Any:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with backend.client(operator=False) as client:
        return await client.request(
            method, _url(path, backend), json=_body(method, path), headers=headers
        )


@pytest.mark.parametrize("credential", sorted(CREDENTIALS))
@pytest.mark.parametrize(("method", "path"), sorted(OPERATOR_ROUTES))
async def test_an_operator_route_refuses_anything_but_the_operator_token(
    backend: Backend, method: str, path: str, credential: str
) -> None:
    """No token, a wrong one, the worker token: 401 naming the variable, and nothing changed."""
    before = _state(backend)

    response = await _call(backend, method, path, CREDENTIALS[credential])

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["error"] == "unauthorized"
    assert "KTRDR_AUTH_OPERATOR_TOKEN" in body["detail"]
    assert TOKEN not in response.text
    assert OPERATOR_TOKEN not in response.text
    assert _state(backend) == before


@pytest.mark.parametrize(("method", "path"), sorted(OPERATOR_ROUTES))
async def test_an_operator_route_answers_the_operator_token(
    backend: Backend, method: str, path: str
) -> None:
    """With 'Bearer <operator token>' each operator route does its work (2xx)."""
    response = await _call(backend, method, path, f"Bearer {OPERATOR_TOKEN}")

    assert 200 <= response.status_code < 300, response.text


async def test_the_operator_routes_are_exactly_these(backend: Backend) -> None:
    """Of every described route, those refusing no token but not the operator token are listed."""
    described = [
        (method.upper(), path)
        for path, operations in backend.app.openapi()["paths"].items()
        for method in operations
    ]
    found = set()
    for method, path in described:
        bare = await _call(backend, method, path, None)
        operator = await _call(backend, method, path, f"Bearer {OPERATOR_TOKEN}")
        if bare.status_code == 401 and operator.status_code != 401:
            found.add((method, path))
    assert ("POST", "/api/v1/workers/register") in described
    assert found == OPERATOR_ROUTES


async def test_the_token_is_checked_before_the_body_is_read(backend: Backend) -> None:
    """A malformed body without a token is 401, not 422: the schema is not revealed."""
    async with backend.client(operator=False) as client:
        response = await client.post(
            "/api/v1/operations", content=b"{oops", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 401


async def test_an_unknown_path_needs_the_token_too(backend: Backend) -> None:
    """Closed by default: without the token even a 404 is not revealed."""
    async with backend.client(operator=False) as client:
        bare = await client.get("/api/v1/secrets")
    async with backend.client() as client:
        operator = await client.get("/api/v1/secrets")
    assert (bare.status_code, operator.status_code) == (401, 404)


async def test_health_needs_no_token(backend: Backend) -> None:
    """GET /health stays open: load balancers and the container HEALTHCHECK use it."""
    async with backend.client(operator=False) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("environ", "served"),
    [
        ({}, True),
        ({"KTRDR_ENV": "test"}, True),
        ({"KTRDR_ENV": "production"}, False),
        ({"KTRDR_ENV": "production", "KTRDR_API_DOCS": "true"}, True),
        ({"KTRDR_API_DOCS": "false"}, False),
    ],
    ids=["development", "test", "production", "production-with-docs", "development-without"],
)
async def test_the_api_description_is_served_unless_production(
    store: OperationStore, environ: dict[str, str], served: bool
) -> None:
    """/docs, /redoc and /openapi.json: open in development; off (401, 404) in production."""
    backend = make_backend(store, backend_config(**environ))
    async with backend.client(operator=False) as client:
        bare = {path: (await client.get(path)).status_code for path in DOCS}
    async with backend.client() as client:
        operator = {path: (await client.get(path)).status_code for path in DOCS}
    assert bare == dict.fromkeys(DOCS, 200 if served else 401)
    assert operator == dict.fromkeys(DOCS, 200 if served else 404)


DOCS = ("/docs", "/redoc", "/openapi.json")


async def test_the_openapi_schema_documents_the_401_of_operator_routes(backend: Backend) -> None:
    """Each operator route lists its 401; /health does not."""
    async with backend.client(operator=False) as client:
        schema = (await client.get("/openapi.json")).json()
    for method, path in OPERATOR_ROUTES:
        assert "401" in schema["paths"][path][method.lower()]["responses"], (method, path)
    assert "401" not in schema["paths"]["/health"]["get"]["responses"]
