"""Logging setup: one root handler, text or JSON lines, quiet HTTP client loggers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from ktrdr.config import LogFormat, LoggingSettings, LogLevel
from ktrdr.logs import CHATTY_LOGGERS, configure_logging


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
