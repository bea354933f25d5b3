"""Benchmark: worker cold start, from process spawn to "visible in the backend's list".

Run with ``.venv/bin/python benchmarks/bench_worker_start.py``. In the same run it
measures two references, from process spawn to their first HTTP response: the
baseline, a bare uvicorn + Starlette app with one route, and the floor of the
worker's stack, the same app in a process that also imports the configuration
package, the pydantic wire protocol and httpx (without its command-line client).
The target is the worker's median <= 3 x the baseline's median; the floor shows how
much of that the chosen stack takes before any worker code runs.

Setup: one backend (``python -m ktrdr.api.main``) is started first and stays warm.
Each worker run spawns ``python -m ktrdr.workers.training_worker`` on a free loopback
port and polls ``GET /api/v1/workers/<id>`` on the backend over a keep-alive
connection until it answers 200, so the figure includes interpreter start, imports,
configuration validation, the server bind and the registration round trip. Baseline,
floor and worker runs alternate so all see the same machine state; the first run of
each is a discarded warm-up (file cache). Every child is stopped before the next run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from common import base_env, describe, free_port, spawn, stop, wait_until

TARGET_RATIO = 3.0
POLL_S = 0.005
TIMEOUT_S = 60.0

BARE_APP = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def hello(request):
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/", hello)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

#: The floor of the worker's stack: the bare app, plus importing what any worker on this
#: stack must load before it can answer and register: the configuration package, the
#: pydantic wire protocol and httpx (without its command-line client, which a server
#: never runs: ``None`` in ``sys.modules`` makes httpx take its own ImportError fallback).
FLOOR_IMPORTS = """
import sys
sys.modules["httpx._main"] = None
import httpx
import ktrdr.config
import ktrdr.protocol
"""
FLOOR_APP = FLOOR_IMPORTS + BARE_APP


#: What the worker entrypoint imports before it validates its configuration.
IMPORTS_ONLY = (
    "from ktrdr.startup import without_unused_imports; without_unused_imports(); "
    "import ktrdr.workers.entrypoint"
)

#: The backend's operator token: the probe reads an operator route (GET /api/v1/workers/<id>).
OPERATOR_TOKEN = "bench-start-operator-token"


def poll_status(port: int, path: str, wanted: int) -> Callable[[], bool]:
    """A probe: True once ``GET path`` on ``port`` answers ``wanted`` (operator token sent)."""
    connection: list[http.client.HTTPConnection] = []

    def probe() -> bool:
        try:
            if not connection:
                connection.append(http.client.HTTPConnection("127.0.0.1", port, timeout=5))
            conn = connection[0]
            conn.request("GET", path, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
            response = conn.getresponse()
            response.read()
            return response.status == wanted
        except OSError:
            if connection:
                connection.pop().close()
            return False

    return probe


class Timing(NamedTuple):
    """Spawn -> ready, as waited (wall) and as the child's own CPU time (user + system)."""

    wall: float
    cpu: float


def cpu_seconds(pid: int) -> float:
    """CPU time ``pid`` has used so far (``/proc/<pid>/stat``; clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_until(process: subprocess.Popen[bytes], probe: Callable[[], bool], t0: float) -> Timing:
    """Wall seconds from ``t0`` until ``probe`` passes, and the child's CPU seconds by then.

    SystemExit if the child exits first.
    """
    wait_until(probe, "the child", timeout_s=TIMEOUT_S, poll_s=POLL_S, process=process)
    wall = time.perf_counter() - t0
    return Timing(wall, cpu_seconds(process.pid))


def run_app(workdir: Path, code: str) -> Timing:
    """Spawn -> first answer of a one-route uvicorn + Starlette app run from ``code``."""
    port = free_port()
    t0 = time.perf_counter()
    process = spawn([sys.executable, "-c", code, str(port)], base_env(), workdir)
    try:
        return time_until(process, poll_status(port, "/", 200), t0)
    finally:
        stop(process)


def run_worker(workdir: Path, backend_port: int, index: int) -> Timing:
    port = free_port()
    worker_id = f"bench-training-{index}"
    env = base_env(
        KTRDR_WORKER_ID=worker_id,
        KTRDR_WORKER_HOST="127.0.0.1",
        KTRDR_WORKER_PORT=str(port),
        KTRDR_WORKER_PUBLIC_URL=f"http://127.0.0.1:{port}",
        KTRDR_WORKER_BACKEND_URL=f"http://127.0.0.1:{backend_port}",
    )
    probe = poll_status(backend_port, f"/api/v1/workers/{worker_id}", 200)
    t0 = time.perf_counter()
    process = spawn([sys.executable, "-m", "ktrdr.workers.training_worker"], env, workdir)
    try:
        return time_until(process, probe, t0)
    finally:
        stop(process)


def run_imports(workdir: Path) -> float:
    """Reference: spawn -> exit of an interpreter that only imports what a worker imports."""
    t0 = time.perf_counter()
    code = IMPORTS_ONLY
    subprocess.run([sys.executable, "-c", code], env=base_env(), cwd=workdir, check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs of each (default 15)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ktrdr-bench-") as tmp:
        workdir = Path(tmp)
        backend_port = free_port()
        backend = spawn(
            [sys.executable, "-m", "ktrdr.api.main"],
            base_env(
                KTRDR_API_PORT=str(backend_port),
                KTRDR_API_HOST="127.0.0.1",
                KTRDR_AUTH_OPERATOR_TOKEN=OPERATOR_TOKEN,
            ),
            workdir,
        )
        try:
            time_until(backend, poll_status(backend_port, "/health", 200), time.perf_counter())
            run_app(workdir, BARE_APP)  # warm-up
            run_app(workdir, FLOOR_APP)
            run_worker(workdir, backend_port, 0)
            bare: list[Timing] = []
            floor: list[Timing] = []
            worker: list[Timing] = []
            imports: list[float] = []
            for index in range(1, args.runs + 1):
                bare.append(run_app(workdir, BARE_APP))
                floor.append(run_app(workdir, FLOOR_APP))
                worker.append(run_worker(workdir, backend_port, index))
                imports.append(run_imports(workdir))
        finally:
            stop(backend)

    def median(series: list[Timing], kind: str) -> float:
        return statistics.median(getattr(t, kind) for t in series)

    ratio = median(worker, "wall") / median(bare, "wall")
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(
        f"runs: {args.runs} each, interleaved, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    # Seven-wide columns and no max: the layout of the figures in benchmarks/README.md.
    rows = (
        ("baseline (bare uvicorn+Starlette, spawn -> first response)", bare),
        ("floor (+ config, protocol, httpx w/o CLI, first response) ", floor),
        ("worker (spawn -> listed by the backend)                   ", worker),
    )
    for label, series in rows:
        wall = describe([t.wall for t in series], width=7, with_max=False)
        print(f"{label}: {wall} | CPU median {median(series, 'cpu') * 1000:5.0f} ms")
    imports_ms = describe(imports, width=7, with_max=False)
    print(f"reference: spawn -> exit, the worker's imports only:        {imports_ms}")
    for label, series in (("floor", floor), ("worker", worker)):
        wall_ratio = median(series, "wall") / median(bare, "wall")
        cpu_ratio = median(series, "cpu") / median(bare, "cpu")
        print(f"{label} / baseline: wall {wall_ratio:.2f}, CPU {cpu_ratio:.2f}")
    print(f"target: worker wall <= {TARGET_RATIO} x baseline: {verdict} ({ratio:.2f})")


if __name__ == "__main__":
    main()
