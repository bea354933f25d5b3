"""Bulk-loading finished operations straight into a migrated operations table.

Used by ``bench_operations_scale.py`` to fill a table with a million rows in seconds:
the store's API writes one operation per transaction, far too slow for that. The
rows must still be exactly what the store would have written, so their column
values are copied from template operations the real store creates and finishes in
the same database (one per type and final status), and only the id, the times and
the worker change. SQLite rows go in through ``sqlite3``'s ``executemany``, in
SQLAlchemy's own text format for times; PostgreSQL rows through ``COPY``. Rows are
spread evenly in creation time over a span ending at a given moment, oldest first.

Nothing here times anything or starts a process.
"""

from __future__ import annotations

import datetime
import random
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import sqlalchemy as sa

from ktrdr.api.store import OperationStore
from ktrdr.protocol import OperationStatus, OperationType, parse_parameters

__all__ = ["BulkLoader", "Spread", "row_kinds"]

UTC = datetime.timezone.utc
#: How SQLAlchemy's SQLite ``DateTime`` stores a (naive UTC) value.
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
#: Share of each final status among the loaded rows (the rest of 100 is completed).
FAILED_PER_100 = 7
CANCELLED_PER_100 = 3
#: Columns that differ between loaded rows; every other column is the template's.
_VARYING = ("id", "worker_id", "created_at", "started_at", "finished_at", "last_reported_at")
#: How long a loaded operation ran.
RAN_FOR = datetime.timedelta(seconds=60)
WORKERS = 16
#: What a completed operation of each type reports.
_RESULTS: dict[OperationType, dict[str, Any]] = {
    OperationType.TRAINING: {"final_loss": 0.58, "accuracy": 0.55, "epochs_run": 50},
    OperationType.BACKTEST: {"total_return": 0.041, "sharpe": 0.83, "trades": 23},
}


def row_kinds(index: int) -> tuple[OperationType, OperationStatus]:
    """The type and final status of the ``index``-th row (a fixed, interleaved mix)."""
    kind = OperationType.TRAINING if index % 2 else OperationType.BACKTEST
    bucket = (index * 37) % 100
    if bucket < FAILED_PER_100:
        return kind, OperationStatus.FAILED
    if bucket < FAILED_PER_100 + CANCELLED_PER_100:
        return kind, OperationStatus.CANCELLED
    return kind, OperationStatus.COMPLETED


