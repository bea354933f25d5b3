"""Startup validation: load every settings class a component needs, check it, report.

``validate_all`` collects every problem (types, ranges, cross-field rules, insecure
defaults, unknown ``KTRDR_*`` names) before raising one ``ConfigurationError``.
It never prints: entrypoints print the report and warnings it returns or raises.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

import attrs

from ktrdr.config.deprecation import message_for
from ktrdr.config.fields import declared, format_value
from ktrdr.config.loader import (
    DEFAULT_ENV_FILE,
    FILE_SUFFIX,
    DeprecatedUse,
    EnvLoader,
    Problem,
    Source,
    SourceKind,
)
from ktrdr.config.settings import (
    ALL_SETTINGS,
    APISettings,
    AuthSettings,
    CheckpointSettings,
    DatabaseSettings,
    EnvironmentSettings,
    LoggingSettings,
    OperationsSettings,
    OrphanDetectorSettings,
    WorkerSettings,
)
from ktrdr.config.types import DbEngine, Environment, WorkerType
from ktrdr.errors import ConfigurationError

Component = Literal["worker", "backend", "all"]
COMPONENTS: tuple[Component, ...] = ("worker", "backend", "all")

#: ``KTRDR_*`` variables that are not settings but are known to exist (read by tests).
NON_SETTINGS_VARIABLES = frozenset({"KTRDR_TEST_POSTGRES_URL"})


@attrs.frozen(kw_only=True)
class ConfigReport:
    """What the loader saw besides values: sources, deprecated names, warnings."""

    #: Effective environment variable name → where its value came from.
    sources: Mapping[str, Source]
    deprecations: tuple[DeprecatedUse, ...]
    warnings: tuple[str, ...]


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """Everything a worker process needs; it never touches the database."""

    environment: EnvironmentSettings
    worker: WorkerSettings
    checkpoint: CheckpointSettings
    logging: LoggingSettings
    auth: AuthSettings
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
    report: ConfigReport


@attrs.frozen(kw_only=True)
class FullConfig:
    """Every settings class (``config show --component all``, compose validation)."""

    environment: EnvironmentSettings
    api: APISettings
    database: DatabaseSettings
    worker: WorkerSettings
    checkpoint: CheckpointSettings
    orphan: OrphanDetectorSettings
    operations: OperationsSettings
    logging: LoggingSettings
    auth: AuthSettings
    report: ConfigReport


_BUNDLES: dict[Component, type[Any]] = {
    "worker": WorkerConfig,
    "backend": BackendConfig,
    "all": FullConfig,
}


def settings_classes(component: Component) -> dict[str, type[Any]]:
    """The settings classes of a component, by bundle field name."""
    hints = typing.get_type_hints(_BUNDLES[component])
    return {name: cls for name, cls in hints.items() if name != "report"}


@overload
def validate_all(
    component: Literal["worker"],
    environ: Mapping[str, str],
    *,
    env_file: str | Path | None = ...,
    worker_type: WorkerType | None = ...,
) -> WorkerConfig: ...
@overload
def validate_all(
    component: Literal["backend"],
    environ: Mapping[str, str],
    *,
    env_file: str | Path | None = ...,
    worker_type: WorkerType | None = ...,
) -> BackendConfig: ...
@overload
def validate_all(
    component: Literal["all"],
    environ: Mapping[str, str],
    *,
    env_file: str | Path | None = ...,
    worker_type: WorkerType | None = ...,
) -> FullConfig: ...
@overload
def validate_all(
    component: Component,
    environ: Mapping[str, str],
    *,
    env_file: str | Path | None = ...,
    worker_type: WorkerType | None = ...,
) -> WorkerConfig | BackendConfig | FullConfig: ...
def validate_all(
    component: Component,
    environ: Mapping[str, str],
    *,
    env_file: str | Path | None = DEFAULT_ENV_FILE,
    worker_type: WorkerType | None = None,
) -> WorkerConfig | BackendConfig | FullConfig:
    """Load and check the configuration of ``component`` from ``environ``.

    ``worker_type`` is the type the entrypoint runs; ``KTRDR_WORKER_TYPE`` may repeat
    it but not contradict it. Raises ``ConfigurationError`` listing every problem.
    """
    if component not in _BUNDLES:
        message = f"unknown component {component!r}; expected one of: {', '.join(COMPONENTS)}"
        raise ConfigurationError([message])
    loader = EnvLoader(environ, env_file=env_file)
    problems: list[Problem] = list(loader.file_problems)
    loaded: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    deprecations: list[DeprecatedUse] = []
    for field_name, cls in settings_classes(component).items():
        result = loader.load_result(cls)
        problems.extend(result.problems)
        deprecations.extend(result.deprecations)
        for item in declared(cls):
            sources[item.env] = result.sources.get(item.name, Source(SourceKind.DEFAULT))
        loaded[field_name] = result.settings

    if worker_type is not None and loaded.get("worker") is not None:
        loaded["worker"], type_problem = _apply_worker_type(loaded["worker"], worker_type, sources)
        problems.extend(type_problem)

    environment: EnvironmentSettings = loaded["environment"] or EnvironmentSettings()
    production = environment.env is Environment.PRODUCTION
    warnings: list[str] = []
    if all(value is not None for value in loaded.values()):
        problems.extend(_cross_field_problems(loaded, sources))
        insecure = _insecure_defaults(loaded, sources)
        if insecure and production:
            problems.extend(
                Problem(
                    v,
                    None,
                    "still the insecure development default; set a real secret "
                    f"(or {v}{FILE_SUFFIX}) in production",
                )
                for v in insecure
            )
        elif insecure and not environment.acknowledge_insecure_defaults:
            warnings.append(_insecure_box(insecure))
    unknown = _unknown_variables(loader.names_set())
    if production:
        problems.extend(Problem(name, None, hint) for name, hint in unknown)
    else:
        warnings.extend(f"{name} is not a ktrdr setting; {hint}" for name, hint in unknown)

    if problems:
        notes = [message_for(use) for use in deprecations] + warnings
        raise ConfigurationError([str(p) for p in problems], warnings=notes)
    report = ConfigReport(
        sources=sources, deprecations=tuple(deprecations), warnings=tuple(warnings)
    )
    bundle: WorkerConfig | BackendConfig | FullConfig = _BUNDLES[component](**loaded, report=report)
    return bundle


def _variable(sources: Mapping[str, Source], env: str) -> str:
    """The name the user actually set for ``env`` (a deprecated name, or ``env``)."""
    source = sources.get(env)
    if (
        source is not None
        and source.variable is not None
        and not source.variable.endswith(FILE_SUFFIX)
    ):
        return source.variable
    return env


def _apply_worker_type(
    worker: WorkerSettings, expected: WorkerType, sources: Mapping[str, Source]
) -> tuple[WorkerSettings, list[Problem]]:
    if worker.type is not None and worker.type is not expected:
        variable = _variable(sources, "KTRDR_WORKER_TYPE")
        expectation = f"expected {expected.value} (this is the {expected.value} worker entrypoint)"
        return worker, [Problem(variable, worker.type.value, expectation)]
    if worker.type is expected:
        return worker, []
    # Recompute derived defaults (the id) now that the type is known.
    id_is_default = sources["KTRDR_WORKER_ID"].variable is None
    changes: dict[str, Any] = {"type": expected}
    if id_is_default:
        changes["id"] = f"{expected.value}-{worker.id.split('-', 1)[1]}"
    return attrs.evolve(worker, **changes), []


def _cross_field_problems(
    loaded: Mapping[str, Any], sources: Mapping[str, Source]
) -> list[Problem]:
    problems: list[Problem] = []
    worker: WorkerSettings | None = loaded.get("worker")
    orphan: OrphanDetectorSettings | None = loaded.get("orphan")
    if (
        worker is not None
        and orphan is not None
        and orphan.timeout <= 2 * worker.heartbeat_interval
    ):
        problems.append(
            Problem(
                _variable(sources, "KTRDR_ORPHAN_TIMEOUT"),
                format_value(orphan.timeout),
                "expected more than twice KTRDR_WORKER_HEARTBEAT_INTERVAL "
                f"({format_value(worker.heartbeat_interval)}), so a live worker is never "
                "mistaken for a dead one",
            )
        )
    if (
        worker is not None
        and "api" in loaded
        and (worker.removal_threshold < worker.stale_after * worker.heartbeat_interval)
    ):
        problems.append(
            Problem(
                _variable(sources, "KTRDR_WORKER_REMOVAL_THRESHOLD"),
                format_value(worker.removal_threshold),
                "expected at least KTRDR_WORKER_STALE_AFTER x KTRDR_WORKER_HEARTBEAT_INTERVAL "
                f"({format_value(worker.stale_after * worker.heartbeat_interval)}): a worker "
                "must become unavailable before it is removed",
            )
        )
    return problems


def _insecure_defaults(loaded: Mapping[str, Any], sources: Mapping[str, Source]) -> list[str]:
    """Variables of this component still at an insecure development default."""
    found = []
    database: DatabaseSettings | None = loaded.get("database")
    for field_name, settings in loaded.items():
        if field_name == "database" and (
            database is None or database.engine is not DbEngine.POSTGRESQL
        ):
            continue  # the password is only used by PostgreSQL
        for item in declared(type(settings)):
            if (
                item.spec.insecure_default
                and getattr(settings, item.name) == item.attribute.default
            ):
                found.append(item.env)
    del sources
    return found


def _insecure_box(variables: list[str]) -> str:
    lines = [
        "INSECURE DEFAULTS IN USE",
        *(f"  {v} is still the development default" for v in variables),
        "Fine on a laptop; set real values before exposing this process.",
        "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS=true silences this in development;",
        "KTRDR_ENV=production refuses to start with these defaults.",
    ]
    width = max(len(line) for line in lines)
    border = "+" + "-" * (width + 2) + "+"
    return "\n".join([border, *(f"| {line.ljust(width)} |" for line in lines), border])


def known_variables() -> frozenset[str]:
    """Every variable ktrdr reads: new names, deprecated names and ``_FILE`` forms."""
    names: set[str] = set(NON_SETTINGS_VARIABLES)
    for cls in ALL_SETTINGS:
        for item in declared(cls):
            names.add(item.env)
            names.add(item.env + FILE_SUFFIX)
            names.update(item.spec.deprecated)
    return frozenset(names)


def _unknown_variables(names: set[str]) -> list[tuple[str, str]]:
    """``(name, hint)`` for every ``KTRDR_*`` name that no settings class declares."""
    unknown = sorted(n for n in names if n.startswith("KTRDR_"))
    known = known_variables()
    unknown = [n for n in unknown if n not in known]
    if not unknown:
        return []
    current = sorted(item.env for cls in ALL_SETTINGS for item in declared(cls))
    results = []
    for name in unknown:
        close = difflib.get_close_matches(name, current, n=1, cutoff=0.75)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else "see docs/configuration.md for the known names"
        )
        results.append((name, f"unknown variable, {hint}"))
    return results
