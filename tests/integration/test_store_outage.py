"""Store outages with real processes: a PostgreSQL outage through a TCP proxy the test
controls, and a SQLite database on a disk that fills up.

While the database is unreachable, requests that need it answer 503
``store_unavailable`` with ``Retry-After`` (never a bare 500), ``GET /health`` answers
503, connections close cleanly after each such answer, workers keep heartbeating,
and an operation running across the outage is not failed as an orphan. Everything
recovers without a restart.
"""

from __future__ import annotations

import datetime
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from support.fleet import OPERATOR_AUTH, Fleet, Server, backend_env, operator_client, worker_env
from support.postgres import fresh_database
from support.processes import ProcessGroup, free_port, run_ktrdr, wait_until
from support.tcp_proxy import Mode, TcpProxy
from support.tmpfs import fill, small_tmpfs

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
ORPHAN_TIMEOUT_S = 1.5
ORPHAN_CHECK_S = 0.3
#: Long enough to still run when the outage is over (it is cancelled at the end).
LONG_TRAINING = {"bars": 4000, "hidden_units": 64, "epochs": 10_000, "seed": 5}
UTC = datetime.timezone.utc


@pytest.fixture
def postgres_database() -> Iterator[sa.URL]:
    """A new, empty PostgreSQL database for this test (dropped afterwards)."""
    with fresh_database("ktrdr_outage") as url:
        yield url


def _time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def raw_exchange(port: int, request: bytes, *, timeout_s: float = 10.0) -> tuple[bytes, str]:
    """Send ``request`` on a new keep-alive connection; everything read and how it ended.

    "eof" is a clean close by the server after its answer; "reset" a connection reset;
    "open" means the server kept the connection open.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        received = b""
        sock.settimeout(timeout_s)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return received, "eof"
                received += chunk
        except ConnectionResetError:
            return received, "reset"
        except TimeoutError:
            return received, "open"


def operator_request(path: str, method: str = "GET") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: backend",
        "Connection: keep-alive",
        f"Authorization: {OPERATOR_AUTH['Authorization']}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Outage:
    """A backend on PostgreSQL through a proxy, a training worker, and a client."""

    def __init__(self, fleet: Fleet, directory: Path, database: sa.URL, proxy: TcpProxy) -> None:
        self.fleet = fleet
        self.directory = directory
        self.proxy = proxy
        self.backend_port = free_port()
        self.http = operator_client()
        env = backend_env(
            self.backend_port,
            KTRDR_ORPHAN_TIMEOUT=f"{ORPHAN_TIMEOUT_S}s",
            KTRDR_ORPHAN_CHECK_INTERVAL=f"{ORPHAN_CHECK_S}s",
            KTRDR_OPS_CACHE_TTL="0.1s",
            KTRDR_DB_ENGINE="postgresql",
            KTRDR_DB_HOST="127.0.0.1",
            KTRDR_DB_PORT=str(proxy.port),
            KTRDR_DB_NAME=database.database or "",
            KTRDR_DB_USER=database.username or "postgres",
            KTRDR_DB_PASSWORD=database.password or "unused-with-trust-auth",
        )
        self.env = env
        self.backend: Server = fleet.start_backend(port=self.backend_port, env=env)

    def start_worker(self) -> tuple[Server, str]:
        port = free_port()
        env = worker_env(port, self.backend_port, KTRDR_CHECKPOINT_DIR=str(self.directory / "ck"))
        worker = self.fleet.start_worker(
            "training", backend_port=self.backend_port, env=env, port=port
        )
        worker_id: str = worker.health()["worker_id"]
        self.fleet.wait_listed(self.backend, worker_id, status="idle")
        return worker, worker_id

    @property
    def url(self) -> str:
        return self.backend.url + OPS

    def get(self, operation_id: str) -> httpx.Response:
        return self.http.get(f"{self.url}/{operation_id}")

    def health(self) -> httpx.Response:
        return self.http.get(self.backend.url + "/health")

    def logs(self) -> str:
        return "\n".join(child.output() for child in self.fleet.group.children)


@pytest.fixture
def outage(tmp_path: Path, postgres_database: sa.URL) -> Iterator[Outage]:
    with (
        ProcessGroup(tmp_path) as group,
        TcpProxy(postgres_database.host or "127.0.0.1", postgres_database.port or 5432) as proxy,
    ):
        outage = Outage(Fleet(group, tmp_path), tmp_path, postgres_database, proxy)
        yield outage
        outage.http.close()


@pytest.mark.postgres
def test_a_postgres_outage_answers_503_with_retry_after_and_recovers_without_false_orphans(
    outage: Outage,
) -> None:
    """PostgreSQL cut by the proxy: 503 store_unavailable + Retry-After, /health 503, clean
    closes, heartbeats go on; restored: 201 again, the running operation kept its worker.
    """
    _, worker_id = outage.start_worker()
    created = outage.http.post(outage.url, json={"type": "training", "parameters": LONG_TRAINING})
    operation_id = created.json()["id"]
    wait_until(
        lambda: outage.get(operation_id).json()["status"] == "running",
        message=outage.logs,
    )
    heartbeat_before = outage.fleet.worker_view(outage.backend, worker_id)

    outage.proxy.cut(Mode.REFUSE)
    cut_at = time.monotonic()
    refused = outage.http.post(outage.url, json={"type": "training"})
    read = outage.http.get(outage.url)  # listings are never cached
    health = outage.health()
    probe = run_ktrdr("health", "--component", "backend", env=outage.env, cwd=outage.directory)
    head, ending = raw_exchange(outage.backend_port, operator_request(OPS))
    # The outage lasts well past the orphan timeout, while the worker keeps heartbeating.
    wait_until(
        lambda: time.monotonic() > cut_at + 2 * ORPHAN_TIMEOUT_S + 2 * ORPHAN_CHECK_S,
        interval_s=0.1,
    )
    heartbeat_during = outage.fleet.worker_view(outage.backend, worker_id)
    still_down = outage.health()
    outage.proxy.restore()
    restored_at = datetime.datetime.now(UTC)
    wait_until(lambda: outage.health().status_code == 200, message=outage.logs)
    again = outage.http.post(outage.url, json={"type": "backtest"})
    # Wait until the detector has had its chances: reported well after the grace ended.
    settled = restored_at + datetime.timedelta(seconds=ORPHAN_TIMEOUT_S + 3 * ORPHAN_CHECK_S)

    def judged() -> dict[str, Any] | None:
        view: dict[str, Any] = outage.get(operation_id).json()
        if view["status"] != "running":
            return view
        reported = view["last_reported_at"]
        return view if reported is not None and _time(reported) > settled else None

    after = wait_until(judged, timeout_s=60, message=outage.logs)
    cancelled = outage.http.post(f"{outage.url}/{operation_id}/cancel")

    for answer in (refused, read):
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "store_unavailable"
        assert answer.headers["retry-after"] == "5"
    assert health.status_code == 503
    assert health.json()["store"] == "unavailable"
    assert health.headers["retry-after"] == "5"
    assert still_down.status_code == 503
    assert probe.returncode == 1
    assert "answered HTTP 503 store_unavailable" in probe.stderr
    assert head.startswith(b"HTTP/1.1 503"), head
    assert b"connection: close" in head.lower()
    assert ending == "eof"  # closed by the server after a complete answer, no reset
    assert heartbeat_before is not None
    assert heartbeat_during is not None
    assert heartbeat_during["last_heartbeat_at"] > heartbeat_before["last_heartbeat_at"]
    assert heartbeat_during["status"] == "busy"
    assert again.status_code == 201, again.text
    assert after["status"] in {"running", "completed"}, after
    assert after["worker_id"] == worker_id
    assert after["error"] is None
    assert cancelled.status_code in {200, 409}
    backend_log = outage.backend.process.stderr()
    assert "orphaned" not in backend_log
    assert "Traceback" not in backend_log
    assert backend_log.count("the operations store is unavailable") == 1
    assert "the operations store is available again after" in backend_log


@pytest.mark.postgres
def test_a_postgres_server_that_hangs_gives_health_503_within_its_probe_timeout(
    outage: Outage,
) -> None:
    """A black hole (connections accepted, never answered): /health says 503, then 200 again."""
    outage.proxy.cut(Mode.HANG)
    started = time.monotonic()
    health = outage.health()
    elapsed = time.monotonic() - started
    outage.proxy.restore()
    recovered = wait_until(
        lambda: (answer := outage.health()).status_code == 200 and answer, message=outage.logs
    )

    assert health.status_code == 503, health.text
    assert health.json()["store"] == "unavailable"
    assert elapsed < 8  # bounded by the probe timeout, not by TCP's minutes
    assert recovered.json()["store"] == "ok"


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs that a test can fill up (CI runs the suite as root)."""
    with small_tmpfs(tmp_path / "disk", "2m") as mount:
        yield mount


