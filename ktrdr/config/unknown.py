"""Which ``KTRDR_*`` names are known, whose they are, and "did you mean ...?".

A ``KTRDR_*`` variable that no settings class declares is often a typo, and a typo
silently leaves the default in place. But a ktrdr process also carries variables
that other parts of ktrdr read (the IB gateway, agents, data paths, the
API's JWT settings, deployment tooling): those are declared here, by name and by
prefix, so they are mentioned once as another component's and never reported as
typos. Variables of the system ktrdr 0.4 replaces that configured something this
release no longer has are declared as retired, each with what replaced it.

Suggestions stay within a concern and are only offered for near misses: a typo or a
transposition (``KTRDR_WORKER_PROT``), a misspelt concern (``WORKR`` for ``WORKER``), or
a field name without its concern (``KTRDR_PORT``), never a neighbour in another
concern that happens to be one letter away.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

import attrs

from ktrdr.config.fields import FILE_SUFFIX, PREFIX, declared
from ktrdr.config.settings import ALL_SETTINGS

#: ``KTRDR_*`` variables that are not settings but are known to exist.
NON_SETTINGS_VARIABLES = frozenset({"KTRDR_TEST_POSTGRES_URL"})


@attrs.frozen
class OtherComponent:
    """A part of ktrdr outside this project, and the ``KTRDR_*`` variables it reads."""

    name: str
    names: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()


#: Other ktrdr components' variables (from the configuration reference of the system
#: ktrdr 0.4 replaces, and its deployment files). Present: mentioned, never an error.
OTHER_COMPONENTS: tuple[OtherComponent, ...] = (
    OtherComponent(
        "IB gateway and IB host service",
        names=(
            "KTRDR_IB_HOST",
            "KTRDR_IB_PORT",
            "KTRDR_IB_CLIENT_ID",
            "KTRDR_IB_HOST_ENABLED",
            "KTRDR_IB_HOST_HOST",
            "KTRDR_IB_HOST_PORT",
        ),
        prefixes=("KTRDR_IB_",),
    ),
    OtherComponent(
        "training host service",
        names=("KTRDR_TRAINING_HOST_ENABLED",),
        prefixes=("KTRDR_TRAINING_HOST_",),
    ),
    OtherComponent(
        "research agents",
        names=("KTRDR_AGENT_MODEL", "KTRDR_AGENT_ENABLED", "KTRDR_GATE_MODE"),
        prefixes=("KTRDR_AGENT_", "KTRDR_GATE_"),
    ),
    OtherComponent(
        "data paths",
        names=(
            "KTRDR_DATA_MODELS_DIR",
            "KTRDR_DATA_STRATEGIES_DIR",
            "KTRDR_DATA_SHARED_MOUNT_PATH",
        ),
        # No KTRDR_DATA_ prefix: it is DataSettings' too, whose typos must be reported.
    ),
    OtherComponent(
        "API authentication (JWT)",
        names=(
            "KTRDR_AUTH_JWT_SECRET",
            "KTRDR_AUTH_JWT_ALGORITHM",
            "KTRDR_AUTH_TOKEN_EXPIRE_MINUTES",
        ),
    ),
    OtherComponent(
        "API server options outside the worker fleet",
        names=(
            "KTRDR_API_RELOAD",
            "KTRDR_API_LOG_LEVEL",
            "KTRDR_API_TITLE",
            "KTRDR_API_DESCRIPTION",
            "KTRDR_API_VERSION",
            "KTRDR_API_API_PREFIX",
            "KTRDR_API_CORS_ORIGINS",
        ),
        prefixes=("KTRDR_API_CORS_",),
    ),
    OtherComponent(
        "API clients (CLI, MCP server)",
        names=("KTRDR_API_CLIENT_TIMEOUT",),
        prefixes=("KTRDR_API_CLIENT_",),
    ),
    OtherComponent(
        "LXC deployment scripts",
        names=(
            "KTRDR_BACKEND_API",
            "KTRDR_GATEWAY",
            "KTRDR_NETMASK",
            "KTRDR_GIT_REPO",
            "KTRDR_GIT_REF",
            "KTRDR_WORKER_CONFIG",
        ),
    ),
    OtherComponent(
        "sandbox tooling (compose ports, images and paths)",
        names=(
            "KTRDR_BACKEND_IMAGE",
            "KTRDR_MODELS_DIR",
            "KTRDR_STRATEGIES_DIR",
            "KTRDR_GRAFANA_PORT",
            "KTRDR_PROMETHEUS_PORT",
            "KTRDR_JAEGER_UI_PORT",
            "KTRDR_JAEGER_OTLP_GRPC_PORT",
            "KTRDR_JAEGER_OTLP_HTTP_PORT",
            "KTRDR_WORKER_PORT_1",
            "KTRDR_WORKER_PORT_2",
            "KTRDR_WORKER_PORT_3",
            "KTRDR_WORKER_PORT_4",
        ),
    ),
)

_HEARTBEATS = "the backend no longer polls workers: workers send heartbeats"
#: Variables of the replaced system whose behaviour is gone, and what replaced it.
RETIRED: Mapping[str, str] = {
    "KTRDR_WORKER_HEALTH_CHECK_INTERVAL": f"{_HEARTBEATS} (KTRDR_WORKER_HEARTBEAT_INTERVAL)",
    "KTRDR_WORKER_HEALTH_CHECK_TIMEOUT": f"{_HEARTBEATS} (KTRDR_WORKER_HEARTBEAT_INTERVAL)",
    "KTRDR_WORKER_HEALTH_CHECK_FAILURES": (
        f"{_HEARTBEATS}; a worker that misses KTRDR_WORKER_STALE_AFTER of them is unavailable"
    ),
    "KTRDR_WORKER_HAS_GPU": "this release does not route work by GPU",
}


@functools.cache
def _settings_names() -> frozenset[str]:
    names: set[str] = set()
    for cls in ALL_SETTINGS:
        for item in declared(cls):
            names.update(item.names)
            names.add(item.file_var)
    return frozenset(names)


@functools.cache
def known_variables() -> frozenset[str]:
    """Every variable name ktrdr knows: settings (new, deprecated, ``_FILE``), the declared
    non-settings variables, other components' listed names and retired names."""
    other = {name for component in OTHER_COMPONENTS for name in component.names}
    return _settings_names() | NON_SETTINGS_VARIABLES | other | set(RETIRED)


