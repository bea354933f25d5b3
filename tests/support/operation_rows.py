"""Many operations rows at once, written straight into a store's table (bulk executemany).

For tests that need a table large enough for a query planner to prefer its indexes
(or many expired rows for retention); creating each through the store would take
minutes. Rows cycle through types and statuses deterministically; ``created_at``
steps by one second (``tie_every`` rows share a second, so ties on the time exist).
"""

from __future__ import annotations

import datetime
from typing import Any

import sqlalchemy as sa

from ktrdr.api.store import OperationStore
from ktrdr.protocol import OperationStatus, OperationType

UTC = datetime.timezone.utc
START = datetime.datetime(2026, 1, 1, tzinfo=UTC)
#: Status of row i: mostly completed, like a long-lived installation.
STATUS_CYCLE = (
    [OperationStatus.COMPLETED] * 16
    + [OperationStatus.FAILED, OperationStatus.CANCELLED]
    + [OperationStatus.PENDING, OperationStatus.RUNNING]
)


def operations_table(store: OperationStore) -> sa.Table:
    """The store's ``operations`` table (with its schema, if any)."""
    return next(t for t in store.metadata.sorted_tables if t.name == "operations")


def row(
    i: int, *, tie_every: int = 3, finished_at: datetime.datetime | None = None
) -> dict[str, Any]:
    """The values of row ``i`` (id ``op-<i>``, zero-padded so ids sort like numbers)."""
    status = STATUS_CYCLE[i % len(STATUS_CYCLE)]
    created = START + datetime.timedelta(seconds=i // tie_every)
    finished = finished_at or created + datetime.timedelta(seconds=30)
    return {
        "id": f"op-{i:08d}",
        "type": (OperationType.TRAINING if i % 3 else OperationType.BACKTEST).value,
        "status": status.value,
        "parameters": {"seed": i},
        "progress": None,
        "result": {"i": i} if status is OperationStatus.COMPLETED else None,
        "error": None,
        "worker_id": "w-1" if status is not OperationStatus.PENDING else None,
        "resume": False,
        "created_at": created,
        "started_at": created,
        "finished_at": finished if status.finished else None,
        "last_reported_at": created,
    }


def insert_rows(store: OperationStore, rows: list[dict[str, Any]], *, chunk: int = 5000) -> None:
    """Insert ``rows`` in chunks (one executemany per chunk, one transaction each)."""
    table = operations_table(store)
    for start in range(0, len(rows), chunk):
        with store.engine.begin() as conn:
            conn.execute(sa.insert(table), rows[start : start + chunk])


def analyze(store: OperationStore) -> None:
    """Refresh the planner's statistics (PostgreSQL ``ANALYZE``, SQLite ``ANALYZE``)."""
    table = operations_table(store)
    name = f'"{table.schema}".operations' if table.schema else "operations"
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"ANALYZE {name}"))


__all__ = ["START", "analyze", "insert_rows", "operations_table", "row"]
