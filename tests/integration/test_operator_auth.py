"""The operator token against a real backend process: the route x credential matrix.

Every operator route is called with no token, a wrong one, the worker token and the
operator token; the first three get a JSON 401 and change nothing. A production
backend refuses to start with the development operator token, and serves no API
description unless asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fleet import (
    OPERATOR_AUTH,
    TOKEN,
    Fleet,
    Server,
    backend_env,
    operator_client,
)
from support.processes import ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.slow

WORKERS = "/api/v1/workers"
OPS = "/api/v1/operations"
#: (method, path) of every operator route; {op} and {worker} are filled in per test.
ROUTES = [
    ("GET", WORKERS),
    ("GET", WORKERS + "/{worker}"),
    ("POST", OPS),
    ("GET", OPS),
    ("GET", OPS + "/{op}"),
    ("POST", OPS + "/{op}/cancel"),
    ("POST", OPS + "/{op}/resume"),
]
REFUSED = {
    "none": {},
    "wrong": {"Authorization": "Bearer wrong-token-0000"},
    "worker-token": {"Authorization": f"Bearer {TOKEN}"},
}


class Running:
    """A development backend with a registered training worker, and an operator client."""

    def __init__(self, fleet: Fleet) -> None:
        self.backend: Server = fleet.start_backend()
        worker = fleet.start_worker("training", backend_port=self.backend.port)
        self.http = operator_client()
        listed = wait_until(lambda: fleet.workers(self.backend), message=worker.process.output)
        self.worker_id: str = listed[0]["worker_id"]

    def url(self, path: str, operation_id: str = "no-such-op") -> str:
        return self.backend.url + path.format(op=operation_id, worker=self.worker_id)

    def state(self) -> Any:
        """What an operator route could change: every operation, every worker's status."""
        operations = self.http.get(self.url(OPS), params={"limit": 200}).json()
        workers = self.http.get(self.url(WORKERS)).json()
        return operations, [(w["worker_id"], w["status"]) for w in workers]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One backend and one worker for the whole matrix."""
    directory = tmp_path_factory.mktemp("operator-auth")
    with ProcessGroup(directory) as group:
        fleet = Running(Fleet(group, directory))
        try:
            yield fleet
        finally:
            fleet.http.close()


def _operation(running: Running) -> str:
    """A pending backtest no worker takes (the fleet has a training worker only)."""
    response = running.http.post(running.url(OPS), json={"type": "backtest", "parameters": {}})
    assert response.status_code == 201, response.text
    operation_id: str = response.json()["id"]
    return operation_id


@pytest.mark.parametrize("credential", sorted(REFUSED))
@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_without_the_operator_token_every_operator_route_is_401_and_changes_nothing(
    running: Running, method: str, path: str, credential: str
) -> None:
    """No token, a wrong one, the worker token: 401 JSON naming the variable; state unchanged."""
    operation_id = _operation(running)
    before = running.state()
    body = {"type": "training", "parameters": {}} if method == "POST" and path == OPS else None
    with httpx.Client(timeout=10) as bare:
        response = bare.request(
            method, running.url(path, operation_id), json=body, headers=REFUSED[credential]
        )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert "KTRDR_AUTH_OPERATOR_TOKEN" in response.json()["detail"]
    assert TOKEN not in response.text
    assert running.state() == before


def test_with_the_operator_token_every_operator_route_works(running: Running) -> None:
    """The operator token reads workers and operations, creates, cancels and resumes."""
    operation_id = _operation(running)
    answers = {}
    for method, path in ROUTES:
        body = {"type": "backtest", "parameters": {}} if method == "POST" and path == OPS else None
        response = running.http.request(method, running.url(path, operation_id), json=body)
        answers[(method, path)] = response.status_code
    assert answers == {
        ("GET", WORKERS): 200,
        ("GET", WORKERS + "/{worker}"): 200,
        ("POST", OPS): 201,
        ("GET", OPS): 200,
        ("GET", OPS + "/{op}"): 200,
        ("POST", OPS + "/{op}/cancel"): 200,
        ("POST", OPS + "/{op}/resume"): 200,
    }


def test_health_is_open_and_unknown_paths_are_closed(running: Running) -> None:
    """/health needs no token; a path that matches nothing is 401 without one, 404 with it."""
    with httpx.Client(timeout=10) as bare:
        assert bare.get(running.url("/health")).status_code == 200
        assert bare.get(running.url("/api/v1/nothing")).status_code == 401
    assert running.http.get(running.url("/api/v1/nothing")).status_code == 404


def test_production_refuses_the_development_operator_token(tmp_path: Path) -> None:
    """KTRDR_ENV=production with a real worker token but no operator token: exit 1, named."""
    port = free_port()
    env = backend_env(port, KTRDR_ENV="production")
    del env["KTRDR_AUTH_OPERATOR_TOKEN"]
    with ProcessGroup(tmp_path) as group:
        backend = Fleet(group, tmp_path).start_backend(port=port, env=env, wait=False)
        assert backend.process.wait_exit() == 1
        assert (
            "KTRDR_AUTH_OPERATOR_TOKEN: still the insecure development default; "
            "KTRDR_ENV=production needs a real secret" in backend.process.stderr()
        )


def test_production_serves_no_api_description_unless_asked(tmp_path: Path) -> None:
    """In production /docs and /openapi.json are gone (404 even with the token) until asked."""
    with ProcessGroup(tmp_path) as group, httpx.Client(timeout=10) as http:
        fleet = Fleet(group, tmp_path)
        codes = []
        for docs in ("", "true"):
            port = free_port()
            env = backend_env(port, KTRDR_ENV="production", KTRDR_DB_PATH=f"db-{port}.sqlite")
            if docs:
                env["KTRDR_API_DOCS"] = docs
            backend = fleet.start_backend(port=port, env=env)
            for path in ("/docs", "/openapi.json"):
                codes.append(http.get(backend.url + path, headers=OPERATOR_AUTH).status_code)
    assert codes == [404, 404, 200, 200]
