"""Building a process's tracing from ``TracingSettings`` (the SDK lives here).

Called by entrypoints only, once, with tracing on (``ktrdr.tracing.build_tracing``
imports this module only then, so a process with tracing off never loads the SDK).
What it builds:

- a ``TracerProvider`` whose resource names the service (``KTRDR_OTEL_SERVICE_NAME``),
  the component (backend, training-worker, ...) and the instance (worker id);
- a sampler that keeps every span of a trace that began with a request served or a
  span ktrdr started itself, and drops a client call that has no parent (a worker's
  heartbeat, the backend's background writes): those are not anyone's operation;
- one bounded ``BatchSpanProcessor`` per exporter: the OTLP gRPC exporter with a
  timeout, guarded (``ktrdr.tracing.export``), and the console one when asked for.
  For an ``https://`` endpoint the exporter itself reads the standard variables naming
  a private CA (``OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE``, then
  ``OTEL_EXPORTER_OTLP_CERTIFICATE``); one naming a file that cannot be read or holds
  no PEM certificate is said here in one warning, and the system's trust store is
  used (the exporter would log a traceback, fail the process's start, or let gRPC
  print errors at every export).
  Spans wait in a queue of :data:`MAX_QUEUE` and a full queue drops: a request never
  waits for an export.

Nothing here sets OpenTelemetry's global tracer provider: every instrumentation takes
the provider as an argument (``ktrdr.tracing.instrument``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from grpc import ChannelCredentials, ssl_channel_credentials
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

import ktrdr
from ktrdr.config import TracingSettings
from ktrdr.tracing.export import OTLP_GRPC_LOGGER, GuardedExporter
from ktrdr.tracing.records import SpanRecord, span_of
from ktrdr.tracing.tracing import Tracing

__all__ = [
    "EXPORT_TIMEOUT_S",
    "MAX_BATCH",
    "MAX_QUEUE",
    "SCHEDULE_DELAY_MS",
    "EntrySampler",
    "build_sdk_tracing",
]

#: Spans waiting for export; beyond, new spans are dropped (memory stays bounded).
MAX_QUEUE = 2048
#: Spans per export call.
MAX_BATCH = 512
#: How long a span may wait in the queue before its batch is sent.
SCHEDULE_DELAY_MS = 1000
#: Longest one export may take (the OTLP exporter's deadline, retries included).
EXPORT_TIMEOUT_S = 5.0
#: How long a stopped exporter has to give its thread back at shutdown.
_STOP_GRACE_S = 0.5
#: The standard variables naming the CA file an https endpoint is trusted with, in the
#: order the OTLP exporter reads them (the first one set is the one it uses).
CERTIFICATE_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"

logger = logging.getLogger("ktrdr.tracing")


class EntrySampler(Sampler):
    """Root spans: keep requests served and ktrdr's own spans, drop lone client calls."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """DROP for a CLIENT span without a parent, RECORD_AND_SAMPLE otherwise."""
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        """How the sampler reads in debug output."""
        return "ktrdr.EntrySampler"


def _processor(exporter: SpanExporter) -> BatchSpanProcessor:
    return BatchSpanProcessor(
        exporter,
        max_queue_size=MAX_QUEUE,
        max_export_batch_size=MAX_BATCH,
        schedule_delay_millis=SCHEDULE_DELAY_MS,
        export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
    )


def otlp_exporter(settings: TracingSettings) -> GuardedExporter:
    """The OTLP gRPC exporter to ``KTRDR_OTEL_OTLP_ENDPOINT`` (TLS for https://), guarded."""
    endpoint = settings.otlp_endpoint
    insecure = endpoint.startswith("http://")
    inner = OTLPSpanExporter(
        endpoint=endpoint,
        insecure=insecure,
        credentials=None if insecure else _unusable_ca_fallback(),
        timeout=EXPORT_TIMEOUT_S,
    )
    return GuardedExporter(inner, endpoint=endpoint, quiet=(OTLP_GRPC_LOGGER,))


def _unusable_ca_fallback() -> ChannelCredentials | None:
    """The system's trust store, with one warning, when the CA file cannot be used.

    None otherwise: the exporter reads the variables itself. Given a file it cannot
    open, it would log a traceback (a missing file) or fail the process's start (a
    directory, no permission); given one with no certificate in it, gRPC's C core
    would print errors at every export.
    """
    for name in CERTIFICATE_VARIABLES:
        path = os.environ.get(name)
        if path is None:
            continue
        if not path:
            return None
        try:
            with open(path, "rb") as file:
                problem = None if _PEM_CERTIFICATE in file.read() else "no PEM certificate in it"
        except OSError as exc:
            problem = f"cannot be read: {exc.strerror or type(exc).__name__}"
        if problem is None:
            return None
        logger.warning(
            "tracing: %s=%s is not usable (%s); expected the PEM file of the CA that "
            "signed the OTLP endpoint's certificate; the system's trust store is used",
            name,
            path,
            problem,
        )
        return ssl_channel_credentials()
    return None


def build_sdk_tracing(
    settings: TracingSettings,
    *,
    component: str,
    instance: str,
    exporters: Sequence[SpanExporter] | None = None,
    console: TextIO | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
) -> Tracing:
    """The tracing of one process, exporting to ``exporters`` (default: OTLP).

    ``console`` receives one JSON object per span when ``KTRDR_OTEL_CONSOLE_OUTPUT``
    is on (default: standard output).
    """
    attributes = {
        "service.name": settings.service_name,
        "service.version": ktrdr.__version__,
        "service.instance.id": instance,
        "ktrdr.component": component,
        **(resource_attributes or {}),
    }
    resource = Resource.create(attributes)
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(root=EntrySampler()), shutdown_on_exit=False
    )
    chosen: list[SpanExporter] = (
        list(exporters) if exporters is not None else [otlp_exporter(settings)]
    )
    if settings.console_output:
        chosen.append(ConsoleSpanExporter(out=console if console is not None else sys.stdout))
    processors = [_processor(exporter) for exporter in chosen]
    for processor in processors:
        provider.add_span_processor(processor)

    def on_record(record: SpanRecord) -> None:
        span = span_of(record, resource)
        for processor in processors:
            processor.on_end(span)

    def on_shutdown(timeout_s: float) -> None:
        # The processors send what is queued; an exporter still busy at the deadline
        # (an endpoint that does not answer) is stopped, which ends its retries.
        flushing = threading.Thread(
            # BatchSpanProcessor.shutdown has no annotations in the SDK.
            target=lambda: [p.shutdown() for p in processors],  # type: ignore[no-untyped-call]
            name="ktrdr-tracing-flush",
        )
        flushing.daemon = True
        flushing.start()
        flushing.join(timeout_s)
        if flushing.is_alive():
            for exporter in chosen:
                exporter.shutdown()
            flushing.join(_STOP_GRACE_S)
        provider.shutdown()

    def on_flush(timeout_s: float) -> bool:
        return provider.force_flush(timeout_millis=int(timeout_s * 1000))

    return Tracing(
        provider=provider, on_record=on_record, on_flush=on_flush, on_shutdown=on_shutdown
    )
