"""Benchmark: ``GET /api/v1/operations`` at a million rows, and requests during retention.

Run with ``.venv/bin/python benchmarks/bench_operations_scale.py`` (``--rows``,
default 1,000,000). For each engine (SQLite, and PostgreSQL when ``--postgres-url`` or
``KTRDR_TEST_POSTGRES_URL`` is set) a fresh database is migrated by the store, filled
with finished operations straight through the driver (``bulk_operations``: rows copied
from operations the store itself wrote, loaded with ``executemany`` / ``COPY``), and
the real backend process (``python -m ktrdr.api.main``) is run against it twice:

1. Pages. The oldest 1% of the rows is loaded first and the backend started; the
   first page of each listing (no filter, ``status``, ``type``, both) gives a
   ``next_cursor``. Then the other 99% are loaded, all newer, so each of those
   cursors now points about a million rows deep: following one is what a client
   paging to the end of the table does on its last pages. The first page and that
   deep page of each listing are then requested in turn (``--samples`` each, after 5
   warm-up requests, one keep-alive client, paced at half the operations listing
   budget so no request is refused). Target: p99 < 50 ms for the first and the deep
   page, each engine.
2. Retention. The backend is restarted with ``KTRDR_OPS_RETENTION_DAYS`` set so that
   half the rows (500,000 of a million) are due: its retention round starts at once
   and deletes them in batches (``KTRDR_OPS_CLEANUP_BATCH_SIZE``: the backend's
   default, or ``--cleanup-batch-size``). From the moment the backend answers until
   its log says the round is done, or for at most ``--sweep-seconds`` (30; the whole
   sweep takes minutes, and every batch is alike), one client creates an operation,
   lists the first page and reads the operation back, 20 times a second; how many
   rows were deleted meanwhile is counted in the database afterwards. Baseline: the
   same requests for ``--quiet-seconds`` at the end of run 1 (same table, no
   retention). Target: no request during the sweep takes more than 50 ms.

Without a PostgreSQL URL, or when its server does not answer, that engine is skipped
with a message. PostgreSQL runs in a database the benchmark creates on that server and
drops after. ``--samples 0`` skips the pages (retention only).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from bulk_operations import BulkLoader, Spread
from common import base_env, free_port, postgres_database, spawn, stop, wait_until

from ktrdr.api.list_budget import OPERATIONS_LIST_RATE

TARGET_MS = 50.0
UTC = datetime.timezone.utc
TOKEN = "bench-operations-scale-token"
OPERATIONS = "/api/v1/operations"
#: Days of history: rows are created evenly over this span, ending an hour ago.
SPAN_DAYS = 400
#: Retention in the second run: the older half of the span is due.
RETENTION_DAYS = SPAN_DAYS // 2
#: Requests measured per series before the measured ones (file cache, connections).
WARM_UP = 5
LISTINGS: dict[str, dict[str, str]] = {
    "no filter": {},
    "status=failed": {"status": "failed"},
    "type=backtest": {"type": "backtest"},
    "type+status": {"type": "backtest", "status": "failed"},
}
CREATE_BODY = json.dumps({"type": "training", "parameters": {"bars": 100, "epochs": 1}})
DONE_LINE = re.compile(r"retention: deleted (\d+) operations .* in (\d+) batches of at most (\d+)")


class Engine(NamedTuple):
    """A database to fill and the backend's variables to reach it."""

    name: str
    url: sa.URL
    env: dict[str, str]


