"""FleetClient: the operator's view of the backend, and its two failure types."""

from __future__ import annotations

import json

import httpx
import pytest

from ktrdr.fleet_client import BackendError, BackendUnreachable, FleetClient, describe_error_body

URL = "http://backend.test:8000"


def _client(handler: httpx.MockTransport) -> FleetClient:
    return FleetClient(base_url=URL + "/", client=httpx.Client(transport=handler))


def test_requests_go_to_the_documented_paths() -> None:
    """Each method calls its endpoint with the expected method, query and body."""
    seen: list[tuple[str, str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), request.content.decode()))
        return httpx.Response(200, json={"id": "op1", "status": "pending", "items": []})

    client = _client(httpx.MockTransport(handler))
    client.health()
    client.workers()
    client.submit("training", {"epochs": 3})
    client.operations(status="running", operation_type="backtest", limit=5, offset=10)
    client.operation("op1")
    client.cancel("op1")
    client.resume("op1")
    assert seen == [
        ("GET", f"{URL}/health", ""),
        ("GET", f"{URL}/api/v1/workers", ""),
        (
            "POST",
            f"{URL}/api/v1/operations",
            json.dumps({"type": "training", "parameters": {"epochs": 3}}, separators=(",", ":")),
        ),
        ("GET", f"{URL}/api/v1/operations?limit=5&offset=10&status=running&type=backtest", ""),
        ("GET", f"{URL}/api/v1/operations/op1", ""),
        ("POST", f"{URL}/api/v1/operations/op1/cancel", ""),
        ("POST", f"{URL}/api/v1/operations/op1/resume", ""),
    ]


def test_connection_failure_is_backend_unreachable() -> None:
    """A transport error names the backend URL and the failure kind."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(
        BackendUnreachable, match=r"cannot reach the backend at .*8000 \(ConnectError\)"
    ):
        _client(httpx.MockTransport(handler)).workers()


def test_error_status_carries_the_backends_message() -> None:
    """A 4xx becomes BackendError with the status and the body's error and detail."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            409, json={"error": "conflict", "detail": "operation op1 is completed"}
        )

    with pytest.raises(BackendError) as caught:
        _client(httpx.MockTransport(handler)).cancel("op1")
    assert caught.value.status_code == 409
    assert str(caught.value) == "conflict: operation op1 is completed"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "error": "invalid request",
                "detail": [{"loc": ["body", "parameters", "epochs"], "msg": "not an integer"}],
            },
            "invalid request: parameters.epochs: not an integer",
        ),
        ({"error": "not found"}, "not found"),
        (["unexpected"], "HTTP 422"),
    ],
)
def test_describe_error_body_flattens_field_errors(body: object, expected: str) -> None:
    """422 field errors are one line: location and message of each."""
    assert describe_error_body(httpx.Response(422, json=body)) == expected


def test_describe_error_body_without_json() -> None:
    """A non-JSON error body is described by its status."""
    assert describe_error_body(httpx.Response(502, text="<html>bad gateway</html>")) == "HTTP 502"
