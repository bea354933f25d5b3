"""Building a process's tracing: off costs nothing, on exports with a bounded processor."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from support.tracing import ON, MemoryTracing, memory_tracing

from ktrdr.config import TracingSettings
from ktrdr.tracing import SpanRecord, build_tracing


@pytest.fixture
def traced() -> Iterator[MemoryTracing]:
    """Tracing with an in-memory exporter."""
    memory = memory_tracing(component="backend", instance="host:8000")
    yield memory
    memory.close()


def test_tracing_off_records_nothing_and_never_loads_the_sdk() -> None:
    """KTRDR_OTEL_ENABLED=false: spans are no-ops, and no process imports the SDK."""
    code = (
        "import sys\n"
        "import ktrdr.api.main, ktrdr.workers.entrypoint, ktrdr.jobs.process\n"
        "from ktrdr.config import TracingSettings\n"
        "from ktrdr.tracing import build_tracing\n"
        "t = build_tracing(TracingSettings(), component='backend', instance='x')\n"
        "with t.span('s') as span:\n"
        "    assert not span.is_recording() and not t.enabled\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_spans_carry_the_service_component_and_instance(traced: MemoryTracing) -> None:
    """Every span's resource names KTRDR_OTEL_SERVICE_NAME, the component and the instance."""
    with traced.tracing.span("work", attributes={"ktrdr.operation.id": "op1"}):
        pass
    span = traced.named("work")
    assert span.resource.attributes["service.name"] == "ktrdr"
    assert span.resource.attributes["ktrdr.component"] == "backend"
    assert span.resource.attributes["service.instance.id"] == "host:8000"
    assert span.attributes == {"ktrdr.operation.id": "op1"}


def test_no_global_tracer_provider_is_installed(traced: MemoryTracing) -> None:
    """Building tracing leaves OpenTelemetry's global provider alone (it is injected)."""
    assert trace.get_tracer_provider() is not traced.tracing.provider
    with trace.get_tracer("elsewhere").start_as_current_span("global") as span:
        assert not span.is_recording()


def test_a_lone_client_call_is_not_traced_but_one_inside_a_trace_is(
    traced: MemoryTracing,
) -> None:
    """A heartbeat sent or a background statement (CLIENT, no parent) makes no trace."""
    lone = traced.tracing.start("heartbeat", kind=SpanKind.CLIENT)
    lone.end()
    served = traced.tracing.start("request", kind=SpanKind.SERVER)
    with traced.tracing.within(served):
        inner = traced.tracing.start("SELECT", kind=SpanKind.CLIENT)
        inner.end()
    assert not lone.is_recording()
    assert [s.name for s in traced.spans()] == ["SELECT", "request"]


def test_a_job_record_is_exported_in_its_trace_under_this_process(
    traced: MemoryTracing,
) -> None:
    """A span recorded by a job's process is exported with its ids, parent and attributes."""
    with traced.tracing.span("run training") as run:
        context = run.get_span_context()
    record = SpanRecord(
        name="job training",
        trace_id=context.trace_id,
        span_id=0x1234,
        parent_span_id=context.span_id,
        start_ns=1_000,
        end_ns=2_000,
        attributes={"process.pid": 42},
        error="boom",
    )
    traced.tracing.export_record(record)
    job = traced.named("job training")
    assert job.get_span_context().trace_id == context.trace_id
    assert job.parent is not None
    assert job.parent.span_id == context.span_id
    assert (job.start_time, job.end_time) == (1_000, 2_000)
    assert job.attributes == {"process.pid": 42}
    assert job.status.description == "boom"
    assert job.resource.attributes["ktrdr.component"] == "backend"


def test_console_output_writes_each_span_as_json() -> None:
    """KTRDR_OTEL_CONSOLE_OUTPUT=true: one JSON object per span on the given stream."""
    stream = io.StringIO()
    settings = TracingSettings(enabled=True, console_output=True)
    tracing = build_tracing(settings, component="test", instance="t", exporters=[], console=stream)
    with tracing.span("shown"):
        pass
    tracing.shutdown()
    assert json.loads(stream.getvalue())["name"] == "shown"


def test_shutdown_twice_is_harmless() -> None:
    """An entrypoint's finally may run after an earlier shutdown: nothing breaks."""
    tracing = build_tracing(ON, component="test", instance="t", exporters=[])
    tracing.shutdown()
    tracing.shutdown()
    assert tracing.enabled
