"""An OTLP/gRPC trace receiver on loopback: the collector a tracing test reads.

Backend and worker processes export to it exactly as they would to Jaeger or an
OpenTelemetry Collector (``KTRDR_OTEL_OTLP_ENDPOINT=http://127.0.0.1:<port>``), so a
test checks the spans that really left each process, through the real exporter.
With a ``trustme`` test CA (:func:`running_tls_receiver`) it serves TLS instead, with a
certificate for ``localhost`` that only a client trusting that CA accepts
(``https://localhost:<port>``): what a collector behind a private CA looks like.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import attrs
import grpc
import trustme
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


@attrs.frozen
class ReceivedSpan:
    """One span as received: ids in hex, attributes and resource as plain dicts."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    pairs: list[KeyValue] = list(items)
    return {kv.key: _value(kv.value) for kv in pairs}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self._receiver.add_request(dict(context.invocation_metadata()))
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    parent = span.parent_span_id.hex() or None
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=parent,
                            kind=span.kind,
                            attributes=_attributes(span.attributes),
                            resource=resource,
                        )
                    )
        self._receiver.add(received)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """Receives spans on ``127.0.0.1:<port>`` until :meth:`stop`.

    With ``credentials`` (a server certificate for ``localhost``) it serves TLS and
    its :attr:`endpoint` is ``https://localhost:<port>``.
    """

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._requests: list[dict[str, Any]] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self.tls = credentials is not None
        if credentials is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self._server.add_secure_port("localhost:0", credentials)
        self._server.start()

    @property
    def endpoint(self) -> str:
        """The value for ``KTRDR_OTEL_OTLP_ENDPOINT``."""
        if self.tls:
            return f"https://localhost:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    def add_request(self, metadata: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(metadata)

    def requests(self) -> list[dict[str, Any]]:
        """The gRPC metadata (headers) of every export request received so far."""
        with self._lock:
            return list(self._requests)

    def add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._lock:
            return list(self._spans)

    def stop(self) -> None:
        self._server.stop(grace=None).wait()


def running_receiver() -> Iterator[OtlpReceiver]:
    """A receiver for the length of a fixture."""
    receiver = OtlpReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()


def tls_credentials(ca: trustme.CA) -> grpc.ServerCredentials:
    """Server credentials with a certificate for ``localhost`` issued by ``ca``."""
    issued = ca.issue_cert("localhost")
    return grpc.ssl_server_credentials(
        [(issued.private_key_pem.bytes(), issued.cert_chain_pems[0].bytes())]
    )


def running_tls_receiver(ca: trustme.CA) -> Iterator[OtlpReceiver]:
    """A TLS receiver (certificate from ``ca``) for the length of a fixture."""
    receiver = OtlpReceiver(tls_credentials(ca))
    try:
        yield receiver
    finally:
        receiver.stop()
