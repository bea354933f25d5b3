"""Benchmark: registration and heartbeats at 10,000 workers, with a client listing them.

Run with ``.venv/bin/python benchmarks/bench_fleet_scale.py``. Two measurements, each
on the real backend process (``python -m ktrdr.api.main``):

- registration: ``--workers`` workers (default 10,000) register one after another
  through ``POST /api/v1/workers/register`` over one keep-alive connection, each
  request timed; the run is cut into batches of ``--batch`` (1,000) and each batch's
  median registration time is compared with the first's. Target: the last batch
  within 1.2 x the first (a registration costs the same in a fleet of 10,000 as in
  an empty one).
- heartbeats with a lister: ``POST /api/v1/workers/<id>/heartbeat`` driven over
  ``--connections`` keep-alive connections, ids round-robin over every registered
  worker (each with its own credential), while one more client lists every worker
  (``GET /api/v1/workers``, no ``limit``: the whole fleet, the heaviest listing a
  client can ask for) once a second. Baseline, in the same run with rounds
  alternating: a bare Starlette app on the same uvicorn holding the same number of
  worker records in a dict, whose heartbeat route does the same update (parse the
  JSON body, look up the worker, set status, operation and time, answer the record)
  and whose list route answers every record as JSON, listed by the same client at
  the same rate. Targets: backend heartbeats/s >= 0.6 x the baseline's, backend
  heartbeat p99 < 50 ms.

Fake workers register at ``127.0.0.1:9`` (nothing listens there; no operation is ever
created, so the backend never calls them) with a 60 s heartbeat interval, so none
turns unavailable while the others are registering or between rounds. The load
generator and the lister run in this process (``bench_heartbeat``'s client).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_heartbeat import TOKEN, answers, load, register_all, summarise
from common import free_port, spawn, stop, wait_until

TARGET_RATIO = 0.6
TARGET_P99_MS = 50.0
#: Most the last batch's median registration time may exceed the first's.
TARGET_REGISTRATION_DRIFT = 1.2
#: Heartbeat interval the fake workers register with (seconds).
INTERVAL_S = 60
OPERATOR_TOKEN = "bench-fleet-operator-token"
LIST_PATH = "/api/v1/workers"

BARE_APP = """
import json, sys, datetime
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

