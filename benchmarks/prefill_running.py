"""Fill an operations database with one running operation per benchmark worker.

Run by ``bench_heartbeat.py`` before it starts each backend, with that backend's
``PYTHONPATH`` (so ``--before`` fills the database with the code it measures, in its
own schema): ``python benchmarks/prefill_running.py DB_PATH COUNT``. Operation
``op-bench-NNNN`` runs on worker ``bench-NNNN`` (its first attempt), so the
heartbeats name a real running operation, as a busy worker's do, and the backend
checks and stamps it (the heartbeat path with attempts).
"""

from __future__ import annotations

import datetime
import sys

from ktrdr.api.store import OperationStore
from ktrdr.protocol import OperationType


def operation_id(worker_id: str) -> str:
    """The operation the benchmark's worker ``worker_id`` runs."""
    return f"op-{worker_id}"


def main() -> None:
    path, count = sys.argv[1], int(sys.argv[2])
    store = OperationStore.open_url(f"sqlite+pysqlite:///{path}")
    now = datetime.datetime.now(datetime.UTC)
    for i in range(count):
        worker_id = f"bench-{i:04d}"
        kind = OperationType.TRAINING if i % 2 else OperationType.BACKTEST
        store.create(
            operation_type=kind, parameters={}, now=now, operation_id=operation_id(worker_id)
        )
        store.mark_running(operation_id(worker_id), worker_id=worker_id, now=now)
    store.engine.dispose()


if __name__ == "__main__":
    main()
