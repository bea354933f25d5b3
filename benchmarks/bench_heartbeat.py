"""Benchmark: backend heartbeat throughput and latency with 1,000 registered workers.

Run with ``.venv/bin/python benchmarks/bench_heartbeat.py``. In the same run it
measures a baseline: a bare Starlette app on uvicorn whose heartbeat route does the
same dict update (parse the JSON body, check the worker id, update status, current
operation and time, answer with the record as JSON). Targets: the backend's
requests/s >= 0.5 x the baseline's, and its p99 latency under 50 ms.

Setup: each server is a separate process on a free loopback port (started with the
same uvicorn defaults: h11, asyncio loop, no access log). 1,000 workers are
registered first (through the real API for the backend, pre-filled for the
baseline). The load generator runs in this process: ``--connections`` keep-alive
HTTP/1.1 connections, each sending ``POST /api/v1/workers/<id>/heartbeat`` back to
back (ids round-robin over the 1,000, each with its own credential from its
registration, as real workers send them; the baseline gets the same header and does
not check it), for a warm-up second
and then ``--seconds`` measured seconds, after which it stops by itself. Baseline
and backend rounds alternate (``--rounds``) so machine noise hits both; requests/s is
the median round, latency percentiles are over every measured request, from write to
complete response.

Tracing: the backend is measured twice in the same rounds, with tracing off (the
default) and on (``KTRDR_OTEL_ENABLED=true``, exporting to an OTLP endpoint where
nothing listens: spans are batched and dropped, the worst case for the exporter).
``--before DIR`` adds a backend run from another checkout (``git worktree add DIR
<commit before tracing>``), to show what tracing off costs against the code before it.
Targets: tracing on >= 0.5 x the baseline with p99 < 50 ms; tracing off within 5% of
the code before it.

Metrics: the default backend counts Prometheus metrics (``KTRDR_METRICS_ENABLED``
defaults to true; each heartbeat increments a counter); a fourth server runs with
metrics off, in the same rounds. With ``--before`` pointing at a checkout from before
the metrics, the same comparison shows what they cost against the code without them.
Targets: metrics on >= 0.5 x the baseline with p99 < 50 ms; metrics off within 5% of
the code before them (and of metrics on).

Attempts: every heartbeat is a busy worker's, naming its running operation
(``op-bench-NNNN``, put in each backend's database before it starts by
``prefill_running.py``, with that backend's code) and its attempt 1, so the backend
checks that the attempt is current (from its in-memory book after the first read) and
stamps the operation. ``--before-legacy`` says the ``--before`` checkout predates
numbered attempts: its heartbeats name the operation without an attempt, as its
workers send them. Target: the heartbeat path with attempts within 10% of the code
before them.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from common import free_port, spawn, stop, wait_until
from prefill_running import operation_id

WORKERS = 1000
TOKEN = "bench-heartbeat-token"
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
#: Most throughput that tracing off may cost against the code before tracing.
TRACING_OFF_COST = 0.05

BARE_APP = """
import json, sys, datetime
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

workers = {
    f"bench-{i:04d}": {"worker_id": f"bench-{i:04d}", "status": "idle",
                       "current_operation_id": None, "last_heartbeat_at": None}
    for i in range(int(sys.argv[2]))
}

async def heartbeat(request):
    body = json.loads(await request.body())
    record = workers.get(request.path_params["worker_id"])
    if record is None or "status" not in body:
        return JSONResponse({"error": "unknown_worker"}, status_code=404)
    record.update(
        status=body["status"],
        current_operation_id=body.get("current_operation_id"),
        last_heartbeat_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
    )
    return JSONResponse(record)

