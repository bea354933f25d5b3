"""Trace context as text: the W3C ``traceparent`` a stored operation or a job carries.

An operation attempt's trace begins in one process (the backend's create request) and
continues in others, later (the dispatcher, the worker, the job's process). What
travels between them is the ``traceparent`` string of the span to continue from:
over HTTP as a header (the instrumentation does that), in the store next to the
operation, and in the job's request. This module turns the current span into that
string and back. It uses the OpenTelemetry API only (no SDK), so it costs nothing
when tracing is off: there is no recording span, and every function returns None.
"""

from __future__ import annotations

import re

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "TRACEPARENT_HEADER",
    "context_from",
    "current_trace_id",
    "current_traceparent",
    "is_traceparent",
    "trace_id_of",
    "traceparent_of",
]

TRACEPARENT_HEADER = "traceparent"
#: ``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``, ids not all zeros.
_TRACEPARENT = re.compile(r"^00-(?!0{32})([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_PROPAGATOR = TraceContextTextMapPropagator()


def is_traceparent(value: str) -> bool:
    """Whether ``value`` is a version-00 W3C ``traceparent`` with valid ids."""
    return _TRACEPARENT.fullmatch(value) is not None


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span, or None when it is not being recorded."""
    span = trace.get_current_span()
    if not span.get_span_context().is_valid or not span.is_recording():
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT_HEADER)


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the current span, or None when it is not recorded.

    What log records carry as ``trace_id`` (``ktrdr.logs.configure_logging``'s
    ``trace_id_source``): a line written inside a span of a trace names that trace.
    """
    span = trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid or not span.is_recording():
        return None
    return trace.format_trace_id(context.trace_id)


def traceparent_of(span: trace.Span) -> str | None:
    """The ``traceparent`` of ``span``, or None when it is not being recorded."""
    with trace.use_span(span, end_on_exit=False):
        return current_traceparent()


def context_from(traceparent: str | None) -> Context | None:
    """A context whose current span is the remote span ``traceparent`` names.

    None for None or for a string that is not a valid ``traceparent`` (a span started
    with it as parent then begins a new trace).
    """
    if traceparent is None or not is_traceparent(traceparent):
        return None
    return _PROPAGATOR.extract({TRACEPARENT_HEADER: traceparent}, context=Context())


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32 hex digits of the trace ``traceparent`` belongs to (None if not one)."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.fullmatch(traceparent)
    return match.group(1) if match else None