@attrs.frozen(kw_only=True)
class Spread:
    """``total`` rows created evenly from ``newest - span`` to ``newest``, oldest first."""

    total: int
    newest: datetime.datetime
    span: datetime.timedelta

    @property
    def step(self) -> datetime.timedelta:
        """Time between two consecutive rows' creations (whole microseconds)."""
        micro = datetime.timedelta(microseconds=1)
        return micro * ((self.span // micro) // max(1, self.total - 1))

    def created_at(self, index: int) -> datetime.datetime:
        """Creation time of row ``index`` (0 is the oldest)."""
        return self.newest - self.span + self.step * index

    def finished_before(self, cutoff: datetime.datetime) -> int:
        """How many rows finished before ``cutoff`` (they are the oldest ones)."""
        # Row i finished at created_at(0) + i * step + RAN_FOR: count the i with that < cutoff.
        room = cutoff - RAN_FOR - self.created_at(0)
        if room <= datetime.timedelta(0):
            return 0
        return min(self.total, -(-room // self.step))


class BulkLoader:
    """Loads rows shaped like the store's into one operations table (SQLite or PostgreSQL).

    Build it on a database the store's migrations brought up to date; the templates
    are created with the store on construction and deleted again.
    """

    def __init__(self, url: sa.URL | str, *, schema: str | None = None, seed: int = 13) -> None:
        self.url = sa.make_url(url)
        self.schema = schema
        #: The table, qualified by its PostgreSQL schema when there is one.
        self.table = f'"{schema}".operations' if schema else "operations"
        self.postgres = self.url.get_backend_name() == "postgresql"
        self._random = random.Random(seed)
        self.columns: tuple[str, ...] = ()
        self._templates: dict[tuple[OperationType, OperationStatus], dict[str, Any]] = {}
        self._make_templates()

    def _make_templates(self) -> None:
        store = OperationStore.open_url(self.url, schema=self.schema)
        now = datetime.datetime.now(UTC)
        ids = []
        try:
            for kind in OperationType:
                parameters = parse_parameters(kind, {"bars": 500, "seed": 3})
                training = kind is OperationType.TRAINING
                for status in (
                    OperationStatus.COMPLETED,
                    OperationStatus.FAILED,
                    OperationStatus.CANCELLED,
                ):
                    record = store.create(
                        operation_type=kind, parameters=parameters.model_dump(mode="json"), now=now
                    )
                    store.mark_running(record.id, worker_id="bench-worker-0", now=now)
                    progress = {
                        "percent": 100.0 if status is OperationStatus.COMPLETED else 40.0,
                        "message": "epoch 20 of 50" if training else "bar 1200 of 2000",
                        "details": (
                            {"epoch": 20, "loss": 0.61, "accuracy": 0.54}
                            if training
                            else {"bar": 1200, "equity": 10412.5, "trades": 14}
                        ),
                    }
                    store.update_progress(record.id, progress=progress, now=now)
                    store.finish(
                        record.id,
                        status=status,
                        now=now,
                        result=_RESULTS[kind] if status is OperationStatus.COMPLETED else None,
                        error=(
                            "job process exited with signal 9 (killed)"
                            if status is OperationStatus.FAILED
                            else None
                        ),
                    )
                    ids.append((record.id, kind, status))
            table = next(t for t in store.metadata.sorted_tables if t.name == "operations")
            self.columns = tuple(column.name for column in table.c)
        finally:
            store.close()
        raw = self._raw_rows([operation_id for operation_id, _, _ in ids])
        for operation_id, kind, status in ids:
            self._templates[(kind, status)] = raw[operation_id]

    def _raw_rows(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The templates' rows as the driver returns them (text JSON), then deleted."""
        names = ", ".join(self.columns)
        marks = ", ".join(["%s" if self.postgres else "?"] * len(ids))
        # Column names come from the store's own table, never from input (S608).
        table = self.table
        select = f"SELECT {names} FROM {table} WHERE id IN ({marks})"  # noqa: S608
        delete = f"DELETE FROM {table} WHERE id IN ({marks})"  # noqa: S608
        with self._connect() as conn:
            cursor = conn.cursor()
            if self.postgres:
                json_names = ", ".join(
                    f"{c}::text AS {c}" if c in ("parameters", "progress", "result") else c
                    for c in self.columns
                )
                select = f"SELECT {json_names} FROM {table} WHERE id IN ({marks})"  # noqa: S608
            cursor.execute(select, tuple(ids))
            rows = {row[0]: dict(zip(self.columns, row, strict=True)) for row in cursor.fetchall()}
            cursor.execute(delete, tuple(ids))
            conn.commit()
        return rows

    def _connect(self) -> Any:
        if self.postgres:
            import psycopg

            dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
            return psycopg.connect(dsn)
        return _SqliteConnection(str(self.url.database))

    def rows(self, spread: Spread, start: int, stop: int) -> Iterator[tuple[Any, ...]]:
        """Rows ``start`` to ``stop - 1`` of ``spread``, in column order.

        Times are computed in whole microseconds and formatted once per value: the
        row generator, not the database, is the slow part of a load in Python.
        """
        position = {name: self.columns.index(name) for name in _VARYING}
        templates = {
            kinds: [template[name] for name in self.columns]
            for kinds, template in self._templates.items()
        }
        origin = spread.newest - spread.span
        step_us = (spread.span // datetime.timedelta(microseconds=1)) // max(1, spread.total - 1)
        ran_us = RAN_FOR // datetime.timedelta(microseconds=1)
        bits = self._random.getrandbits
        time_of = self._time
        p_id, p_worker = position["id"], position["worker_id"]
        p_created, p_started = position["created_at"], position["started_at"]
        p_finished, p_reported = position["finished_at"], position["last_reported_at"]
        for index in range(start, stop):
            values = list(templates[row_kinds(index)])
            created_us = step_us * index
            finished = time_of(origin, created_us + ran_us)
            values[p_id] = f"{bits(128):032x}"
            values[p_worker] = f"bench-worker-{index % WORKERS}"
            values[p_created] = time_of(origin, created_us)
            values[p_started] = time_of(origin, created_us + 1_000_000)
            values[p_finished] = finished
            values[p_reported] = finished
            yield tuple(values)

    def _time(self, origin: datetime.datetime, offset_us: int) -> Any:
        value = origin + datetime.timedelta(microseconds=offset_us)
        if self.postgres:
            return value
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def count_finished_before(self, cutoff: datetime.datetime) -> int:
        """How many operations in the table finished before ``cutoff`` (due for retention)."""
        mark = "%s" if self.postgres else "?"
        query = f"SELECT count(*) FROM {self.table} WHERE finished_at < {mark}"  # noqa: S608
        moment = self._time(cutoff, 0)
        with self._connect() as conn:
            cursor = conn.cursor()
            cursor.execute(query, (moment,))
            (count,) = cursor.fetchone()
        return int(count)

    def load(self, spread: Spread, start: int, stop: int, *, chunk: int = 100_000) -> None:
        """Insert rows ``start`` to ``stop - 1`` of ``spread``, ``chunk`` per transaction."""
        names = ", ".join(self.columns)
        with self._connect() as conn:
            cursor = conn.cursor()
            for first in range(start, stop, chunk):
                rows = self.rows(spread, first, min(stop, first + chunk))
                if self.postgres:
                    with cursor.copy(f"COPY {self.table} ({names}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                else:
                    marks = ", ".join("?" * len(self.columns))
                    insert = f"INSERT INTO {self.table} ({names}) VALUES ({marks})"  # noqa: S608
                    cursor.executemany(insert, rows)
                conn.commit()
            if self.postgres:
                # What autovacuum does within minutes of this many inserts: planner
                # statistics, and the visibility map that lets index-only scans (the
                # capped counts) skip the table.
                conn.autocommit = True
                cursor.execute(f"VACUUM (ANALYZE) {self.table}")


class _SqliteConnection:
    """A ``sqlite3`` connection for loading: a large page cache, closed on exit."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, timeout=60)
        self.conn.execute("PRAGMA cache_size=-200000")  # 200 MB: the indexes stay in memory
        # A load is redone from scratch if the machine fails during it: no sync per commit.
        self.conn.execute("PRAGMA synchronous=OFF")

    def cursor(self) -> sqlite3.Cursor:
        return self.conn.cursor()

    def commit(self) -> None:
        self.conn.commit()

    def __enter__(self) -> _SqliteConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
