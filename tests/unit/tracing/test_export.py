"""An endpoint that fails: one warning per outage, batches dropped at once, no exporter noise."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ktrdr.config import TracingSettings
from ktrdr.tracing import build_tracing
from ktrdr.tracing.export import GuardedExporter, quiet_grpc_core

NOISY = "tests.noisy.exporter"
WARNING = "tracing: spans cannot be sent to"


class Scripted(SpanExporter):
    """An exporter that answers from a script and logs like the OTLP exporter does."""

    def __init__(self) -> None:
        self.succeed = False
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        if self.succeed:
            return SpanExportResult.SUCCESS
        logging.getLogger(NOISY).error("Failed to export traces to x:4317, error code: UNAVAILABLE")
        return SpanExportResult.FAILURE


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def test_failures_warn_once_and_drop_without_calling_the_endpoint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ten failing batches: one warning with the reason; the paused ones never reach it."""
    inner, clock = Scripted(), Clock()
    guarded = GuardedExporter(
        inner, endpoint="http://x:4317", quiet=(NOISY,), pause_s=30, clock=clock
    )
    for _ in range(10):
        assert guarded.export([]) is SpanExportResult.FAILURE
    assert inner.calls == 1
    assert _warnings(caplog) == [
        "tracing: spans cannot be sent to http://x:4317 (Failed to export traces to x:4317, "
        "error code: UNAVAILABLE); operations are not affected, spans are dropped until it "
        "answers (tried again every 30s; said once)"
    ]
    assert not [r for r in caplog.records if r.name == NOISY]
    clock.now += 31
    guarded.export([])
    assert inner.calls == 2
    assert len(_warnings(caplog)) == 1  # still the same outage
    guarded.shutdown()


def test_recovery_is_said_and_a_later_outage_warns_again(caplog: pytest.LogCaptureFixture) -> None:
    """After a success the dropped count is logged; the next failure is a new warning."""
    inner, clock = Scripted(), Clock()
    guarded = GuardedExporter(inner, endpoint="http://x:4317", pause_s=30, clock=clock)
    guarded.export([])
    clock.now += 31
    inner.succeed = True
    with caplog.at_level(logging.INFO, logger="ktrdr.tracing"):
        assert guarded.export([]) is SpanExportResult.SUCCESS
    assert "spans are reaching http://x:4317 again" in caplog.text
    inner.succeed = False
    guarded.export([])
    assert len(_warnings(caplog)) == 2
    guarded.shutdown()


def test_the_wrapped_exporter_logs_again_after_shutdown() -> None:
    """Shutdown gives the library's logger back (no filter left behind)."""
    guarded = GuardedExporter(Scripted(), endpoint="http://x:4317", quiet=(NOISY,))
    assert logging.getLogger(NOISY).filters
    guarded.shutdown()
    guarded.shutdown()  # twice is harmless
    assert not logging.getLogger(NOISY).filters


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_real_otlp_exporter_to_a_closed_port_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Spans to nothing over real gRPC: one ktrdr warning, none of the exporter's own lines."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    tracing = build_tracing(
        TracingSettings(enabled=True, otlp_endpoint=endpoint), component="test", instance="t"
    )
    for batch in range(3):
        with tracing.span(f"batch {batch}"):
            pass
        tracing.flush()
    tracing.shutdown()
    warnings = _warnings(caplog)
    assert len(warnings) == 1, caplog.text
    assert endpoint in warnings[0]
    assert "Connection refused" in warnings[0]
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]


@pytest.mark.parametrize(("chosen", "expected"), [(None, "ERROR"), ("DEBUG", "DEBUG")])
def test_grpc_core_prints_errors_only_unless_the_operator_chose(
    monkeypatch: pytest.MonkeyPatch, chosen: str | None, expected: str
) -> None:
    """``GRPC_VERBOSITY`` becomes ERROR when unset; an operator's own value is kept."""
    monkeypatch.setenv("GRPC_VERBOSITY", chosen or "")  # restored after the test
    if chosen is None:
        monkeypatch.delenv("GRPC_VERBOSITY")
    quiet_grpc_core()
    assert os.environ["GRPC_VERBOSITY"] == expected