class Client:
    """One keep-alive HTTP/1.1 connection to the backend, timing each request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, float, Any]:
        """(status, seconds from send to complete answer, decoded JSON or None).

        A connection the server closed while idle (its keep-alive timeout) is replaced
        and the request sent again, untimed until it goes out on the new connection.
        """
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            sent = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        took = time.perf_counter() - sent
        retry = response.getheader("Retry-After")
        if response.status == 429 and retry is not None:
            time.sleep(float(retry))
        return response.status, took, json.loads(data) if data else None

    def close(self) -> None:
        self.conn.close()


def path_for(query: dict[str, str]) -> str:
    return f"{OPERATIONS}?{urllib.parse.urlencode(query)}" if query else OPERATIONS


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99 (nearest rank) and max, in ms."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000,
        "max": ordered[-1] * 1000,
    }


@contextmanager
def backend(
    engine: Engine,
    workdir: Path,
    *,
    retention_days: int,
    log: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[int]:
    """The real backend on ``engine``'s database; yields its port once it answers."""
    port = free_port()
    env = base_env(
        KTRDR_API_HOST="127.0.0.1",
        KTRDR_API_PORT=str(port),
        KTRDR_AUTH_OPERATOR_TOKEN=TOKEN,
        KTRDR_OPS_RETENTION_DAYS=str(retention_days),
        KTRDR_LOG_LEVEL="INFO",
        **engine.env,
        **(extra_env or {}),
    )
    process = spawn([sys.executable, "-m", "ktrdr.api.main"], env, workdir, log=log)
    try:
        client = Client(port)

        def healthy() -> bool:
            try:
                return client.request("GET", "/health")[0] == 200
            except (OSError, http.client.HTTPException):
                return False

        wait_until(healthy, "the backend", timeout_s=120, poll_s=0.01, process=process)
        client.close()
        yield port
    finally:
        stop(process)


