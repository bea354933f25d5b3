"""Benchmark: 1,000 tiny operations on 4 workers, ktrdr against rq on the local Redis.

Run with ``.venv/bin/python benchmarks/bench_tiny_ops.py`` (needs the ``bench`` extra:
``pip install -e .[bench]``, and Redis at ``--redis-url``, default
``redis://127.0.0.1:6379/0``). What it measures is coordination: operations whose own
work is a few milliseconds, so the figure is what the backend, the workers and the
store cost per operation.

ktrdr: a real backend (``python -m ktrdr.api.main``) and 4 real training workers
(``python -m ktrdr.workers.training_worker``) on loopback, all registered and idle;
then the benchmark creates the operations (``POST /api/v1/operations``, training with
100 bars and 1 epoch, each run in its own job process by its worker) over one
keep-alive connection and waits until every one has finished. Progress is read from
the database directly (SQLite file or PostgreSQL database), so watching does not load
the backend. Backend CPU is the user + system time of the backend process
(``/proc/<pid>/stat``) over the batch, divided by the operations.

Peer, in the same run: rq with 4 ``rq worker`` processes (its default worker forks a
work horse per job, as ktrdr runs each operation in a job process), already started
and registered; the benchmark enqueues the same number of jobs (``tiny_job.tiny``,
which returns at once) from one connection and waits until all are finished.

Figures: operations/s from the first create (enqueue) to the last finish, per store
(SQLite, and PostgreSQL with ``--postgres-url`` or ``KTRDR_TEST_POSTGRES_URL``, in a
fresh database dropped afterwards). Targets: ktrdr >= 0.6 x rq operations/s and
backend CPU <= 3 ms per operation, on both stores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from common import base_env, free_port, postgres_database, spawn, stop, wait_until

TOKEN = "bench-tiny-token"
OPERATOR_TOKEN = "bench-tiny-operator-token"
PARAMETERS = {"bars": 100, "epochs": 1, "seed": 1}
TARGET_RATIO = 0.6
TARGET_CPU_MS = 3.0
READY_TIMEOUT_S = 60.0
CHILD_ENV = {
    "KTRDR_AUTH_WORKER_TOKEN": TOKEN,
    "KTRDR_AUTH_OPERATOR_TOKEN": OPERATOR_TOKEN,
    "KTRDR_WORKER_HEARTBEAT_INTERVAL": "1s",
    "KTRDR_LOG_LEVEL": "WARNING",
}
BENCH_DIR = Path(__file__).resolve().parent


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


class Client:
    """One keep-alive HTTP/1.1 connection to the backend, JSON in and out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {OPERATOR_TOKEN}",
        }
        payload = None if body is None else json.dumps(body)
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except OSError:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return 0, None
        return response.status, json.loads(data) if data else None


def status_counter(workdir: Path, database_env: dict[str, str]) -> Callable[[], dict[str, int]]:
    """Counts of operations by status, read straight from the backend's database."""
    query = "SELECT status, count(*) FROM operations GROUP BY status"
    if database_env.get("KTRDR_DB_ENGINE") == "postgresql":
        import psycopg

        conn: Any = psycopg.connect(
            host=database_env["KTRDR_DB_HOST"],
            port=int(database_env["KTRDR_DB_PORT"]),
            dbname=database_env["KTRDR_DB_NAME"],
            user=database_env["KTRDR_DB_USER"],
            autocommit=True,
        )
    else:
        conn = sqlite3.connect(f"file:{workdir / 'backend.db'}?mode=ro", uri=True, timeout=30)

    def counts() -> dict[str, int]:
        return {status: int(count) for status, count in conn.execute(query).fetchall()}

    return counts


class KtrdrFleet:
    """A backend and ``workers`` training workers as child processes."""

    def __init__(self, workdir: Path, database_env: dict[str, str], workers: int) -> None:
        self.port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        backend_env = base_env(
            **CHILD_ENV,
            KTRDR_API_HOST="127.0.0.1",
            KTRDR_API_PORT=str(self.port),
            KTRDR_DB_PATH=str(workdir / "backend.db"),
            KTRDR_OPS_MAX_OPERATIONS="100000",
            **database_env,
        )
        self.backend = spawn(
            [sys.executable, "-m", "ktrdr.api.main"], backend_env, workdir, log=workdir / "b.log"
        )
        self.processes.append(self.backend)
        self.client = Client(self.port)
        wait_until(
            lambda: self.client.request("GET", "/health")[0] == 200,
            "the backend",
            timeout_s=READY_TIMEOUT_S,
            poll_s=0.05,
            process=self.backend,
        )
        for index in range(workers):
            port = free_port()
            env = base_env(
                **CHILD_ENV,
                KTRDR_WORKER_ID=f"bench-tiny-{index}",
                KTRDR_WORKER_HOST="127.0.0.1",
                KTRDR_WORKER_PORT=str(port),
                KTRDR_WORKER_PUBLIC_URL=f"http://127.0.0.1:{port}",
                KTRDR_WORKER_BACKEND_URL=f"http://127.0.0.1:{self.port}",
                KTRDR_CHECKPOINT_DIR=str(workdir / f"checkpoints-{index}"),
            )
            args = [sys.executable, "-m", "ktrdr.workers.training_worker"]
            self.processes.append(spawn(args, env, workdir, log=workdir / f"w{index}.log"))
        wait_until(
            lambda: self.idle_workers() == workers,
            f"{workers} idle workers",
            timeout_s=READY_TIMEOUT_S,
            poll_s=0.1,
            process=self.backend,
        )

    def idle_workers(self) -> int:
        status, page = self.client.request("GET", "/api/v1/workers?status=idle")
        return len(page) if status == 200 else -1

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop(process)


