"""Fakes for unit tests of the worker runtime: a backend, time, a worker factory.

``FakeBackend`` is an ``httpx.MockTransport`` handler that behaves like the backend's
worker API (it forgets workers on ``known.clear()``, as a restarted backend does, and
issues each registration a credential that heartbeats, reports and unregister need);
``FakeTime`` is a clock plus a sleep that only advances it. Operations run in real
job processes scripted by ``support.scripted_jobs``.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from ktrdr.config import CheckpointSettings, Secret, WorkerSettings, WorkerType
from ktrdr.protocol import HANDOFF_HEADER, OperationType, StartOperationRequest
from ktrdr.tracing import Tracing
from ktrdr.workers.backend_client import BackendClient
from ktrdr.workers.metrics import WorkerMetrics
from ktrdr.workers.worker import Worker
from support.scripted_jobs import ScriptedJob

SETTINGS = WorkerSettings(
    type=WorkerType.TRAINING,
    id="training-test-5003",
    host="127.0.0.1",
    port=5003,
    public_url="http://127.0.0.1:5003",
    heartbeat_interval=datetime.timedelta(seconds=0.2),
    shutdown_timeout=datetime.timedelta(seconds=5),
)


#: The error code of each refusal a FakeBackend can answer a report with.
REPORT_ERRORS = {
    404: "not_found",
    409: "invalid_transition",
    422: "invalid_request",
    503: "store_unavailable",
}


class FakeBackend:
    """The backend's worker API in miniature, as an httpx MockTransport handler."""

    def __init__(self, token: str = "t") -> None:  # noqa: S107 - a test double's token
        self.token = token
        self.known: set[str] = set()
        #: The current credential of each worker id (issued by its latest registration).
        self.credentials: dict[str, str] = {}
        self.calls: list[tuple[str, str, Any]] = []
        #: The ``Authorization`` header of each call, in order.
        self.authorizations: list[str | None] = []
        #: Registration attempts to refuse (connection error) before accepting.
        self.refuse_connections = 0
        #: While True, every request fails with a connection error.
        self.down = False
        #: Answers to the next reports, in order (then 200): a status or an exception.
        self.report_answers: list[int | Exception] = []
        self.heartbeats = 0
        #: Operations whose heartbeats and reports get 409 ``stale_attempt``.
        self.stale: set[str] = set()
        #: Whether registration answers say this backend hands operations over.
        self.hands_off = False
        self._serial = itertools.count(1)

    def replace_credential(self, worker_id: str) -> None:
        """As if another registration of ``worker_id`` took its credential."""
        self.credentials[worker_id] = f"replaced-credential-{next(self._serial):08d}"

    def _registered(self, body: dict[str, Any]) -> httpx.Response:
        worker_id = body["worker_id"]
        created = worker_id not in self.known
        self.known.add(worker_id)
        credential = f"fake-credential-{worker_id}-{next(self._serial):08d}"
        self.credentials[worker_id] = credential
        answer = {
            "worker_id": worker_id,
            "worker_type": body["worker_type"],
            "endpoint_url": body["endpoint_url"],
            "status": "busy" if body.get("current_operation_id") else "idle",
            "current_operation_id": body.get("current_operation_id"),
            "last_heartbeat_at": "2026-01-01T00:00:00Z",
            "registered_at": "2026-01-01T00:00:00Z",
            "capabilities": body.get("capabilities", {}),
            "config_fingerprint": body["config_fingerprint"],
            "heartbeat_interval_s": body["heartbeat_interval_s"],
            "credential": credential,
        }
        headers = {HANDOFF_HEADER: "1"} if self.hands_off else {}
        return httpx.Response(201 if created else 200, json=answer, headers=headers)

    def _refused(self, worker_id: str | None, authorization: str | None) -> httpx.Response | None:
        """404 for an unknown id, 401 unless ``authorization`` carries its credential."""
        if worker_id is not None and worker_id not in self.known:
            return httpx.Response(404, json={"error": "unknown_worker", "detail": "?"})
        holders = {c: w for w, c in self.credentials.items() if w in self.known}
        offered = (authorization or "").removeprefix("Bearer ")
        holder = holders.get(offered)
        if holder is None or (worker_id is not None and holder != worker_id):
            return httpx.Response(401, json={"error": "unauthorized", "detail": "credential"})
        return None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        authorization = request.headers.get("authorization")
        self.calls.append((request.method, path, body))
        self.authorizations.append(authorization)
        if self.down:
            raise httpx.ConnectError("connection refused")
        if path == "/api/v1/workers/register":
            if self.refuse_connections > 0:
                self.refuse_connections -= 1
                raise httpx.ConnectError("connection refused")
            if authorization != f"Bearer {self.token}":
                return httpx.Response(401, json={"error": "unauthorized", "detail": "token"})
            return self._registered(body)
        if path.endswith("/heartbeat"):
            self.heartbeats += 1
            refused = self._refused(path.split("/")[-2], authorization)
            stale = body.get("current_operation_id") in self.stale
            return refused or (self._stale(body) if stale else httpx.Response(200, json={}))
        if path.endswith("/report"):
            refused = self._refused(None, authorization)
            if refused is not None:
                return refused
            if path.split("/")[-2] in self.stale:
                return self._stale(body)
            answer = self.report_answers.pop(0) if self.report_answers else 200
            if isinstance(answer, Exception):
                raise answer
            if answer >= 400:
                body = {"error": REPORT_ERRORS.get(answer, "refused"), "detail": f"said {answer}"}
                return httpx.Response(answer, json=body)
            return httpx.Response(answer, json={})
        if request.method == "DELETE":
            worker_id = path.split("/")[-1]
            refused = self._refused(worker_id, authorization)
            if refused is not None:
                return refused
            self.known.discard(worker_id)
            return httpx.Response(204)
        return httpx.Response(404, json={"error": "not_found", "detail": path})

    @staticmethod
    def _stale(body: dict[str, Any]) -> httpx.Response:
        detail = f"attempt {body.get('attempt')} is no longer current; the current attempt is 9"
        return httpx.Response(409, json={"error": "stale_attempt", "detail": detail})

    def paths(self) -> list[str]:
        return [f"{method} {path}" for method, path, _ in self.calls]

    def reports(self) -> list[dict[str, Any]]:
        return [body for _, path, body in self.calls if path.endswith("/report")]


