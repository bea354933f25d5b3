"""What ktrdr's HTTP clients share: the bearer header and reading an error response.

The worker's backend client, the backend's dispatcher (calling workers) and the
operator's fleet client all send the same ``Authorization`` header and read the same
``ErrorBody`` back; each does it through this module, so an error reads the same in
every log line and every ``ktrdr`` message. The token goes into a header only: it is
never part of a message built here.
"""

from __future__ import annotations

import datetime
from typing import Any

import httpx
from pydantic import ValidationError

from ktrdr.config import Secret
from ktrdr.errors import BackendError, BackendRejected, BackendUnavailable
from ktrdr.protocol import ErrorBody

#: How long ktrdr's clients keep an idle connection to a ktrdr server (the backend or a
#: worker, both uvicorn, which closes idle connections after its ``timeout_keep_alive``
#: of 5 s). Well under that, so a client never sends a request on a connection the
#: server is closing at that very instant: with both at 5 s, a heartbeat every 5 s
#: regularly raced the close and got no answer (a start sent so was lost, a report
#: retried).
CLIENT_KEEPALIVE_EXPIRY = datetime.timedelta(seconds=2)


def client_limits() -> httpx.Limits:
    """Limits of ktrdr's clients of its own servers (:data:`CLIENT_KEEPALIVE_EXPIRY`)."""
    return httpx.Limits(keepalive_expiry=CLIENT_KEEPALIVE_EXPIRY.total_seconds())


def bearer_headers(token: Secret) -> dict[str, str]:
    """Headers of an authenticated JSON request: ``Authorization: Bearer <token>``."""
    return {"Authorization": f"Bearer {token.reveal()}", "Content-Type": "application/json"}


def read_error_body(response: httpx.Response) -> ErrorBody | None:
    """The response's ``{"error", "detail"}``; None when the body is not one (HTML, junk)."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return None
    try:
        return ErrorBody(error=body["error"], detail=body.get("detail"))
    except ValidationError:
        return None


def _describe_detail(detail: Any) -> str:
    """A detail as text; a list of field errors becomes ``loc: msg; loc: msg``."""
    if not isinstance(detail, list):
        return str(detail)
    parts = []
    for item in detail:
        if isinstance(item, dict):
            loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            message = str(item.get("msg", item))
            parts.append(f"{loc}: {message}" if loc else message)
        else:
            parts.append(str(item))
    return "; ".join(parts)


def describe_error(response: httpx.Response) -> str:
    """One line: ``HTTP 422 invalid_request: parameters.epochs: ...`` (or just the status)."""
    text = f"HTTP {response.status_code}"
    body = read_error_body(response)
    if body is None:
        return text
    text = f"{text} {body.error}"
    detail = _describe_detail(body.detail) if body.detail not in (None, "", []) else ""
    return f"{text}: {detail}" if detail else text


def backend_error(response: httpx.Response, what: str | None = None) -> BackendError:
    """The error to raise for a failed ``response`` (to ``what``, e.g. ``heartbeat``).

    5xx and 429 are :class:`~ktrdr.errors.BackendUnavailable` (try again later);
    any other status is :class:`~ktrdr.errors.BackendRejected`.
    """
    described = describe_error(response)
    message = f"{what}: {described}" if what else described
    status = response.status_code
    if status >= 500 or status == 429:
        return BackendUnavailable(message, status_code=status)
    return BackendRejected(message, status_code=status)


__all__ = ["backend_error", "bearer_headers", "describe_error", "read_error_body"]
