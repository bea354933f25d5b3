"""The helpers every ktrdr HTTP client shares: bearer header, ErrorBody reading, errors."""

from __future__ import annotations

import httpx
import pytest

from ktrdr.config import Secret
from ktrdr.errors import BackendError, BackendRejected, BackendUnavailable
from ktrdr.protocol import ErrorBody
from ktrdr.web.http_client import backend_error, bearer_headers, describe_error, read_error_body


def test_bearer_headers_send_the_token_as_json_request_headers() -> None:
    """The token becomes 'Authorization: Bearer <token>' next to a JSON content type."""
    assert bearer_headers(Secret("t0k")) == {
        "Authorization": "Bearer t0k",
        "Content-Type": "application/json",
    }


def test_read_error_body_parses_our_error_bodies() -> None:
    """{"error", "detail"} is read as an ErrorBody; a missing detail is None."""
    response = httpx.Response(409, json={"error": "busy", "detail": "runs op-1"})
    assert read_error_body(response) == ErrorBody(error="busy", detail="runs op-1")
    assert read_error_body(httpx.Response(404, json={"error": "x"})) == ErrorBody(error="x")


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(422, json=["unexpected"]),
        httpx.Response(404, json={"detail": "Not Found"}),
        httpx.Response(400, json={"error": 7}),
    ],
    ids=["html", "list", "no-error-key", "error-not-text"],
)
def test_read_error_body_is_none_for_anything_else(response: httpx.Response) -> None:
    """Bodies that are not an ErrorBody are not guessed at."""
    assert read_error_body(response) is None


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            httpx.Response(
                422,
                json={
                    "error": "invalid_request",
                    "detail": [
                        {"loc": ["body", "parameters", "epochs"], "msg": "not an integer"},
                        {"loc": [], "msg": "fast_window must be smaller"},
                        "plain",
                    ],
                },
            ),
            "HTTP 422 invalid_request: parameters.epochs: not an integer; "
            "fast_window must be smaller; plain",
        ),
        (
            httpx.Response(409, json={"error": "busy", "detail": "runs op-1"}),
            "HTTP 409 busy: runs op-1",
        ),
        (httpx.Response(404, json={"error": "unknown_worker"}), "HTTP 404 unknown_worker"),
        (httpx.Response(502, text="<html>bad gateway</html>"), "HTTP 502"),
    ],
    ids=["field-errors", "sentence", "no-detail", "not-json"],
)
def test_describe_error_is_one_line(response: httpx.Response, expected: str) -> None:
    """Status, code and detail on one line; field errors as location: message."""
    assert describe_error(response) == expected


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BackendRejected),
        (404, BackendRejected),
        (429, BackendUnavailable),
        (503, BackendUnavailable),
    ],
)
def test_backend_error_by_status(status: int, kind: type[BackendError]) -> None:
    """5xx and 429 are worth a retry (BackendUnavailable); other errors are rejections."""
    error = backend_error(httpx.Response(status, json={"error": "e"}), "heartbeat")
    assert type(error) is kind
    assert error.status_code == status
    assert str(error) == f"heartbeat: HTTP {status} e"
    assert str(backend_error(httpx.Response(status))) == f"HTTP {status}"