def measure_pages(
    engine: Engine, workdir: Path, loader: BulkLoader, spread: Spread, args: argparse.Namespace
) -> dict[str, Any]:
    """Run 1: cursors taken on the oldest rows, the rest loaded, then first vs deep pages."""
    # The oldest 1%, and enough for more than a page of the rarest listing (3% of rows).
    seed = min(spread.total, max(40 * args.limit, spread.total // 100))
    loader.load(spread, 0, seed)
    figures: dict[str, Any] = {"seed": seed}
    with backend(engine, workdir, retention_days=36500, log=workdir / "pages.log") as port:
        client = Client(port)
        cursors: dict[str, str] = {}
        for name, query in LISTINGS.items():
            status, _, page = client.request("GET", path_for({**query, "limit": str(args.limit)}))
            if status != 200 or not page["next_cursor"]:
                raise SystemExit(f"{engine.name}: no second page for {name} ({status})")
            cursors[name] = page["next_cursor"]
        began = time.perf_counter()
        loader.load(spread, seed, spread.total)
        figures["load_s"] = time.perf_counter() - began
        series: list[tuple[str, str]] = []
        for name, query in LISTINGS.items():
            base = {**query, "limit": str(args.limit)}
            series.append((f"{name}, first page", path_for(base)))
            series.append((f"{name}, deep page", path_for({**base, "cursor": cursors[name]})))
        _, _, deep = client.request("GET", series[1][1])
        newest_old = spread.created_at(seed - 1)
        first_deep = datetime.datetime.fromisoformat(deep["items"][0]["created_at"])
        if first_deep > newest_old:
            raise SystemExit(f"{engine.name}: the deep page is not deep ({first_deep})")
        figures["deep_after"] = spread.total - seed + args.limit
        interval = args.limit / (0.5 * OPERATIONS_LIST_RATE)
        latencies: dict[str, list[float]] = {label: [] for label, _ in series}
        refused = 0
        due = time.perf_counter()
        for turn in range(WARM_UP + args.samples if args.samples else 0):
            for label, path in series:
                status, took, page = client.request("GET", path)
                refused += status == 429
                if status != 200 or not page["items"]:
                    raise SystemExit(f"{engine.name}: {label} answered {status}")
                if turn >= WARM_UP:
                    latencies[label].append(took)
                due += interval
                time.sleep(max(0.0, due - time.perf_counter()))
        # The baseline of run 2: the same requests at the same table size, no retention.
        quiet = Mix(client, engine.name)
        quiet_until = time.perf_counter() + args.quiet_seconds
        quiet.run(lambda: time.perf_counter() >= quiet_until)
        figures["quiet"] = quiet.figures()
        client.close()
    figures["series"] = {
        label: percentiles(values) for label, values in latencies.items() if values
    }
    figures["refused"] = refused
    return figures


class Mix:
    """Requests other clients make while the backend works: create, list, read back.

    One client, 20 rounds a second: create a (pending) operation, list the first page,
    read the new operation by id; each request timed, by kind.
    """

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self.latencies: dict[str, list[float]] = {
            "create": [],
            "list first page": [],
            "get one": [],
        }

    def run(self, until: Callable[[], bool]) -> None:
        """Rounds until ``until()`` is true (checked after each round)."""
        tick = time.perf_counter()
        while True:
            status, took, created = self.client.request("POST", OPERATIONS, CREATE_BODY)
            if status != 201:
                raise SystemExit(f"{self.name}: create answered {status}: {created}")
            self.latencies["create"].append(took)
            status, took, _ = self.client.request("GET", path_for({"limit": "50"}))
            self.latencies["list first page"].append(took)
            status, took, _ = self.client.request("GET", f"{OPERATIONS}/{created['id']}")
            self.latencies["get one"].append(took)
            if until():
                return
            tick += 0.05
            time.sleep(max(0.0, tick - time.perf_counter()))

    def figures(self) -> dict[str, dict[str, float]]:
        return {kind: percentiles(values) for kind, values in self.latencies.items()}


def measure_retention(
    engine: Engine, workdir: Path, loader: BulkLoader, spread: Spread, args: argparse.Namespace
) -> dict[str, Any]:
    """Run 2: the backend sweeps half the rows from its start; requests timed meanwhile.

    Measured until the round's log line, or for ``--sweep-seconds`` if that comes
    first (the backend is then stopped; it stops retention between batches).
    """
    log = workdir / "retention.log"
    env = {}
    if args.cleanup_batch_size:
        env["KTRDR_OPS_CLEANUP_BATCH_SIZE"] = str(args.cleanup_batch_size)
    cutoff = datetime.datetime.now(UTC) - datetime.timedelta(days=RETENTION_DAYS)
    due = loader.count_finished_before(cutoff)
    done: list[re.Match[str]] = []
    read_from = 0

    def finished() -> bool:
        nonlocal read_from
        with log.open("rb") as lines:
            lines.seek(read_from)
            data = lines.read()
        read_from += len(data)
        done.extend(DONE_LINE.finditer(data.decode(errors="replace")))
        return bool(done) or time.perf_counter() - started > args.sweep_seconds

    with backend(engine, workdir, retention_days=RETENTION_DAYS, log=log, extra_env=env) as port:
        started = time.perf_counter()
        mix = Mix(Client(port), engine.name)
        mix.run(finished)
        measured_s = time.perf_counter() - started
        mix.client.close()
    left = loader.count_finished_before(cutoff)
    return {
        "due": due,
        "deleted": due - left,
        "complete": bool(done),
        "batches": int(done[0].group(2)) if done else None,
        "batch_size": int(done[0].group(3)) if done else args.cleanup_batch_size,
        "measured_s": measured_s,
        "during": mix.figures(),
    }


@contextmanager
def sqlite_engine(workdir: Path) -> Iterator[Engine]:
    path = workdir / "operations.db"
    yield Engine("sqlite", sa.make_url(f"sqlite+pysqlite:///{path}"), {"KTRDR_DB_PATH": str(path)})


@contextmanager
def postgres_engine(server: str) -> Iterator[Engine]:
    """A database of its own on ``server``'s PostgreSQL, dropped afterwards."""
    with postgres_database(server, prefix="ktrdr_bench_scale") as env:
        url = sa.make_url(server).set(database=env["KTRDR_DB_NAME"])
        yield Engine("postgresql", url, env)


def run(engine_context: Callable[[Path], Any], args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ktrdr-bench-") as tmp:
        workdir = Path(tmp)
        with engine_context(workdir) as engine:
            newest = datetime.datetime.now(UTC) - datetime.timedelta(hours=1)
            spread = Spread(total=args.rows, newest=newest, span=datetime.timedelta(days=SPAN_DAYS))
            loader = BulkLoader(engine.url)
            pages = measure_pages(engine, workdir, loader, spread, args)
            retention = measure_retention(engine, workdir, loader, spread, args)
    report(engine.name, args, pages, retention)


def report(
    name: str, args: argparse.Namespace, pages: dict[str, Any], retention: dict[str, Any]
) -> None:
    print(
        f"== {name}: {args.rows:,} operations ({pages['seed']:,} loaded first, the rest in "
        f"{pages['load_s']:.0f} s); pages of {args.limit}, {args.samples} samples each; "
        f"deep pages start {pages['deep_after']:,} rows from the newest"
    )
    for label, f in pages["series"].items():
        verdict = "met" if f["p99"] < TARGET_MS else "MISSED"
        print(
            f"  {label:28s} p50 {f['p50']:6.2f} ms  p99 {f['p99']:6.2f} ms  max {f['max']:6.2f} ms"
            f"  (p99 < {TARGET_MS:g} ms: {verdict})"
        )
    if pages["refused"]:
        print(f"  ({pages['refused']} requests refused by the listing budget, retried)")
    size = retention["batch_size"] or "the default size"
    if retention["complete"]:
        batches = retention["batches"]
        each = retention["measured_s"] / max(1, batches) * 1000
        sweep = (
            f"the whole round: {batches} batches of at most {size} in "
            f"{retention['measured_s']:.1f} s from the first answer (about {each:.0f} ms per "
            "batch and its pause)"
        )
    else:
        sweep = f"its first {retention['measured_s']:.0f} s (batches of {size}), then stopped"
    print(
        f"  retention: {retention['due']:,} due, {retention['deleted']:,} deleted while "
        f"measured; measured {sweep}"
    )
    worst = 0.0
    for phase, kinds in (("quiet", pages["quiet"]), ("during", retention["during"])):
        for kind, f in kinds.items():
            if phase == "during":
                worst = max(worst, f["max"])
            print(
                f"  {phase:6s} {kind:16s} n {f['n']:5d}  p50 {f['p50']:6.2f} ms"
                f"  p99 {f['p99']:6.2f} ms  max {f['max']:7.2f} ms"
            )
    verdict = "met" if worst <= TARGET_MS else "MISSED"
    target = f"target <= {TARGET_MS:g} ms: {verdict}"
    print(f"  longest request during retention: {worst:.1f} ms ({target})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="operations (1000000)")
    parser.add_argument("--limit", type=int, default=50, help="page size (50, the default)")
    parser.add_argument(
        "--samples", type=int, default=200, help="requests per page series (0: no pages)"
    )
    parser.add_argument(
        "--quiet-seconds", type=float, default=10.0, help="baseline requests, no retention (10)"
    )
    parser.add_argument(
        "--sweep-seconds",
        type=float,
        default=30.0,
        help="longest time requests are measured during retention (30; the sweep of "
        "500,000 rows takes longer: use 3600 to measure it whole)",
    )
    parser.add_argument(
        "--cleanup-batch-size",
        type=int,
        default=0,
        help="KTRDR_OPS_CLEANUP_BATCH_SIZE for the backend (default: its own default)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("KTRDR_TEST_POSTGRES_URL"),
        help="PostgreSQL server URL (default: $KTRDR_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    if args.rows < 10_000 or not 1 <= args.limit <= 200 or args.samples < 0:
        parser.error("expected --rows >= 10000, 1 <= --limit <= 200 and --samples >= 0")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, SQLAlchemy {sa.__version__}")
    if args.engine in ("sqlite", "both"):
        run(sqlite_engine, args)
    if args.engine in ("postgresql", "both"):
        if not args.postgres_url:
            print("postgresql: skipped (no --postgres-url and KTRDR_TEST_POSTGRES_URL unset)")
            return 0
        try:
            sa.create_engine(args.postgres_url).connect().close()
        except sa.exc.OperationalError as exc:
            print(f"postgresql: skipped (cannot connect: {' '.join(str(exc.orig).split())})")
            return 0
        server = args.postgres_url
        run(lambda _workdir: postgres_engine(server), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
