"""Logging setup: one root handler, text or JSON lines, quiet HTTP client loggers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from support.tracing import memory_tracing, trace_hex

from ktrdr.config import LogFormat, LoggingSettings, LogLevel, TracingSettings
from ktrdr.log_context import operation_context
from ktrdr.logs import CHATTY_LOGGERS, configure_logging
from ktrdr.tracing import Tracing, log_trace_ids


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and the touched loggers back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restore_logging")
def test_text_format_at_the_configured_level() -> None:
    """Text lines carry level, logger and message; records below the level are dropped."""
    stream = io.StringIO()
    configure_logging(LoggingSettings(level=LogLevel.WARNING), stream=stream)

    logging.getLogger("ktrdr.test").info("hidden")
    logging.getLogger("ktrdr.test").warning("worker %s listening on %d", "w1", 5003)

    output = stream.getvalue()
    assert "hidden" not in output
    assert "WARNING  ktrdr.test: worker w1 listening on 5003" in output


@pytest.mark.usefixtures("restore_logging")
def test_json_format_is_one_object_per_line_with_extras() -> None:
    """JSON lines hold time, level, logger, message and any extra= fields."""
    stream = io.StringIO()
    configure_logging(LoggingSettings(format=LogFormat.JSON), stream=stream)

    logging.getLogger("ktrdr.test").info("registered", extra={"worker_id": "w1"})

    record = json.loads(stream.getvalue().strip())
    assert record["level"] == "INFO"
    assert record["logger"] == "ktrdr.test"
    assert record["message"] == "registered"
    assert record["worker_id"] == "w1"
    assert record["time"].endswith("+00:00")


@pytest.mark.usefixtures("restore_logging")
def test_json_format_includes_exceptions() -> None:
    """An exception's traceback goes into the JSON object, not onto extra lines."""
    stream = io.StringIO()
    configure_logging(LoggingSettings(format=LogFormat.JSON), stream=stream)

    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("ktrdr.test").exception("failed")

    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 1
    assert "ValueError: bad" in json.loads(lines[0])["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_configuring_twice_does_not_duplicate_lines() -> None:
    """A second configure_logging replaces the handler instead of adding one."""
    stream = io.StringIO()
    configure_logging(LoggingSettings(), stream=stream)
    configure_logging(LoggingSettings(), stream=stream)

    logging.getLogger("ktrdr.test").info("once")

    assert stream.getvalue().count("once") == 1


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("level", "expected"), [(LogLevel.INFO, logging.WARNING), (LogLevel.DEBUG, logging.DEBUG)]
)
def test_http_client_request_logs_are_quiet_unless_debugging(
    level: LogLevel, expected: int
) -> None:
    """httpx's per-request INFO lines (every heartbeat) are hidden unless level is DEBUG."""
    configure_logging(LoggingSettings(level=level), stream=io.StringIO())

    assert {logging.getLogger(name).level for name in CHATTY_LOGGERS} == {expected}


@pytest.mark.usefixtures("restore_logging")
def test_lines_of_an_operation_carry_its_id_and_attempt_in_text_and_json() -> None:
    """Text: ``logger [op=<id> attempt=<n>]: message``; JSON: operation_id and attempt
    fields; a trace id when the context has one; lines of no operation carry neither.
    """
    text, as_json = io.StringIO(), io.StringIO()
    configure_logging(LoggingSettings(), stream=text)
    log = logging.getLogger("ktrdr.test")
    with operation_context("op-7", attempt=2):
        log.info("started")
    with operation_context("op-8", trace_id="0af7651916cd43dd8448eb211c80319c"):
        log.info("traced")
    log.info("no operation")
    configure_logging(LoggingSettings(format=LogFormat.JSON), stream=as_json)
    with operation_context("op-7", attempt=2):
        log.info("started")
    log.info("no operation")

    lines = text.getvalue().splitlines()
    assert lines[0].endswith("INFO     ktrdr.test [op=op-7 attempt=2]: started")
    assert lines[1].endswith(
        "ktrdr.test [op=op-8 attempt=1 trace=0af7651916cd43dd8448eb211c80319c]: traced"
    )
    assert lines[2].endswith("INFO     ktrdr.test: no operation")
    first, second = (json.loads(line) for line in as_json.getvalue().splitlines())
    assert (first["operation_id"], first["attempt"]) == ("op-7", 2)
    assert "trace_id" not in first
    assert not {"operation_id", "attempt", "trace_id", "operation_tag"} & set(second)


@pytest.mark.usefixtures("restore_logging")
def test_a_trace_id_source_fills_in_the_trace_of_the_moment() -> None:
    """Tracing's hook: the source's trace id, unless the operation's context names one."""
    stream = io.StringIO()
    configure_logging(LoggingSettings(), stream=stream, trace_id_source=lambda: "f" * 32)
    with operation_context("op-1"):
        logging.getLogger("ktrdr.test").info("from the source")
    with operation_context("op-1", trace_id="a" * 32):
        logging.getLogger("ktrdr.test").info("from the context")

    first, second = stream.getvalue().splitlines()
    assert f"trace={'f' * 32}]" in first
    assert f"trace={'a' * 32}]" in second


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", [LogFormat.TEXT, LogFormat.JSON])
def test_with_tracing_on_lines_in_a_span_carry_its_trace_id(log_format: LogFormat) -> None:
    """Tracing on: a line of an operation written inside a span carries the span's trace id
    (text ``trace=<hex>``, JSON ``trace_id``); outside any span it carries none.
    """
    memory = memory_tracing()
    stream = io.StringIO()
    source = log_trace_ids(TracingSettings(enabled=True))
    configure_logging(LoggingSettings(format=log_format), stream=stream, trace_id_source=source)
    log = logging.getLogger("ktrdr.test")
    try:
        with operation_context("op-3", attempt=2), memory.tracing.span("dispatch"):
            log.info("in the span")
        with operation_context("op-3", attempt=2):
            log.info("outside")
        trace_id = trace_hex(memory.named("dispatch"))
    finally:
        memory.close()

    inside, outside = stream.getvalue().splitlines()
    if log_format is LogFormat.TEXT:
        assert inside.endswith(f"ktrdr.test [op=op-3 attempt=2 trace={trace_id}]: in the span")
        assert outside.endswith("ktrdr.test [op=op-3 attempt=2]: outside")
    else:
        assert json.loads(inside)["trace_id"] == trace_id
        assert "trace_id" not in json.loads(outside)


@pytest.mark.usefixtures("restore_logging")
def test_with_tracing_off_lines_carry_no_trace_id() -> None:
    """Tracing off: no trace id source at all, and a span of the off tracing names none."""
    assert log_trace_ids(TracingSettings(enabled=False)) is None
    stream = io.StringIO()
    configure_logging(
        LoggingSettings(format=LogFormat.JSON),
        stream=stream,
        trace_id_source=log_trace_ids(TracingSettings(enabled=False)),
    )
    with operation_context("op-4"), Tracing.off().span("dispatch"):
        logging.getLogger("ktrdr.test").info("untraced")

    line = json.loads(stream.getvalue())
    assert (line["operation_id"], line["attempt"]) == ("op-4", 1)
    assert "trace_id" not in line
