"""JSON request bodies for plain Starlette routes answer exactly as FastAPI body parameters.

Each case is sent to apps side by side: a FastAPI route taking the model as its body
parameter (the worker's routes were such routes), a Starlette route reading it with
``read_model``, and a FastAPI route served by ``plain_body_handler`` (the backend's
heartbeat). Status and JSON body must be equal, so clients cannot tell the
difference, and a FastAPI upgrade that changes its answers shows up here.
"""

from __future__ import annotations

import asyncio
import email.message
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ktrdr.web import install_error_handlers, install_json_error_handlers, read_model
from ktrdr.web.json_body import is_json, plain_body_handler


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z]+$")
    count: int = Field(ge=0)
    tags: dict[str, Any] = Field(default_factory=dict)


def _fastapi_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/items", status_code=202)
    async def create(body: _Item) -> dict[str, Any]:
        return body.model_dump()

    return app


def _starlette_app() -> Starlette:
    async def create(request: Request) -> JSONResponse:
        body = await read_model(request, _Item)
        return JSONResponse(body.model_dump(), status_code=202)

    app = Starlette(routes=[Route("/items", create, methods=["POST"])])
    install_json_error_handlers(app)
    return app


def _plain_fastapi_app() -> FastAPI:
    class PlainRoute(APIRoute):
        def get_route_handler(self) -> Any:
            return plain_body_handler(self.endpoint, _Item)

    async def create(body: _Item, request: Request) -> Response:
        assert request.method == "POST"
        return JSONResponse(body.model_dump(), status_code=202)

    app = FastAPI()
    install_error_handlers(app)
    app.router.add_api_route(
        "/items", create, methods=["POST"], status_code=202, route_class_override=PlainRoute
    )
    return app


FASTAPI = _fastapi_app()
STARLETTE = _starlette_app()
PLAIN = _plain_fastapi_app()

JSON = "application/json"
VALID = b'{"name": "abc", "count": 2}'
CASES: list[tuple[str | None, bytes]] = [
    (JSON, VALID),
    (JSON, b'{"name": "abc", "count": 2, "tags": {"a": [1, 2]}}'),
    ("application/json; charset=utf-8", VALID),
    ("application/vnd.ktrdr+json", VALID),
    ("APPLICATION/JSON", VALID),
    (None, VALID),
    ("text/plain", VALID),
    ("application/x-www-form-urlencoded", b"name=abc&count=2"),
    ("application/jsonx", VALID),
    ("json", VALID),
    (JSON, b""),
    (JSON, b"{bad"),
    (JSON, b'{"name": "abc",'),
    (JSON, b"[1, 2]"),
    (JSON, b"null"),
    (JSON, b'"text"'),
    (JSON, b"12"),
    (JSON, b'{"name": "ABC", "count": -1}'),
    (JSON, b'{"name": "abc"}'),
    (JSON, b'{"name": "abc", "count": 1, "extra": true}'),
    (JSON, b'{"name": "abc", "count": "many"}'),
    (JSON, b'{"name": "abc", "count": 1.5}'),
    (JSON, b'"\x80\xff"'),
    (JSON, b"\xff\xfe{"),
    (JSON, b"[" * 100_000),
    (JSON, b'{"name": "abc", "count": 2} trailing'),
]


def _answer(app: Starlette, content_type: str | None, body: bytes) -> tuple[int, Any]:
    """POST ``body`` to ``app``'s /items (in process); status and parsed JSON answer."""
    headers = {"content-type": content_type} if content_type is not None else {}

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.post("/items", content=body, headers=headers)

    response = asyncio.run(post())
    return response.status_code, response.json()


@pytest.mark.parametrize(("content_type", "body"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_read_model_answers_as_a_fastapi_body_parameter(
    content_type: str | None, body: bytes
) -> None:
    """Same status and JSON body as FastAPI for valid, missing, malformed and non-JSON bodies."""
    expected = _answer(FASTAPI, content_type, body)
    assert _answer(STARLETTE, content_type, body) == expected
    assert _answer(PLAIN, content_type, body) == expected


@settings(max_examples=150, deadline=None)
@given(
    content_type=st.one_of(
        st.none(),
        st.sampled_from([JSON, "application/merge-patch+json", "text/json", "application/xml"]),
    ),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["name", "count", "tags", "x"]), inner, max_size=4)
        ),
        max_leaves=8,
    ),
)
def test_any_json_value_gets_the_fastapi_answer(content_type: str | None, value: Any) -> None:
    """Whatever JSON value arrives, the answer (accepted or 422 items) equals FastAPI's."""
    body = json.dumps(value).encode()
    expected = _answer(FASTAPI, content_type, body)
    assert _answer(STARLETTE, content_type, body) == expected
    assert _answer(PLAIN, content_type, body) == expected


@given(st.text(max_size=40))
def test_is_json_follows_the_email_content_type_rule(content_type: str) -> None:
    """A content type is JSON exactly when email.message's parsing (FastAPI's) says so."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    expected = message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
    assert is_json(content_type) is expected


def test_problems_are_located_under_body() -> None:
    """A refused field is named as ["body", field] with pydantic's message, never the input."""
    status, answer = _answer(STARLETTE, JSON, b'{"name": "secret-Value", "count": 1}')

    assert status == 422
    assert answer["error"] == "invalid_request"
    assert [item["loc"] for item in answer["detail"]] == [["body", "name"]]
    assert "secret-Value" not in json.dumps(answer)
