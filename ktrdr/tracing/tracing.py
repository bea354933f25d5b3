"""The :class:`Tracing` object a process's entrypoint builds and passes to what makes spans.

There is no tracer provider at module level and none is installed as OpenTelemetry's
global: the entrypoint builds one (``ktrdr.tracing.build_tracing``) from
``TracingSettings`` and hands this object to the server, the dispatcher, the worker;
the instrumentations get its provider explicitly. With tracing off it holds
OpenTelemetry's no-op provider, so every span is a non-recording one and costs a few
attribute reads. This module needs the OpenTelemetry API only, never the SDK.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context

import ktrdr
from ktrdr.tracing.context import context_from

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

    from ktrdr.tracing.records import SpanRecord

__all__ = ["SCOPE", "Tracing"]

#: Instrumentation scope of the spans ktrdr makes itself.
SCOPE = "ktrdr"


class Tracing:
    """One process's tracing: its tracer provider, or none.

    ``provider`` is None when tracing is off. ``on_record`` exports a span a job's
    process recorded (see ``ktrdr.tracing.records``); ``on_flush(timeout_s)`` sends
    what is queued; ``on_shutdown(timeout_s)`` flushes and stops the exporters.
    """

    def __init__(
        self,
        *,
        provider: trace.TracerProvider | None = None,
        on_record: Callable[[SpanRecord], None] | None = None,
        on_flush: Callable[[float], bool] | None = None,
        on_shutdown: Callable[[float], None] | None = None,
    ) -> None:
        self._enabled = provider is not None
        self._provider: trace.TracerProvider = (
            provider if provider is not None else trace.NoOpTracerProvider()
        )
        self._tracer = self._provider.get_tracer(SCOPE, ktrdr.__version__)
        self._on_record = on_record
        self._on_flush = on_flush
        self._on_shutdown = on_shutdown

    @classmethod
    def off(cls) -> Tracing:
        """Tracing that records nothing (``KTRDR_OTEL_ENABLED=false``, and tests)."""
        return cls()

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded and exported."""
        return self._enabled

    @property
    def provider(self) -> trace.TracerProvider:
        """The provider to hand to an instrumentation (the no-op one when off)."""
        return self._provider

    def start(
        self,
        name: str,
        *,
        parent: str | None = None,
        root: bool = False,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> trace.Span:
        """Start a span, not made current; the caller ends it.

        Its parent is the span ``parent`` (a ``traceparent``) names; without one, the
        current span, or none at all with ``root`` (a new trace).
        """
        context = context_from(parent)
        if context is None and root:
            context = Context()
        return self._tracer.start_span(name, context=context, kind=kind, attributes=attributes)

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        root: bool = False,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Iterator[trace.Span]:
        """A span made current for the ``with`` block; an exception marks it failed."""
        span = self.start(name, parent=parent, root=root, attributes=attributes)
        with trace.use_span(span, end_on_exit=True):
            yield span

    @contextlib.contextmanager
    def within(self, span: trace.Span, *, end: bool = True) -> Iterator[trace.Span]:
        """Make a span from :meth:`start` current for the ``with`` block (and end it)."""
        with trace.use_span(span, end_on_exit=end):
            yield span

    def export_record(self, record: SpanRecord) -> None:
        """Export a span recorded by a job's process, with this process's spans."""
        if self._on_record is not None:
            self._on_record(record)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Send every span queued so far; False if that did not finish in time."""
        return self._on_flush(timeout_s) if self._on_flush is not None else True

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (for at most ``timeout_s``) and stop exporting."""
        if self._on_shutdown is not None:
            on_shutdown, self._on_shutdown = self._on_shutdown, None
            on_shutdown(timeout_s)
