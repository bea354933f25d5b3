"""Benchmark: the operations store against the bare database driver doing the same work.

Run with ``.venv/bin/python benchmarks/bench_store_vs_driver.py``. One "operation" is
the write transactions of one operation's life as the backend drives it (as in
``bench_store.py``): create (insert and live count in one transaction, serialised by
an advisory lock on PostgreSQL), mark running, 10 progress updates and finish, i.e.
13 write transactions. The store does them through its public methods
(:class:`~ktrdr.api.store.OperationStore`, SQLAlchemy Core); the baseline sends the
same statements (the same conditions, ``RETURNING`` the whole row, JSON encoded and
the returned row turned into a dict) straight through ``sqlite3`` or ``psycopg`` on
one open connection. Both sides run on tables the store's migrations created, in the
same run, rounds alternating. Target: store >= 0.5 x driver operations/s on each
engine.

SQLite uses fresh files in a temporary directory (WAL, ``synchronous=NORMAL`` on both
sides, as the backend configures it). PostgreSQL uses ``--postgres-url`` (default:
``KTRDR_TEST_POSTGRES_URL``) and two private schemas dropped afterwards; without a
URL its row is skipped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ktrdr.api.store import OperationStore
from ktrdr.protocol import OperationStatus, OperationType

UPDATES_PER_OPERATION = 10
TARGET_RATIO = 0.5
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
TICK = datetime.timedelta(milliseconds=1)
WORKER = "bench-worker"
PARAMETERS = {"epochs": 50, "bars": 2000, "seed": 7}
RESULT = {"final_loss": 0.6}
CREATE_LOCK_KEY = 0x6B74_7264_7200
LIVE = ("pending", "running")


def progress_at(step: int) -> dict[str, Any]:
    """The progress a heartbeat carries at ``step`` (the same on both sides)."""
    return {
        "percent": 10.0 * (step + 1),
        "message": f"epoch {step + 1}",
        "details": {"epoch": step + 1, "loss": 0.7 - step * 0.01},
    }


def store_round(store: OperationStore, count: int) -> float:
    """Seconds for ``count`` operations' transactions through the store."""
    now = T0
    start = time.perf_counter()
    for _ in range(count):
        record = store.create(
            operation_type=OperationType.TRAINING,
            parameters=PARAMETERS,
            now=now,
            max_live=100_000,
        )
        store.mark_running(record.id, worker_id=WORKER, now=now)
        for step in range(UPDATES_PER_OPERATION):
            now += TICK
            store.update_progress(record.id, progress=progress_at(step), now=now, worker_id=WORKER)
        store.finish(record.id, status=OperationStatus.COMPLETED, now=now, result=RESULT)
    return time.perf_counter() - start


class Driver:
    """The same statements as the store, by hand, on one DB-API connection."""

    def __init__(self, conn: Any, *, postgres: bool, table: str) -> None:
        self.conn = conn
        self.postgres = postgres
        self.table = table
        self.mark = "%s" if postgres else "?"

    def when(self, value: datetime.datetime) -> Any:
        # SQLite keeps naive UTC text (as SQLAlchemy's DateTime does); psycopg adapts.
        return value if self.postgres else value.replace(tzinfo=None).isoformat(" ")

    def row(self, cursor: Any) -> dict[str, Any]:
        names = [d[0] for d in cursor.description]
        values = cursor.fetchone()
        record = dict(zip(names, values, strict=True))
        if not self.postgres:
            for name in ("parameters", "progress", "result"):
                if record[name] is not None:
                    record[name] = json.loads(record[name])
        return record

    def write(self, sql: str, args: tuple[Any, ...]) -> dict[str, Any]:
        cursor = self.conn.cursor()
        try:
            if not self.postgres:
                cursor.execute("BEGIN")
            cursor.execute(sql.replace("?", self.mark), args)
            record = self.row(cursor)
        finally:
            cursor.close()
        self.conn.commit()
        return record

    def create(self, now: datetime.datetime) -> str:
        m, t = self.mark, self.table
        new_id = uuid.uuid4().hex
        cursor = self.conn.cursor()
        try:
            if self.postgres:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK_KEY,))
            else:
                cursor.execute("BEGIN")
            cursor.execute(
                # The table name is the benchmark's own schema, never input (S608).
                f"INSERT INTO {t} (id, type, status, parameters, progress, result, error,"  # noqa: S608
                f" worker_id, resume, created_at, trace_parent)"
                f" VALUES ({m}, {m}, {m}, {m}, NULL, NULL, NULL, NULL, {m}, {m}, NULL)"
                " RETURNING *",
                (new_id, "training", "pending", json.dumps(PARAMETERS), False, self.when(now)),
            )
            self.row(cursor)
            cursor.execute(f"SELECT count(*) FROM {t} WHERE status IN ({m}, {m})", LIVE)  # noqa: S608
            (live,) = cursor.fetchone()
            if live > 100_000:
                raise SystemExit("live bound reached")
        finally:
            cursor.close()
        self.conn.commit()
        return new_id

    def one_round(self, count: int) -> float:
        """Seconds for ``count`` operations' transactions through the driver."""
        t = self.table
        now = T0
        start = time.perf_counter()
        for _ in range(count):
            op = self.create(now)
            self.write(
                f"UPDATE {t} SET status = ?, worker_id = ?, started_at = ?,"  # noqa: S608
                " last_reported_at = ?, error = NULL WHERE id = ? AND status IN (?) RETURNING *",
                ("running", WORKER, self.when(now), self.when(now), op, "pending"),
            )
            for step in range(UPDATES_PER_OPERATION):
                now += TICK
                self.write(
                    f"UPDATE {t} SET last_reported_at = ?, progress = ?"  # noqa: S608
                    " WHERE id = ? AND status IN (?) AND worker_id = ? RETURNING *",
                    (self.when(now), json.dumps(progress_at(step)), op, "running", WORKER),
                )
            self.write(
                f"UPDATE {t} SET status = ?, result = ?, error = NULL, finished_at = ?,"  # noqa: S608
                " last_reported_at = ? WHERE id = ? AND status IN (?, ?) RETURNING *",
                ("completed", json.dumps(RESULT), self.when(now), self.when(now), op, *LIVE),
            )
        return time.perf_counter() - start


