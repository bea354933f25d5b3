"""HTTP plumbing shared by the backend and the workers' servers.

JSON error bodies, JSON request bodies for plain Starlette routes, a body-size limit,
bearer-token checks and a uvicorn server whose graceful shutdown runs our own (none
of it imports FastAPI; the two helpers only FastAPI apps use import it when called);
on the client side, the bearer header and the reading of error bodies that every
ktrdr HTTP client shares. It knows nothing about workers or operations, so
``ktrdr.api`` and ``ktrdr.workers`` can both use it without importing each other.
"""

from ktrdr.web.bearer_auth import BearerAuth, BearerAuthMiddleware
from ktrdr.web.body_limit import BodyLimitMiddleware, BodyTooLarge
from ktrdr.web.graceful_server import EXIT_SIGNALS, ExitSignals, GracefulServer
from ktrdr.web.http_client import backend_error, bearer_headers, describe_error, read_error_body
from ktrdr.web.http_errors import (
    ApiError,
    describe_validation_errors,
    error_code,
    error_response,
    install_error_handlers,
    install_json_error_handlers,
)
from ktrdr.web.json_body import read_model
from ktrdr.web.ports import ensure_bindable

__all__ = [
    "EXIT_SIGNALS",
    "ApiError",
    "BearerAuth",
    "BearerAuthMiddleware",
    "BodyLimitMiddleware",
    "BodyTooLarge",
    "ExitSignals",
    "GracefulServer",
    "backend_error",
    "bearer_headers",
    "describe_error",
    "describe_validation_errors",
    "ensure_bindable",
    "error_code",
    "error_response",
    "install_error_handlers",
    "install_json_error_handlers",
    "read_error_body",
    "read_model",
]
