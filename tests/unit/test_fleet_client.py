"""FleetClient: the operator's view of the backend, and the backend errors it raises."""

from __future__ import annotations

import json

import httpx
import pytest

from ktrdr.errors import BackendError, BackendRejected, BackendUnavailable, BackendUnreachable
from ktrdr.fleet_client import FleetClient

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
    """A 4xx becomes BackendRejected with the status and the body's error and detail."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            409, json={"error": "conflict", "detail": "operation op1 is completed"}
        )

    with pytest.raises(BackendRejected) as caught:
        _client(httpx.MockTransport(handler)).cancel("op1")
    assert caught.value.status_code == 409
    assert str(caught.value) == "HTTP 409 conflict: operation op1 is completed"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (404, BackendRejected),
        (422, BackendRejected),
        (500, BackendUnavailable),
        (429, BackendUnavailable),
    ],
)
def test_error_statuses_map_to_the_shared_backend_errors(
    status: int, kind: type[BackendError]
) -> None:
    """4xx is BackendRejected, 5xx and 429 BackendUnavailable, as in the worker's client."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": "e", "detail": "d"})

    with pytest.raises(kind) as caught:
        _client(httpx.MockTransport(handler)).workers()
    assert caught.value.status_code == status
    assert str(caught.value) == f"HTTP {status} e: d"
