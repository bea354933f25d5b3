"""An operation's worker-side log, fetched from the worker that keeps it (``ktrdr ops logs``).

Workers keep each operation's log lines beside its checkpoints
(``ktrdr.workers.operation_logs``) and serve them at ``GET /operations/{id}/logs``
with the worker token. The backend asks the worker the operation last ran on, then
any other live worker of its type (workers that share a checkpoint directory share
the logs, so an operation resumed elsewhere, or whose worker went away, is still
found). It goes through the dispatcher (the one HTTP client to workers: their base
URL only, no redirects), reads at most :data:`MAX_FETCH_BYTES`, and keeps only what
parses as a JSON object per line, with plain values: the worker's answer is data,
never markup or anything else passed through.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from ktrdr.api.dispatcher import Dispatcher
from ktrdr.api.registry import WorkerRecord, WorkerRegistry
from ktrdr.protocol import WORKER_OPERATIONS_PATH, OperationView, WorkerStatus

__all__ = [
    "MAX_FETCH_BYTES",
    "MAX_LINE_FIELDS",
    "OperationLog",
    "fetch_operation_log",
    "parse_lines",
]

#: Most bytes read from a worker's answer (a worker keeps at most 1 MiB per operation).
MAX_FETCH_BYTES = 2 * 1024 * 1024
#: Most fields kept per line (a record has about twenty).
MAX_LINE_FIELDS = 64
_PLAIN = (str, int, float, bool, type(None))


@attrs.frozen(kw_only=True)
class OperationLog:
    """What ``GET /api/v1/operations/{id}/logs`` answers."""

    operation_id: str
    #: The worker that served the lines (None when none had them).
    worker_id: str | None
    lines: list[dict[str, Any]]
    #: True when the answer was longer than the backend reads (the oldest lines are kept).
    truncated: bool = False
    #: Why there are no lines, when there are none.
    reason: str | None = None


def parse_lines(body: bytes) -> list[dict[str, Any]]:
    """The JSON objects of ``body``, one per line, reduced to plain values; others dropped."""
    lines: list[dict[str, Any]] = []
    for raw in body.splitlines():
        try:
            item = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            continue
        if not isinstance(item, dict):
            continue
        kept = {
            str(key): value if isinstance(value, _PLAIN) else str(value)
            for key, value in list(item.items())[:MAX_LINE_FIELDS]
        }
        lines.append(kept)
    return lines


def _candidates(view: OperationView, registry: WorkerRegistry) -> list[WorkerRecord]:
    """The operation's last worker first, then every other live worker of its type."""
    records = registry.records()
    first = [r for r in records if r.worker_id == view.worker_id]
    others = [
        r
        for r in records
        if r.worker_id != view.worker_id
        and r.worker_type is view.type
        and r.status is not WorkerStatus.UNAVAILABLE
    ]
    return first + others


async def fetch_operation_log(
    view: OperationView, *, registry: WorkerRegistry, dispatcher: Dispatcher
) -> OperationLog:
    """The worker-side log of ``view`` from the first worker that has it."""
    path = f"{WORKER_OPERATIONS_PATH}/{view.id}/logs"
    asked: list[str] = []
    for worker in _candidates(view, registry):
        answer = await dispatcher.read_from_worker(worker, path, max_bytes=MAX_FETCH_BYTES)
        if answer is None or answer.status_code != 200:
            asked.append(worker.worker_id)
            continue
        return OperationLog(
            operation_id=view.id,
            worker_id=worker.worker_id,
            lines=parse_lines(answer.body),
            truncated=answer.truncated,
        )
    where = (
        f"asked {', '.join(asked)}" if asked else f"no live {view.type.value} worker is registered"
    )
    ran_on = f"it last ran on worker {view.worker_id}" if view.worker_id else "no worker holds it"
    reason = (
        f"no worker answered with the log of operation {view.id} ({ran_on}; {where}); "
        "workers keep an operation's log under KTRDR_CHECKPOINT_DIR/.logs"
    )
    return OperationLog(operation_id=view.id, worker_id=None, lines=[], reason=reason)
