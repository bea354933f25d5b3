"""OpenTelemetry tracing: one trace per operation attempt, across backend, worker and job.

An attempt's trace begins with the request that created (or resumed) the operation
and continues through the dispatch, the worker's start, the job's steps (a span per
checkpoint) and the worker's report. Between processes the context travels as the
W3C ``traceparent``: over HTTP in a header (the instrumented httpx clients write it,
the instrumented FastAPI apps read it), in the store next to the operation, and in
the job's request; a job's spans come back to its worker as messages.

Entrypoints call :func:`build_tracing` once with ``TracingSettings`` and pass the
:class:`Tracing` down; nothing here is set up at import time and no global tracer
provider is installed. With ``KTRDR_OTEL_ENABLED`` off, the SDK is never imported.
Imports only ``ktrdr.config`` from ktrdr: the runtime, the backend and the jobs all
use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from ktrdr.config import TracingSettings
from ktrdr.tracing.context import (
    context_from,
    current_trace_id,
    current_traceparent,
    is_traceparent,
    trace_id_of,
    traceparent_of,
)
from ktrdr.tracing.instrument import instrument_app, instrument_client, instrument_engine
from ktrdr.tracing.records import SpanEvent, SpanRecord
from ktrdr.tracing.tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "SpanEvent",
    "SpanRecord",
    "Tracing",
    "build_tracing",
    "context_from",
    "current_trace_id",
    "current_traceparent",
    "instrument_app",
    "instrument_client",
    "instrument_engine",
    "is_traceparent",
    "log_trace_ids",
    "trace_id_of",
    "traceparent_of",
]


def build_tracing(
    settings: TracingSettings,
    *,
    component: str,
    instance: str,
    exporters: Sequence[SpanExporter] | None = None,
    console: TextIO | None = None,
) -> Tracing:
    """The tracing of one process (an entrypoint calls it once); off unless enabled.

    ``component`` (``backend``, ``training-worker``...) and ``instance`` (the worker
    id) describe the process in every span's resource. ``exporters`` replaces the
    OTLP exporter (tests pass an in-memory one); ``console`` is where
    ``KTRDR_OTEL_CONSOLE_OUTPUT`` writes (standard output by default).
    """
    if not settings.enabled:
        return Tracing.off()
    from ktrdr.tracing.export import quiet_grpc_core

    quiet_grpc_core()  # before the OTLP exporter loads grpc
    from ktrdr.tracing.setup import build_sdk_tracing

    return build_sdk_tracing(
        settings, component=component, instance=instance, exporters=exporters, console=console
    )


def log_trace_ids(settings: TracingSettings) -> Callable[[], str | None] | None:
    """The ``trace_id_source`` for ``ktrdr.logs.configure_logging``: None when tracing is off.

    With tracing on, a log line written inside a recorded span carries that span's
    trace id; with it off, records are stamped exactly as before (no lookup at all).
    """
    return current_trace_id if settings.enabled else None
