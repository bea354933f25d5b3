"""The worker's backend client against httpx.MockTransport: paths, auth, error types."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable

import httpx
import pytest

from ktrdr.config import Secret
from ktrdr.errors import (
    AttemptNotCurrent,
    BackendRejected,
    BackendUnavailable,
    BackendUnreachable,
    WorkerNotRegistered,
)
from ktrdr.protocol import (
    HANDOFF_HEADER,
    HeartbeatRequest,
    OperationReport,
    OperationStatus,
    OperationType,
    RegisterRequest,
    WorkerStatus,
)
from ktrdr.workers.backend_client import BackendClient

pytestmark = pytest.mark.anyio

TOKEN = "client-test-token"
REGISTRATION = RegisterRequest(
    worker_id="training-a-5003",
    worker_type=OperationType.TRAINING,
    endpoint_url="http://127.0.0.1:9/a",
    heartbeat_interval_s=10,
    config_fingerprint="fp",
)
REPORT = OperationReport(worker_id="training-a-5003", attempt=1, status=OperationStatus.COMPLETED)
CREDENTIAL = "per-worker-credential-0123456789abcdef"
#: The backend's answer to REGISTRATION.
REGISTERED = {
    "worker_id": "training-a-5003",
    "worker_type": "training",
    "endpoint_url": "http://127.0.0.1:9/a",
    "status": "idle",
    "current_operation_id": None,
    "last_heartbeat_at": "2026-01-01T00:00:00Z",
    "registered_at": "2026-01-01T00:00:00Z",
    "capabilities": {},
    "config_fingerprint": "fp",
    "heartbeat_interval_s": 10.0,
    "credential": CREDENTIAL,
}


class Recorder:
    """A MockTransport handler: records requests, answers from a list of responses."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> BackendClient:
    return BackendClient(
        http=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        base_url="http://backend:8000/",
        token=Secret(TOKEN),
        timeout=datetime.timedelta(seconds=3),
    )


def _error(status: int, error: str, detail: object) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "detail": detail})


async def _registered(*answers: httpx.Response | Exception) -> tuple[BackendClient, Recorder]:
    """A client that has registered (its credential set); the recorder then gives ``answers``.

    ``recorder.requests`` holds only the requests after the registration.
    """
    recorder = Recorder(httpx.Response(201, json=REGISTERED), *answers)
    client = _client(recorder)
    await client.register(REGISTRATION)
    recorder.requests.clear()
    return client, recorder


async def test_register_posts_the_model_with_the_bearer_token() -> None:
    """register() POSTs the registration JSON to /api/v1/workers/register with the token."""
    recorder = Recorder(httpx.Response(201, json=REGISTERED))

    await _client(recorder).register(REGISTRATION)

    (request,) = recorder.requests
    assert (request.method, str(request.url)) == (
        "POST",
        "http://backend:8000/api/v1/workers/register",
    )
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == REGISTRATION.model_dump(mode="json")
    assert request.extensions["timeout"]["read"] == 3.0


async def test_a_4xx_is_rejected_with_the_backends_message_and_no_token() -> None:
    """A 401 becomes BackendRejected carrying status and the error body, never the token."""
    recorder = Recorder(_error(401, "unauthorized", "missing or wrong bearer token"))

    with pytest.raises(BackendRejected) as raised:
        await _client(recorder).register(REGISTRATION)

    assert raised.value.status_code == 401
    assert "HTTP 401 unauthorized: missing or wrong bearer token" in str(raised.value)
    assert TOKEN not in str(raised.value)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(503, text="starting"),
        httpx.Response(429),
    ],
    ids=["refused", "timeout", "503", "429"],
)
async def test_transport_failures_and_5xx_are_unavailable(
    answer: httpx.Response | Exception,
) -> None:
    """Connection errors, timeouts, 5xx and 429 are BackendUnavailable (retry later)."""
    with pytest.raises(BackendUnavailable):
        await _client(Recorder(answer)).register(REGISTRATION)


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
    ids=["refused", "timeout"],
)
async def test_no_answer_at_all_is_unreachable(failure: Exception) -> None:
    """A transport failure is BackendUnreachable, with no status and the failure's kind."""
    with pytest.raises(BackendUnreachable) as raised:
        await _client(Recorder(failure)).register(REGISTRATION)

    assert raised.value.status_code is None
    assert str(raised.value).endswith(f"failed: {type(failure).__name__}")


async def test_a_5xx_keeps_its_status_and_the_body() -> None:
    """A 503 is BackendUnavailable carrying the status and the ErrorBody, read the shared way."""
    with pytest.raises(BackendUnavailable) as raised:
        await _client(Recorder(_error(503, "unavailable", "starting"))).register(REGISTRATION)

    assert raised.value.status_code == 503
    assert str(raised.value).endswith("/api/v1/workers/register: HTTP 503 unavailable: starting")


