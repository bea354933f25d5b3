"""Benchmark: time from ``POST /api/v1/operations`` to the worker starting the operation.

Two start points are measured: the worker accepting the operation (``operation <id>
started``, as before job processes) and the operation's own job process running
(``operation <id>: job process <pid> started``).

Run with ``.venv/bin/python benchmarks/bench_dispatch.py``. Target: median < 100 ms on
loopback with an idle worker. In the same run it measures a baseline: the same
operation sent straight to the worker's own ``POST /operations`` (what a client could
do with no backend in between: no store, no queue, no dispatcher).

Setup: a real backend (``python -m ktrdr.api.main``, SQLite in a temporary
directory) and one real training worker, on free loopback ports, heartbeats every
1 s. Each run sends a tiny training operation (100 bars, 1 epoch) and waits until it
has completed and the worker is idle again before the next run. The start is taken
from the worker itself: the ``operation <id> started`` line it logs (JSON logs,
millisecond timestamps) right after its runner thread starts, compared with the wall
clock just before this process sends the request, so there is no polling in the
measured path (resolution 1 ms; half a millisecond is added to each truncated stamp
so the error averages out). Baseline and backend runs alternate; the first of each is
a discarded warm-up. With ``KTRDR_TEST_POSTGRES_URL`` set (or ``--postgres-url``)
the whole series is repeated with the backend on a fresh PostgreSQL database.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from common import base_env, describe, free_port, postgres_database, spawn, stop, wait_until

TOKEN = "bench-dispatch-token"
OPERATOR_TOKEN = "bench-dispatch-operator-token"
TARGET_MEDIAN_MS = 100.0
TIMEOUT_S = 30.0
POLL_S = 0.002
PARAMETERS = {"bars": 100, "epochs": 1, "seed": 1}
#: What every child gets on top of ``base_env``: the token, 1 s heartbeats, JSON logs.
CHILD_ENV = {
    "KTRDR_AUTH_WORKER_TOKEN": TOKEN,
    "KTRDR_AUTH_OPERATOR_TOKEN": OPERATOR_TOKEN,
    "KTRDR_WORKER_HEARTBEAT_INTERVAL": "1s",
    "KTRDR_LOG_FORMAT": "json",
}


class Client:
    """One keep-alive HTTP/1.1 connection to a local server, JSON in and out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def request(
        self, method: str, path: str, body: Any = None, *, token: bool = False
    ) -> tuple[int, Any]:
        # The worker token where asked (a worker's route), else the operator token.
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {TOKEN if token else OPERATOR_TOKEN}",
        }
        payload = None if body is None else json.dumps(body)
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except OSError:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            return 0, None
        return response.status, json.loads(data) if data else None


def wait(condition: Callable[[], bool], what: str) -> None:
    wait_until(condition, what, timeout_s=TIMEOUT_S, poll_s=POLL_S)


