"""A job's span as plain data and back: nothing of it lost on the way to its worker."""

from __future__ import annotations

import pickle

from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import StatusCode
from support.tracing import memory_tracing

from ktrdr.tracing.records import record_of, span_of


def test_a_span_survives_the_pipe() -> None:
    """record_of → pickle → span_of keeps name, ids, parent, times, attributes, events, error."""
    memory = memory_tracing()
    with memory.tracing.span("parent"), memory.tracing.span("job") as job:
        job.set_attribute("ktrdr.checkpoint.step", 4)
        job.add_event("note", {"why": "test"})
        job.set_status(StatusCode.ERROR, "bars file missing")
    original = memory.named("job")
    record = pickle.loads(pickle.dumps(record_of(original)))  # noqa: S301 - our own bytes
    rebuilt = span_of(record, Resource.create({"service.name": "worker"}))
    assert rebuilt.name == "job"
    assert rebuilt.get_span_context() == original.get_span_context()
    assert rebuilt.parent is not None
    assert original.parent is not None
    assert rebuilt.parent.span_id == original.parent.span_id
    assert (rebuilt.start_time, rebuilt.end_time) == (original.start_time, original.end_time)
    assert rebuilt.attributes == {"ktrdr.checkpoint.step": 4}
    assert [(e.name, dict(e.attributes or {})) for e in rebuilt.events] == [
        ("note", {"why": "test"})
    ]
    assert (rebuilt.status.status_code, rebuilt.status.description) == (
        StatusCode.ERROR,
        "bars file missing",
    )
    assert rebuilt.resource.attributes["service.name"] == "worker"
    memory.close()
