"""docker/monitoring: Prometheus scrapes every ktrdr service with the scrape token, Grafana's
dashboard queries only metrics ktrdr exports, and both sit in the compose profile "monitoring".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest
from support.dashboard import DASHBOARD, dashboard_exprs, queried_names
from support.scrape import Scrape

from ktrdr.api.metrics import BackendMetrics
from ktrdr.protocol import OperationType
from ktrdr.workers.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker" / "compose.yml"
MONITORING = ROOT / "docker" / "monitoring"
MONITORING_SERVICES = {"prometheus", "grafana"}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _prometheus() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    return data


def test_prometheus_and_grafana_run_only_in_the_monitoring_profile() -> None:
    """The monitoring services need --profile monitoring; the fleet's services need none."""
    services = _compose()["services"]
    for name, service in services.items():
        if name in MONITORING_SERVICES:
            assert service["profiles"] == ["monitoring"], name
            assert ":" in service["image"], name  # a pinned version, never latest
            assert not service["image"].endswith(":latest"), name
            assert all(str(p).startswith("127.0.0.1:") for p in service["ports"]), name
        else:
            assert "profiles" not in service, name


def test_prometheus_scrapes_backend_and_every_worker_with_the_scrape_token() -> None:
    """Bearer credentials from the metrics_token secret (mounted in Prometheus and given to
    every ktrdr service as KTRDR_METRICS_TOKEN_FILE); targets are the compose services.
    """
    compose = _compose()
    services = compose["services"]
    jobs = {job["job_name"]: job for job in _prometheus()["scrape_configs"]}
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"
        assert job["authorization"] == {
            "type": "Bearer",
            "credentials_file": "/run/secrets/metrics_token",
        }
    assert "metrics_token" in services["prometheus"]["secrets"]
    assert "metrics_token" in compose["secrets"]
    backend = services["backend"]
    assert jobs["ktrdr-backend"]["static_configs"] == [
        {"targets": [f"backend:{backend['environment']['KTRDR_API_PORT']}"]}
    ]
    (discovery,) = jobs["ktrdr-workers"]["dns_sd_configs"]
    workers = {n: s for n, s in services.items() if s.get("command", [""])[0] == "worker"}
    assert set(discovery["names"]) == set(workers)
    for name, service in workers.items():
        assert str(discovery["port"]) == service["environment"]["KTRDR_WORKER_PORT"], name
    for name in ("backend", *workers):
        service = services[name]
        assert service["environment"]["KTRDR_METRICS_TOKEN_FILE"] == "/run/secrets/metrics_token"
        assert "metrics_token" in service["secrets"], name


def test_grafana_provisions_the_prometheus_source_and_the_dashboards() -> None:
    """The data source the dashboard names is the provisioned one; the dashboards are mounted."""
    grafana = _compose()["services"]["grafana"]
    provisioning = MONITORING / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "ktrdr.yml").read_text())[
        "providers"
    ]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert source["url"] == "http://prometheus:9090"
    assert mounts[provider["options"]["path"]] == "./monitoring/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./monitoring/grafana/provisioning"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"], panel["title"]


def test_the_dashboard_queries_only_metrics_ktrdr_defines() -> None:
    """Every ktrdr_* name in the dashboard's PromQL is a sample the backend or a worker exports
    (the real-process check is tests/integration/test_observability.py).
    """
    backend = Scrape(generate_latest(BackendMetrics().registry).decode())
    worker = WorkerMetrics(worker_id="w", worker_type=OperationType.TRAINING)
    worker.checkpoint_written(0.01)
    exported = backend.names | Scrape(generate_latest(worker.registry).decode()).names
    assert len(dashboard_exprs()) >= 15
    assert queried_names() - exported == set()
    assert {"ktrdr_workers_registered_total", "ktrdr_operations_total"} <= queried_names()