app = Starlette(routes=[Route("/api/v1/workers/{worker_id}/heartbeat", heartbeat,
                              methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def answers(port: int, path: str) -> Callable[[], bool]:
    """A probe: True once ``path`` on ``port`` gives any HTTP answer."""

    def probe() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("POST" if "heartbeat" in path else "GET", path, body=b"{}")
            conn.getresponse().read()
            conn.close()
        except OSError:
            return False
        return True

    return probe


def register_all(
    port: int,
    count: int = WORKERS,
    *,
    interval_s: float = 10,
    timings: list[float] | None = None,
) -> dict[str, str]:
    """Register ``count`` workers one after another; each one's credential by worker id.

    ``timings``, if given, receives each registration's seconds (request to answer).
    """
    credentials: dict[str, str] = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(count):
        body = json.dumps(
            {
                "worker_id": f"bench-{i:04d}",
                "worker_type": "training" if i % 2 else "backtest",
                # A closed loopback port: never called (no operations), and nothing answers.
                "endpoint_url": f"http://127.0.0.1:9/bench-{i:04d}",
                "heartbeat_interval_s": interval_s,
                "config_fingerprint": "0123456789abcdef",
            }
        )
        sent = time.perf_counter()
        conn.request(
            "POST",
            "/api/v1/workers/register",
            body=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        answer = response.read()
        if timings is not None:
            timings.append(time.perf_counter() - sent)
        if response.status not in (200, 201):
            raise SystemExit(f"registration failed: {response.status}")
        credentials[f"bench-{i:04d}"] = json.loads(answer)["credential"]
    conn.close()
    return credentials


def heartbeat_request(
    worker_id: str, port: int, credential: str, *, names: str | None = None
) -> bytes:
    """One heartbeat of ``worker_id``, as raw HTTP/1.1.

    ``names``: None for an idle worker's heartbeat (``bench_fleet_scale.py``: its fake
    workers run no operation, and a heartbeat naming an operation the worker does not
    run is refused, 409 ``stale_attempt``); ``"attempt"`` for a busy worker's,
    naming its running operation (``op-<worker id>``, prefilled) and attempt 1, as this
    code's workers send it; ``"legacy"`` names the operation only, as workers from
    before numbered attempts do (what a backend from before them understands).
    """
    if names is None:
        payload: dict[str, object] = {"status": "idle"}
    else:
        payload = {"status": "busy", "current_operation_id": operation_id(worker_id)}
        if names == "attempt":
            payload["attempt"] = 1
    body = json.dumps(payload).encode()
    head = (
        f"POST /api/v1/workers/{worker_id}/heartbeat HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {credential}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def load(
    port: int,
    connections: int,
    seconds: float,
    credentials: dict[str, str],
    *,
    beside: Callable[[float, float], Awaitable[None]] | None = None,
    names: str | None = None,
) -> tuple[int, list[float], int]:
    """Drive heartbeats; returns (measured requests, latencies s, errors).

    Ids go round-robin over ``credentials`` (worker id -> its credential); ``names``
    says what the heartbeats name (:func:`heartbeat_request`). ``beside``,
    if given, runs alongside for the whole round (other clients of the same server),
    called with the round's ``perf_counter`` times (measure from, stop at).
    """
    requests = [
        heartbeat_request(worker_id, port, credential, names=names)
        for worker_id, credential in credentials.items()
    ]
    count = len(requests)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + 1.0
    stop_at = measure_from + seconds

    async def client(offset: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        index = offset
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                break
            writer.write(requests[index % count])
            index += connections
            status = await read_response(reader)
            done = time.perf_counter()
            if sent >= measure_from:
                latencies.append(done - sent)
                if status != 200:
                    errors += 1
        writer.close()
        await writer.wait_closed()

    others = [] if beside is None else [beside(measure_from, stop_at)]
    await asyncio.gather(*(client(i) for i in range(connections)), *others)
    return len(latencies), latencies, errors


def summarise(rounds: list[tuple[int, list[float], int]], seconds: float) -> dict[str, float]:
    """Median requests/s over the rounds; latency percentiles over every request."""
    latencies = sorted(latency for _, round_latencies, _ in rounds for latency in round_latencies)
    return {
        "rps": statistics.median(count / seconds for count, _, _ in rounds),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
        "errors": sum(errors for _, _, errors in rounds),
    }


def prefill(server_env: dict[str, str], workdir: Path) -> None:
    """Give every benchmark worker its running operation in the server's database, with
    the server's code (``PYTHONPATH``): the heartbeats name real running operations.
    """
    script = Path(__file__).with_name("prefill_running.py")
    subprocess.run(
        [sys.executable, str(script), server_env["KTRDR_DB_PATH"], str(WORKERS)],
        env=server_env,
        cwd=workdir,
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each (5)")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument(
        "--before", type=Path, default=None, help="checkout of the code before tracing"
    )
    parser.add_argument(
        "--before-legacy",
        action="store_true",
        help="the --before checkout predates numbered attempts: its heartbeats name no attempt",
    )
    args = parser.parse_args()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    with tempfile.TemporaryDirectory(prefix="ktrdr-bench-") as tmp:
        workdir = Path(tmp)
        bare_port, backend_port = free_port(), free_port()
        backend_env = {
            **env,
            "KTRDR_API_HOST": "127.0.0.1",
            "KTRDR_API_PORT": str(backend_port),
            "KTRDR_AUTH_WORKER_TOKEN": TOKEN,
            "KTRDR_LOG_LEVEL": "WARNING",
            "KTRDR_DB_PATH": str(workdir / "ours.db"),
            # The prefilled operations run for the whole benchmark: between its rounds
            # (while the other servers are measured) none is orphaned and retried.
            "KTRDR_ORPHAN_TIMEOUT": "1h",
        }
        bare = spawn([sys.executable, "-c", BARE_APP, str(bare_port), str(WORKERS)], env, workdir)
        prefill(backend_env, workdir)
        backend = spawn([sys.executable, "-m", "ktrdr.api.main"], backend_env, workdir)
        traced_port = free_port()
        traced_env = {
            **backend_env,
            "KTRDR_API_PORT": str(traced_port),
            "KTRDR_DB_PATH": str(workdir / "traced.db"),
            "KTRDR_OTEL_ENABLED": "true",
            "KTRDR_OTEL_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        }
        prefill(traced_env, workdir)
        traced = spawn([sys.executable, "-m", "ktrdr.api.main"], traced_env, workdir)
        quiet_port = free_port()
        quiet_env = {
            **backend_env,
            "KTRDR_API_PORT": str(quiet_port),
            "KTRDR_DB_PATH": str(workdir / "quiet.db"),
            "KTRDR_METRICS_ENABLED": "false",
        }
        prefill(quiet_env, workdir)
        quiet = spawn([sys.executable, "-m", "ktrdr.api.main"], quiet_env, workdir)
        servers = {
            "ours": (backend_port, backend),
            "traced": (traced_port, traced),
            "quiet": (quiet_port, quiet),
        }
        if args.before is not None:
            before_port = free_port()
            before_env = {
                **backend_env,
                "KTRDR_API_PORT": str(before_port),
                "KTRDR_DB_PATH": str(workdir / "before.db"),
                "PYTHONPATH": str(args.before.resolve()),
            }
            prefill(before_env, workdir)
            before = spawn([sys.executable, "-m", "ktrdr.api.main"], before_env, workdir)
            servers["before"] = (before_port, before)
        try:
            bare_ready = answers(bare_port, "/api/v1/workers/bench-0000/heartbeat")
            wait_until(bare_ready, "the baseline server", timeout_s=60, poll_s=0.02, process=bare)
            credentials = {}
            for name, (port, process) in servers.items():
                ready = answers(port, "/health")
                wait_until(ready, name, timeout_s=60, poll_s=0.02, process=process)
                credentials[port] = register_all(port)
            rounds: dict[str, list[tuple[int, list[float], int]]] = {"bare": []}
            rounds.update({name: [] for name in servers})
            ports = {"bare": bare_port, **{name: port for name, (port, _) in servers.items()}}
            for _ in range(args.rounds):  # alternate, so all see the same machine load
                for name, port in ports.items():
                    login = credentials.get(port, credentials[backend_port])
                    names = "legacy" if name == "before" and args.before_legacy else "attempt"
                    driven = load(port, args.connections, args.seconds, login, names=names)
                    rounds[name].append(asyncio.run(driven))
        finally:
            stop(bare)
            for _, process in servers.values():
                stop(process)
    baseline = summarise(rounds["bare"], args.seconds)
    ours = summarise(rounds["ours"], args.seconds)
    traced_figures = summarise(rounds["traced"], args.seconds)
    before_figures = summarise(rounds["before"], args.seconds) if "before" in rounds else None
    quiet_figures = summarise(rounds["quiet"], args.seconds)

    ratio = ours["rps"] / baseline["rps"]
    print(
        f"{WORKERS} registered workers, {args.connections} connections, {args.rounds} rounds x "
        f"{args.seconds:g} s each, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    rows = [
        ("baseline (bare Starlette)", baseline),
        ("ktrdr backend", ours),
        ("ktrdr backend, tracing on", traced_figures),
        ("ktrdr backend, metrics off", quiet_figures),
    ]
    if before_figures is not None:
        rows.append(("ktrdr before (--before)", before_figures))
    for name, figures in rows:
        print(
            f"{name:26s} {figures['rps']:8.0f} req/s  p50 {figures['p50_ms']:6.2f} ms"
            f"  p99 {figures['p99_ms']:6.2f} ms  non-200: {figures['errors']:.0f}"
        )
    ratio_verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    p99_verdict = "met" if ours["p99_ms"] < TARGET_P99_MS else "MISSED"
    print(f"throughput ratio {ratio:.2f} (target >= {TARGET_RATIO}: {ratio_verdict})")
    print(f"backend p99 {ours['p99_ms']:.2f} ms (target < {TARGET_P99_MS:g} ms: {p99_verdict})")
    traced_ratio = traced_figures["rps"] / baseline["rps"]
    print(
        f"tracing on: ratio {traced_ratio:.2f} (target >= {TARGET_RATIO}: "
        f"{'met' if traced_ratio >= TARGET_RATIO else 'MISSED'}), p99 "
        f"{traced_figures['p99_ms']:.2f} ms (target < {TARGET_P99_MS:g} ms: "
        f"{'met' if traced_figures['p99_ms'] < TARGET_P99_MS else 'MISSED'}); "
        f"on/off {traced_figures['rps'] / ours['rps']:.2f}"
    )
    print(
        f"metrics on (the default) vs off: {ours['rps'] / quiet_figures['rps']:.2f}; "
        f"metrics on costs {1 - ours['rps'] / quiet_figures['rps']:+.1%} of throughput"
    )
    if before_figures is not None:
        cost = 1 - ours["rps"] / before_figures["rps"]
        verdict = "met" if cost <= TRACING_OFF_COST else "MISSED"
        print(f"tracing off costs {cost:+.1%} against the code before it (target <= 5%: {verdict})")
        quiet_cost = 1 - quiet_figures["rps"] / before_figures["rps"]
        verdict = "met" if quiet_cost <= TRACING_OFF_COST else "MISSED"
        print(
            f"metrics off costs {quiet_cost:+.1%} against the code before it "
            f"(target <= 5%: {verdict})"
        )


if __name__ == "__main__":
    main()