def run_ktrdr(
    workdir: Path, database_env: dict[str, str], count: int, workers: int
) -> dict[str, float]:
    """Operations/s and backend CPU ms per operation for one batch of ``count``."""
    fleet = KtrdrFleet(workdir, database_env, workers)
    counts = status_counter(workdir, database_env)
    try:
        cpu0 = cpu_seconds(fleet.backend.pid)
        t0 = time.perf_counter()
        for _ in range(count):
            status, view = fleet.client.request(
                "POST", "/api/v1/operations", {"type": "training", "parameters": PARAMETERS}
            )
            if status != 201:
                raise SystemExit(f"create answered {status}: {view}")
        created = time.perf_counter() - t0
        wait_until(
            lambda: sum(counts().get(s, 0) for s in ("completed", "failed", "cancelled")) >= count,
            f"{count} operations to finish",
            timeout_s=max(120.0, count * 0.5),
            poll_s=0.05,
            process=fleet.backend,
        )
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(fleet.backend.pid) - cpu0
        final = counts()
    finally:
        fleet.stop()
    return {
        "ops_s": count / elapsed,
        "cpu_ms": cpu / count * 1000,
        "create_ms": created / count * 1000,
        "failed": float(final.get("failed", 0) + final.get("cancelled", 0)),
    }


def rq_unavailable(redis_url: str) -> str | None:
    """Why the rq peer cannot run here (the extra is missing, Redis does not answer), or None."""
    try:
        import rq  # noqa: F401
        from redis import Redis
        from redis.exceptions import RedisError
    except ImportError:
        return "rq is not installed: pip install -e '.[bench]'"
    client = Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except RedisError as exc:
        return f"no Redis answers at --redis-url: {exc}"
    finally:
        client.close()
    return None


def run_rq(workdir: Path, redis_url: str, count: int, workers: int) -> dict[str, float]:
    """Operations/s of rq with ``workers`` workers for ``count`` tiny jobs."""
    import tiny_job
    from redis import Redis
    from rq import Queue, Worker

    redis = Redis.from_url(redis_url)
    name = f"bench-tiny-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, connection=redis)
    rq_cli = str(Path(sys.executable).parent / "rq")
    env = base_env(PYTHONPATH=str(BENCH_DIR))
    processes = [
        spawn(
            [rq_cli, "worker", "--url", redis_url, "--quiet", "-n", f"{name}-{i}", name],
            env,
            workdir,
            log=workdir / f"rq{i}.log",
        )
        for i in range(workers)
    ]
    try:
        wait_until(
            lambda: Worker.count(connection=redis, queue=queue) == workers,
            f"{workers} rq workers",
            timeout_s=READY_TIMEOUT_S,
            poll_s=0.1,
        )
        t0 = time.perf_counter()
        for index in range(count):
            queue.enqueue(tiny_job.tiny, index)
        wait_until(
            lambda: queue.finished_job_registry.count + queue.failed_job_registry.count >= count,
            f"{count} rq jobs",
            timeout_s=max(120.0, count * 0.5),
            poll_s=0.05,
        )
        elapsed = time.perf_counter() - t0
        failed = queue.failed_job_registry.count
    finally:
        for process in processes:
            stop(process)
        for key in redis.scan_iter(f"rq:*{name}*"):
            redis.delete(key)
        redis.close()
    return {"ops_s": count / elapsed, "failed": float(failed)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("KTRDR_TEST_POSTGRES_URL"),
        help="also run ktrdr on PostgreSQL (default: $KTRDR_TEST_POSTGRES_URL)",
    )
    args = parser.parse_args()

    engines: list[tuple[str, AbstractContextManager[dict[str, str]]]] = [
        ("sqlite", nullcontext({}))
    ]
    if args.postgres_url:
        engines.append(("postgresql", postgres_database(args.postgres_url)))
    print(
        f"{args.operations} tiny operations, {args.workers} workers, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    rows: list[tuple[str, dict[str, float]]] = []
    rq_figures = None
    problem = rq_unavailable(args.redis_url)
    if problem is None:
        with tempfile.TemporaryDirectory(prefix="ktrdr-bench-") as tmp:
            rq_figures = run_rq(Path(tmp), args.redis_url, args.operations, args.workers)
        rows.append(("rq (peer)", rq_figures))
    else:
        print(f"rq (peer): skipped ({problem}); ktrdr is measured without the ratio")
    for engine, database in engines:
        with tempfile.TemporaryDirectory(prefix="ktrdr-bench-") as tmp, database as env:
            rows.append(
                (f"ktrdr {engine}", run_ktrdr(Path(tmp), env, args.operations, args.workers))
            )
    peer = None if rq_figures is None else rq_figures["ops_s"]
    print(f"{'system':<18} {'ops/s':>8} {'x rq':>6} {'backend CPU ms/op':>18} {'failed':>7}")
    met = True
    for name, figures in rows:
        ratio = None if peer is None else figures["ops_s"] / peer
        ratio_text = "-" if ratio is None else f"{ratio:.2f}"
        cpu = figures.get("cpu_ms")
        cpu_text = "" if cpu is None else f"{cpu:.2f}"
        print(
            f"{name:<18} {figures['ops_s']:>8.1f} {ratio_text:>6} {cpu_text:>18} "
            f"{int(figures['failed']):>7}"
        )
        if cpu is not None:
            met = met and (ratio is None or ratio >= TARGET_RATIO) and cpu <= TARGET_CPU_MS
    unmeasured = " (the ratio not measured: no rq peer)" if peer is None else ""
    print(
        f"targets: >= {TARGET_RATIO} x rq ops/s and <= {TARGET_CPU_MS} ms backend CPU "
        f"per operation: {'met' if met else 'MISSED'}{unmeasured}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
