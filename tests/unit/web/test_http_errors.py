"""JSON error bodies: every error a ktrdr server returns is {"error", "detail"}."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from ktrdr.errors import JobFailed, OperationNotFound, WorkerBusy
from ktrdr.web import ApiError, describe_validation_errors, error_code, install_error_handlers

pytestmark = pytest.mark.anyio


class _Body(BaseModel):
    count: int


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/items")
    async def create(body: _Body) -> dict[str, int]:
        return {"count": body.count}

    @app.get("/conflict")
    async def conflict() -> None:
        raise ApiError(409, "busy", "worker is busy with op-1", headers={"Retry-After": "5"})

    @app.get("/busy")
    async def busy() -> None:
        raise WorkerBusy("operation op-1 is running")

    @app.get("/operations/{operation_id}")
    async def operation(operation_id: str) -> None:
        raise OperationNotFound(operation_id)

    @app.get("/unmapped")
    async def unmapped() -> None:
        raise JobFailed("a domain error no route should let through")

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("internal detail that must not leak")

    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_api_error_keeps_its_code_detail_and_headers() -> None:
    """ApiError becomes its status, its own code, its detail and its headers."""
    async with _client(_app()) as client:
        response = await client.get("/conflict")

    assert response.status_code == 409
    assert response.json() == {"error": "busy", "detail": "worker is busy with op-1"}
    assert response.headers["retry-after"] == "5"


async def test_validation_errors_list_fields_without_echoing_input() -> None:
    """422 lists loc/msg/type per problem and never reflects the submitted value."""
    async with _client(_app()) as client:
        response = await client.post("/items", json={"count": "s3cr3t-value"})

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["detail"][0]["loc"] == ["body", "count"]
    assert body["detail"][0]["type"] == "int_parsing"
    assert "s3cr3t-value" not in response.text


async def test_malformed_json_names_the_decode_problem() -> None:
    """A JSON syntax error is a 422 whose message says what the parser found."""
    async with _client(_app()) as client:
        response = await client.post(
            "/items", content=b'{"count": }', headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("JSON decode error: Expecting value")


async def test_routing_errors_are_json() -> None:
    """Unknown paths and methods get JSON 404/405, not Starlette's plain text."""
    async with _client(_app()) as client:
        missing = await client.get("/missing")
        wrong = await client.get("/items")

    assert missing.json() == {"error": "not_found", "detail": "Not Found"}
    assert wrong.json() == {"error": "method_not_allowed", "detail": "Method Not Allowed"}


async def test_a_bug_is_a_json_500_without_internals(caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception is logged with its traceback and answered with a bare 500."""
    async with _client(_app()) as client:
        response = await client.get("/bug")

    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "detail": "the server failed; see its log",
    }
    assert "internal detail" not in response.text
    assert "unhandled error on GET /bug" in caplog.text


async def test_domain_errors_get_the_status_of_the_one_mapping() -> None:
    """A mapped ktrdr error a route lets through is its HTTP_STATUSES answer, message as detail."""
    async with _client(_app()) as client:
        busy = await client.get("/busy")
        missing = await client.get("/operations/op-9")

    assert busy.status_code == 409
    assert busy.json() == {"error": "busy", "detail": "operation op-1 is running"}
    assert missing.status_code == 404
    assert missing.json() == {"error": "unknown_operation", "detail": "no operation with id 'op-9'"}


async def test_an_unmapped_domain_error_is_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    """A ktrdr error without an HTTP answer is a bug: a bare 500, logged, message not shown."""
    async with _client(_app()) as client:
        response = await client.get("/unmapped")

    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "no route should" not in response.text
    assert "unhandled error on GET /unmapped" in caplog.text


def test_error_codes_cover_rare_statuses() -> None:
    """Known statuses have names; others fall back to http_<status>."""
    assert error_code(404) == "not_found"
    assert error_code(418) == "http_418"


def test_describe_validation_errors_stringifies_odd_locations() -> None:
    """Non-JSON location parts are turned into strings; missing keys get defaults."""
    items = describe_validation_errors([{"loc": ("body", 1.5)}, {}])

    assert items == [
        {"loc": ["body", "1.5"], "msg": "invalid value", "type": "value_error"},
        {"loc": [], "msg": "invalid value", "type": "value_error"},
    ]
