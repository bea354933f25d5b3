"""The worker's HTTP app (in process) and the uvicorn server built from its settings."""

from __future__ import annotations

import datetime
import json
import signal
from collections.abc import AsyncIterator

import attrs
import httpx
import pytest
from support.scripted_jobs import ScriptedJob
from support.worker_fakes import SETTINGS, FakeBackend, make_worker, wait_for

from ktrdr.config import AuthSettings, LoggingSettings, LogLevel, Secret
from ktrdr.protocol import WorkerStatus
from ktrdr.workers.server import build_worker_server, create_worker_app, graceful_requests_timeout
from ktrdr.workers.worker import Worker

pytestmark = pytest.mark.anyio

TOKEN = "worker-app-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START = {"operation_id": "op-1", "operation_type": "training", "parameters": {"epochs": 2}}


@pytest.fixture
def job() -> ScriptedJob:
    """A scripted job that holds its operation until released."""
    return ScriptedJob()


@pytest.fixture
def worker(job: ScriptedJob) -> Worker:
    """A training worker over a fake backend."""
    return make_worker(FakeBackend(), job=job)


@pytest.fixture
async def client(worker: Worker, job: ScriptedJob) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the worker's app; releases the job at the end."""
    app = create_worker_app(worker, auth=AuthSettings(worker_token=Secret(TOKEN)))
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as http:
        yield http
    job.release.set()
    await wait_for(lambda: worker.status is not WorkerStatus.BUSY)


async def test_health_reports_the_worker(client: httpx.AsyncClient) -> None:
    """GET /health: id, type, status, current operation (no token needed)."""
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json()["worker_id"] == "training-test-5003"
    assert response.json()["worker_type"] == "training"
    assert response.json()["status"] == "idle"


async def test_start_operation_needs_the_token(client: httpx.AsyncClient, worker: Worker) -> None:
    """POST /operations without the worker token is 401 and starts nothing."""
    response = await client.post("/operations", json=START)

    assert response.status_code == 401
    assert worker.status is WorkerStatus.IDLE


async def test_start_operation_runs_it_and_refuses_a_second(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    """202 for the first operation, 409 busy for another while it runs."""
    first = await client.post("/operations", json=START, headers=AUTH)
    second = await client.post("/operations", json={**START, "operation_id": "op-2"}, headers=AUTH)

    assert first.status_code == 202
    assert first.json() == {"operation_id": "op-1", "status": "running"}
    assert second.status_code == 409
    assert second.json()["error"] == "busy"
    assert worker.current_operation_id == "op-1"


async def test_a_stopping_worker_answers_503(client: httpx.AsyncClient, worker: Worker) -> None:
    """After SIGTERM (request_shutdown) new operations get 503 stopping."""
    worker.request_shutdown()

    response = await client.post("/operations", json=START, headers=AUTH)

    assert response.status_code == 503
    assert response.json()["error"] == "stopping"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({**START, "operation_type": "backtest"}, "wrong_operation_type"),
        ({**START, "operation_id": "no spaces allowed"}, "invalid_request"),
        ({"operation_type": "training"}, "invalid_request"),
    ],
    ids=["wrong-type", "bad-id", "missing-id"],
)
async def test_bad_operation_requests_get_422(
    client: httpx.AsyncClient, worker: Worker, body: dict[str, object], error: str
) -> None:
    """Invalid or mistyped operation requests are 422 and leave the worker idle."""
    response = await client.post("/operations", json=body, headers=AUTH)

    assert response.status_code == 422
    assert response.json()["error"] == error
    assert worker.status is WorkerStatus.IDLE


async def test_cancel_running_and_unknown_operations(
    client: httpx.AsyncClient, worker: Worker, job: ScriptedJob
) -> None:
    """Cancelling the running operation is 202; an unknown one is 404."""
    await client.post("/operations", json=START, headers=AUTH)
    await wait_for(job.started.is_set)

    unknown = await client.post("/operations/op-9/cancel", headers=AUTH)
    cancelled = await client.post("/operations/op-1/cancel", headers=AUTH)
    await wait_for(lambda: worker.status is WorkerStatus.IDLE)

    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_operation"
    assert cancelled.status_code == 202
    assert cancelled.json() == {"operation_id": "op-1", "status": "cancelling"}


