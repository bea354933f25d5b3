"""Startup validation: load every settings class a component needs, check it, report.

``validate_all`` collects every problem (types, ranges, cross-field rules, insecure
defaults, unknown ``KTRDR_*`` names) before raising one ``ConfigurationError``.
It never prints: entrypoints print the report and warnings it returns or raises.

``KTRDR_ENV`` sets the strictness:

=============  ===========================================  ======================
KTRDR_ENV      insecure default secrets                     unknown KTRDR_* names,
                                                            settings without effect
=============  ===========================================  ======================
development    boxed warning (``KTRDR_ACKNOWLEDGE_...``     warning
               silences it)
test           accepted silently (tests use the             error
               development secrets on purpose)
production     error (acknowledging does not help)          error
=============  ===========================================  ======================

In every mode, an old value that carries no setting (``ENVIRONMENT=canary``, a label)
and a retired variable are warnings, and variables read by another component are
mentioned in one note (see ``ktrdr.config.effects``).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import urlsplit

import attrs

from ktrdr.config.bundles import (
    BUNDLES,
    COMPONENTS,
    AnyConfig,
    BackendConfig,
    Component,
    ConfigReport,
    FullConfig,
    WorkerConfig,
    settings_classes,
    uses_field,
)
from ktrdr.config.deprecation import message_for
from ktrdr.config.effects import (
    elsewhere,
    elsewhere_note,
    ignored_warning,
    reads,
    retired_warnings,
    without_effect,
)
from ktrdr.config.fields import FILE_SUFFIX, Declared, declared, format_value, per_class
from ktrdr.config.loader import DEFAULT_ENV_FILE, EnvLoader
from ktrdr.config.results import DeprecatedUse, IgnoredValue, Problem, Source, SourceKind
from ktrdr.config.settings import (
    DatabaseSettings,
    EnvironmentSettings,
    OrphanDetectorSettings,
    WorkerSettings,
)
from ktrdr.config.types import DbEngine, Environment, WorkerType
from ktrdr.config.unknown import unknown_message, unknown_variables
from ktrdr.errors import ConfigurationError

HEARTBEAT = "KTRDR_WORKER_HEARTBEAT_INTERVAL"
STALE_AFTER = "KTRDR_WORKER_STALE_AFTER"
REMOVAL = "KTRDR_WORKER_REMOVAL_THRESHOLD"
ORPHAN_TIMEOUT = "KTRDR_ORPHAN_TIMEOUT"
PORT = "KTRDR_WORKER_PORT"
PUBLIC_URL = "KTRDR_WORKER_PUBLIC_URL"
STOP_GRACE = "KTRDR_WORKER_STOP_GRACE"
SHUTDOWN_TIMEOUT = "KTRDR_WORKER_SHUTDOWN_TIMEOUT"


class Severity(str, enum.Enum):
    """What a finding does to startup."""

    ALLOW = "allow"
    WARN = "warn"
    ERROR = "error"


@attrs.frozen
class Strictness:
    """How one ``KTRDR_ENV`` treats insecure defaults and unknown variables."""

    insecure_defaults: Severity
    unknown_variables: Severity
    #: A setting set whose declared condition does not hold (``applies_when``).
    without_effect: Severity = Severity.ERROR


STRICTNESS: Mapping[Environment, Strictness] = {
    Environment.DEVELOPMENT: Strictness(Severity.WARN, Severity.WARN, Severity.WARN),
    Environment.TEST: Strictness(Severity.ALLOW, Severity.ERROR, Severity.ERROR),
    Environment.PRODUCTION: Strictness(Severity.ERROR, Severity.ERROR, Severity.ERROR),
}


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
) -> AnyConfig: ...
def validate_all(
    component: Component,
    environ: Mapping[str, str],
    *,
    env_file: str | Path | None = DEFAULT_ENV_FILE,
    worker_type: WorkerType | None = None,
) -> AnyConfig:
    """Load and check the configuration of ``component`` from ``environ``.

    ``worker_type`` is the type the entrypoint runs; ``KTRDR_WORKER_TYPE`` may repeat
    it but not contradict it, and the default worker id is built from it. Raises
    ``ConfigurationError`` listing every problem (its ``warnings`` hold the
    deprecation and other warnings found on the way).
    """
    if component not in BUNDLES:
        message = f"unknown component {component!r}; expected one of: {', '.join(COMPONENTS)}"
        raise ConfigurationError([message])
    loader = EnvLoader(environ, env_file=env_file)
    problems: list[Problem] = list(loader.file_problems)
    loaded: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    deprecations: list[DeprecatedUse] = []
    ignored: list[IgnoredValue] = []
    for field_name, cls in settings_classes(component).items():
        fixed = {"type": worker_type} if cls is WorkerSettings and worker_type else None
        result = loader.load_result(cls, entrypoint=fixed)
        problems.extend(result.problems)
        deprecations.extend(result.deprecations)
        ignored.extend(result.ignored)
        for env, name in _variables(cls):
            sources[env] = result.sources[name]
        loaded[field_name] = result.settings
    # A setting this component does not read is mentioned in a note, not renamed here.
    deprecations = [d for d in deprecations if reads(component, d.new)]

    environment: EnvironmentSettings = loaded["environment"] or EnvironmentSettings()
    strictness = STRICTNESS[environment.env]
    warnings: list[str] = []
    problems.extend(_cross_field_problems(loaded, sources))
    if component != "backend":
        problems.extend(_listening_port_problems(loaded, sources))

    insecure = _insecure_defaults(loaded, component)
    if insecure and strictness.insecure_defaults is Severity.ERROR:
        problems.extend(
            Problem(
                _variable(sources, env),
                None,
                f"still the insecure development default; KTRDR_ENV=production needs a "
                f"real secret (set {env} or {env}{FILE_SUFFIX})",
            )
            for env in insecure
        )
    elif (
        insecure
        and strictness.insecure_defaults is Severity.WARN
        and not environment.acknowledge_insecure_defaults
    ):
        warnings.append(_insecure_box(insecure))

    names = loader.names_set()
    for name in unknown_variables(names):
        where = f" (set in {loader.env_file})" if loader.in_dotenv_only(name) else ""
        if strictness.unknown_variables is Severity.ERROR:
            problems.append(Problem(name, None, unknown_message(name) + where))
        else:
            warnings.append(f"{name}{where}: {unknown_message(name)}")

    warnings.extend(ignored_warning(value, loaded, sources) for value in ignored)
    warnings.extend(retired_warnings(names))
    for problem in without_effect(loaded, sources, component):
        if strictness.without_effect is Severity.ERROR:
            problems.append(problem)
        else:
            warnings.append(str(problem))
    found = elsewhere(names, component)
    notes = (elsewhere_note(found, component),) if found else ()

    if problems:
        shown = [message_for(use) for use in deprecations] + warnings + list(notes)
        raise ConfigurationError([str(p) for p in problems], warnings=shown)
    report = ConfigReport(
        sources=sources,
        deprecations=tuple(deprecations),
        warnings=tuple(warnings),
        notes=notes,
    )
    return BUNDLES[component](**loaded, report=report)


def _variable(sources: Mapping[str, Source], env: str) -> str:
    """The name the user actually set for ``env`` (a deprecated name, or ``env``)."""
    source = sources.get(env)
    if source is not None and source.variable is not None:
        return source.variable
    return env


def _rule_problem(
    sources: Mapping[str, Source], env: str, shown_value: str, expected: str
) -> Problem:
    """A cross-field problem under the variable the user set for ``env``.

    A value read from a ``_FILE`` is attributed to the file, so the report never
    pretends the ``_FILE`` variable itself holds the value.
    """
    source = sources.get(env)
    if source is not None and source.kind is SourceKind.SECRET_FILE:
        assert source.variable is not None  # set for every file source
        return Problem(
            source.variable, source.path, f"the file's content ({shown_value}): {expected}"
        )
    if source is not None and source.typed is not None:  # quote what the user typed
        return Problem(_variable(sources, env), source.typed, expected, normalised=shown_value)
    return Problem(_variable(sources, env), shown_value, expected)


def _is_set(sources: Mapping[str, Source], env: str) -> bool:
    source = sources.get(env)
    return source is not None and source.kind is not SourceKind.DEFAULT


def _cross_field_problems(
    loaded: Mapping[str, Any], sources: Mapping[str, Source]
) -> list[Problem]:
    """Rules between settings; each runs when the settings it needs loaded.

    A broken rule is reported under a variable the user set: the one the rule is
    about, unless that one is still at its default and another side of the rule was set.
    """
    problems: list[Problem] = []
    worker: WorkerSettings | None = loaded.get("worker")
    orphan: OrphanDetectorSettings | None = loaded.get("orphan")
    if worker is not None and orphan is not None:
        heartbeat, timeout = worker.heartbeat_interval, orphan.timeout
        why = "so a live worker is never mistaken for a dead one"
        if timeout <= 2 * heartbeat:
            if _is_set(sources, HEARTBEAT) and not _is_set(sources, ORPHAN_TIMEOUT):
                problem = _rule_problem(
                    sources,
                    HEARTBEAT,
                    format_value(heartbeat),
                    f"expected less than half of {ORPHAN_TIMEOUT} ({format_value(timeout)}), {why}",
                )
            else:
                problem = _rule_problem(
                    sources,
                    ORPHAN_TIMEOUT,
                    format_value(timeout),
                    f"expected more than twice {HEARTBEAT} ({format_value(heartbeat)}), {why}",
                )
            problems.append(problem)
    # Only a grace the operator chose is held to the rule: by default a SIGTERM's
    # grace is capped at half the shutdown timeout (see ktrdr.workers.job_host).
    if (
        worker is not None
        and _is_set(sources, STOP_GRACE)
        and worker.stop_grace >= worker.shutdown_timeout
    ):
        why = "a job that ignores SIGTERM must be killed before the worker gives up on it"
        problem = _rule_problem(
            sources,
            STOP_GRACE,
            format_value(worker.stop_grace),
            f"expected less than {SHUTDOWN_TIMEOUT} "
            f"({format_value(worker.shutdown_timeout)}): {why}",
        )
        problems.append(problem)
    if worker is not None and "api" in loaded:  # the backend applies the liveness rules
        unavailable_after = worker.stale_after * worker.heartbeat_interval
        removal = worker.removal_threshold
        why = "a worker must become unavailable before it is removed"
        if removal < unavailable_after:
            blamed = [v for v in (HEARTBEAT, STALE_AFTER) if _is_set(sources, v)]
            if blamed and not _is_set(sources, REMOVAL):
                shown = worker.heartbeat_interval if blamed[0] == HEARTBEAT else worker.stale_after
                problem = _rule_problem(
                    sources,
                    blamed[0],
                    format_value(shown),
                    f"expected {STALE_AFTER} x {HEARTBEAT} ({format_value(unavailable_after)}) "
                    f"to be at most {REMOVAL} ({format_value(removal)}): {why}",
                )
            else:
                problem = _rule_problem(
                    sources,
                    REMOVAL,
                    format_value(removal),
                    f"expected at least {STALE_AFTER} x {HEARTBEAT} "
                    f"({format_value(unavailable_after)}): {why}",
                )
            problems.append(problem)
    return problems


def _listening_port_problems(
    loaded: Mapping[str, Any], sources: Mapping[str, Source]
) -> list[Problem]:
    """An old-named public URL naming another port than the one the worker would listen on.

    Before ktrdr 0.4 a worker's listening port came from ``uvicorn --port`` and was
    often not in its environment at all; only the public URL (under an old name)
    said it. Such a worker would now listen on the default port while telling the
    backend another one, so the port must be set explicitly (to the URL's port, or to
    the default when a port mapping sits in between). A URL under the current name is
    taken as meant: a proxy or a port mapping may well sit in front of the worker.
    """
    worker: WorkerSettings | None = loaded.get("worker")
    url_source = sources.get(PUBLIC_URL)
    old_url = url_source is not None and (
        url_source.kind is SourceKind.DEPRECATED or url_source.deprecated
    )
    if worker is None or _is_set(sources, PORT) or not old_url:
        return []
    try:
        url_port = urlsplit(worker.public_url).port
    except ValueError:  # the URL check reports it
        return []
    if url_port is None or url_port == worker.port:
        return []
    expected = (
        f"names port {url_port}, but {PORT} is not set, so the worker would listen on "
        f"{worker.port}: set {PORT}={url_port} (before ktrdr 0.4 the port came from "
        f"`uvicorn --port`), or {PORT}={worker.port} if a port mapping sits in between"
    )
    return [_rule_problem(sources, PUBLIC_URL, worker.public_url, expected)]


@per_class
def _variables(cls: type[Any]) -> tuple[tuple[str, str], ...]:
    """``(variable, field name)`` for each setting of ``cls``, in declaration order."""
    return tuple((item.env, item.name) for item in declared(cls))


@functools.cache
def _with_insecure_defaults(component: Component) -> Mapping[type[Any], tuple[Declared, ...]]:
    """Per settings class, the settings ``component`` reads that have an insecure default."""
    return {
        cls: tuple(
            item
            for item in declared(cls)
            if item.spec.insecure_default and uses_field(component, cls, item.name)
        )
        for cls in settings_classes(component).values()
    }


def _insecure_defaults(loaded: Mapping[str, Any], component: Component) -> list[str]:
    """Variables this component uses that still hold an insecure development default.

    Only the settings the component reads are looked at (a worker is never checked
    for the database password or the operator token), and the password only when
    PostgreSQL is the engine.
    """
    found = []
    candidates = _with_insecure_defaults(component)
    for settings in loaded.values():
        if settings is None:
            continue
        for item in candidates.get(type(settings), ()):
            if (
                isinstance(settings, DatabaseSettings)
                and settings.engine is not DbEngine.POSTGRESQL
            ):
                continue  # SQLite has no password
            if getattr(settings, item.name) == item.attribute.default:
                found.append(item.env)
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
