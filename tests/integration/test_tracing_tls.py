"""Tracing to an ``https://`` OTLP endpoint: TLS, trusted through the standard variable.

The collector is a real OTLP/gRPC receiver this test runs on loopback with TLS, its
certificate (for ``localhost``) issued by a test CA that no system trusts. A real
backend process exports to ``https://localhost:<port>``:

- trusting the CA through ``OTEL_EXPORTER_OTLP_CERTIFICATE`` (or the traces-only
  ``OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE``), the create request's span arrives, with
  the backend's service name and the operation's trace id;
- without it (the system's trust store only), the handshake fails: the operation is
  created all the same, the collector gets nothing, and the backend says so once, in
  one warning, with no traceback and no secret.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from support.fleet import OPERATOR_TOKEN, TOKEN, Fleet, Server, backend_env, operator_client
from support.otlp_receiver import OtlpReceiver, running_tls_receiver
from support.processes import ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
SERVICE = "ktrdr-tls-test"
WARNING = "tracing: spans cannot be sent to"
#: Sent by the exporter as a gRPC header (``OTEL_EXPORTER_OTLP_HEADERS``): a secret
#: that must reach the collector over TLS and never appear in the backend's output.
OTLP_SECRET = "otlp-secret-do-not-print"
OTLP_HEADERS = f"authorization=Bearer {OTLP_SECRET}"


@pytest.fixture
def ca() -> trustme.CA:
    """A test certificate authority no system trusts."""
    return trustme.CA()


@pytest.fixture
def receiver(ca: trustme.CA) -> Iterator[OtlpReceiver]:
    """An OTLP receiver on loopback serving TLS with a certificate from ``ca``."""
    yield from running_tls_receiver(ca)


def _start_backend(
    group: ProcessGroup, directory: Path, receiver: OtlpReceiver, **extra: str
) -> Server:
    port = free_port()
    env = backend_env(
        port,
        KTRDR_DB_PATH=str(directory / "ops.db"),
        KTRDR_OTEL_ENABLED="true",
        KTRDR_OTEL_OTLP_ENDPOINT=receiver.endpoint,
        KTRDR_OTEL_SERVICE_NAME=SERVICE,
        OTEL_EXPORTER_OTLP_HEADERS=OTLP_HEADERS,
        **extra,
    )
    return Fleet(group, directory).start_backend(port=port, env=env)


def _create(backend: Server) -> dict[str, Any]:
    """Create a training operation (no worker: it stays pending); its view."""
    with operator_client() as http:
        created = http.post(
            backend.url + OPS, json={"type": "training", "parameters": {"epochs": 1}}
        )
        assert created.status_code == 201, created.text
        shown = http.get(f"{backend.url}{OPS}/{created.json()['id']}")
        assert shown.status_code == 200, shown.text
        view: dict[str, Any] = shown.json()
        return view


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"]
)
def test_spans_reach_an_https_collector_whose_ca_the_backend_is_told_to_trust(
    tmp_path: Path, ca: trustme.CA, receiver: OtlpReceiver, variable: str
) -> None:
    """The CA's PEM in the standard variable: the create request's span arrives over TLS."""
    ca_pem = tmp_path / "otlp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    with ProcessGroup(tmp_path) as group:
        backend = _start_backend(group, tmp_path, receiver, **{variable: str(ca_pem)})
        view = _create(backend)
        trace_id = view["trace_id"]
        assert isinstance(trace_id, str)
        assert len(trace_id) == 32

        def arrived() -> list[Any] | None:
            spans = [s for s in receiver.spans() if s.trace_id == trace_id]
            return spans if any(s.name == f"POST {OPS}" for s in spans) else None

        spans = wait_until(
            arrived,
            timeout_s=30,
            message=lambda: f"no span of {trace_id}: {receiver.spans()}",
        )
        create = next(s for s in spans if s.name == f"POST {OPS}")
        assert create.resource["service.name"] == SERVICE
        assert create.resource["ktrdr.component"] == "backend"
        # The exporter's headers travelled with the spans (inside TLS).
        assert {r.get("authorization") for r in receiver.requests()} == {f"Bearer {OTLP_SECRET}"}
        output = backend.process.stdout() + backend.process.stderr()
        assert WARNING not in output


#: What ``OTEL_EXPORTER_OTLP_CERTIFICATE`` names in the untrusted cases (None: unset),
#: below the test's directory.
UNUSABLE_CA = {
    "no CA given": None,
    "a missing file": "missing.pem",
    "a directory": "backend",
    "a file with no certificate": "not-a-certificate.pem",
}


@pytest.mark.parametrize("given", list(UNUSABLE_CA))
def test_an_untrusted_collector_fails_nothing_and_warns_once(
    tmp_path: Path, receiver: OtlpReceiver, given: str
) -> None:
    """The handshake fails: the operation is created, one warning each, no span, no traceback.

    A CA variable naming something unusable is said once too, and the system's trust
    store is used, as with no variable at all.
    """
    extra = {}
    named = UNUSABLE_CA[given]
    if named is not None:
        (tmp_path / "not-a-certificate.pem").write_text("not a certificate\n")
        extra["OTEL_EXPORTER_OTLP_CERTIFICATE"] = str(tmp_path / named)
    with ProcessGroup(tmp_path) as group:
        backend = _start_backend(group, tmp_path, receiver, **extra)
        first = _create(backend)
        assert first["status"] == "pending", first
        assert first["trace_id"] is not None  # traced, only not delivered
        backend.process.wait_for_output(WARNING, timeout_s=60)
        # More requests, more batches: still one warning (not one per batch or retry).
        for _ in range(2):
            view = _create(backend)
            assert view["status"] == "pending", view
        backend.process.signal(signal.SIGTERM)
        assert backend.process.wait_exit(timeout_s=30) == 0
        output = backend.process.stdout() + backend.process.stderr()
        assert output.count(WARNING) == 1, output
        assert receiver.endpoint in output
        unusable = [line for line in output.splitlines() if "is not usable" in line]
        if named is None:
            assert unusable == [], output
        else:
            assert len(unusable) == 1, output
            assert f"OTEL_EXPORTER_OTLP_CERTIFICATE={tmp_path / named}" in unusable[0]
            assert "expected the PEM file of the CA" in unusable[0]
        assert "Traceback" not in output
        # The exporter's own lines (one per batch and retry) are not printed, nor gRPC's
        # C core's (one per failed handshake, written outside Python's logging).
        assert "opentelemetry.exporter" not in output
        assert "Transient error" not in output
        assert "ssl_transport_security" not in output
        assert "Handshake failed" not in output
        for secret in (OTLP_SECRET, TOKEN, OPERATOR_TOKEN):
            assert secret not in output
    assert receiver.spans() == []
    assert receiver.requests() == []