@contextmanager
def sqlite_pair() -> Iterator[tuple[OperationStore, Driver]]:
    with tempfile.TemporaryDirectory() as directory:
        store = OperationStore.open_url(
            sa.URL.create("sqlite+pysqlite", database=str(Path(directory) / "store.db"))
        )
        path = Path(directory) / "driver.db"
        OperationStore.open_url(sa.URL.create("sqlite+pysqlite", database=str(path))).close()
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield store, Driver(conn, postgres=False, table="operations")
        finally:
            conn.close()
            store.close()


@contextmanager
def postgres_pair(url: str) -> Iterator[tuple[OperationStore, Driver]]:
    import psycopg

    schemas = [f"ktrdr_bench_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        for schema in schemas:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        store = OperationStore.open_url(url, schema=schemas[0])
        OperationStore.open_url(url, schema=schemas[1]).close()
        dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        driver_conn = psycopg.connect(dsn)
        try:
            yield store, Driver(driver_conn, postgres=True, table=f'"{schemas[1]}".operations')
        finally:
            driver_conn.close()
            store.close()
    finally:
        with admin.begin() as conn:
            for schema in schemas:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def measure(
    name: str, opener: Callable[[], Any], count: int, repeats: int
) -> dict[str, float | str]:
    store_rates: list[float] = []
    driver_rates: list[float] = []
    with opener() as (store, driver):
        store_round(store, max(1, count // 10))  # warm-up: connections, statement caches
        driver.one_round(max(1, count // 10))
        for _ in range(repeats):
            store_rates.append(count / store_round(store, count))
            driver_rates.append(count / driver.one_round(count))
    store_median = statistics.median(store_rates)
    driver_median = statistics.median(driver_rates)
    return {
        "engine": name,
        "store": store_median,
        "driver": driver_median,
        "ratio": store_median / driver_median,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=200, help="operations per round")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per side")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("KTRDR_TEST_POSTGRES_URL"),
        help="PostgreSQL URL (default: $KTRDR_TEST_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)

    rows = [measure("sqlite", sqlite_pair, args.operations, args.repeats)]
    if args.postgres_url:
        url = args.postgres_url
        pair = lambda: postgres_pair(url)  # noqa: E731
        rows.append(measure("postgresql", pair, args.operations, args.repeats))
    else:
        print("postgresql: skipped (no --postgres-url and KTRDR_TEST_POSTGRES_URL unset)")

    print(
        f"store vs bare driver: {UPDATES_PER_OPERATION + 3} write transactions per operation, "
        f"{args.operations} operations x {args.repeats} rounds each side, "
        f"Python {sys.version.split()[0]}, SQLAlchemy {sa.__version__}"
    )
    print(f"{'engine':<12} {'store ops/s':>12} {'driver ops/s':>13} {'ratio':>7}  target")
    status = 0
    for row in rows:
        ratio = float(row["ratio"])
        met = "met" if ratio >= TARGET_RATIO else "MISSED"
        print(
            f"{row['engine']:<12} {row['store']:>12.1f} {row['driver']:>13.1f} "
            f"{ratio:>7.2f}  >= {TARGET_RATIO} {met}"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