class FakeTime:
    """A monotonic clock and a sleep that only advances it (and yields to the loop)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def make_worker(
    backend: FakeBackend,
    *,
    job: ScriptedJob | None = None,
    settings: WorkerSettings = SETTINGS,
    fake_time: FakeTime | None = None,
    metrics: WorkerMetrics | None = None,
    tracing: Tracing | None = None,
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
) -> Worker:
    """A Worker over ``backend`` (or ``handler``, which may wrap it); fake time when given,
    real monotonic time otherwise.
    """
    clock: Callable[[], float] = fake_time.clock if fake_time else time.monotonic
    sleep = fake_time.sleep if fake_time else asyncio.sleep
    client = BackendClient(
        http=httpx.AsyncClient(transport=httpx.MockTransport(handler or backend)),
        base_url="http://backend:8000",
        token=Secret("t"),
        timeout=datetime.timedelta(seconds=2),
    )
    return Worker(
        settings=settings,
        checkpoint=CheckpointSettings(),
        launcher=(job or ScriptedJob()).launcher(settings, metrics=metrics),
        backend=client,
        clock=clock,
        sleep=sleep,
        random=lambda: 1.0,
        tracing=tracing,
    )


def start_request(operation_id: str = "op-1", **overrides: Any) -> StartOperationRequest:
    fields: dict[str, Any] = {
        "operation_id": operation_id,
        "operation_type": OperationType.TRAINING,
        "parameters": {"epochs": 3},
    }
    fields.update(overrides)
    return StartOperationRequest(**fields)


async def wait_for(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` on the event loop until true, failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


__all__ = [
    "SETTINGS",
    "FakeBackend",
    "FakeTime",
    "make_worker",
    "start_request",
    "wait_for",
]
