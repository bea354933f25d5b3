"""The deliberate public surface: ktrdr.__all__ and ktrdr.config.__all__ are pinned."""

from __future__ import annotations

import importlib

import pytest

import ktrdr
import ktrdr.config

KTRDR_ALL = ["ConfigurationError", "KtrdrError", "__version__"]

CONFIG_ALL = [
    "ALL_SETTINGS",
    "COMPONENTS",
    "DEFAULT_ENV_FILE",
    "DEFAULT_WORKER_PORT",
    "APISettings",
    "AuthSettings",
    "BackendConfig",
    "ByteSize",
    "CheckpointSettings",
    "Component",
    "ConfigReport",
    "ConfigurationError",
    "DataSettings",
    "DatabaseSettings",
    "DbEngine",
    "DeprecationReporter",
    "EffectiveValue",
    "EnvLoader",
    "Environment",
    "EnvironmentSettings",
    "FullConfig",
    "LogFormat",
    "LogLevel",
    "LoggingSettings",
    "MetricsSettings",
    "OperationsSettings",
    "OrphanDetectorSettings",
    "Secret",
    "Source",
    "SourceKind",
    "TracingSettings",
    "WorkerConfig",
    "WorkerSettings",
    "WorkerType",
    "all_env_names",
    "deprecated_names",
    "effective_values",
    "env_name",
    "validate_all",
]


def test_ktrdr_all_is_pinned() -> None:
    """ktrdr exports exactly the error types and the version."""
    assert ktrdr.__all__ == KTRDR_ALL


def test_config_all_is_pinned() -> None:
    """ktrdr.config exports exactly the pinned names (adding one is a deliberate change)."""
    assert ktrdr.config.__all__ == CONFIG_ALL


@pytest.mark.parametrize(("module", "names"), [("ktrdr", KTRDR_ALL), ("ktrdr.config", CONFIG_ALL)])
def test_every_exported_name_exists(module: str, names: list[str]) -> None:
    """Each name in __all__ is importable from its package."""
    imported = importlib.import_module(module)
    assert [name for name in names if not hasattr(imported, name)] == []


def test_configuration_error_is_a_ktrdr_error_and_a_value_error() -> None:
    """One exception root; configuration errors are also ValueErrors."""
    error = ktrdr.ConfigurationError(["A: expected b"], warnings=["w"])
    assert isinstance(error, ktrdr.KtrdrError)
    assert isinstance(error, ValueError)
    assert ktrdr.config.ConfigurationError is ktrdr.ConfigurationError
    assert (error.problems, error.warnings) == (("A: expected b",), ("w",))
    assert str(error) == "Invalid configuration (1 problem):\n  - A: expected b"
