"""Process logging from ``LoggingSettings``: one handler on the root logger, text or JSON.

Entrypoints call :func:`configure_logging` once, after the configuration is valid.
Library code only asks ``logging.getLogger(__name__)``; it never configures handlers.
uvicorn is started with ``log_config=None`` so its loggers propagate here too.

Every line written while handling an operation names it (``ktrdr.log_context``):
text lines as ``logger [op=<id> attempt=<n> trace=<id>]: message``, JSON lines with
``operation_id``, ``attempt`` and (when tracing is on) ``trace_id`` fields.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import TextIO

from ktrdr.config import LogFormat, LoggingSettings, LogLevel
from ktrdr.log_context import CONTEXT_FIELDS, OperationContextFilter, TraceIdSource

TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
#: Libraries that log one line per request (httpx) or per step of a schema upgrade
#: (alembic: the store logs one line instead); kept at WARNING unless KTRDR_LOG_LEVEL=DEBUG.
CHATTY_LOGGERS = ("httpx", "httpcore", "alembic")

#: Attributes every ``LogRecord`` has; anything else was passed with ``extra=``.
_STANDARD_ATTRS = frozenset(
    set(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {"message", "asctime"}
)
#: Left out of JSON lines: the standard attributes and what the text format adds.
_SKIPPED = _STANDARD_ATTRS | {"color_message", "operation_tag"}


def context_tag(record: logging.LogRecord) -> str:
    """`` [op=<id> attempt=<n> trace=<id>]`` for a record of an operation, else empty."""
    operation_id = getattr(record, "operation_id", None)
    if operation_id is None:
        return ""
    tag = f" [op={operation_id} attempt={getattr(record, 'attempt', None) or 1}"
    trace_id = getattr(record, "trace_id", None)
    return f"{tag} trace={trace_id}]" if trace_id else f"{tag}]"


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, with the operation's tag after the logger name when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT.replace("%(name)s", "%(name)s%(operation_tag)s"))

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one text line (plus its traceback, if any)."""
        record.operation_tag = context_tag(record)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; ``extra=`` fields are kept.

    ``operation_id``, ``attempt`` and ``trace_id`` appear when they are set.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON object with time, level, logger and message."""
        created = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        payload: dict[str, object] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _SKIPPED or key.startswith("_"):
                continue
            if value is None and key in CONTEXT_FIELDS:
                continue
            payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter for ``KTRDR_LOG_FORMAT``."""
    if log_format is LogFormat.JSON:
        return JsonFormatter()
    return TextFormatter()


def configure_logging(
    settings: LoggingSettings,
    *,
    stream: TextIO | None = None,
    trace_id_source: TraceIdSource | None = None,
) -> None:
    """Send every log record at ``settings.level`` or above to ``stream`` (stderr).

    Replaces the root logger's handlers, so calling it twice does not duplicate lines.
    Records carry the operation they were written for; ``trace_id_source`` (tracing)
    supplies the trace id when the operation's context has none.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(settings.format))
    handler.addFilter(OperationContextFilter(trace_id_source))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.value)
    # uvicorn configures its own loggers only when given a log_config; make sure the
    # ones it creates anyway propagate to the handler above.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # httpx logs every request at INFO; with heartbeats that drowns everything else.
    chatty_level = logging.DEBUG if settings.level is LogLevel.DEBUG else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty_level)


__all__ = [
    "CHATTY_LOGGERS",
    "TEXT_FORMAT",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "context_tag",
    "make_formatter",
]