async def test_heartbeat_404_means_the_worker_is_not_registered() -> None:
    """A 404 on heartbeat raises WorkerNotRegistered (the cue to register again)."""
    client, recorder = await _registered(_error(404, "unknown_worker", "no worker with id"))

    with pytest.raises(WorkerNotRegistered) as raised:
        await client.heartbeat("a/b c", HeartbeatRequest(status=WorkerStatus.IDLE))

    assert raised.value.status_code == 404
    assert str(raised.value) == "heartbeat: HTTP 404 unknown_worker: no worker with id"

    assert recorder.requests[0].url.raw_path == b"/api/v1/workers/a%2Fb%20c/heartbeat"


async def test_heartbeat_success_sends_status_and_operation() -> None:
    """A heartbeat carries the status and current operation as JSON."""
    client, recorder = await _registered(httpx.Response(200, json={}))
    beat = HeartbeatRequest(status=WorkerStatus.BUSY, current_operation_id="op-1", attempt=1)

    await client.heartbeat("w", beat)

    assert json.loads(recorder.requests[0].content) == {
        "status": "busy",
        "current_operation_id": "op-1",
        "attempt": 1,
        "progress": None,
    }


async def test_unregister_is_true_when_known_and_false_when_not() -> None:
    """DELETE 204 is True; 404 (already forgotten) is False, not an error."""
    known_client, _ = await _registered(httpx.Response(204))
    unknown_client, _ = await _registered(_error(404, "unknown_worker", "x"))
    known = await known_client.unregister("w", timeout_s=0.5)
    unknown = await unknown_client.unregister("w")

    assert (known, unknown) == (True, False)


async def test_unregister_uses_the_given_timeout() -> None:
    """A shutdown passes its remaining budget as the request timeout."""
    client, recorder = await _registered(httpx.Response(204))

    await client.unregister("w", timeout_s=0.5)

    assert recorder.requests[0].method == "DELETE"
    assert recorder.requests[0].extensions["timeout"]["read"] == 0.5


async def test_a_report_is_sent_once_and_unavailability_is_raised() -> None:
    """report_operation makes one attempt: no answer or a 5xx/429 is BackendUnavailable
    (the outbox retries, not the client).
    """
    down, overloaded, busy = (
        await _registered(httpx.ConnectError("down")),
        await _registered(_error(503, "store_unavailable", "database unreachable")),
        await _registered(httpx.Response(429)),
    )

    for client, _ in (down, overloaded, busy):
        with pytest.raises(BackendUnavailable):
            await client.report_operation("op-1", REPORT)

    assert [len(recorder.requests) for _, recorder in (down, overloaded, busy)] == [1, 1, 1]


async def test_a_report_posts_the_model_or_a_stored_body_unchanged() -> None:
    """The model is sent as its JSON; a mapping (an outbox entry) exactly as given."""
    client, recorder = await _registered(httpx.Response(200, json={}))
    stored = {"worker_id": "training-a-5003", "status": "failed", "attempt": 2, "error": "x"}

    await client.report_operation("op-1", REPORT)
    await client.report_operation("op/2", stored)

    first, second = recorder.requests
    assert str(first.url) == "http://backend:8000/api/v1/operations/op-1/report"
    assert json.loads(first.content) == REPORT.model_dump(mode="json")
    assert str(second.url) == "http://backend:8000/api/v1/operations/op%2F2/report"
    assert json.loads(second.content) == stored


@pytest.mark.parametrize("status", [404, 409, 422])
async def test_a_rejected_report_is_raised_with_its_status(status: int) -> None:
    """A 4xx other than 401 is BackendRejected carrying the status and the backend's words."""
    client, recorder = await _registered(_error(status, "refused", "no operation op-1"))

    with pytest.raises(BackendRejected, match="no operation op-1") as raised:
        await client.report_operation("op-1", REPORT)

    assert raised.value.status_code == status
    assert not isinstance(raised.value, WorkerNotRegistered)
    assert len(recorder.requests) == 1


async def test_a_stale_attempt_answer_is_attempt_not_current_and_never_retried() -> None:
    """409 stale_attempt to a heartbeat or a report: AttemptNotCurrent (a BackendRejected)
    carrying the backend's sentence; another 409 stays a plain BackendRejected.
    """
    stale = _error(409, "stale_attempt", "operation op-1: attempt 1 is no longer current")
    client, recorder = await _registered(stale)
    beat = HeartbeatRequest(status=WorkerStatus.BUSY, current_operation_id="op-1", attempt=1)

    with pytest.raises(AttemptNotCurrent, match="heartbeat: HTTP 409 stale_attempt: op"):
        await client.heartbeat("w", beat)
    with pytest.raises(AttemptNotCurrent, match="attempt 1 is no longer current"):
        await client.report_operation("op-1", REPORT)
    recorder.answers = [_error(409, "invalid_transition", "it is cancelled")]
    with pytest.raises(BackendRejected) as other:
        await client.report_operation("op-1", REPORT)

    assert not isinstance(other.value, AttemptNotCurrent)
    assert len(recorder.requests) == 3


