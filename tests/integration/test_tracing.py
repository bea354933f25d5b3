"""Tracing across real processes: one trace per operation attempt, and a dead endpoint.

A backend and a training worker run as processes with ``KTRDR_OTEL_ENABLED`` and
export over OTLP/gRPC to a receiver this test runs on loopback (its collector). The
job runs in the worker's child process; its spans reach the receiver through the
worker. With the endpoint pointed at a closed port instead, operations still
complete and each process says so once.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fleet import Fleet, Server, backend_env, operator_client, worker_env
from support.otlp_receiver import OtlpReceiver, ReceivedSpan, running_receiver
from support.processes import ProcessGroup, free_port, run_ktrdr, wait_until

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
#: 12 epochs, a checkpoint every 4: checkpoints at epochs 4 and 8.
TRAINING = {"bars": 300, "epochs": 12, "hidden_units": 4, "seed": 5}
WARNING = "tracing: spans cannot be sent to"
#: OTLP span kinds.
SPAN_KIND_INTERNAL, SPAN_KIND_SERVER = 1, 2


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP receiver on loopback."""
    yield from running_receiver()


def _start_fleet(
    group: ProcessGroup, directory: Path, endpoint: str, **extra: str
) -> tuple[Fleet, Server, Server]:
    fleet = Fleet(group, directory)
    tracing = {"KTRDR_OTEL_ENABLED": "true", "KTRDR_OTEL_OTLP_ENDPOINT": endpoint, **extra}
    backend_port, worker_port = free_port(), free_port()
    backend = fleet.start_backend(
        port=backend_port,
        env=backend_env(backend_port, KTRDR_DB_PATH=str(directory / "ops.db"), **tracing),
    )
    worker = fleet.start_worker(
        "training",
        backend_port=backend_port,
        port=worker_port,
        env=worker_env(worker_port, backend_port, KTRDR_CHECKPOINT_EPOCH_INTERVAL="4", **tracing),
    )
    worker_id = worker.health()["worker_id"]
    fleet.wait_listed(backend, worker_id, status="idle")
    return fleet, backend, worker


def _run(backend: Server, parameters: dict[str, Any]) -> dict[str, Any]:
    """Create a training operation and wait until it finished; its view."""
    with operator_client() as http:
        created = http.post(backend.url + OPS, json={"type": "training", "parameters": parameters})
        assert created.status_code == 201, created.text
        url = f"{backend.url}{OPS}/{created.json()['id']}"

        def finished() -> dict[str, Any] | None:
            view: dict[str, Any] = http.get(url).json()
            return view if view["status"] in ("completed", "failed", "cancelled") else None

        return wait_until(finished, timeout_s=90, message=lambda: http.get(url).text)


def _lines_of(server: Server, operation_id: str) -> list[str]:
    """The server's text log lines tagged with ``operation_id``."""
    return [line for line in server.process.stderr().splitlines() if f"[op={operation_id} " in line]


def _names(spans: list[ReceivedSpan]) -> set[str]:
    return {span.name for span in spans}