class Fleet:
    """A backend and one training worker as child processes."""

    def __init__(self, workdir: Path, database_env: dict[str, str]) -> None:
        self.backend_port = free_port()
        self.worker_port = free_port()
        self.worker_id = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
        self.log = workdir / f"{self.worker_id}.log"
        self.processes: list[subprocess.Popen[bytes]] = []
        backend_env = base_env(
            **CHILD_ENV,
            KTRDR_API_HOST="127.0.0.1",
            KTRDR_API_PORT=str(self.backend_port),
            KTRDR_DB_PATH=str(workdir / f"{self.worker_id}.db"),
            **database_env,
        )
        self.processes.append(spawn([sys.executable, "-m", "ktrdr.api.main"], backend_env, workdir))
        self.backend = Client(self.backend_port)
        wait(lambda: self.backend.request("GET", "/health")[0] == 200, "the backend")
        worker_env = base_env(
            **CHILD_ENV,
            KTRDR_WORKER_ID=self.worker_id,
            KTRDR_WORKER_HOST="127.0.0.1",
            KTRDR_WORKER_PORT=str(self.worker_port),
            KTRDR_WORKER_PUBLIC_URL=f"http://127.0.0.1:{self.worker_port}",
            KTRDR_WORKER_BACKEND_URL=f"http://127.0.0.1:{self.backend_port}",
            KTRDR_CHECKPOINT_DIR=str(workdir / "checkpoints"),
        )
        worker_args = [sys.executable, "-m", "ktrdr.workers.training_worker"]
        self.processes.append(spawn(worker_args, worker_env, workdir, log=self.log))
        self.worker = Client(self.worker_port)
        self.wait_idle()

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop(process)

    def wait_idle(self) -> None:
        """Until the worker is idle on its own account and in the backend's registry."""

        def idle() -> bool:
            status, view = self.backend.request("GET", f"/api/v1/workers/{self.worker_id}")
            own, health = self.worker.request("GET", "/health")
            return status == own == 200 and view["status"] == "idle" and health["status"] == "idle"

        wait(idle, "an idle worker")

    def started_at(self, operation_id: str, marker: str = "{id} started") -> float:
        """Wall-clock time of the worker's ``operation <marker>`` log line."""
        marker = "operation " + marker.format(id=operation_id)
        found: list[float] = []

        def logged() -> bool:
            for line in self.log.read_text(errors="replace").splitlines():
                if marker in line:
                    stamp = json.loads(line)["time"]
                    # Log times are cut to the millisecond: add half of one, so the
                    # truncation error averages out instead of biasing every run low.
                    found.append(datetime.datetime.fromisoformat(stamp).timestamp() + 0.0005)
                    return True
            return False

        wait(logged, f"the start of {operation_id}")
        return found[0]

    def through_backend(self) -> tuple[float, float, float]:
        """One run via the backend: POST -> worker started, -> job process, -> 201 (s)."""
        self.wait_idle()
        sent = time.time()
        t0 = time.perf_counter()
        status, view = self.backend.request(
            "POST", "/api/v1/operations", {"type": "training", "parameters": PARAMETERS}
        )
        created = time.perf_counter() - t0
        if status != 201:
            raise SystemExit(f"create answered {status}: {view}")
        operation_id = view["id"]
        wait(
            lambda: (
                self.backend.request("GET", f"/api/v1/operations/{operation_id}")[1]["status"]
                in ("completed", "failed")
            ),
            f"operation {operation_id} to finish",
        )
        job = self.started_at(operation_id, "{id}: job process") - sent
        return self.started_at(operation_id) - sent, job, created

    def direct(self, index: int) -> tuple[float, float]:
        """One baseline run: (POST -> worker started, POST -> 202) in seconds."""
        self.wait_idle()
        operation_id = f"bench-direct-{uuid.uuid4().hex[:12]}-{index}"
        body = {
            "operation_id": operation_id,
            "operation_type": "training",
            "parameters": PARAMETERS,
        }
        sent = time.time()
        t0 = time.perf_counter()
        status, answer = self.worker.request("POST", "/operations", body, token=True)
        accepted = time.perf_counter() - t0
        if status != 202:
            raise SystemExit(f"worker answered {status}: {answer}")
        return self.started_at(operation_id) - sent, accepted


def measure(workdir: Path, database_env: dict[str, str], runs: int) -> dict[str, list[float]]:
    fleet = Fleet(workdir, database_env)
    series: dict[str, list[float]] = {
        "direct": [],
        "accepted": [],
        "backend": [],
        "job": [],
        "created": [],
    }
    try:
        fleet.direct(0)  # warm-ups
        fleet.through_backend()
        for index in range(1, runs + 1):
            started, accepted = fleet.direct(index)
            series["direct"].append(started)
            series["accepted"].append(accepted)
            started, job, created = fleet.through_backend()
            series["backend"].append(started)
            series["job"].append(job)
            series["created"].append(created)
    finally:
        fleet.stop()
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="measured runs of each (default 30)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("KTRDR_TEST_POSTGRES_URL"),
        help="also measure the backend on PostgreSQL (default: $KTRDR_TEST_POSTGRES_URL)",
    )
    args = parser.parse_args()

    print(
        f"runs: {args.runs} of each, interleaved, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; start = the worker's log line (1 ms resolution)"
    )
    sqlite: dict[str, str] = {}
    engines: list[tuple[str, AbstractContextManager[dict[str, str]]]] = [
        ("sqlite", nullcontext(sqlite))
    ]
    if args.postgres_url:
        engines.append(("postgresql", postgres_database(args.postgres_url)))
    medians: dict[str, float] = {}
    for engine, database in engines:
        with tempfile.TemporaryDirectory(prefix="ktrdr-bench-") as tmp, database as env:
            series = measure(Path(tmp), env, args.runs)
        medians[engine] = statistics.median(series["job"]) * 1000
        print(f"--- backend store: {engine}")
        print(f"baseline: POST straight to the worker -> started: {describe(series['direct'])}")
        print(f"          (same runs, POST -> 202 answer:         {describe(series['accepted'])})")
        print(f"backend:  POST /api/v1/operations -> started:   {describe(series['backend'])}")
        print(f"backend:  POST /api/v1/operations -> job runs:  {describe(series['job'])}")
        print(f"          (same runs, POST -> 201 answer:         {describe(series['created'])})")
    met = all(value < TARGET_MEDIAN_MS for value in medians.values())
    figures = ", ".join(f"{engine} {value:.1f} ms" for engine, value in medians.items())
    print(f"target: median < {TARGET_MEDIAN_MS:.0f} ms: {'met' if met else 'MISSED'} ({figures})")


if __name__ == "__main__":
    main()
