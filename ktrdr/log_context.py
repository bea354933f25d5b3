"""The operation a log line belongs to: its id, its attempt and, when tracing is on, the trace.

Code that handles an operation (the backend's dispatch, reports and operator routes;
the worker's start, supervision and report; the job in its own process) runs inside
:func:`operation_context`. :class:`OperationContextFilter`, installed on every log
handler by ``ktrdr.logs``, copies the context onto each record as ``operation_id``,
``attempt`` and ``trace_id``, which the text and JSON formats print. A record that
already carries ``operation_id`` (one a job process sent to its worker, or one
logged with ``extra=``) keeps its own.

Tracing hooks in two ways, both optional: pass ``trace_id=`` to
:func:`operation_context` (the trace of the attempt), or give the filter a
``trace_id_source`` (e.g. a function returning the current span's trace id); the
context's own trace id wins. The current context lives in a :class:`ContextVar`, the
one module-level object here: that is how context variables work (asyncio tasks
copy it when created; threads and child processes start without it, so the code
that starts them binds it again). Imports nothing from ktrdr.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from typing import Any

import attrs

__all__ = [
    "CONTEXT_FIELDS",
    "OperationContextFilter",
    "OperationLogContext",
    "TraceIdSource",
    "attempt_of",
    "current_operation",
    "operation_context",
]

#: The record attributes the filter sets (None outside an operation).
CONTEXT_FIELDS = ("operation_id", "attempt", "trace_id")

#: Returns the current trace id (32 hex digits), or None when there is none.
TraceIdSource = Callable[[], "str | None"]


@attrs.frozen
class OperationLogContext:
    """What every log line written for one attempt of one operation carries."""

    operation_id: str
    attempt: int = 1
    trace_id: str | None = None


_CURRENT: contextvars.ContextVar[OperationLogContext | None] = contextvars.ContextVar(
    "ktrdr_operation_log_context", default=None
)


def current_operation() -> OperationLogContext | None:
    """The operation the running code handles, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def operation_context(
    operation_id: str, *, attempt: int = 1, trace_id: str | None = None
) -> Iterator[OperationLogContext]:
    """Log lines written inside the block (and tasks created in it) name this operation."""
    context = OperationLogContext(operation_id=operation_id, attempt=attempt, trace_id=trace_id)
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def attempt_of(message: Any) -> int:
    """The attempt a wire message or view carries (``attempt``); 1 where it has none.

    Operation views, start requests, heartbeats and reports carry the attempt number;
    an operation never dispatched (attempt 0) and a message from a worker older than
    numbered attempts log as attempt 1.
    """
    attempt = getattr(message, "attempt", None)
    return attempt if isinstance(attempt, int) and attempt > 0 else 1


class OperationContextFilter(logging.Filter):
    """Sets ``operation_id``, ``attempt`` and ``trace_id`` on every record (never drops one)."""

    def __init__(self, trace_id_source: TraceIdSource | None = None) -> None:
        super().__init__()
        self._trace_id_source = trace_id_source

    def filter(self, record: logging.LogRecord) -> bool:
        """Copy the current operation onto ``record`` unless it carries one already."""
        if getattr(record, "operation_id", None) is not None:
            return True
        context = _CURRENT.get()
        trace_id = context.trace_id if context is not None else None
        if trace_id is None and self._trace_id_source is not None:
            trace_id = self._trace_id_source()
        record.operation_id = context.operation_id if context is not None else None
        record.attempt = context.attempt if context is not None else None
        record.trace_id = trace_id
        return True
