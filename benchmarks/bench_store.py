"""Benchmark: operations store throughput on SQLite and PostgreSQL, in the same run.

Run with ``.venv/bin/python benchmarks/bench_store.py``. One "operation" is what the
backend does over a typical short job: create it, mark it running, record 10 progress
updates (each its own transaction, like heartbeats) and finish it. The figure is
operations per second, single-threaded, best and median of ``--repeats`` runs.

SQLite uses a fresh file in a temporary directory (WAL mode, as the backend does).
PostgreSQL uses ``--postgres-url`` (default: the ``KTRDR_TEST_POSTGRES_URL`` variable)
and a private schema dropped afterwards; without a URL its row is skipped.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import sqlalchemy as sa

from ktrdr.api.store import OperationStore
from ktrdr.protocol import OperationStatus, OperationType

UPDATES_PER_OPERATION = 10
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def one_round(store: OperationStore, count: int) -> float:
    """Seconds to run ``count`` operations through their whole life."""
    tick = datetime.timedelta(milliseconds=1)
    now = T0
    start = time.perf_counter()
    for _ in range(count):
        record = store.create(
            operation_type=OperationType.TRAINING,
            parameters={"epochs": 50, "bars": 2000, "seed": 7},
            now=now,
            max_live=100_000,
        )
        store.mark_running(record.id, worker_id="bench-worker", now=now)
        for step in range(UPDATES_PER_OPERATION):
            now += tick
            progress = {
                "percent": 10.0 * (step + 1),
                "message": f"epoch {step + 1}",
                "details": {"epoch": step + 1, "loss": 0.7 - step * 0.01},
            }
            store.update_progress(record.id, progress=progress, now=now, worker_id="bench-worker")
        store.finish(
            record.id, status=OperationStatus.COMPLETED, now=now, result={"final_loss": 0.6}
        )
    return time.perf_counter() - start


@contextmanager
def sqlite_store() -> Iterator[OperationStore]:
    with tempfile.TemporaryDirectory() as directory:
        url = sa.URL.create("sqlite+pysqlite", database=str(Path(directory) / "bench.db"))
        store = OperationStore.open_url(url)
        try:
            yield store
        finally:
            store.close()


@contextmanager
def postgres_store(url: str) -> Iterator[OperationStore]:
    schema = f"ktrdr_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        store = OperationStore.open_url(url, schema=schema)
        try:
            yield store
        finally:
            store.close()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def measure(
    name: str,
    opener: Callable[[], AbstractContextManager[OperationStore]],
    count: int,
    repeats: int,
) -> dict[str, float | str]:
    rates = []
    with opener() as store:
        one_round(store, max(1, count // 10))  # warm-up: connections, statement caches
        for _ in range(repeats):
            rates.append(count / one_round(store, count))
    return {
        "engine": name,
        "best": max(rates),
        "median": statistics.median(rates),
        "writes_per_s": statistics.median(rates) * (UPDATES_PER_OPERATION + 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=200, help="operations per run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per engine")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("KTRDR_TEST_POSTGRES_URL"),
        help="PostgreSQL URL (default: $KTRDR_TEST_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)

    rows = [measure("sqlite", sqlite_store, args.operations, args.repeats)]
    if args.postgres_url:
        url = args.postgres_url
        rows.append(
            measure("postgresql", lambda: postgres_store(url), args.operations, args.repeats)
        )
    else:
        print("postgresql: skipped (no --postgres-url and KTRDR_TEST_POSTGRES_URL unset)")

    print(
        f"operations store: create + running + {UPDATES_PER_OPERATION} progress updates + "
        f"finish per operation, {args.operations} operations x {args.repeats} runs, "
        f"Python {sys.version.split()[0]}, SQLAlchemy {sa.__version__}"
    )
    print(f"{'engine':<12} {'ops/s best':>11} {'ops/s median':>13} {'writes/s':>10}")
    for row in rows:
        print(
            f"{row['engine']:<12} {row['best']:>11.1f} {row['median']:>13.1f} "
            f"{row['writes_per_s']:>10.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