@functools.cache
def _other_by_name() -> dict[str, str]:
    return {name: c.name for c in OTHER_COMPONENTS for name in c.names}


def other_component(name: str) -> str | None:
    """The other ktrdr component that reads ``name`` (None: not another component's).

    A name a settings class declares is never another component's, whatever its prefix.
    """
    if name in _settings_names():
        return None
    found = _other_by_name().get(name)
    if found is not None:
        return found
    if not name.startswith(PREFIX):
        return None
    for component in OTHER_COMPONENTS:
        if name.startswith(component.prefixes):
            return component.name
    return None


def unknown_variables(names: Iterable[str]) -> list[str]:
    """The ``KTRDR_*`` names among ``names`` that nothing in ktrdr reads, sorted."""
    known = known_variables()
    return sorted(
        n for n in names if n.startswith(PREFIX) and n not in known and other_component(n) is None
    )


def near_miss(typed: str, known: str) -> bool:
    """Whether ``typed`` is ``known`` with a typo: a few edits or transpositions.

    Names are compared segment by segment (``WORKER_PROT`` against ``WORKER_PORT``):
    a segment of up to five characters may differ by one edit, a longer one by two,
    two in all; a segment of two characters or fewer (``DB``, ``IB``) must match,
    since changing one of its letters names another concern, not a misspelling.
    """
    typed_parts, known_parts = typed.split("_"), known.split("_")
    if len(typed_parts) != len(known_parts):
        return 0 < _edits(typed, known) <= 1
    total = 0
    for a, b in zip(typed_parts, known_parts, strict=True):
        if a == b:
            continue
        edits = _edits(a, b)
        if min(len(a), len(b)) <= 2 or edits > (1 if max(len(a), len(b)) <= 5 else 2):
            return False
        total += edits
    return 0 < total <= 2


def _edits(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, swaps."""
    if abs(len(a) - len(b)) > 2:
        return 3  # more than any limit: not worth computing
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


@functools.cache
def _replacements() -> dict[str, tuple[str, str]]:
    """Every declared name (new or deprecated) without ``KTRDR_`` → (variable, its concern)."""
    table: dict[str, tuple[str, str]] = {}
    for cls in ALL_SETTINGS:
        concern = cls.PREFIX.removeprefix(PREFIX)
        for item in declared(cls):
            for name in item.names:
                table.setdefault(name.removeprefix(PREFIX), (item.env, concern))
    return table


@functools.cache
def _concerns() -> tuple[str, ...]:
    """The concern prefixes after ``KTRDR_`` (``WORKER_``, ``DB_``...), longest first."""
    prefixes = {cls.PREFIX.removeprefix(PREFIX) for cls in ALL_SETTINGS}
    return tuple(sorted((p for p in prefixes if p), key=len, reverse=True))


def suggest(name: str) -> list[str]:
    """The declared variables ``name`` most likely meant (empty when nothing is close).

    A near-miss spelling (``KTRDR_WORKER_PROT``) gives its closest name in the same
    concern; a field name without its concern (``KTRDR_PORT``) gives every variable
    ending that way.
    """
    suffix = ""
    if name.endswith(FILE_SUFFIX) and name[: -len(FILE_SUFFIX)] not in known_variables():
        name, suffix = name[: -len(FILE_SUFFIX)], FILE_SUFFIX
    stem = name.removeprefix(PREFIX)
    table = _replacements()
    by_field = sorted({env for old, (env, _) in table.items() if old.endswith("_" + stem)})
    if by_field:
        return [env + suffix for env in by_field]
    concern = next((c for c in _concerns() if stem.startswith(c)), None)
    matches = sorted(
        {
            env
            for old, (env, owner) in table.items()
            if (concern is None or owner == concern) and near_miss(stem, old)
        }
    )
    return [env + suffix for env in matches]


def unknown_message(name: str) -> str:
    """The line that reports one unknown variable."""
    matches = suggest(name)
    if len(matches) == 1:
        hint = f"did you mean {matches[0]}?"
    elif matches:
        hint = f"did you mean one of {', '.join(matches)}?"
    else:
        hint = "see docs/configuration.md for every setting"
    return f"not a ktrdr setting; {hint}"
