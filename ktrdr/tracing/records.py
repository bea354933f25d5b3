"""Spans as plain data, so a job's process can hand its spans to its worker.

A job runs in a child process (``ktrdr.workers.job_process``) that must not talk to
the tracing backend itself: a child exits as soon as its job ends, and a flush to an
unreachable endpoint would hold its exit, and with it the operation's report. So the
child records its spans as :class:`SpanRecord` messages on the pipe it already has,
and the worker exports them with its own spans (:meth:`Tracing.export_record`), in
the same trace. This module defines the record and the two conversions; only the
record itself is needed to import it (the SDK is imported by the conversions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["SpanEvent", "SpanRecord", "record_of", "span_of"]

#: Scope of the spans a job's process records.
JOB_SCOPE = "ktrdr.jobs"


@attrs.frozen(kw_only=True)
class SpanEvent:
    """A timestamped event inside a span (an exception, a note)."""

    name: str
    time_ns: int
    attributes: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class SpanRecord:
    """One finished span: identity, parent, timing, attributes, events, status."""

    name: str
    trace_id: int
    span_id: int
    parent_span_id: int | None
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    events: tuple[SpanEvent, ...] = ()
    #: The description of an error status; None when the span did not fail.
    error: str | None = None
    #: W3C trace flags (sampled, random trace id).
    trace_flags: int = 1


def record_of(span: ReadableSpan) -> SpanRecord:
    """The record of a finished span (in the job's process)."""
    from opentelemetry.trace import StatusCode

    context = span.get_span_context()
    assert context is not None  # SDK spans always have a context
    parent = span.parent
    status = span.status
    return SpanRecord(
        name=span.name,
        trace_id=context.trace_id,
        span_id=context.span_id,
        parent_span_id=parent.span_id if parent is not None else None,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        attributes=dict(span.attributes or {}),
        events=tuple(
            SpanEvent(name=e.name, time_ns=e.timestamp, attributes=dict(e.attributes or {}))
            for e in span.events
        ),
        error=(status.description or "error") if status.status_code is StatusCode.ERROR else None,
        trace_flags=int(context.trace_flags),
    )


def span_of(record: SpanRecord, resource: Resource) -> ReadableSpan:
    """The span of a record (in the worker), under the worker's ``resource``."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

    flags = TraceFlags(record.trace_flags | TraceFlags.SAMPLED)
    parent = None
    if record.parent_span_id is not None:
        parent = SpanContext(record.trace_id, record.parent_span_id, is_remote=False,
                             trace_flags=flags)  # fmt: skip
    status = Status(StatusCode.UNSET)
    if record.error is not None:
        status = Status(StatusCode.ERROR, record.error)
    return ReadableSpan(
        name=record.name,
        context=SpanContext(record.trace_id, record.span_id, is_remote=False, trace_flags=flags),
        parent=parent,
        resource=resource,
        attributes=dict(record.attributes),
        events=[Event(e.name, dict(e.attributes), e.time_ns) for e in record.events],
        status=status,
        start_time=record.start_ns,
        end_time=record.end_ns,
        instrumentation_scope=InstrumentationScope(JOB_SCOPE),
    )