def test_one_trace_from_create_to_report_across_backend_worker_and_job(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """Create request, dispatch, worker start, job, checkpoints and report share one trace id."""
    with ProcessGroup(tmp_path) as group:
        _, backend, worker = _start_fleet(group, tmp_path, receiver.endpoint)
        view = _run(backend, TRAINING)
        assert view["status"] == "completed", view
        trace_id = view["trace_id"]
        assert isinstance(trace_id, str)
        assert len(trace_id) == 32
        assert int(trace_id, 16) != 0

        expected = {
            f"POST {OPS}",  # the create request (backend)
            "dispatch",  # backend
            "POST /operations",  # the worker's start request (worker)
            "run training",  # worker
            "job training",  # the job's process
            "checkpoint",  # the job's process
            f"POST {OPS}/{{operation_id}}/report",  # the report (backend)
        }

        def complete() -> list[ReceivedSpan] | None:
            spans = [s for s in receiver.spans() if s.trace_id == trace_id]
            return spans if expected <= _names(spans) else None

        spans = wait_until(
            complete,
            timeout_s=30,
            message=lambda: f"{expected - _names(receiver.spans())} missing: {receiver.spans()}",
        )
        by_name = {span.name: span for span in spans}
        components = {span.name: span.resource["ktrdr.component"] for span in spans}
        assert components[f"POST {OPS}"] == "backend"
        assert components["dispatch"] == "backend"
        assert components["POST /operations"] == "training-worker"
        assert components["job training"] == "training-worker"  # exported by its worker
        job = by_name["job training"]
        assert job.attributes["ktrdr.operation.id"] == view["id"]
        assert job.attributes["process.pid"] not in (worker.process.pid, backend.process.pid)
        assert job.parent_span_id == by_name["run training"].span_id
        checkpoints = [s for s in spans if s.name == "checkpoint"]
        assert sorted(s.attributes["ktrdr.checkpoint.step"] for s in checkpoints) == [4, 8]
        assert {s.parent_span_id for s in checkpoints} == {job.span_id}
        assert by_name["dispatch"].parent_span_id == by_name[f"POST {OPS}"].span_id
        # Only the create request has no parent: one trace, one root.
        assert [s.name for s in spans if s.parent_span_id is None] == [f"POST {OPS}"]

        cli_env = {**backend_env(backend.port), "COLUMNS": "200"}
        shown = run_ktrdr(
            "ops", "show", view["id"], "--backend-url", backend.url, env=cli_env, cwd=tmp_path
        )
        assert shown.returncode == 0, shown.stderr
        assert "trace_id" in shown.stdout
        assert trace_id in shown.stdout

        # The log lines of the operation carry the same trace id: text on the backend's
        # dispatch and report and on the worker (the job's lines included), JSON in the
        # operation's own log on the worker.
        tag = f"[op={view['id']} attempt=1 trace={trace_id}]"
        completed = f"{view['id']} completed (attempt 1 on worker"
        # The report's line is written after the store has the outcome: wait for it.
        wait_until(
            lambda: any(completed in line for line in _lines_of(backend, view["id"])),
            timeout_s=30,
            message=backend.process.output,
        )
        backend_lines = _lines_of(backend, view["id"])
        assert any("started on worker" in line and tag in line for line in backend_lines)
        assert all(tag in line for line in backend_lines if "on worker" in line), backend_lines
        worker_lines = _lines_of(worker, view["id"])
        assert all(tag in line for line in worker_lines), worker_lines
        assert any(f"ktrdr.jobs.step_loop {tag}: training starting" in x for x in worker_lines)
        logged = run_ktrdr(
            "ops",
            "logs",
            view["id"],
            "--json",
            "--backend-url",
            backend.url,
            env=cli_env,
            cwd=tmp_path,
        )
        assert logged.returncode == 0, logged.stderr
        kept = [json.loads(line) for line in logged.stdout.splitlines()]
        assert {"ktrdr.workers.worker", "ktrdr.jobs.step_loop"} <= {r["logger"] for r in kept}
        assert {r.get("trace_id") for r in kept} == {trace_id}


def test_an_operation_handed_over_in_a_reports_answer_keeps_its_one_trace(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """Queued behind another before the worker registered, the second operation reaches
    the worker in the answer to the first one's report: no start request, and its
    create, dispatch, run, job and report spans still share its one trace.
    """
    tracing = {"KTRDR_OTEL_ENABLED": "true", "KTRDR_OTEL_OTLP_ENDPOINT": receiver.endpoint}
    with ProcessGroup(tmp_path) as group, operator_client() as http:
        fleet = Fleet(group, tmp_path)
        backend_port, worker_port = free_port(), free_port()
        backend = fleet.start_backend(
            port=backend_port,
            env=backend_env(backend_port, KTRDR_DB_PATH=str(tmp_path / "ops.db"), **tracing),
        )
        ids = []
        for seed in (1, 2):
            body = {"type": "training", "parameters": {**TRAINING, "seed": seed}}
            created = http.post(backend.url + OPS, json=body)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        fleet.start_worker(
            "training",
            backend_port=backend_port,
            port=worker_port,
            env=worker_env(worker_port, backend_port, **tracing),
        )

        def finished() -> dict[str, Any] | None:
            view: dict[str, Any] = http.get(f"{backend.url}{OPS}/{ids[1]}").json()
            return view if view["status"] in ("completed", "failed", "cancelled") else None

        view = wait_until(finished, timeout_s=90, message=backend.process.output)
        assert view["status"] == "completed", view
        expected = {
            f"POST {OPS}",
            "dispatch",
            "run training",
            "job training",
            f"POST {OPS}/{{operation_id}}/report",
        }

        def complete() -> list[ReceivedSpan] | None:
            spans = [s for s in receiver.spans() if s.trace_id == view["trace_id"]]
            return spans if expected <= _names(spans) else None

        spans = wait_until(complete, timeout_s=30, message=lambda: str(receiver.spans()))
        by_name = {span.name: span for span in spans}

        assert "handed over in the answer to its report" in "\n".join(
            _lines_of(backend, view["id"])
        )
        assert "POST /operations" not in _names(spans)  # no start request
        dispatch = by_name["dispatch"]
        assert dispatch.attributes["ktrdr.dispatch.outcome"] == "handed_off"
        assert dispatch.parent_span_id == by_name[f"POST {OPS}"].span_id
        assert by_name["run training"].parent_span_id == dispatch.span_id
        assert by_name["job training"].parent_span_id == by_name["run training"].span_id
        assert [s.name for s in spans if s.parent_span_id is None] == [f"POST {OPS}"]


def test_heartbeats_and_background_work_are_not_traced(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """Heartbeats, health checks and background writes make no trace; requests do."""
    with ProcessGroup(tmp_path) as group:
        _, backend, worker = _start_fleet(group, tmp_path, receiver.endpoint)
        view = _run(backend, TRAINING)  # heartbeats ran all along (every 0.2 s)
        worker.health()
        # Each process exports its own batches: wait for the backend's create request.
        wait_until(
            lambda: any(
                s.trace_id == view["trace_id"] and s.name == f"POST {OPS}" for s in receiver.spans()
            ),
            timeout_s=30,
            message=lambda: f"the create request's span did not arrive: {receiver.spans()}",
        )
        spans = receiver.spans()
        served = [s.name for s in spans if s.kind == SPAN_KIND_SERVER]
        assert f"POST {OPS}" in served
        assert not [n for n in served if n.endswith(("/heartbeat", "/health"))]
        # Every trace begins with a request served or a span of ktrdr's own, never with
        # a lone client call (a heartbeat sent, a background SQL statement).
        roots = [s for s in spans if s.parent_span_id is None]
        assert roots
        assert {s.kind for s in roots} <= {SPAN_KIND_INTERNAL, SPAN_KIND_SERVER}, roots


def test_an_unreachable_endpoint_fails_nothing_and_warns_once_per_process(
    tmp_path: Path,
) -> None:
    """Nothing listens at the OTLP endpoint: operations complete; one warning per process."""
    dead = f"http://127.0.0.1:{free_port()}"
    with ProcessGroup(tmp_path) as group:
        _, backend, worker = _start_fleet(group, tmp_path, dead)
        first = _run(backend, TRAINING)
        assert first["status"] == "completed", first
        assert first["trace_id"] is not None  # traced, only not delivered
        for server in (backend, worker):
            server.process.wait_for_output(WARNING, timeout_s=60)
        # More operations, more batches: still one warning each (not one per batch).
        for seed in (6, 7):
            view = _run(backend, {**TRAINING, "seed": seed})
            assert view["status"] == "completed", view
        worker.process.signal(signal.SIGTERM)
        assert worker.process.wait_exit(timeout_s=30) == 0
        backend.process.signal(signal.SIGTERM)
        assert backend.process.wait_exit(timeout_s=30) == 0
        for server in (backend, worker):
            output = server.process.stdout() + server.process.stderr()
            assert output.count(WARNING) == 1, output
            assert dead in output
            # The exporter's own lines (one per batch and retry) are not printed.
            assert "opentelemetry.exporter" not in output
            assert "Transient error" not in output
