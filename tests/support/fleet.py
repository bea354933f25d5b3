"""Start a real backend and real workers as processes, and ask the backend about them.

Built on :mod:`support.processes`. Intervals are short (0.2 s heartbeats) so tests
that wait for liveness changes stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx

from support.processes import ProcessGroup, Spawned, base_env, free_port, get_json, wait_until

TOKEN = "test-worker-token-not-a-secret"
#: The operator token of every test backend; :data:`OPERATOR_AUTH` is its header.
OPERATOR_TOKEN = "test-operator-token-not-a-secret"
OPERATOR_AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
HEARTBEAT = "0.2s"
WORKER_MODULES = {
    "training": "ktrdr.workers.training_worker",
    "backtest": "ktrdr.workers.backtest_worker",
}


def backend_env(port: int, **overrides: str) -> dict[str, str]:
    """Environment of a backend on 127.0.0.1:``port`` with fast liveness settings."""
    env = base_env(
        KTRDR_API_HOST="127.0.0.1",
        KTRDR_API_PORT=str(port),
        KTRDR_AUTH_WORKER_TOKEN=TOKEN,
        KTRDR_AUTH_OPERATOR_TOKEN=OPERATOR_TOKEN,
        KTRDR_WORKER_HEARTBEAT_INTERVAL=HEARTBEAT,
    )
    env.update(overrides)
    return env


def operator_client(timeout_s: float = 10.0) -> httpx.Client:
    """An HTTP client sending the operator token (close it, or use it in ``with``)."""
    return httpx.Client(timeout=timeout_s, headers=OPERATOR_AUTH)


def worker_env(port: int | None, backend_port: int, **overrides: str) -> dict[str, str]:
    """Environment of a worker on 127.0.0.1:``port`` (None: its default port)."""
    env = base_env(
        KTRDR_WORKER_HOST="127.0.0.1",
        KTRDR_WORKER_BACKEND_URL=f"http://127.0.0.1:{backend_port}",
        KTRDR_AUTH_WORKER_TOKEN=TOKEN,
        KTRDR_WORKER_HEARTBEAT_INTERVAL=HEARTBEAT,
        KTRDR_WORKER_SHUTDOWN_TIMEOUT="5s",
        KTRDR_CHECKPOINT_DIR="checkpoints",
    )
    if port is not None:
        env["KTRDR_WORKER_PORT"] = str(port)
        env["KTRDR_WORKER_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    env.update(overrides)
    return env


@attrs.frozen
class Server:
    """A started backend or worker: its process and where it listens."""

    process: Spawned
    port: int

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> Any:
        """``GET /health`` as JSON, or None when it does not answer."""
        return get_json(self.url + "/health")


class Fleet:
    """Starts backends and workers in one ``ProcessGroup`` (which cleans them up)."""

    def __init__(self, group: ProcessGroup, directory: Path) -> None:
        self.group = group
        self.directory = directory

    def start_backend(
        self, *, port: int | None = None, env: Mapping[str, str] | None = None, wait: bool = True
    ) -> Server:
        """Start ``python -m ktrdr.api.main``; with ``wait``, until ``/health`` answers."""
        chosen = port if port is not None else free_port()
        environment = dict(env) if env is not None else backend_env(chosen)
        process = self.group.python(
            "backend", "ktrdr.api.main", env=environment, cwd=self.directory / "backend"
        )
        server = Server(process, chosen)
        if wait:
            self.wait_healthy(server)
        return server

    def start_worker(
        self,
        worker_type: str,
        *,
        backend_port: int,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Server:
        """Start a worker entrypoint; with ``wait``, until its ``/health`` answers."""
        chosen = port if port is not None else free_port()
        environment = dict(env) if env is not None else worker_env(chosen, backend_port)
        name = f"{worker_type}-worker"
        process = self.group.python(
            name, WORKER_MODULES[worker_type], env=environment, cwd=self.directory / name
        )
        server = Server(process, chosen)
        if wait:
            self.wait_healthy(server)
        return server

    def wait_healthy(self, server: Server) -> Any:
        """Wait until ``server`` answers ``/health`` (fails early if it exited)."""

        def healthy() -> Any:
            if not server.process.alive():
                message = f"{server.process.name} exited with {server.process.returncode}"
                raise AssertionError(f"{message}\n{server.process.output()}")
            return server.health()

        return wait_until(healthy, message=server.process.output)

    @staticmethod
    def workers(backend: Server) -> list[dict[str, Any]] | None:
        """``GET /api/v1/workers`` of ``backend``, or None when it does not answer."""
        result = get_json(backend.url + "/api/v1/workers", headers=OPERATOR_AUTH)
        return result if isinstance(result, list) else None

    def worker_view(self, backend: Server, worker_id: str) -> dict[str, Any] | None:
        """The backend's view of ``worker_id``, or None when it is not listed."""
        for item in self.workers(backend) or []:
            if item.get("worker_id") == worker_id:
                return item
        return None

    def wait_listed(self, backend: Server, worker_id: str, **expected: Any) -> dict[str, Any]:
        """Wait until ``worker_id`` is listed with every ``expected`` field value."""

        def listed() -> dict[str, Any] | None:
            view = self.worker_view(backend, worker_id)
            if view is not None and all(view.get(k) == v for k, v in expected.items()):
                return view
            return None

        return wait_until(
            listed,
            message=lambda: f"{worker_id} not listed with {expected}: {self.workers(backend)}",
        )


__all__ = [
    "HEARTBEAT",
    "OPERATOR_AUTH",
    "OPERATOR_TOKEN",
    "TOKEN",
    "WORKER_MODULES",
    "Fleet",
    "Server",
    "backend_env",
    "operator_client",
    "worker_env",
]
