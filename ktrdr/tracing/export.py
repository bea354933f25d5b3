"""Exporting without ever hurting an operation: one warning, then drop while it fails.

The SDK's batch processor already keeps export off the request path (spans are
queued, a background thread sends them, the queue is bounded and drops beyond). What
it does not do is stay quiet: an unreachable OTLP endpoint makes the exporter log a
line (with retries) for every batch, and every batch then waits for the export
timeout. :class:`GuardedExporter` wraps the real exporter so that the first failure
logs one warning naming the endpoint and the reason, the batches of the next
:data:`PAUSE_S` seconds are dropped at once (counted), then one batch tries again;
when one succeeds, an info line says how many spans were lost. The wrapped exporter's
own log lines are captured for the reason and not printed.

gRPC's C core writes lines of its own to standard error, outside Python's logging: at
its default verbosity, one per failed TLS handshake (an ``https://`` endpoint whose
certificate is not trusted), so at every retry of every batch. :func:`quiet_grpc_core`
raises that threshold to errors before grpc is loaded, unless the operator chose one
(``GRPC_VERBOSITY``, gRPC's own variable).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["OTLP_GRPC_LOGGER", "PAUSE_S", "GuardedExporter", "quiet_grpc_core"]

logger = logging.getLogger("ktrdr.tracing")

#: After a failed export, batches are dropped for this long before one tries again.
PAUSE_S = 30.0
#: The logger of the OTLP gRPC exporter (one line per failed batch and retry).
OTLP_GRPC_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"
_REASON_MAX = 300
#: gRPC's variable for its C core's log threshold, and the one ktrdr picks.
GRPC_VERBOSITY, GRPC_QUIET = "GRPC_VERBOSITY", "ERROR"


def quiet_grpc_core() -> None:
    """Only errors from gRPC's C core (unless ``GRPC_VERBOSITY`` is set): call before it loads.

    The C core reads the variable when it starts, from the process's environment.
    """
    os.environ.setdefault(GRPC_VERBOSITY, GRPC_QUIET)


class _Capture(logging.Filter):
    """Keeps the last message of a library logger and stops it from being printed."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.last = " ".join(record.getMessage().split())[:_REASON_MAX]
        return False


class GuardedExporter(SpanExporter):
    """Wraps ``inner``: one warning per outage, no waiting on a dead endpoint.

    ``endpoint`` names the destination in messages; ``quiet`` names the loggers of
    ``inner`` whose lines are captured (for the reason) instead of printed.
    """

    def __init__(
        self,
        inner: SpanExporter,
        *,
        endpoint: str,
        quiet: Sequence[str] = (),
        pause_s: float = PAUSE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._endpoint = endpoint
        self._pause_s = pause_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failing = False
        self._paused_until = 0.0
        self._dropped = 0
        self._stopped = False
        self._exporting = 0
        self._capture = _Capture()
        self._quiet = [logging.getLogger(name) for name in quiet]
        for quiet_logger in self._quiet:
            quiet_logger.addFilter(self._capture)

    @property
    def dropped(self) -> int:
        """Spans lost since the current outage began (0 while exports succeed)."""
        return self._dropped

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through ``inner``, unless a recent failure says to drop for now."""
        with self._lock:
            if self._failing and self._clock() < self._paused_until:
                self._dropped += len(spans)
                return SpanExportResult.FAILURE
            self._exporting += 1
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - an exporter bug must not stop exporting
            self._capture.last = f"{type(exc).__name__}: {exc}"[:_REASON_MAX]
            result = SpanExportResult.FAILURE
        with self._lock:
            self._exporting -= 1
            if self._stopped and not self._exporting:
                self._release_loggers()
            if result is SpanExportResult.SUCCESS:
                if self._failing:
                    logger.info(
                        "tracing: spans are reaching %s again (%d spans were dropped meanwhile)",
                        self._endpoint,
                        self._dropped,
                    )
                self._failing, self._dropped = False, 0
                return result
            self._dropped += len(spans)
            self._paused_until = self._clock() + self._pause_s
            if not self._failing:
                self._failing = True
                reason = self._capture.last or "no answer"
                logger.warning(
                    "tracing: spans cannot be sent to %s (%s); operations are not affected, "
                    "spans are dropped until it answers (tried again every %gs; said once)",
                    self._endpoint,
                    reason,
                    self._pause_s,
                )
        return result

    def shutdown(self) -> None:
        """Stop ``inner`` and let its loggers print again (once; later calls do nothing)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._inner.shutdown()  # an export in flight ends now, and may still log
        finally:
            with self._lock:
                if not self._exporting:
                    self._release_loggers()

    def _release_loggers(self) -> None:
        """Let the wrapped exporter's loggers print again (the lock is held)."""
        for quiet_logger in self._quiet:
            quiet_logger.removeFilter(self._capture)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush ``inner``."""
        return self._inner.force_flush(timeout_millis)