async def test_a_heartbeat_leaves_out_pending_outcomes_unless_there_are_some() -> None:
    """Without outcomes waiting the field is not sent (an older backend refuses unknown
    fields); with some, it lists them.
    """
    client, recorder = await _registered(httpx.Response(200, json={}))

    await client.heartbeat("w", HeartbeatRequest(status=WorkerStatus.IDLE))
    await client.heartbeat(
        "w", HeartbeatRequest(status=WorkerStatus.IDLE, pending_outcomes=["op-1", "op-2"])
    )

    bare, listing = (json.loads(r.content) for r in recorder.requests)
    assert "pending_outcomes" not in bare
    assert listing["pending_outcomes"] == ["op-1", "op-2"]


# --- the per-worker credential ---------------------------------------------------------


async def test_heartbeats_reports_and_unregister_carry_the_credential_not_the_token() -> None:
    """After registering, every worker call sends the registration's credential."""
    client, recorder = await _registered(httpx.Response(200, json={}))

    await client.heartbeat("w", HeartbeatRequest(status=WorkerStatus.IDLE))
    await client.report_operation("op-1", REPORT)
    await client.unregister("w")

    sent = [r.headers["authorization"] for r in recorder.requests]
    assert sent == [f"Bearer {CREDENTIAL}"] * 3
    assert all(TOKEN not in header for header in sent)


async def test_a_new_registration_replaces_the_credential() -> None:
    """The latest registration's credential is the one sent from then on."""
    recorder = Recorder(
        httpx.Response(201, json=REGISTERED),
        httpx.Response(200, json={**REGISTERED, "credential": "second-credential-0123456789"}),
        httpx.Response(200, json={}),
    )
    client = _client(recorder)
    await client.register(REGISTRATION)
    await client.register(REGISTRATION)

    await client.heartbeat("w", HeartbeatRequest(status=WorkerStatus.IDLE))

    assert recorder.requests[-1].headers["authorization"] == "Bearer second-credential-0123456789"
    assert client.registrations == 2


async def test_a_registration_answer_without_a_credential_is_rejected() -> None:
    """An answer that carries no credential (an older backend, a proxy page) is refused."""
    with pytest.raises(BackendRejected, match="no usable credential"):
        await _client(Recorder(httpx.Response(201, json={}))).register(REGISTRATION)


async def test_a_refused_credential_means_register_again() -> None:
    """401 on a heartbeat or a report is WorkerNotRegistered, so the worker registers again."""
    client, _ = await _registered(_error(401, "unauthorized", "not the current credential"))

    with pytest.raises(WorkerNotRegistered) as beat:
        await client.heartbeat("w", HeartbeatRequest(status=WorkerStatus.IDLE))
    with pytest.raises(WorkerNotRegistered) as report:
        await client.report_operation("op-1", REPORT)

    assert (beat.value.status_code, report.value.status_code) == (401, 401)
    assert CREDENTIAL not in str(beat.value) + str(report.value)


async def test_before_any_registration_nothing_is_sent_as_the_worker() -> None:
    """Without a credential: unregister is False and a heartbeat raises, neither sends."""
    recorder = Recorder(httpx.Response(200, json={}))
    client = _client(recorder)

    assert await client.unregister("w") is False
    with pytest.raises(WorkerNotRegistered):
        await client.heartbeat("w", HeartbeatRequest(status=WorkerStatus.IDLE))
    assert recorder.requests == []


# --- the handoff: the next operation in a report's answer ------------------------------

HANDOFF_ANSWER = {
    "id": "op-1",
    "type": "training",
    "status": "completed",
    "parameters": {},
    "created_at": "2026-01-01T00:00:00Z",
    "next_operation": {
        "start": {"operation_id": "op-2", "operation_type": "training", "attempt": 3},
        "traceparent": None,
    },
}


@pytest.mark.parametrize("offered", [True, False])
async def test_take_next_is_sent_only_to_a_backend_that_offers_it(offered: bool) -> None:
    """A backend from before the handoff (no header) never sees ``take_next``: it would
    refuse the unknown field, and the outcome with it.
    """
    headers = {HANDOFF_HEADER: "1"} if offered else {}
    recorder = Recorder(
        httpx.Response(201, json=REGISTERED, headers=headers), httpx.Response(200, json={})
    )
    client = _client(recorder)
    await client.register(REGISTRATION)

    handoff = await client.report_operation("op-1", REPORT.model_dump(mode="json"), take_next=True)

    body = json.loads(recorder.requests[-1].content)
    assert client.hands_off is offered
    assert ("take_next" in body) is offered
    assert body.get("take_next", True) is True
    assert handoff is None


async def test_the_next_operation_in_the_answer_is_returned() -> None:
    client, _ = await _registered(httpx.Response(200, json=HANDOFF_ANSWER))

    handoff = await client.report_operation("op-1", REPORT)

    assert handoff is not None
    assert (handoff.start.operation_id, handoff.start.attempt) == ("op-2", 3)


async def test_an_unreadable_next_operation_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = {**HANDOFF_ANSWER, "next_operation": {"start": {"operation_id": "op 2"}}}
    client, _ = await _registered(httpx.Response(200, json=broken))

    assert await client.report_operation("op-1", REPORT) is None
    assert "hands over an operation this worker cannot read" in caplog.text