def test_sqlite_on_a_full_disk_answers_503_and_recovers_when_space_returns(
    tmp_path: Path, full_disk: Path
) -> None:
    """SQLite with no space left: creating answers 503 store_unavailable, never 500;
    reads still work; once space is freed, creating works again without a restart.
    """
    with ProcessGroup(tmp_path) as group:
        port = free_port()
        env = backend_env(port, KTRDR_DB_PATH=str(full_disk / "ops.db"))
        backend = Fleet(group, tmp_path).start_backend(port=port, env=env)
        with operator_client() as http:
            first = http.post(backend.url + OPS, json={"type": "backtest"})
            ballast = fill(full_disk)
            payload = {"type": "backtest", "parameters": {"symbol": "X" * 30}}
            refused = [http.post(backend.url + OPS, json=payload) for _ in range(20)]
            listed = http.get(backend.url + OPS)
            ballast.unlink()
            created = wait_until(
                lambda: (
                    (answer := http.post(backend.url + OPS, json=payload)).status_code == 201
                    and answer
                ),
                message=backend.process.output,
            )
            total = http.get(backend.url + OPS).json()["total"]
        log = backend.process.stderr()

    assert first.status_code == 201
    statuses = {answer.status_code for answer in refused}
    assert 503 in statuses, [a.text for a in refused]
    assert statuses <= {201, 503}
    for answer in refused:
        if answer.status_code == 503:
            assert answer.json()["error"] == "store_unavailable"
            assert answer.headers["retry-after"] == "5"
    assert listed.status_code == 200
    assert created.status_code == 201
    assert total == 2 + sum(answer.status_code == 201 for answer in refused)
    assert "Traceback" not in log
    assert "database or disk is full" in log
