"""The public surface of ktrdr.tracing (a change here is a deliberate API change)."""

from __future__ import annotations

import ktrdr.tracing


def test_public_names_are_pinned() -> None:
    """ktrdr.tracing exports exactly these names, and each one exists."""
    assert sorted(ktrdr.tracing.__all__) == [
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
    assert all(hasattr(ktrdr.tracing, name) for name in ktrdr.tracing.__all__)