now = datetime.datetime.now(datetime.timezone.utc).isoformat()
workers = {
    f"bench-{i:04d}": {
        "worker_id": f"bench-{i:04d}", "worker_type": "training" if i % 2 else "backtest",
        "endpoint_url": f"http://127.0.0.1:9/bench-{i:04d}", "status": "idle",
        "current_operation_id": None, "last_heartbeat_at": now, "registered_at": now,
        "capabilities": {}, "config_fingerprint": "0123456789abcdef",
        "heartbeat_interval_s": 60.0, "fingerprint_drift": False,
    }
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

async def listing(request):
    return Response(json.dumps(list(workers.values())), media_type="application/json")

app = Starlette(routes=[
    Route("/api/v1/workers/{worker_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/api/v1/workers", listing),
])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


class Lister:
    """A client listing every worker once per ``every_s``; keeps what the measured lists took."""

    def __init__(self, port: int, every_s: float) -> None:
        self.port = port
        self.every_s = every_s
        self.latencies: list[float] = []
        self.sizes: list[int] = []
        self.failures = 0

    async def run(self, measure_from: float, stop_at: float) -> None:
        """List from the start of the round until ``stop_at``; measure after ``measure_from``."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        request = (
            f"GET {LIST_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {OPERATOR_TOKEN}\r\n\r\n"
        ).encode()
        due = time.perf_counter()
        while due < stop_at:
            sent = time.perf_counter()
            writer.write(request)
            status, size = await read_sized(reader)
            if sent >= measure_from:
                self.latencies.append(time.perf_counter() - sent)
                self.sizes.append(size)
                self.failures += status != 200
            due += self.every_s
            await asyncio.sleep(max(0.0, min(due, stop_at) - time.perf_counter()))
        writer.close()
        await writer.wait_closed()


async def read_sized(reader: asyncio.StreamReader) -> tuple[int, int]:
    """One HTTP/1.1 response with a Content-Length: (status, body bytes)."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status, length


def batch_medians(timings: list[float], batch: int) -> list[float]:
    """Median seconds of each consecutive ``batch`` of registrations (the last may be short)."""
    return [statistics.median(timings[i : i + batch]) for i in range(0, len(timings), batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10_000, help="workers registered (10000)")
    parser.add_argument("--batch", type=int, default=1000, help="registrations per batch (1000)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each (5)")
    parser.add_argument("--connections", type=int, default=16, help="heartbeat connections (16)")
    parser.add_argument(
        "--list-every", type=float, default=1.0, help="seconds between lists (0: no lister)"
    )
    args = parser.parse_args()
    if args.workers < 1 or args.batch < 1 or args.rounds < 1:
        parser.error("expected --workers, --batch and --rounds of at least 1")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    with tempfile.TemporaryDirectory(prefix="ktrdr-bench-") as tmp:
        workdir = Path(tmp)
        bare_port, backend_port = free_port(), free_port()
        backend_env = {
            **env,
            "KTRDR_API_HOST": "127.0.0.1",
            "KTRDR_API_PORT": str(backend_port),
            "KTRDR_AUTH_WORKER_TOKEN": TOKEN,
            "KTRDR_AUTH_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "KTRDR_LOG_LEVEL": "WARNING",
        }
        bare_args = [sys.executable, "-c", BARE_APP, str(bare_port), str(args.workers)]
        bare = spawn(bare_args, env, workdir)
        backend = spawn([sys.executable, "-m", "ktrdr.api.main"], backend_env, workdir)
        try:
            ready = answers(bare_port, "/api/v1/workers/bench-0000/heartbeat")
            wait_until(ready, "the baseline server", timeout_s=60, poll_s=0.02, process=bare)
            ready = answers(backend_port, "/health")
            wait_until(ready, "the backend", timeout_s=60, poll_s=0.02, process=backend)
            timings: list[float] = []
            began = time.perf_counter()
            credentials = register_all(
                backend_port, args.workers, interval_s=INTERVAL_S, timings=timings
            )
            registering_s = time.perf_counter() - began
            rounds: dict[str, list[tuple[int, list[float], int]]] = {"bare": [], "ours": []}
            listers: dict[str, list[Lister]] = {"bare": [], "ours": []}
            ports = {"bare": bare_port, "ours": backend_port}
            for _ in range(args.rounds):  # alternate, so both see the same machine load
                for name, port in ports.items():
                    lister = Lister(port, args.list_every)
                    beside = lister.run if args.list_every > 0 else None
                    driven = load(port, args.connections, args.seconds, credentials, beside=beside)
                    rounds[name].append(asyncio.run(driven))
                    listers[name].append(lister)
        finally:
            stop(bare)
            stop(backend)

    lister_text = (
        f"one client listing every worker every {args.list_every:g} s"
        if args.list_every > 0
        else "no lister"
    )
    print(
        f"{args.workers} registered workers (heartbeat interval {INTERVAL_S} s), "
        f"{args.connections} heartbeat connections and {lister_text}, {args.rounds} rounds x "
        f"{args.seconds:g} s, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    medians = batch_medians(timings, args.batch)
    print(
        f"registration: {args.workers} in {registering_s:.1f} s; median ms per batch of "
        f"{args.batch}: " + " ".join(f"{m * 1000:.2f}" for m in medians)
    )
    drift = medians[-1] / medians[0]
    verdict = "met" if drift <= TARGET_REGISTRATION_DRIFT else "MISSED"
    print(
        f"registration: last batch / first batch {drift:.2f} "
        f"(target <= {TARGET_REGISTRATION_DRIFT}: {verdict})"
    )
    figures = {name: summarise(rounds[name], args.seconds) for name in rounds}
    labels = {"bare": "baseline (bare Starlette)", "ours": "ktrdr backend"}
    for name, label in labels.items():
        f = figures[name]
        lists = [lat for lister in listers[name] for lat in lister.latencies]
        sizes = [size for lister in listers[name] for size in lister.sizes]
        failed = sum(lister.failures for lister in listers[name])
        print(
            f"{label:26s} {f['rps']:8.0f} heartbeats/s  p50 {f['p50_ms']:6.2f} ms"
            f"  p99 {f['p99_ms']:6.2f} ms  non-200: {f['errors']:.0f}"
        )
        if lists:
            print(
                f"{'':26s} {len(lists)} lists of {statistics.median(sizes) / 1e6:.2f} MB: "
                f"median {statistics.median(lists) * 1000:.1f} ms, "
                f"max {max(lists) * 1000:.1f} ms, non-200: {failed}"
            )
    ratio = figures["ours"]["rps"] / figures["bare"]["rps"]
    print(
        f"heartbeat throughput ratio {ratio:.2f} "
        f"(target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'MISSED'})"
    )
    p99 = figures["ours"]["p99_ms"]
    print(
        f"backend heartbeat p99 {p99:.2f} ms "
        f"(target < {TARGET_P99_MS:g} ms: {'met' if p99 < TARGET_P99_MS else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
