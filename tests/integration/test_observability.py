"""Metrics and operation logs with real backend, worker and job processes on loopback.

A scripted fleet run (trainings completed and cancelled, backtests completed and
failed) is followed by scrapes of the backend's and each worker's ``/metrics``: the
counts and histogram sample counts must equal what happened, and every metric the
Grafana dashboard queries must be among the exported ones. Then the logs: every
line written for an operation, the job process's included, names it and its attempt
(text and JSON), and ``ktrdr ops logs`` prints the worker-side lines.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.dashboard import queried_names
from support.fleet import OPERATOR_TOKEN, TOKEN, Fleet, Server, backend_env, worker_env
from support.processes import ProcessGroup, base_env, free_port, run_ktrdr, wait_until
from support.scrape import Scrape

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
SCRAPE_TOKEN = "test-scrape-token-not-a-secret"
#: The dispatch outcomes of a start the worker took.
HOW_STARTED = ("started", "handed_off")
FINISHED = {"completed", "failed", "cancelled"}
#: Long enough to be cancelled mid-way on a loaded machine.
LONG_TRAINING = {"bars": 4000, "hidden_units": 32, "epochs": 2000, "seed": 11}


class Run:
    """One backend, one training and one backtest worker, and an operator's client."""

    def __init__(self, fleet: Fleet, directory: Path, **worker_overrides: str) -> None:
        self.fleet = fleet
        self.directory = directory
        port = free_port()
        env = backend_env(
            port, KTRDR_METRICS_TOKEN=SCRAPE_TOKEN, KTRDR_DB_PATH=str(directory / "ops.db")
        )
        self.backend = fleet.start_backend(port=port, env=env)
        self.http = httpx.Client(timeout=10, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        self.workers: dict[str, Server] = {}
        for kind in ("training", "backtest"):
            worker_port = free_port()
            worker = fleet.start_worker(
                kind,
                backend_port=port,
                port=worker_port,
                env=worker_env(
                    worker_port,
                    port,
                    KTRDR_METRICS_TOKEN=SCRAPE_TOKEN,
                    KTRDR_CHECKPOINT_DIR=str(directory / "checkpoints"),
                    KTRDR_CHECKPOINT_EPOCH_INTERVAL="5",
                    KTRDR_DATA_DIR=str(directory),
                    **worker_overrides,
                ),
            )
            fleet.wait_listed(self.backend, worker.health()["worker_id"], status="idle")
            self.workers[kind] = worker

    def create(self, kind: str, **parameters: Any) -> str:
        response = self.http.post(
            self.backend.url + OPS, json={"type": kind, "parameters": parameters}
        )
        assert response.status_code == 201, response.text
        operation_id: str = response.json()["id"]
        return operation_id

    def get(self, operation_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.http.get(f"{self.backend.url}{OPS}/{operation_id}").json()
        return view

    def wait_for(self, operation_id: str, statuses: set[str], **expected: Any) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            view = self.get(operation_id)
            done = view["status"] in statuses and all(
                (view.get("progress") or {}).get(k) == v for k, v in expected.items()
            )
            return view if done else None

        def explain() -> str:
            logs = "\n".join(child.output() for child in self.fleet.group.children)
            return f"{operation_id}: {self.get(operation_id)}\n{logs}"

        return wait_until(reached, timeout_s=90, message=explain, interval_s=0.05)

    def scrape(self, server: Server, token: str = SCRAPE_TOKEN) -> Scrape:
        response = httpx.get(
            server.url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert response.status_code == 200, response.text
        return Scrape(response.text)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """Starts the test's fleet (every process killed and the client closed at the end)."""
    runs: list[Run] = []
    with ProcessGroup(tmp_path) as group:

        def started(**worker_overrides: str) -> Run:
            runs.append(Run(Fleet(group, tmp_path), tmp_path, **worker_overrides))
            return runs[-1]

        yield started
        for run in runs:
            run.http.close()


def test_metrics_after_a_scripted_fleet_run_count_what_happened(start: Any, tmp_path: Path) -> None:
    """Backend and worker metrics equal the run: finishes by type and status with as many
    duration samples, one dispatch per start, the fleet's gauges, each worker's outcomes and
    checkpoint writes; /metrics without a token is 401 and shows nothing; the dashboard's
    queries all name exported metrics.
    """
    run: Run = start()
    (tmp_path / "bad.csv").write_text("open,high,low,close,volume\n1,2,0.5,x,100\n")
    trained = [run.create("training", bars=400, epochs=12, seed=s) for s in (1, 2)]
    for operation_id in trained:
        assert run.wait_for(operation_id, FINISHED)["status"] == "completed"
    long = run.create("training", **LONG_TRAINING)
    run.wait_for(long, {"running"}, percent=pytest.approx(0, abs=100))
    wait_until(lambda: (run.get(long).get("progress") or {}).get("percent", 0) > 0, timeout_s=60)
    assert run.http.post(f"{run.backend.url}{OPS}/{long}/cancel").status_code == 200
    tested = run.create("backtest", bars=800, seed=5)
    garbled = run.create("backtest", csv_path="bad.csv")
    assert run.wait_for(tested, FINISHED)["status"] == "completed"
    assert run.wait_for(garbled, FINISHED)["status"] == "failed"
    training_worker = run.workers["training"]
    wait_until(lambda: training_worker.health()["status"] == "idle", timeout_s=60)
    # The cancelled training's own report comes after the cancel: refused as not current.
    rejected = "ktrdr_reports_rejected_total"
    wait_until(lambda: run.scrape(run.backend).total(rejected) == 1, timeout_s=30)

    backend = run.scrape(run.backend)
    training = run.scrape(training_worker)
    backtest = run.scrape(run.workers["backtest"])

    expected = {
        ("training", "completed"): 2,
        ("training", "cancelled"): 1,
        ("training", "failed"): 0,
        ("backtest", "completed"): 1,
        ("backtest", "failed"): 1,
        ("backtest", "cancelled"): 0,
    }
    for (kind, status), count in expected.items():
        labels = {"operation_type": kind, "status": status}
        assert backend.value("ktrdr_operations_total", labels) == count, labels
        assert backend.value("ktrdr_operation_duration_seconds_count", labels) == count, labels
    started = "ktrdr_dispatch_latency_seconds_count"
    # Each start went out as a start request or in the answer to a report (handed off).
    for kind, count in (("training", 3), ("backtest", 2)):
        ways = [backend.total(started, operation_type=kind, outcome=o) for o in HOW_STARTED]
        assert sum(ways) == count, (kind, ways)
    assert backend.total(started) == 5
    assert backend.value("ktrdr_operations_active") == 0
    assert backend.total("ktrdr_operations_queued") == 0
    for kind in ("training", "backtest"):
        assert backend.value("ktrdr_workers_registered_total", {"worker_type": kind}) == 1
        assert backend.value("ktrdr_heartbeats_received_total", {"worker_type": kind}) > 0
    assert backend.value(rejected, {"reason": "not_current"}) == 1

    outcomes = "ktrdr_worker_operations_total"
    assert training.value(outcomes, {"operation_type": "training", "outcome": "completed"}) == 2
    assert training.value(outcomes, {"operation_type": "training", "outcome": "cancelled"}) == 1
    assert training.total(outcomes) == 3
    assert backtest.value(outcomes, {"operation_type": "backtest", "outcome": "completed"}) == 1
    assert backtest.value(outcomes, {"operation_type": "backtest", "outcome": "failed"}) == 1
    assert training.value("ktrdr_worker_busy") == 0
    # Checkpoints every 5 epochs in the completed runs (12 epochs: at 5 and 10), and at
    # least the one the cancel saved.
    assert training.value("ktrdr_worker_checkpoint_write_seconds_count") >= 2 * 2 + 1
    assert training.value("ktrdr_worker_job_memory_peak_bytes") > 10 * 1024 * 1024

    exported = backend.names | training.names | backtest.names
    assert queried_names() - exported == set()

    for server in (run.backend, training_worker):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {long}"}):
            refused = httpx.get(server.url + "/metrics", headers=headers, timeout=10)
            assert refused.status_code == 401
            assert "ktrdr_" not in refused.text
            assert SCRAPE_TOKEN not in refused.text
    # Each server's own token reads it too; the worker token reads no backend metrics.
    assert run.scrape(run.backend, OPERATOR_TOKEN).value("ktrdr_operations_active") == 0
    assert run.scrape(training_worker, TOKEN).value("ktrdr_worker_busy") == 0
    worker_token = httpx.get(
        run.backend.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert worker_token.status_code == 401


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def ktrdr(run: Run, *args: str) -> subprocess.CompletedProcess[str]:
    """``ktrdr <args> --backend-url <backend>`` with the operator token."""
    environ = base_env(COLUMNS="200", KTRDR_AUTH_OPERATOR_TOKEN=OPERATOR_TOKEN)
    return run_ktrdr(*args, "--backend-url", run.backend.url, env=environ, cwd=run.directory)


def test_every_line_of_an_operation_names_it_and_ktrdr_ops_logs_prints_the_workers(
    start: Any,
) -> None:
    """JSON worker logs: the worker's and the job process's lines carry the operation id and
    attempt 1 (and, tracing off, no trace id); text backend logs tag its dispatch line;
    ``ktrdr ops logs`` prints the worker side, job lines included; an unknown id is one line
    and exit 1.
    """
    run: Run = start(KTRDR_LOG_FORMAT="json")
    operation_id = run.create("training", bars=400, epochs=12, seed=4)
    assert run.wait_for(operation_id, FINISHED)["status"] == "completed"
    worker = run.workers["training"].process

    def worker_lines() -> list[dict[str, Any]] | None:
        lines = [r for r in _json_lines(worker.stderr()) if r.get("operation_id") == operation_id]
        reported = any(r["message"].startswith(f"operation {operation_id} ended") for r in lines)
        return lines if reported else None

    lines = wait_until(worker_lines, timeout_s=30, message=worker.output)
    loggers = {r["logger"] for r in lines}
    assert "ktrdr.workers.worker" in loggers
    assert "ktrdr.workers.job_process" in loggers
    assert "ktrdr.jobs.step_loop" in loggers  # written in the job's own process
    assert {r["attempt"] for r in lines} == {1}
    assert all("trace_id" not in r for r in lines)  # tracing is off: no trace id anywhere
    messages = [r["message"] for r in lines]
    assert "training starting at epoch 0 of 12" in messages
    assert "training finished: 12 epochs" in messages
    others = [r for r in _json_lines(worker.stderr()) if "registered with" in r["message"]]
    assert others
    assert all("operation_id" not in r for r in others)  # lines of no operation carry none
    dispatch = f"operation {operation_id} (training) attempt 1 started on worker"
    tagged = wait_until(
        lambda: [line for line in run.backend.process.stderr().splitlines() if dispatch in line],
        timeout_s=30,
        message=run.backend.process.output,
    )
    assert f"[op={operation_id} attempt=1]" in tagged[0]
    assert "trace=" not in run.backend.process.stderr()

    printed = ktrdr(run, "ops", "logs", operation_id)
    as_json = ktrdr(run, "ops", "logs", operation_id, "--json")
    unknown = ktrdr(run, "ops", "logs", "no-such-operation")

    assert printed.returncode == 0, printed.stderr
    assert "training starting at epoch 0 of 12" in printed.stdout
    assert f"operation {operation_id} started (training, attempt 1)" in printed.stdout
    assert "[attempt 1]" in printed.stdout
    kept = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {line["operation_id"] for line in kept} == {operation_id}
    assert "ktrdr.jobs.step_loop" in {line["logger"] for line in kept}
    assert unknown.returncode == 1
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert "no-such-operation" in unknown.stderr
    assert "Traceback" not in unknown.stderr
