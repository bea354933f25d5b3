"""A job's process records its spans and hands them to its worker, in the operation's trace."""

from __future__ import annotations

from support.tracing import memory_tracing

from ktrdr.tracing import SpanRecord, traceparent_of
from ktrdr.tracing.job import job_tracing


def test_job_spans_become_records_under_the_workers_span() -> None:
    """Each finished span is sent as a record, child of the traceparent it was given."""
    worker = memory_tracing()
    with worker.tracing.span("run training") as run:
        carried = traceparent_of(run)
    sent: list[SpanRecord] = []
    tracing = job_tracing(sent.append)
    with tracing.span("job training", parent=carried), tracing.span("checkpoint"):
        pass
    assert [r.name for r in sent] == ["checkpoint", "job training"]
    checkpoint, job = sent
    context = run.get_span_context()
    assert job.trace_id == checkpoint.trace_id == context.trace_id
    assert job.parent_span_id == context.span_id
    assert checkpoint.parent_span_id == job.span_id
    for record in sent:
        worker.tracing.export_record(record)
    assert {s.name for s in worker.spans()} == {"run training", "job training", "checkpoint"}
    worker.close()


def test_a_worker_gone_does_not_break_the_job() -> None:
    """Sending a span to a closed pipe is ignored (the job's outcome decides what happens)."""

    def closed(record: SpanRecord) -> None:
        raise OSError("pipe closed")

    tracing = job_tracing(closed)
    with tracing.span("job training"):
        pass
