"""FleetClient: the operator's view of the backend, and the backend errors it raises."""

from __future__ import annotations

import json

import httpx
import pytest

from ktrdr.config import Secret
from ktrdr.errors import (
    BackendError,
    BackendRejected,
    BackendUnavailable,
    BackendUnreachable,
    OperatorTokenRefused,
)
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
    client.submit("backtest", {}, timeout_s=90.5)
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
        (
            "POST",
            f"{URL}/api/v1/operations",
            json.dumps(
                {"type": "backtest", "parameters": {}, "timeout_s": 90.5}, separators=(",", ":")
            ),
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


def test_every_request_carries_the_operator_token() -> None:
    """Authorization: Bearer <token> on every call, /health included; none without a token."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"items": []})

    transport = httpx.MockTransport(handler)
    with_token = FleetClient(
        base_url=URL, client=httpx.Client(transport=transport), token=Secret("op-tok-1")
    )
    with_token.health()
    with_token.workers()
    with_token.operations()
    _client(transport).workers()
    assert seen == ["Bearer op-tok-1"] * 3 + [None]


def test_a_401_names_the_variable_and_the_token_source_never_the_token() -> None:
    """OperatorTokenRefused: one line, where the token came from, what to set."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "unauthorized", "detail": "no"})

    client = FleetClient(
        base_url=URL,
        client=httpx.Client(transport=httpx.MockTransport(handler)),
        token=Secret("op-tok-secret-9"),
        token_source="file data/operator_token",
    )
    with pytest.raises(OperatorTokenRefused) as caught:
        client.submit("training", {})
    message = str(caught.value)
    assert message == (
        f"the backend at {URL} refused the operator token (file data/operator_token); "
        "set KTRDR_AUTH_OPERATOR_TOKEN (or KTRDR_AUTH_OPERATOR_TOKEN_FILE, or --token) "
        "to the backend's operator token"
    )
    assert caught.value.status_code == 401
    assert "op-tok-secret-9" not in message


def test_an_id_stays_one_path_segment_and_results_are_asked_for_explicitly() -> None:
    """Ids are percent-encoded (no '..' walking to another route); include=result on request."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"items": []})

    client = _client(httpx.MockTransport(handler))
    client.operation("../workers")
    client.cancel("a/b")
    client.operations(include_result=True)
    assert seen == [
        f"{URL}/api/v1/operations/..%2Fworkers",
        f"{URL}/api/v1/operations/a%2Fb/cancel",
        f"{URL}/api/v1/operations?limit=50&include=result",
    ]


def test_operation_pages_follow_next_cursor_up_to_the_limit() -> None:
    """450 operations: pages of 200, 200, 50, each after the previous page's cursor."""
    asked: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        asked.append(params)
        size = int(params["limit"])
        page = len(asked)
        items = [{"id": f"p{page}-{i}"} for i in range(size)]
        return httpx.Response(200, json={"items": items, "total": None, "next_cursor": f"c{page}"})

    pages = list(_client(httpx.MockTransport(handler)).operation_pages(status="failed", limit=450))

    assert [len(p["items"]) for p in pages] == [200, 200, 50]
    assert asked == [
        {"limit": "200", "status": "failed"},
        {"limit": "200", "cursor": "c1", "status": "failed"},
        {"limit": "50", "cursor": "c2", "status": "failed"},
    ]


def test_operation_pages_stop_at_the_last_page() -> None:
    """Without a limit, pages are read until one has no next_cursor."""
    cursors = iter(["c1", "c2", None])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": [{"id": "x"}], "next_cursor": next(cursors)})

    pages = list(_client(httpx.MockTransport(handler)).operation_pages())

    assert len(pages) == 3


def test_a_short_retry_after_is_waited_out_while_following_pages() -> None:
    """A 429 with Retry-After: 2 on a cursor page waits 2 s and asks again."""
    answers = iter(
        [
            httpx.Response(200, json={"items": [{"id": "a"}], "next_cursor": "c1"}),
            httpx.Response(
                429,
                json={"error": "too_many_requests", "detail": "slow down"},
                headers={"Retry-After": "2"},
            ),
            httpx.Response(200, json={"items": [{"id": "b"}], "next_cursor": None}),
        ]
    )
    slept: list[float] = []
    client = FleetClient(
        base_url=URL,
        client=httpx.Client(transport=httpx.MockTransport(lambda _: next(answers))),
        sleep=slept.append,
    )

    items = [item["id"] for page in client.operation_pages() for item in page["items"]]

    assert items == ["a", "b"]
    assert slept == [2]


def test_a_long_retry_after_is_an_error_not_a_wait() -> None:
    """A 429 asking for more than 30 s is reported (BackendUnavailable), not slept on."""
    answers = iter(
        [
            httpx.Response(200, json={"items": [], "next_cursor": "c1"}),
            httpx.Response(
                429,
                json={"error": "too_many_requests", "detail": "slow down"},
                headers={"Retry-After": "120"},
            ),
        ]
    )
    slept: list[float] = []
    client = FleetClient(
        base_url=URL,
        client=httpx.Client(transport=httpx.MockTransport(lambda _: next(answers))),
        sleep=slept.append,
    )

    with pytest.raises(BackendUnavailable, match="slow down"):
        list(client.operation_pages())
    assert slept == []
