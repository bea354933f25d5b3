"""The traceparent text that carries an attempt's trace between processes and the store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from support.tracing import MemoryTracing, memory_tracing, trace_hex

from ktrdr.tracing import (
    Tracing,
    context_from,
    current_trace_id,
    current_traceparent,
    is_traceparent,
    trace_id_of,
    traceparent_of,
)

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def traced() -> Iterator[MemoryTracing]:
    """Tracing with an in-memory exporter."""
    memory = memory_tracing()
    yield memory
    memory.close()


def test_no_span_or_tracing_off_gives_no_traceparent() -> None:
    """Outside any span, and inside a span of tracing that is off, there is nothing to carry."""
    assert current_traceparent() is None
    with Tracing.off().span("nothing"):
        assert current_traceparent() is None


def test_the_current_span_becomes_a_traceparent_and_back(traced: MemoryTracing) -> None:
    """A recorded span's traceparent names its trace and span; a child continues it."""
    with traced.tracing.span("parent") as parent:
        carried = current_traceparent()
        assert carried == traceparent_of(parent)
    assert carried is not None
    assert is_traceparent(carried)
    assert traceparent_of(parent) is None  # ended: no longer recording
    assert trace_id_of(carried) == f"{parent.get_span_context().trace_id:032x}"
    with traced.tracing.span("child", parent=carried):
        pass
    child = traced.named("child")
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id
    assert trace_hex(child) == trace_id_of(carried)


def test_the_current_trace_id_is_that_of_the_recorded_span_only(traced: MemoryTracing) -> None:
    """current_trace_id: the recorded current span's 32 hex digits; None outside one or off."""
    assert current_trace_id() is None
    with Tracing.off().span("nothing"):
        assert current_trace_id() is None
    with traced.tracing.span("outer"):
        with traced.tracing.span("inner"):
            inner_id = current_trace_id()
        outer_id = current_trace_id()
    assert inner_id == outer_id == trace_hex(traced.named("outer"))
    assert outer_id is not None
    assert len(outer_id) == 32
    assert current_trace_id() is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        VALID + "\n",
    ],
)
def test_a_string_that_is_not_a_traceparent_carries_nothing(text: str) -> None:
    """Invalid text (from a damaged row) gives no context and no trace id, never an error."""
    assert not is_traceparent(text)
    assert context_from(text) is None
    assert trace_id_of(text) is None


def test_a_traceparent_names_its_trace() -> None:
    """trace_id_of gives the 32 hex digits of a valid traceparent; the context holds it."""
    assert trace_id_of(VALID) == "0af7651916cd43dd8448eb211c80319c"
    context = context_from(VALID)
    assert context is not None
    span_context = trace.get_current_span(context).get_span_context()
    assert (span_context.trace_id, span_context.span_id) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
    )


def test_a_root_span_begins_a_new_trace_inside_another(traced: MemoryTracing) -> None:
    """root=True ignores the current span: a new attempt is a new trace."""
    with traced.tracing.span("outer") as outer, traced.tracing.span("fresh", root=True) as fresh:
        pass
    assert fresh.get_span_context().trace_id != outer.get_span_context().trace_id
    assert traced.named("fresh").parent is None
