"""Each operation's own log on the worker: its lines, the job process's included, kept on disk.

While the worker handles an operation (from its start until its report went out),
every log record that names the operation (``ktrdr.log_context``), whether written
by the worker or sent by the job process, is also appended as a JSON line to
``<KTRDR_CHECKPOINT_DIR>/.logs/<operation id>.log``. The file is bounded: a
``RotatingFileHandler`` with one backup, each half of :data:`MAX_LOG_BYTES`, so an
operation that logs without end keeps its latest lines and never fills the disk.
The directory sits beside the checkpoints (no operation id starts with a dot), so
the logs of an operation resumed on another worker that shares the directory go
on in the same file, and the checkpoint purge (``KTRDR_CHECKPOINT_MAX_AGE_DAYS``)
expires them with the checkpoints. ``GET /operations/{id}/logs`` on the worker
serves them (``ktrdr.workers.server``); the backend fetches them for ``ktrdr ops logs``.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

from ktrdr.log_context import OperationContextFilter
from ktrdr.logs import JsonFormatter
from ktrdr.vocabulary import id_problem

__all__ = ["LOGS_DIRECTORY", "MAX_LOG_BYTES", "OperationLogs"]

#: The directory under the checkpoint directory that holds the operations' logs.
LOGS_DIRECTORY = ".logs"
#: Most bytes of log kept per operation (two files of half this size).
MAX_LOG_BYTES = 1024 * 1024


class _ThisOperation(logging.Filter):
    """Passes the records of one operation (after the context filter stamped them)."""

    def __init__(self, operation_id: str) -> None:
        super().__init__()
        self._operation_id = operation_id

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "operation_id", None) == self._operation_id


class OperationLogs:
    """Captures and reads the per-operation logs under ``root``."""

    def __init__(self, *, root: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def path_for(self, operation_id: str) -> Path:
        """The current log file of ``operation_id`` (its older half has ``.1`` appended)."""
        problem = id_problem(operation_id)
        if problem is not None:
            message = f"operation id {operation_id!r} cannot name a log file: {problem}"
            raise ValueError(message)
        return self.root / LOGS_DIRECTORY / f"{operation_id}.log"

    @contextlib.contextmanager
    def capture(self, operation_id: str) -> Iterator[None]:
        """Append the operation's records to its file while the block runs.

        A log directory that cannot be written is logged once and the operation runs
        without its own log (the process's log still has every line).
        """
        path = self.path_for(operation_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=max(1, self.max_bytes // 2), backupCount=1, encoding="utf-8"
            )
        except OSError as exc:
            logging.getLogger(__name__).warning(
                "operation %s: its log cannot be kept in %s (%s)",
                operation_id,
                path.parent,
                exc.strerror or exc,
            )
            yield
            return
        handler.addFilter(OperationContextFilter())
        handler.addFilter(_ThisOperation(operation_id))
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()

    def read(self, operation_id: str) -> bytes | None:
        """The operation's log as JSON lines, oldest first; None when there is none."""
        path = self.path_for(operation_id)
        older = path.with_name(path.name + ".1")
        parts: list[bytes] = []
        for part in (older, path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(part.read_bytes()[: self.max_bytes])
        if not parts:
            return None
        return b"".join(parts)
