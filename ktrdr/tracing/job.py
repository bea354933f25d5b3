"""Tracing inside a job's process: spans recorded, sent to the worker as messages.

The job's process gets the ``traceparent`` of its worker's operation span in its
request. It builds a provider of its own whose only processor hands each finished
span, synchronously, to ``send`` (the pipe to the worker, see
``ktrdr.tracing.records`` for why the child never exports itself). Spans are
therefore on the pipe before the job's outcome, and nothing is left to flush when
the process exits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

from ktrdr.tracing.records import SpanRecord, record_of
from ktrdr.tracing.tracing import Tracing

__all__ = ["job_tracing"]


class _RecordExporter(SpanExporter):
    """Turns each finished span into a :class:`SpanRecord` and hands it to ``send``."""

    def __init__(self, send: Callable[[SpanRecord], None]) -> None:
        self._send = send

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            for span in spans:
                self._send(record_of(span))
        except (OSError, ValueError):  # the worker is gone: its outcome is lost anyway
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def job_tracing(send: Callable[[SpanRecord], None]) -> Tracing:
    """Tracing for a job's process whose spans go to ``send``."""
    provider = TracerProvider(sampler=ParentBased(root=ALWAYS_ON), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(_RecordExporter(send)))
    return Tracing(provider=provider)
