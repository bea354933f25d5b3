"""Benchmark: a training worker's resident memory, idle and after one operation.

Run with ``.venv/bin/python benchmarks/bench_worker_memory.py``. In the same run it
measures the baseline: the worker as it was before operations ran in job processes
(``--baseline-rev``, default the last commit with runner threads, exported with
``git archive`` into a temporary directory and put first on ``PYTHONPATH``).

Setup: one backend (current tree) on a free loopback port; each worker is a real
``python -m ktrdr.workers.training_worker`` process that registers with it. Figures
are read from ``/proc``: the worker process's own RSS and PSS, and the PSS of its
whole process tree (PSS shares pages between the processes that map them, so the
tree's PSS is what the worker costs the host; with job processes the tree holds the
fork server that preloads numpy). Measured once registered and idle, then again after
one small training operation (400 bars, 20 epochs) sent straight to the worker.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

from common import base_env, free_port, spawn, stop, wait_until

TOKEN = "bench-memory-token"
BASELINE_REV = "5dcaecf"
SETTLE_S = 1.0
ROOT = Path(__file__).resolve().parent.parent


def get(port: int, path: str) -> dict[str, object] | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        conn.close()
    except OSError:
        return None
    return json.loads(body) if response.status == 200 else None


def post(port: int, path: str, body: dict[str, object]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn.request("POST", path, json.dumps(body), headers)
    status = conn.getresponse().status
    conn.close()
    return status


def kib(pid: int, field: str, file: str) -> int:
    """A ``field: <n> kB`` line of ``/proc/<pid>/<file>``, in KiB."""
    for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += tree(int(child))
    return found


def snapshot(pid: int) -> dict[str, float]:
    """Worker RSS and PSS, and the PSS of its process tree, in MiB."""
    members = tree(pid)
    return {
        "rss": kib(pid, "VmRSS", "status") / 1024,
        "pss": kib(pid, "Pss", "smaps_rollup") / 1024,
        "tree_pss": sum(kib(p, "Pss", "smaps_rollup") for p in members) / 1024,
        "processes": len(members),
    }


def measure(label: str, source: Path | None, backend_port: int, workdir: Path) -> None:
    port = free_port()
    env = base_env(
        KTRDR_AUTH_WORKER_TOKEN=TOKEN,
        KTRDR_WORKER_HOST="127.0.0.1",
        KTRDR_WORKER_PORT=str(port),
        KTRDR_WORKER_PUBLIC_URL=f"http://127.0.0.1:{port}",
        KTRDR_WORKER_BACKEND_URL=f"http://127.0.0.1:{backend_port}",
        KTRDR_CHECKPOINT_DIR=str(workdir / f"checkpoints-{label}"),
        OPENBLAS_NUM_THREADS="1",
    )
    if source is not None:
        env["PYTHONPATH"] = str(source)
    worker = spawn([sys.executable, "-m", "ktrdr.workers.training_worker"], env, workdir)
    try:
        wait_until(
            lambda: bool((get(port, "/health") or {}).get("registered")),
            f"the {label} worker to register",
            timeout_s=60,
            poll_s=0.05,
            process=worker,
        )
        time.sleep(SETTLE_S)  # let the startup work (fork server warm-up) finish
        idle = snapshot(worker.pid)
        operation_id = f"bench-memory-{uuid.uuid4().hex[:8]}"
        body = {
            "operation_id": operation_id,
            "operation_type": "training",
            "parameters": {"bars": 400, "epochs": 20},
        }
        if post(port, "/operations", body) != 202:
            raise SystemExit(f"the {label} worker refused the operation")
        wait_until(
            lambda: (get(port, "/health") or {}).get("status") == "idle",
            f"the {label} worker to finish",
            timeout_s=60,
            poll_s=0.05,
            process=worker,
        )
        time.sleep(SETTLE_S)
        after = snapshot(worker.pid)
    finally:
        stop(worker)
    for when, figures in (("idle", idle), ("after one operation", after)):
        print(
            f"{label:8} {when:20} worker RSS {figures['rss']:6.1f} MiB, "
            f"PSS {figures['pss']:6.1f} MiB; process tree PSS {figures['tree_pss']:6.1f} MiB "
            f"({figures['processes']:.0f} processes)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ktrdr-bench-") as tmp:
        workdir = Path(tmp)
        baseline = workdir / "baseline"
        baseline.mkdir()
        git = shutil.which("git") or "git"
        archive = subprocess.run(
            [git, "archive", args.baseline_rev, "ktrdr"], cwd=ROOT, capture_output=True, check=True
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(baseline, filter="data")
        backend_port = free_port()
        backend_env = base_env(
            KTRDR_AUTH_WORKER_TOKEN=TOKEN,
            KTRDR_API_HOST="127.0.0.1",
            KTRDR_API_PORT=str(backend_port),
            KTRDR_DB_PATH=str(workdir / "ops.db"),
        )
        backend = spawn([sys.executable, "-m", "ktrdr.api.main"], backend_env, workdir)
        try:
            wait_until(
                lambda: get(backend_port, "/health") is not None,
                "the backend",
                timeout_s=60,
                poll_s=0.05,
                process=backend,
            )
            print(f"Python {sys.version.split()[0]}; baseline = {args.baseline_rev}")
            measure("baseline", baseline, backend_port, workdir)
            measure("current", None, backend_port, workdir)
        finally:
            stop(backend)


if __name__ == "__main__":
    main()
