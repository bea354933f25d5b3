"""Benchmark: the report path with the outbox (a durable write per outcome) against the
report path before it, each in a real worker with real job processes.

Run with ``.venv/bin/python benchmarks/bench_report.py``. Target: the outbox's median
within 10% of the baseline's (ratio <= 1.10).

What is timed: from the job process sending its outcome (it stamps ``time.time()``
into the result just before ``conn.send``) to the worker receiving the backend's 200
for ``POST /api/v1/operations/<id>/report`` (an httpx response hook in the worker,
same wall clock). On that path: the worker's supervising thread receives the outcome
and reaps the job's process, the event loop builds the report and sends it; before
the outbox the job host also deleted the completed operation's checkpoint first; with
the outbox the report is written to a temporary file, fsynced, renamed and the
directory fsynced before the POST (in the supervising thread, while the job's process
exits), and the checkpoint is deleted after the backend's answer.

Baseline: the code just before the outbox (by default the parent of the commit that
added ``ktrdr/workers/outbox.py``; ``--baseline-rev`` to choose), exported with ``git
archive`` and put first on ``PYTHONPATH``; current: this tree. Setup: one backend
process (this tree; SQLite in a temporary directory, or PostgreSQL with
``KTRDR_TEST_POSTGRES_URL`` / ``--postgres-url``); each measured worker is a child
process running a ``Worker`` with its HTTP server, registered with the backend like
any worker, whose jobs (``quick_job`` below, run by the real job launcher in forked
job processes) save one 20 KB checkpoint, pause 50 ms, then send a completed outcome
with a result the size of a small training model's (about 5 KB of JSON). Operations
are created through the API one at a time. Rounds alternate baseline and current
workers (a fresh child each round, two warm-up operations discarded each).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from common import base_env, describe, free_port, postgres_database, spawn, stop, wait_until

import ktrdr
from ktrdr.config import WorkerType, validate_all
from ktrdr.job_messages import CheckpointData, JobEntry, JobOutcome
from ktrdr.protocol import OperationStatus
from ktrdr.workers.backend_client import BackendClient
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.entrypoint import job_launcher
from ktrdr.workers.server import build_worker_server
from ktrdr.workers.worker import Worker

TOKEN = "bench-report-token"
OPERATOR_TOKEN = "bench-report-operator-token"
TARGET_RATIO = 1.10
#: The file whose first commit brought the outbox: the baseline is that commit's parent.
OUTBOX_MODULE = "ktrdr/workers/outbox.py"
ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
WARM_UP = 2


def quick_job(conn: Connection, request: Any) -> None:
    """A job process: one checkpoint, a pause, then a completed outcome stamped on send."""
    rng = random.Random(7)
    conn.send(CheckpointData(step=40, meta={"epochs": 50}, state=os.urandom(20 * 1024)))
    time.sleep(0.05)  # the checkpoint is stored before the outcome is on its way
    result = {
        "epochs": 50,
        "final_loss": rng.random(),
        "model": {
            "w1": [[rng.gauss(0, 1) for _ in range(32)] for _ in range(6)],
            "b1": [rng.gauss(0, 1) for _ in range(32)],
            "w2": [rng.gauss(0, 1) for _ in range(32)],
        },
    }
    result["sent_at"] = time.time()
    conn.send(JobOutcome(status=OperationStatus.COMPLETED, result=result))


# -- the measured worker (a child process, on the tree PYTHONPATH names) ----------------


async def worker_child(args: argparse.Namespace) -> None:
    """Serve one worker, run ``args.runs`` operations, print the latencies as JSON.

    Runs on the tree ``PYTHONPATH`` names first (the baseline's or this one).
    """
    environ = {
        "KTRDR_AUTH_WORKER_TOKEN": TOKEN,
        "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "true",
        "KTRDR_WORKER_ID": args.worker_id,
        "KTRDR_WORKER_HOST": "127.0.0.1",
        "KTRDR_WORKER_PORT": str(args.port),
        "KTRDR_WORKER_PUBLIC_URL": f"http://127.0.0.1:{args.port}",
        "KTRDR_WORKER_BACKEND_URL": args.backend_url,
        "KTRDR_WORKER_HEARTBEAT_INTERVAL": "10s",
        "KTRDR_CHECKPOINT_DIR": str(Path(args.workdir) / "checkpoints"),
        "KTRDR_LOG_LEVEL": "WARNING",
    }
    config = validate_all("worker", environ, worker_type=WorkerType.TRAINING, env_file=None)
    checkpoints = CheckpointStore(settings=config.checkpoint)
    launcher = job_launcher(config, checkpoints, entry=JobEntry("bench_report", "quick_job"))
    acknowledged: dict[str, float] = {}

    async def on_response(response: httpx.Response) -> None:
        now = time.time()
        if response.request.url.path.endswith("/report") and response.status_code == 200:
            sent_at = json.loads(response.request.content)["result"]["sent_at"]
            acknowledged[response.request.url.path.split("/")[-2]] = now - sent_at

    latencies: list[float] = []
    async with (
        httpx.AsyncClient(event_hooks={"response": [on_response]}) as http,
        httpx.AsyncClient(headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}) as operator,
    ):
        backend = BackendClient(
            http=http,
            base_url=args.backend_url,
            token=config.auth.worker_token,
            timeout=config.worker.registration_timeout,
        )
        worker = Worker(
            settings=config.worker,
            checkpoint=config.checkpoint,
            launcher=launcher,
            backend=backend,
            clock=time.monotonic,
        )
        server = build_worker_server(worker, auth=config.auth, logging_settings=config.logging)
        serving = asyncio.create_task(server.serve())
        while not worker.registered:
            await asyncio.sleep(0.01)
        for index in range(args.runs + WARM_UP):
            answer = await operator.post(
                args.backend_url + "/api/v1/operations",
                json={"type": "training", "parameters": {"epochs": 50}},
            )
            answer.raise_for_status()
            operation_id = answer.json()["id"]
            deadline = time.monotonic() + 60
            while operation_id not in acknowledged or worker.status.value != "idle":
                if time.monotonic() > deadline:
                    raise SystemExit(f"operation {operation_id} was not reported in 60 s")
                await asyncio.sleep(0.005)
            if index >= WARM_UP:
                latencies.append(acknowledged[operation_id])
        server.should_exit = True
        await serving
    print(json.dumps({"ktrdr": str(Path(ktrdr.__file__).parent), "latencies": latencies}))


# -- the parent: backend, trees, rounds -------------------------------------------------


def write_costs(directory: Path, count: int) -> list[float]:
    """Seconds per ``Outbox.put`` of a report the size the workers send (two fsyncs)."""
    from ktrdr.workers.outbox import Outbox  # here: the baseline's worker children lack it

    outbox = Outbox(directory=directory / "outbox-alone")
    rng = random.Random(7)
    report = {
        "worker_id": "bench",
        "status": "completed",
        "result": {"model": [[rng.gauss(0, 1) for _ in range(32)] for _ in range(8)]},
    }
    costs = []
    for index in range(count):
        started = time.perf_counter()
        entry = outbox.put(f"op-{index}", report)
        costs.append(time.perf_counter() - started)
        outbox.remove(entry)
    return costs


def before_outbox() -> str:
    """The commit just before the one that added the outbox module."""
    git = shutil.which("git") or "git"
    added = subprocess.run(
        [git, "log", "--diff-filter=A", "--format=%H", "--", OUTBOX_MODULE],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not added:
        raise SystemExit(f"no commit adds {OUTBOX_MODULE}; pass --baseline-rev")
    return f"{added[-1]}^"


def export_baseline(revision: str, directory: Path) -> Path:
    """``ktrdr/`` at ``revision``, extracted under ``directory``."""
    git = shutil.which("git") or "git"
    archive = subprocess.run(
        [git, "archive", revision, "ktrdr"], cwd=ROOT, capture_output=True, check=True
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return directory


def run_child(tree: Path | None, backend_url: str, workdir: Path, runs: int) -> list[float]:
    """One worker child on ``tree`` (None: this one); its latencies in seconds."""
    name = f"bench-report-{uuid.uuid4().hex[:8]}"
    child_dir = workdir / name
    child_dir.mkdir()
    env = base_env(PYTHONPATH=os.pathsep.join(str(p) for p in (tree, HERE) if p is not None))
    done = subprocess.run(
        [sys.executable, str(Path(__file__)), "--child", "--runs", str(runs),
         "--backend-url", backend_url, "--worker-id", name, "--port", str(free_port()),
         "--workdir", str(child_dir)],
        env=env, cwd=child_dir, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"worker child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    expected = str(tree / "ktrdr") if tree is not None else str(ROOT / "ktrdr")
    if answer["ktrdr"] != expected:
        raise SystemExit(f"the child ran {answer['ktrdr']}, not {expected}")
    latencies: list[float] = answer["latencies"]
    return latencies


def measure(
    database: dict[str, str], baseline: Path, workdir: Path, rounds: int, runs: int
) -> dict[str, list[float]]:
    port = free_port()
    env = base_env(
        KTRDR_AUTH_WORKER_TOKEN=TOKEN,
        KTRDR_AUTH_OPERATOR_TOKEN=OPERATOR_TOKEN,
        KTRDR_API_HOST="127.0.0.1",
        KTRDR_API_PORT=str(port),
        KTRDR_DB_PATH=str(workdir / "ops.db"),
        KTRDR_WORKER_HEARTBEAT_INTERVAL="10s",
        **database,
    )
    backend = spawn([sys.executable, "-m", "ktrdr.api.main"], env, workdir)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    series: dict[str, list[float]] = {"baseline": [], "outbox": []}
    try:
        wait_until(healthy, "the backend", timeout_s=60, poll_s=0.05, process=backend)
        for round_index in range(rounds):
            order = [("baseline", baseline), ("outbox", None)]
            for name, tree in order if round_index % 2 == 0 else reversed(order):
                series[name].extend(run_child(tree, url, workdir, runs))
    finally:
        stop(backend)
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    parser.add_argument("--runs", type=int, default=25, help="operations per worker and round")
    parser.add_argument(
        "--baseline-rev", default=None, help="the baseline (default: just before the outbox)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("KTRDR_TEST_POSTGRES_URL"),
        help="also measure on PostgreSQL (default: $KTRDR_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend-url", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(worker_child(args))
        return
    if args.baseline_rev is None:
        args.baseline_rev = before_outbox()
    print(
        f"{args.rounds} rounds x {args.runs} operations per tree, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs; baseline = {args.baseline_rev}"
    )
    ratios: dict[str, float] = {}
    engines = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    for engine in engines:
        with tempfile.TemporaryDirectory(prefix="ktrdr-bench-") as tmp:
            workdir = Path(tmp)
            baseline = export_baseline(args.baseline_rev, workdir / "baseline")
            if engine == "sqlite":
                series = measure({}, baseline, workdir, args.rounds, args.runs)
            else:
                with postgres_database(args.postgres_url) as database:
                    series = measure(database, baseline, workdir, args.rounds, args.runs)
            writes = write_costs(workdir, args.rounds * args.runs)
        medians = {name: statistics.median(values) for name, values in series.items()}
        ratios[engine] = medians["outbox"] / medians["baseline"]
        print(f"--- backend store: {engine}")
        print(f"baseline: outcome sent -> report acknowledged:  {describe(series['baseline'])}")
        print(f"outbox:   outcome sent -> report acknowledged:  {describe(series['outbox'])}")
        print(f"(the outbox write alone, Outbox.put, same disk: {describe(writes)})")
        print(f"ratio of medians (outbox / baseline): {ratios[engine]:.3f}")
    met = all(ratio <= TARGET_RATIO for ratio in ratios.values())
    figures = ", ".join(f"{engine} {ratio:.3f}" for engine, ratio in ratios.items())
    print(f"target: ratio <= {TARGET_RATIO:.2f}: {'met' if met else 'MISSED'} ({figures})")


if __name__ == "__main__":
    main()
