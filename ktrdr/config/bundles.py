"""The typed bundles ``validate_all`` returns: the settings one component needs.

A worker never receives database settings (it talks to the backend only); the
backend receives the worker liveness thresholds. Each bundle also carries a
:class:`ConfigReport`: where every value came from, and what was noticed on the way.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ktrdr.config.results import DeprecatedUse, Source
from ktrdr.config.settings import (
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

Component = Literal["worker", "backend", "all"]
COMPONENTS: tuple[Component, ...] = ("worker", "backend", "all")


@attrs.frozen(kw_only=True)
class ConfigReport:
    """What the loader saw besides values: sources, deprecated names, warnings."""

    #: Effective environment variable name → where its value came from.
    sources: Mapping[str, Source]
    deprecations: tuple[DeprecatedUse, ...]
    #: Non-fatal findings to show the operator (insecure defaults, unknown names).
    warnings: tuple[str, ...]
    #: Mentions, not findings: variables set for another ktrdr component.
    notes: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """Everything a worker process needs; it never touches the database."""

    environment: EnvironmentSettings
    worker: WorkerSettings
    checkpoint: CheckpointSettings
    data: DataSettings
    logging: LoggingSettings
    auth: AuthSettings
    metrics: MetricsSettings = attrs.field(factory=MetricsSettings)
    tracing: TracingSettings = attrs.field(factory=TracingSettings)
    report: ConfigReport


@attrs.frozen(kw_only=True)
class BackendConfig:
    """Everything the backend needs (``worker`` supplies the liveness thresholds)."""

    environment: EnvironmentSettings
    api: APISettings
    database: DatabaseSettings
    worker: WorkerSettings
    orphan: OrphanDetectorSettings
    operations: OperationsSettings
    logging: LoggingSettings
    auth: AuthSettings
    metrics: MetricsSettings = attrs.field(factory=MetricsSettings)
    tracing: TracingSettings = attrs.field(factory=TracingSettings)
    report: ConfigReport


@attrs.frozen(kw_only=True)
class FullConfig:
    """Every settings class (``config show --component all``, compose validation)."""

    environment: EnvironmentSettings
    api: APISettings
    database: DatabaseSettings
    worker: WorkerSettings
    checkpoint: CheckpointSettings
    data: DataSettings
    orphan: OrphanDetectorSettings
    operations: OperationsSettings
    logging: LoggingSettings
    auth: AuthSettings
    metrics: MetricsSettings = attrs.field(factory=MetricsSettings)
    tracing: TracingSettings = attrs.field(factory=TracingSettings)
    report: ConfigReport


AnyConfig = WorkerConfig | BackendConfig | FullConfig

BUNDLES: Mapping[Component, type[AnyConfig]] = {
    "worker": WorkerConfig,
    "backend": BackendConfig,
    "all": FullConfig,
}


#: The worker settings the backend reads (liveness); the others are the workers' own.
BACKEND_WORKER_FIELDS = frozenset({"heartbeat_interval", "stale_after", "removal_threshold"})
#: The auth settings workers read; the operator token is the backend's (and the CLI's).
WORKER_AUTH_FIELDS = frozenset({"worker_token"})


def uses_field(component: Component, cls: type[Any], field: str) -> bool:
    """Whether ``component`` reads ``cls.field`` (classes are loaded whole, not all read)."""
    if cls not in settings_classes(component).values():
        return False
    if component == "backend" and cls is WorkerSettings:
        return field in BACKEND_WORKER_FIELDS
    if component == "worker" and cls is AuthSettings:
        return field in WORKER_AUTH_FIELDS
    return True


@functools.cache
def settings_classes(component: Component) -> Mapping[str, type[Any]]:
    """The settings classes of a component, by bundle field name (in declared order)."""
    bundle = BUNDLES[component]
    hints = typing.get_type_hints(bundle)
    classes = {a.name: hints[a.name] for a in attrs.fields(bundle) if a.name != "report"}
    return types.MappingProxyType(classes)


def settings_of(config: AnyConfig) -> dict[str, Any]:
    """The settings objects of a bundle, by bundle field name."""
    return {name: getattr(config, name) for name in settings_classes(component_of(config))}


def component_of(config: AnyConfig) -> Component:
    """Which component a bundle belongs to."""
    return next(c for c, bundle in BUNDLES.items() if isinstance(config, bundle))
