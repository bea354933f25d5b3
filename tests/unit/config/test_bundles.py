"""Bundles: which settings classes each component loads."""

from __future__ import annotations

from config_helpers import load

from ktrdr.config import (
    APISettings,
    AuthSettings,
    CheckpointSettings,
    DatabaseSettings,
    DataSettings,
    EnvironmentSettings,
    LoggingSettings,
    MetricsSettings,
    OperationsSettings,
    OrphanDetectorSettings,
    TracingSettings,
    WorkerSettings,
)
from ktrdr.config.bundles import component_of, settings_classes, settings_of


def test_worker_component_classes() -> None:
    """A worker loads environment, worker, checkpoint, data, logging, auth, metrics and
    tracing only.
    """
    assert dict(settings_classes("worker")) == {
        "environment": EnvironmentSettings,
        "worker": WorkerSettings,
        "checkpoint": CheckpointSettings,
        "data": DataSettings,
        "logging": LoggingSettings,
        "auth": AuthSettings,
        "metrics": MetricsSettings,
        "tracing": TracingSettings,
    }


def test_backend_component_classes() -> None:
    """The backend loads everything but checkpoints and data files (the worker liveness
    comes with worker; csv_path is checked by its text, not against a directory).
    """
    assert dict(settings_classes("backend")) == {
        "environment": EnvironmentSettings,
        "api": APISettings,
        "database": DatabaseSettings,
        "worker": WorkerSettings,
        "orphan": OrphanDetectorSettings,
        "operations": OperationsSettings,
        "logging": LoggingSettings,
        "auth": AuthSettings,
        "metrics": MetricsSettings,
        "tracing": TracingSettings,
    }


def test_all_component_has_every_class() -> None:
    """'all' loads every settings class once."""
    assert set(settings_classes("all").values()) == set(settings_classes("backend").values()) | {
        CheckpointSettings,
        DataSettings,
    }


def test_settings_of_and_component_of() -> None:
    """A bundle tells its component and hands out its settings objects by name."""
    config = load("worker", {})
    assert component_of(config) == "worker"
    assert settings_of(config)["checkpoint"] is config.checkpoint
