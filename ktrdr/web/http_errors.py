"""JSON error responses shared by the backend and worker HTTP servers.

Every 4xx/5xx body is ``{"error": <code>, "detail": <sentence or field list>}``
(``ktrdr.protocol.ErrorBody``), never Starlette's plain-text defaults, so clients
can always parse an error. Request validation problems become 422 with one item per
field; nothing a client sends can turn into a 500. A domain error a route lets
through (``ktrdr.errors``) gets the status ``ktrdr.errors.HTTP_STATUSES`` gives it, and
its message as the detail. Error bodies never echo the offending input, so a secret
sent in the wrong place is not reflected back.

Only :func:`install_error_handlers` knows FastAPI (and imports it when called): the
worker serves plain Starlette routes and must not pay for FastAPI at start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ktrdr.errors import KtrdrError, http_status

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

#: Machine-readable codes for the statuses our servers produce.
ERROR_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(HTTPException):
    """An error response with an explicit code: ``raise ApiError(404, "unknown_worker", ...)``."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=dict(headers or {}))
        self.error = error


def error_code(status_code: int) -> str:
    """The code for ``status_code`` (``http_<status>`` for rare ones)."""
    return ERROR_CODES.get(status_code, f"http_{status_code}")


def error_response(
    status_code: int,
    error: str,
    detail: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Build the JSON error response every handler returns."""
    return JSONResponse(
        {"error": error, "detail": detail}, status_code=status_code, headers=headers
    )


def describe_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """One ``{"loc", "msg", "type"}`` per problem; inputs and contexts are left out.

    Pydantic's raw errors carry the input (possibly large or sensitive) and context
    objects that are not JSON-serialisable; clients need where and what, not those.
    """
    items: list[dict[str, Any]] = []
    for raw in errors:
        loc = [part if isinstance(part, (int, str)) else str(part) for part in raw.get("loc", ())]
        message = str(raw.get("msg", "invalid value"))
        ctx = raw.get("ctx") or {}
        if raw.get("type") == "json_invalid" and "error" in ctx:
            message = f"{message}: {ctx['error']}"
        items.append({"loc": loc, "msg": message, "type": str(raw.get("type", "value_error"))})
    return items


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    # Registered for FastAPI's RequestValidationError only, whose errors() lists them.
    errors = exc.errors()  # type: ignore[attr-defined]
    return error_response(422, "invalid_request", describe_validation_errors(errors))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = exc.error if isinstance(exc, ApiError) else error_code(exc.status_code)
    return error_response(exc.status_code, code, exc.detail, headers=exc.headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    # ktrdr.errors.HTTP_STATUSES says what each domain error means to a client;
    # one missing from it escaped its caller: that is a bug, answered as one.
    answer = http_status(exc)
    if answer is None:
        return await _unexpected_error(request, exc)
    return error_response(answer.status_code, answer.error, str(exc))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug on our side: log it with its traceback, answer without internals.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed; see its log")


def install_json_error_handlers(app: Starlette) -> None:
    """Make every error a plain Starlette ``app`` returns a JSON ``ErrorBody``.

    Its routes validate their own bodies (:func:`ktrdr.web.read_model`), whose
    refusals are ``ApiError`` 422s.
    """
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(KtrdrError, _domain_error)
    app.add_exception_handler(Exception, _unexpected_error)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error a FastAPI ``app`` returns a JSON ``ErrorBody``, its 422s included."""
    # Imported here: only FastAPI apps (the backend) need it, and they have FastAPI loaded.
    from fastapi.exceptions import RequestValidationError

    app.add_exception_handler(RequestValidationError, _validation_error)
    install_json_error_handlers(app)


__all__ = [
    "ERROR_CODES",
    "ApiError",
    "describe_validation_errors",
    "error_code",
    "error_response",
    "install_error_handlers",
    "install_json_error_handlers",
]
