"""A JSON request body read into a pydantic model, for plain Starlette routes.

The worker serves its few routes with Starlette alone (FastAPI's import, mostly its
OpenAPI models, would be the largest part of a worker's cold start). Its clients
still get exactly what a FastAPI body parameter gives them, which this module
reproduces: a JSON body is parsed only when the request says it is JSON
(``application/json`` or ``application/*+json``; FastAPI's strict content type), a
missing or empty body is "Field required", unparsable JSON is ``json_invalid`` at the
character where parsing stopped, an undecodable body is 400, and every validation
problem is a 422 whose items are located under ``body``. The refusals are
:class:`~ktrdr.web.http_errors.ApiError`, so the app's JSON error handlers answer them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ktrdr.web.http_errors import ApiError, describe_validation_errors

ModelT = TypeVar("ModelT", bound=BaseModel)

_MISSING = [{"loc": ["body"], "msg": "Field required", "type": "missing"}]


def is_json(content_type: str | None) -> bool:
    """True for ``application/json`` and ``application/<anything>+json`` (parameters allowed)."""
    # The rule of email.message's get_content_type(), which FastAPI applies: the media
    # type before any ";", lower-cased, with exactly one "/" (else it is text/plain).
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type.count("/") != 1:
        return False
    maintype, subtype = media_type.split("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def invalid_request(errors: list[dict[str, Any]]) -> ApiError:
    """The 422 for ``errors`` (already in the ``{"loc", "msg", "type"}`` shape)."""
    return ApiError(422, "invalid_request", errors)


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """The body as a client's JSON value; a non-JSON body stays bytes (the model refuses it)."""
    if not is_json(content_type):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        problem = {
            "loc": ["body", exc.pos],
            "msg": f"JSON decode error: {exc.msg}",
            "type": "json_invalid",
        }
        raise invalid_request([problem]) from exc
    except (ValueError, RecursionError) as exc:  # undecodable bytes, absurd nesting
        raise ApiError(400, "bad_request", "There was an error parsing the body") from exc


def validate_body(model: type[ModelT], value: Any) -> ModelT:
    """``value`` as ``model``; a 422 with each problem located under ``body`` otherwise."""
    try:
        # from_attributes as FastAPI validates: a non-object body is "model_attributes_type".
        return model.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise invalid_request(describe_validation_errors(errors)) from exc


async def read_model(request: Request, model: type[ModelT]) -> ModelT:
    """Read ``request``'s body as ``model``, refusing it as a FastAPI body parameter would."""
    raw = await request.body()
    if not raw:
        raise invalid_request(_MISSING)
    return validate_body(model, parse_body(raw, request.headers.get("content-type")))


def plain_body_handler(
    endpoint: Callable[..., Awaitable[Response]], model: type[BaseModel]
) -> Callable[[Request], Awaitable[Response]]:
    """A handler calling ``endpoint(**path_params, body=<model>, request=request)``.

    For a FastAPI route on the hot path (a worker's heartbeat): the route keeps its
    documented signature, but its requests skip FastAPI's per-request dependency
    solving, which costs more than the endpoint itself. The body is refused exactly
    as :func:`read_model` refuses it (FastAPI's own rules); path parameters arrive as
    the strings Starlette matched, so the endpoint's must be ``str``.
    """

    async def handle(request: Request) -> Response:
        body = await read_model(request, model)
        return await endpoint(**request.path_params, body=body, request=request)

    return handle


__all__ = [
    "invalid_request",
    "is_json",
    "parse_body",
    "plain_body_handler",
    "read_model",
    "validate_body",
]