async def test_oversized_operation_requests_get_413(client: httpx.AsyncClient) -> None:
    """The worker enforces the same body limit as the backend."""
    response = await client.post("/operations", content=b"x" * (2 * 1024 * 1024), headers=AUTH)

    assert response.status_code == 413


async def test_lifespan_shutdown_stops_and_unregisters_the_worker() -> None:
    """Leaving the app's lifespan runs Worker.stop(): the worker unregisters."""
    backend = FakeBackend()
    worker = make_worker(backend)
    app = create_worker_app(worker, auth=AuthSettings(worker_token=Secret(TOKEN)))
    await worker.register_until_success()

    async with app.router.lifespan_context(app):
        assert backend.known == {"training-test-5003"}

    assert backend.known == set()
    assert worker.status is WorkerStatus.STOPPING


def test_server_is_built_from_the_worker_settings() -> None:
    """uvicorn binds KTRDR_WORKER_HOST:KTRDR_WORKER_PORT, and its exit signal reaches the worker."""
    worker = make_worker(FakeBackend(), settings=attrs.evolve(SETTINGS, host="0.0.0.0", port=5123))

    server = build_worker_server(
        worker,
        auth=AuthSettings(worker_token=Secret(TOKEN)),
        logging_settings=LoggingSettings(level=LogLevel.INFO),
    )
    server.handle_exit(signal.SIGTERM, None)

    assert (server.config.host, server.config.port) == ("0.0.0.0", 5123)
    assert server.config.lifespan == "on"
    assert server.config.ws == "none"  # a worker serves no websockets (and imports none)
    assert server.config.access_log is False
    assert server.should_exit is True
    assert worker.status is WorkerStatus.STOPPING


@pytest.mark.parametrize(("timeout_s", "expected"), [(25, 5), (2, 1), (0.5, 1)])
def test_requests_in_flight_get_a_fifth_of_the_shutdown_budget(
    timeout_s: float, expected: int
) -> None:
    """uvicorn's graceful wait for requests is a fifth of KTRDR_WORKER_SHUTDOWN_TIMEOUT (>= 1 s)."""
    settings = attrs.evolve(SETTINGS, shutdown_timeout=datetime.timedelta(seconds=timeout_s))

    assert graceful_requests_timeout(make_worker(FakeBackend(), settings=settings)) == expected


async def test_the_token_is_checked_before_the_body_is_read(client: httpx.AsyncClient) -> None:
    """Without the token even a malformed body gets 401, so nothing about the schema leaks."""
    response = await client.post(
        "/operations", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("content_type", "body", "loc", "kind"),
    [
        ("application/json", b"{not json", ["body", 1], "json_invalid"),
        ("text/plain", b'{"operation_id": "op-1"}', ["body"], "model_attributes_type"),
        ("application/json", b"", ["body"], "missing"),
        (
            "application/json",
            json.dumps({**START, "x": 1}).encode(),
            ["body", "x"],
            "extra_forbidden",
        ),
    ],
    ids=["malformed-json", "not-json", "empty", "extra-field"],
)
async def test_unusable_bodies_are_422_items_under_body(
    client: httpx.AsyncClient,
    worker: Worker,
    content_type: str,
    body: bytes,
    loc: list[object],
    kind: str,
) -> None:
    """Malformed, non-JSON, empty and over-specified bodies: 422 naming where, worker idle."""
    headers = {**AUTH, "content-type": content_type}
    response = await client.post("/operations", content=body, headers=headers)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert (response.json()["detail"][0]["loc"], response.json()["detail"][0]["type"]) == (
        loc,
        kind,
    )
    assert worker.status is WorkerStatus.IDLE


async def test_unknown_paths_and_methods_are_json_errors(client: httpx.AsyncClient) -> None:
    """404 for an unknown path, 405 (with Allow) for a wrong method, both as ErrorBody."""
    missing = await client.get("/nowhere")
    wrong = await client.get("/operations", headers=AUTH)

    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_a_worker_serves_no_api_description(client: httpx.AsyncClient, path: str) -> None:
    """The worker publishes no OpenAPI document or docs page (the backend's covers the wire)."""
    response = await client.get(path)

    assert response.status_code == 404


async def test_health_answers_head_too(client: httpx.AsyncClient) -> None:
    """HEAD /health is 200 with no body (probes that use HEAD work)."""
    response = await client.head("/health")

    assert response.status_code == 200
    assert response.content == b""
