"""ktrdr configuration: typed, frozen settings read by an explicit loader.

Entrypoints call :func:`validate_all` once with ``os.environ`` and pass the settings
objects into constructors. Nothing here reads ``os.environ`` on its own or caches
settings at module level. This package imports nothing else from ktrdr except
``ktrdr.errors`` and ``ktrdr.vocabulary``.
"""

from ktrdr.config.bundles import (
    COMPONENTS,
    BackendConfig,
    Component,
    ConfigReport,
    FullConfig,
    WorkerConfig,
)
from ktrdr.config.deprecation import DeprecationReporter, deprecated_names
from ktrdr.config.effective import EffectiveValue, effective_values
from ktrdr.config.loader import DEFAULT_ENV_FILE, EnvLoader
from ktrdr.config.names import all_env_names, env_name
from ktrdr.config.results import Source, SourceKind
from ktrdr.config.settings import (
    ALL_SETTINGS,
    DEFAULT_WORKER_PORT,
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
from ktrdr.config.types import (
    ByteSize,
    DbEngine,
    Environment,
    LogFormat,
    LogLevel,
    Secret,
    WorkerType,
)
from ktrdr.config.validation import validate_all
from ktrdr.errors import ConfigurationError

__all__ = [
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
