"""An in-process backend for unit tests: every collaborator real, workers faked.

``make_backend`` builds the app the way ``ktrdr.api.main`` does (registry, operations
service over a SQLite store, dispatcher, orphan detector, retention cleaner) with a
settable clock, and the dispatcher's HTTP client talking to :class:`FakeWorkers`, an
``httpx.MockTransport`` handler that plays every worker. Fake workers are registered
at ``http://127.0.0.1:9/<worker id>`` (a closed loopback port, told apart by the path
prefix), so a dispatch that ever escaped the mock could only reach this machine.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import attrs
import httpx
from fastapi import FastAPI

from ktrdr.api import WorkerRegistry, create_app
from ktrdr.api.deadlines import DeadlineWatch
from ktrdr.api.dispatcher import Dispatcher
from ktrdr.api.list_budget import ListBudget, ListBudgets
from ktrdr.api.main import UNTRACED_PATHS
from ktrdr.api.metrics import BackendMetrics, DisabledBackendMetrics, instrument_store
from ktrdr.api.operations import OperationsService
from ktrdr.api.orphans import OrphanDetector
from ktrdr.api.reports import OperationReports
from ktrdr.api.retention import RetentionCleaner
from ktrdr.api.store import OperationStore
from ktrdr.api.store_health import StoreHealth
from ktrdr.config import BackendConfig, validate_all
from ktrdr.protocol import OperationType, RegisterRequest
from ktrdr.tracing import Tracing, instrument_app, instrument_client

TOKEN = "unit-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The operator token of every test backend, and the header :meth:`Backend.client` sends.
OPERATOR_TOKEN = "unit-test-operator-token"
OPERATOR_AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


class FakeClock:
    """A settable aware-UTC clock."""

    def __init__(self, now: datetime.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


#: Where fake workers are registered: a loopback port that nothing answers.
FAKE_WORKERS_URL = "http://127.0.0.1:9"


def fake_endpoint(worker_id: str) -> str:
    """The endpoint a fake worker registers: ``http://127.0.0.1:9/<worker_id>``."""
    return f"{FAKE_WORKERS_URL}/{worker_id}"


class FakeWorkers:
    """Every worker, as one MockTransport handler keyed by the endpoint's path prefix.

    ``answers[worker]`` is the status code (default 202) or an exception to raise for
    that worker's start requests; cancels always get 202 unless ``answers`` says so.
    A worker is named by the first path segment of its endpoint (:func:`fake_endpoint`).
    """

    def __init__(self) -> None:
        self.answers: dict[str, int | Exception] = {}
        #: Every request, delivered or not: (method, worker, path below its endpoint).
        self.attempts: list[tuple[str, str, str]] = []
        self.starts: list[tuple[str, dict[str, Any]]] = []
        self.cancels: list[tuple[str, str]] = []
        #: The body of every cancel request (attempt, superseded), in order.
        self.cancel_bodies: list[dict[str, Any]] = []
        self.tokens: list[str | None] = []
        #: The ``traceparent`` header of every request (None: not sent).
        self.traceparents: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host, _, below = request.url.path.lstrip("/").partition("/")
        path = "/" + below
        self.attempts.append((request.method, host, path))
        self.tokens.append(request.headers.get("authorization"))
        self.traceparents.append(request.headers.get("traceparent"))
        answer = self.answers.get(host, 202)
        if isinstance(answer, Exception):
            raise answer
        if request.method == "GET" and path.endswith("/logs"):
            if answer >= 400:
                return httpx.Response(answer, json={"error": "not_found", "detail": "no log"})
            operation_id = path.split("/")[-2]
            line = {"level": "INFO", "message": f"{host} ran {operation_id}", "attempt": 1}
            return httpx.Response(200, content=json.dumps(line).encode() + b"\n")
        if path == "/operations":
            self.starts.append((host, json.loads(request.content)))
        elif path.endswith("/cancel"):
            self.cancels.append((host, path.split("/")[-2]))
            self.cancel_bodies.append(json.loads(request.content or b"{}"))
        if answer >= 400:
            return httpx.Response(answer, json={"error": "refused", "detail": f"{host} says no"})
        return httpx.Response(answer, json={"status": "ok"})

    def started(self) -> list[tuple[str, str]]:
        """(worker, operation id) of every start request, in order."""
        return [(host, body["operation_id"]) for host, body in self.starts]


def backend_config(**environ: str) -> BackendConfig:
    """A backend configuration with the unit-test tokens (and any overrides)."""
    base = {"KTRDR_AUTH_WORKER_TOKEN": TOKEN, "KTRDR_AUTH_OPERATOR_TOKEN": OPERATOR_TOKEN}
    return validate_all("backend", {**base, **environ}, env_file=None)


def open_store(directory: Path) -> OperationStore:
    """A fresh SQLite store in ``directory``."""
    return OperationStore.open_url(f"sqlite+pysqlite:///{directory / 'ops.db'}")


