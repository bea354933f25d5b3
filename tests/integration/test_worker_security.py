"""Nobody acts as a worker but the worker (real backend and worker processes on loopback).

The attempts of issue 10 against the worker side: a holder of the shared worker token
forging another worker's report, heartbeat or unregister; every worker route against
every kind of credential; a "worker" whose endpoint points at an internal service; and
hostile ``csv_path`` values against a real worker, which must refuse or fail each one
with a reason, keep its memory flat and be idle afterwards. The internal service and
the fake workers are a small HTTP server in this process (:class:`Target`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fleet import (
    OPERATOR_AUTH,
    TOKEN,
    Fleet,
    Server,
    worker_env,
)
from support.processes import ProcessGroup, free_port, wait_until

from ktrdr.protocol import OperationStatus

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
WORKERS = "/api/v1/workers"
REGISTER = WORKERS + "/register"
FINISHED = {s.value for s in OperationStatus if s.finished}
SHARED = {"Authorization": f"Bearer {TOKEN}"}
#: A long training: it is still running while the test tries to forge its outcome.
LONG_TRAINING = {"bars": 4000, "hidden_units": 32, "epochs": 10000}


class Target:
    """An HTTP server in this process: plays fake workers and an internal service.

    Every request is recorded as ``(method, path, authorization)``; ``answers[path]``
    is ``(status, headers, body)`` (default: 202 with an empty JSON object).
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        self.answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
        target = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                target.requests.append((self.command, self.path, self.headers.get("Authorization")))
                status, headers, body = target.answers.get(
                    self.path, (202, {"Content-Type": "application/json"}, b"{}")
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]


@pytest.fixture
def target() -> Iterator[Target]:
    """The in-process HTTP server, stopped at the end."""
    server = Target()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def group(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Every process the test starts, killed at the end."""
    with ProcessGroup(tmp_path) as processes:
        yield processes


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A client with no default credentials (each request says what it presents)."""
    with httpx.Client(timeout=10) as client:
        yield client


def registration(worker_id: str, endpoint_url: str, kind: str = "training") -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "worker_type": kind,
        "endpoint_url": endpoint_url,
        "heartbeat_interval_s": 60,
        "config_fingerprint": "fp",
    }


