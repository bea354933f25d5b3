"""Tracing for unit tests: the real SDK setup with an in-memory exporter."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ktrdr.config import TracingSettings
from ktrdr.tracing import Tracing, build_tracing

ON = TracingSettings(enabled=True)


def memory_tracing(component: str = "test", instance: str = "test-1") -> MemoryTracing:
    """Tracing as an entrypoint builds it, exporting to memory."""
    return MemoryTracing(component, instance)


class MemoryTracing:
    """A :class:`Tracing` and the spans it exported (flushed on read)."""

    def __init__(self, component: str, instance: str) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracing: Tracing = build_tracing(
            ON, component=component, instance=instance, exporters=[self.exporter]
        )

    def spans(self) -> list[ReadableSpan]:
        """Every span finished so far, in the order they finished."""
        assert self.tracing.flush()
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> ReadableSpan:
        """The one finished span called ``name``."""
        found = [span for span in self.spans() if span.name == name]
        assert len(found) == 1, [span.name for span in self.spans()]
        return found[0]

    def close(self) -> None:
        self.tracing.shutdown()


def trace_hex(span: ReadableSpan) -> str:
    """The 32 hex digits of ``span``'s trace id."""
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}"