@attrs.define(kw_only=True)
class Backend:
    """The app and its collaborators, for a test to drive and inspect."""

    config: BackendConfig
    clock: FakeClock
    store: OperationStore
    registry: WorkerRegistry
    service: OperationsService
    dispatcher: Dispatcher
    reports: OperationReports
    orphans: OrphanDetector
    deadlines: DeadlineWatch
    retention: RetentionCleaner
    #: Watches ``store``'s engine (503s while it is unreachable).
    health: StoreHealth
    workers: FakeWorkers
    #: The dispatcher's client (the app's lifespan closes it).
    http: httpx.AsyncClient
    app: FastAPI
    #: The app's metrics (disabled when the configuration says so).
    metrics: BackendMetrics
    #: Each worker's credential from its latest :meth:`register`.
    credentials: dict[str, str] = attrs.field(factory=dict)

    def client(self, *, operator: bool = True) -> httpx.AsyncClient:
        """An HTTP client for the app (no lifespan: tests run rounds by hand).

        It sends the operator token unless ``operator`` is False; a request's own
        ``Authorization`` header (a worker's) replaces it.
        """
        transport = httpx.ASGITransport(self.app)
        headers = OPERATOR_AUTH if operator else None
        return httpx.AsyncClient(transport=transport, base_url="http://backend", headers=headers)

    def register(self, worker_id: str, worker_type: OperationType = OperationType.TRAINING) -> str:
        """Register an idle worker at :func:`fake_endpoint` (``worker_id``); its credential."""
        request = RegisterRequest(
            worker_id=worker_id,
            worker_type=worker_type,
            endpoint_url=fake_endpoint(worker_id),
            heartbeat_interval_s=1,
            config_fingerprint="fp",
        )
        credential = self.registry.register(request, now=self.clock()).credential
        self.credentials[worker_id] = credential
        return credential

    def worker_auth(self, worker_id: str) -> dict[str, str]:
        """The ``Authorization`` header of ``worker_id`` (its latest credential)."""
        return {"Authorization": f"Bearer {self.credentials[worker_id]}"}


def unlimited_budgets() -> ListBudgets:
    """Listing budgets no test reaches (a billion items per second)."""
    return ListBudgets(
        workers=ListBudget(what="workers", rate_per_s=1e9),
        operations=ListBudget(what="operations", rate_per_s=1e9),
    )


def make_backend(
    store: OperationStore,
    config: BackendConfig | None = None,
    *,
    registry: WorkerRegistry | None = None,
    tracing: Tracing | None = None,
    budgets: ListBudgets | None = None,
) -> Backend:
    """The backend as ``main`` assembles it, over ``store``, a fake clock and fake workers.

    With ``tracing``, the app and the dispatcher's client are instrumented as in ``main``.
    Listings get ``budgets`` (default: unlimited in practice, so tests that list often
    are not refused; the budget's own tests pass small ones).
    """
    tracing = tracing if tracing is not None else Tracing.off()
    config = config or backend_config()
    clock = FakeClock()
    registry = registry if registry is not None else WorkerRegistry()
    workers = FakeWorkers()
    http = httpx.AsyncClient(transport=httpx.MockTransport(workers))
    metrics = BackendMetrics() if config.metrics.enabled else DisabledBackendMetrics()
    instrument_store(store, metrics)
    instrument_client(http, tracing)
    service = OperationsService(store=store, settings=config.operations, clock=clock)
    dispatcher = Dispatcher(
        service=service,
        registry=registry,
        http=http,
        token=config.auth.worker_token,
        clock=clock,
        metrics=metrics,
        tracing=tracing,
    )
    reports = OperationReports(
        service=service, registry=registry, dispatcher=dispatcher, metrics=metrics
    )
    health = StoreHealth(engine=store.engine, clock=clock)
    orphans = OrphanDetector(
        store=store,
        settings=config.orphan,
        clock=clock,
        health=health,
        max_attempts=config.operations.max_attempts,
    )
    deadlines = DeadlineWatch(
        store=store,
        settings=config.operations,
        clock=clock,
        stop=dispatcher.stop_attempt,
        health=health,
    )
    retention = RetentionCleaner(service=service)
    app = create_app(
        config,
        clock=clock,
        registry=registry,
        service=service,
        dispatcher=dispatcher,
        reports=reports,
        orphan_detector=orphans,
        retention=retention,
        store_health=health,
        metrics=metrics,
        budgets=budgets if budgets is not None else unlimited_budgets(),
        deadlines=deadlines,
    )
    instrument_app(app, tracing, excluded=UNTRACED_PATHS)
    return Backend(
        config=config,
        clock=clock,
        store=store,
        registry=registry,
        service=service,
        dispatcher=dispatcher,
        reports=reports,
        orphans=orphans,
        deadlines=deadlines,
        retention=retention,
        health=health,
        workers=workers,
        http=http,
        app=app,
        metrics=metrics,
    )


__all__ = [
    "AUTH",
    "OPERATOR_AUTH",
    "OPERATOR_TOKEN",
    "T0",
    "TOKEN",
    "Backend",
    "FakeClock",
    "FakeWorkers",
    "backend_config",
    "make_backend",
    "open_store",
    "unlimited_budgets",
]