def register(http: httpx.Client, backend: Server, worker_id: str, endpoint_url: str) -> str:
    """Register through the API with the shared token; the worker's credential."""
    response = http.post(
        backend.url + REGISTER, json=registration(worker_id, endpoint_url), headers=SHARED
    )
    assert response.status_code in (200, 201), response.text
    credential: str = response.json()["credential"]
    return credential


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def view(http: httpx.Client, backend: Server, path: str) -> Any:
    response = http.get(backend.url + path, headers=OPERATOR_AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def create(http: httpx.Client, backend: Server, kind: str, **parameters: Any) -> httpx.Response:
    return http.post(
        backend.url + OPS, json={"type": kind, "parameters": parameters}, headers=OPERATOR_AUTH
    )


def wait_status(http: httpx.Client, backend: Server, operation_id: str, statuses: set[str]) -> Any:
    def reached() -> Any:
        shown = view(http, backend, f"{OPS}/{operation_id}")
        return shown if shown["status"] in statuses else None

    return wait_until(
        reached, timeout_s=60, message=lambda: str(view(http, backend, f"{OPS}/{operation_id}"))
    )


def test_a_shared_token_holder_cannot_forge_another_workers_report_heartbeat_or_unregister(
    group: ProcessGroup, tmp_path: Path, http: httpx.Client
) -> None:
    """Shared token only: forged report, heartbeat and unregister are 401; nothing changes."""
    fleet = Fleet(group, tmp_path)
    backend = fleet.start_backend()
    worker = fleet.start_worker("training", backend_port=backend.port)
    worker_id = worker.health()["worker_id"]
    fleet.wait_listed(backend, worker_id, status="idle")
    created = create(http, backend, "training", **LONG_TRAINING)
    operation_id = created.json()["id"]
    wait_status(http, backend, operation_id, {"running"})
    forged = {
        "worker_id": worker_id,
        "attempt": 1,
        "status": "completed",
        "result": {"accuracy": 1.0},
    }

    answers = [
        http.post(f"{backend.url}{OPS}/{operation_id}/report", json=forged, headers=SHARED),
        http.post(
            f"{backend.url}{WORKERS}/{worker_id}/heartbeat",
            json={"status": "idle"},
            headers=SHARED,
        ),
        http.delete(f"{backend.url}{WORKERS}/{worker_id}", headers=SHARED),
    ]

    assert [a.status_code for a in answers] == [401, 401, 401]
    assert all(a.json()["error"] == "unauthorized" for a in answers)
    shown = view(http, backend, f"{OPS}/{operation_id}")
    assert (shown["status"], shown["result"]) == ("running", None)
    assert fleet.worker_view(backend, worker_id) is not None
    assert worker.health()["current_operation_id"] == operation_id
    cancel = http.post(f"{backend.url}{OPS}/{operation_id}/cancel", headers=OPERATOR_AUTH)
    assert cancel.status_code == 200
    assert wait_status(http, backend, operation_id, FINISHED)["status"] == "cancelled"


def test_worker_routes_against_every_credential(
    group: ProcessGroup, tmp_path: Path, http: httpx.Client, target: Target
) -> None:
    """Only a worker's current credential acts for it: else 401 (409 if not its operation)."""
    backend = Fleet(group, tmp_path).start_backend()
    # Each registers twice: the first credential is replaced by the second.
    stale = {w: register(http, backend, w, f"{target.url}/{w}") for w in ("w-a", "w-b")}
    current = {w: register(http, backend, w, f"{target.url}/{w}") for w in ("w-a", "w-b")}
    operation_id = create(http, backend, "training", epochs=1).json()["id"]
    running = wait_status(http, backend, operation_id, {"running"})
    holder = running["worker_id"]
    not_holder = "w-b" if holder == "w-a" else "w-a"
    mine, theirs = current[holder], current[not_holder]
    credentials = {
        "none": {},
        "wrong": bearer("not-a-credential"),
        "shared worker token": SHARED,
        "operator token": OPERATOR_AUTH,
        "other worker": bearer(theirs),
        "stale (replaced)": bearer(stale[holder]),
    }
    before = view(http, backend, f"{WORKERS}/{holder}")

    def routes(headers: dict[str, str], body_worker: str = holder) -> dict[str, int]:
        report = {
            "worker_id": body_worker,
            "attempt": 1,
            "status": "completed",
            "result": {"forged": 1},
        }
        return {
            "heartbeat": http.post(
                f"{backend.url}{WORKERS}/{holder}/heartbeat",
                json={"status": "idle"},
                headers=headers,
            ).status_code,
            "report": http.post(
                f"{backend.url}{OPS}/{operation_id}/report", json=report, headers=headers
            ).status_code,
            "unregister": http.delete(
                f"{backend.url}{WORKERS}/{holder}", headers=headers
            ).status_code,
        }

    refused = {name: routes(headers) for name, headers in credentials.items()}
    registrations = {
        name: http.post(
            backend.url + REGISTER, json=registration("w-new", target.url), headers=headers
        ).status_code
        for name, headers in credentials.items()
        if name != "shared worker token"
    }
    not_held = http.post(
        f"{backend.url}{OPS}/{operation_id}/report",
        json={"worker_id": not_holder, "attempt": 1, "status": "completed", "result": {}},
        headers=bearer(theirs),
    )
    unknown = http.post(
        f"{backend.url}{WORKERS}/ghost/heartbeat", json={"status": "idle"}, headers=bearer(mine)
    )

    assert refused == {name: dict.fromkeys(("heartbeat", "report", "unregister"), 401)
                       for name in credentials}  # fmt: skip
    assert set(registrations.values()) == {401}
    assert not_held.status_code == 409
    assert unknown.status_code == 404
    assert view(http, backend, f"{WORKERS}/{holder}") == before
    assert view(http, backend, f"{OPS}/{operation_id}")["status"] == "running"
    assert [w["worker_id"] for w in view(http, backend, WORKERS)] == ["w-a", "w-b"]
    # The holder's own credential is accepted on every route.
    done = http.post(
        f"{backend.url}{OPS}/{operation_id}/report",
        json={"worker_id": holder, "attempt": 1, "status": "completed", "result": {"ok": 1}},
        headers=bearer(mine),
    )
    beat = http.post(
        f"{backend.url}{WORKERS}/{holder}/heartbeat", json={"status": "idle"}, headers=bearer(mine)
    )
    gone = http.delete(f"{backend.url}{WORKERS}/{holder}", headers=bearer(mine))
    assert (done.status_code, beat.status_code, gone.status_code) == (200, 200, 204)
    moved = http.post(
        backend.url + REGISTER, json=registration(not_holder, target.url + "/elsewhere"),
        headers=SHARED,
    )  # fmt: skip
    assert moved.status_code == 409
    assert moved.json()["error"] == "worker_id_conflict"


def test_an_endpoint_pointing_at_an_internal_service_is_never_called(
    group: ProcessGroup, tmp_path: Path, http: httpx.Client, target: Target
) -> None:
    """An endpoint with a query string is 422; HTML or redirect answers leave only a status."""
    backend = Fleet(group, tmp_path).start_backend()
    smuggled = http.post(
        backend.url + REGISTER,
        json=registration("evil", f"{target.url}/internal/admin?x="),
        headers=SHARED,
    )
    assert smuggled.status_code == 422
    assert smuggled.json()["detail"][0]["loc"] == ["body", "endpoint_url"]
    assert view(http, backend, WORKERS) == []

    target.answers["/internal/admin/operations"] = (
        422,
        {"Content-Type": "text/html"},
        b"<html>SECRET_API_KEY=hunter2\nadmin console</html>",
    )
    evil = register(http, backend, "evil", f"{target.url}/internal/admin")
    failed = wait_status(http, backend, create(http, backend, "training").json()["id"], {"failed"})
    target.answers["/redirect/operations"] = (
        307, {"Location": f"{target.url}/internal/secret"}, b"moved"
    )  # fmt: skip
    assert http.delete(f"{backend.url}{WORKERS}/evil", headers=bearer(evil)).status_code == 204
    register(http, backend, "redirector", f"{target.url}/redirect")
    redirected = create(http, backend, "training").json()["id"]
    wait_until(lambda: "/redirect/operations" in target.paths(), timeout_s=30)

    assert failed["error"] == "worker evil refused the operation: HTTP 422"
    assert "/internal/secret" not in target.paths()
    assert all(path.endswith("/operations") for path in target.paths())
    assert {auth for _, _, auth in target.requests} == {SHARED["Authorization"]}
    # The refusal puts it back in the queue (after the request was seen: poll).
    assert wait_status(http, backend, redirected, {"pending"})["attempt"] == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_hostile_csv_paths_are_refused_or_fail_and_the_worker_stays_idle_and_small(
    group: ProcessGroup, tmp_path: Path, http: httpx.Client
) -> None:
    """Hostile csv_path values: 422 or failed naming the rule; worker idle, memory flat."""
    data = tmp_path / "data"
    data.mkdir()
    outside = tmp_path / "shadow"
    outside.write_text("SECRET_API_KEY=hunter2\n")
    os.symlink(outside, data / "link-out.csv")
    os.symlink("/dev/zero", data / "zero.csv")
    (data / "folder.csv").mkdir()
    os.mkfifo(data / "pipe.csv")
    with open(data / "huge.csv", "wb") as handle:
        handle.truncate(8 * 1024**3)
    fleet = Fleet(group, tmp_path)
    backend = fleet.start_backend()
    port = free_port()
    env = worker_env(port, backend.port, KTRDR_DATA_DIR=str(data), KTRDR_DATA_MAX_FILE_SIZE="1M")
    worker = fleet.start_worker("backtest", backend_port=backend.port, port=port, env=env)
    worker_id = worker.health()["worker_id"]
    fleet.wait_listed(backend, worker_id, status="idle")
    rss_before = _rss_kib(worker.process.pid)

    refused = {
        csv_path: create(http, backend, "backtest", csv_path=csv_path)
        for csv_path in (str(outside), "../shadow", "a\x00.csv")
    }
    expected = {
        "link-out.csv": "csv_path 'link-out.csv' resolves outside KTRDR_DATA_DIR",
        "zero.csv": "csv_path 'zero.csv' resolves outside KTRDR_DATA_DIR",
        "folder.csv": "csv_path 'folder.csv' is not a regular file",
        "pipe.csv": "csv_path 'pipe.csv' is not a regular file",
        "huge.csv": "csv_path 'huge.csv' is 8G, over KTRDR_DATA_MAX_FILE_SIZE=1M",
    }
    operations = {
        name: create(http, backend, "backtest", csv_path=name).json()["id"] for name in expected
    }
    errors = {
        name: wait_status(http, backend, op, FINISHED)["error"] for name, op in operations.items()
    }
    fleet.wait_listed(backend, worker_id, status="idle")

    assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 422)
    for response in refused.values():
        assert response.json()["detail"][0]["loc"] == ["body", "parameters", "csv_path"]
    for name, error in errors.items():
        assert error.startswith(expected[name]), error
        assert "hunter2" not in error
        assert str(outside) not in error
    assert worker.health()["status"] == "idle"
    assert _rss_kib(worker.process.pid) - rss_before < 50 * 1024
    good = create(http, backend, "backtest", bars=300).json()["id"]
    assert wait_status(http, backend, good, FINISHED)["status"] == "completed"
