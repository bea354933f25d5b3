"""Variables that are set but do not act on this component, found and worded.

Nothing set may be silently without effect. A variable can be set and still change
nothing here in three ways, each reported differently:

- a setting whose declared condition does not hold (``setting(applies_when=...)``:
  a PostgreSQL host while the engine is sqlite) is a finding: a warning in
  development, an error in test and production;
- a retired variable of the system ktrdr 0.4 replaces (``ktrdr.config.unknown``)
  is a warning in every mode, naming what replaced it: the behaviour it tuned is
  gone, and nothing set instead would bring it back;
- a variable read by another component (the database host in a worker's
  environment, a worker's port in the backend's, a tracing endpoint) is mentioned
  once, in one note, and is never an error: environments are shared on purpose.

This module only reads loaded settings and sources; it prints nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from ktrdr.config.bundles import Component, uses_field
from ktrdr.config.fields import PREFIX, Declared, declared, format_value, per_class
from ktrdr.config.results import IgnoredValue, Problem, Source, SourceKind
from ktrdr.config.settings import ALL_SETTINGS
from ktrdr.config.unknown import RETIRED, other_component

__all__ = [
    "declaration_of",
    "elsewhere",
    "elsewhere_note",
    "ignored_warning",
    "reads",
    "retired_warnings",
    "without_effect",
]


@functools.cache
def _declarations_by_name() -> dict[str, Declared]:
    """Every variable a setting is read from (current, old, ``_FILE``) → its declaration."""
    table: dict[str, Declared] = {}
    for cls in ALL_SETTINGS:
        for item in declared(cls):
            for name in (*item.names, item.file_var):
                table.setdefault(name, item)
    return table


def declaration_of(variable: str) -> Declared | None:
    """The setting ``variable`` sets (any of its names, or its ``_FILE`` form), if any."""
    return _declarations_by_name().get(variable)


@functools.cache
def _readers(component: Component) -> dict[str, str]:
    """Every declared variable → ``""`` when ``component`` reads it, else who does."""
    table = {}
    for name, item in _declarations_by_name().items():
        if uses_field(component, item.owner, item.name):
            table[name] = ""
        elif uses_field("worker", item.owner, item.name):
            table[name] = "workers"
        else:
            table[name] = "the backend"
    return table


def reads(component: Component, variable: str) -> bool:
    """Whether ``component`` reads the setting ``variable`` (any of its names) sets."""
    return _readers(component).get(variable) == ""


def elsewhere(names: Iterable[str], component: Component) -> list[tuple[str, str]]:
    """``(variable, who reads it)`` for each variable in ``names`` meant for someone else."""
    found = []
    readers = _readers(component)
    for name in names:
        reader = readers.get(name)
        if reader is None:
            other = other_component(name) if name.startswith(PREFIX) else None
            if other is not None:
                found.append((name, other))
        elif reader:
            found.append((name, reader))
    return sorted(found)


def elsewhere_note(found: list[tuple[str, str]], component: Component) -> str:
    """One line naming every variable another component reads, grouped by reader."""
    by_reader: dict[str, list[str]] = {}
    for name, reader in found:
        by_reader.setdefault(reader, []).append(name)
    groups = "; ".join(f"{reader}: {', '.join(names)}" for reader, names in by_reader.items())
    return f"used by another ktrdr component, not by this {component} ({groups})"


def ignored_warning(
    value: IgnoredValue, loaded: Mapping[str, Any], sources: Mapping[str, Source]
) -> str:
    """The warning for a value that carries no setting, with what the setting is instead."""
    item = _declarations_by_name()[value.setting]
    settings = next((s for s in loaded.values() if type(s) is item.owner), None)
    effective = ""
    if settings is not None:
        shown = format_value(getattr(settings, item.name), secret=item.spec.secret)
        source = sources[item.env]
        origin = "the default" if source.kind is SourceKind.DEFAULT else source.describe()
        effective = f"; {item.env} is {shown} ({origin})"
    return f"{value.variable}={value.value!r} is ignored: {value.reason}{effective}"


def retired_warnings(names: Iterable[str]) -> list[str]:
    """One warning per retired variable set, saying what replaced it."""
    return [
        f"{name} has no effect since ktrdr 0.4: {RETIRED[name]}; remove it"
        for name in sorted(RETIRED.keys() & names)
    ]


@per_class
def _conditional(cls: type[Any]) -> tuple[tuple[Declared, Declared], ...]:
    """``(item, condition item)`` for each setting of ``cls`` with an ``applies_when``."""
    items = {item.name: item for item in declared(cls)}
    return tuple(
        (item, items[item.spec.applies_when[0]])
        for item in items.values()
        if item.spec.applies_when is not None
    )


def without_effect(
    loaded: Mapping[str, Any], sources: Mapping[str, Source], component: Component
) -> list[Problem]:
    """A problem for each setting set whose declared condition does not hold."""
    problems = []
    for settings in loaded.values():
        if settings is None:
            continue
        for item, condition in _conditional(type(settings)):
            source = sources[item.env]
            if source.kind in (SourceKind.DEFAULT, SourceKind.INFERRED):
                continue
            if not reads(component, item.env):
                continue
            assert item.spec.applies_when is not None  # only conditional items are listed
            wanted = item.spec.applies_when[1]
            current = getattr(settings, condition.name)
            if current == wanted:
                continue
            variable = source.variable or item.env
            why = sources[condition.env].describe()
            expected = (
                f"has no effect: {condition.env} is {format_value(current)} ({why}), and "
                f"{item.env} applies only when {condition.env}={format_value(wanted)}; set "
                f"{condition.env}={format_value(wanted)} or remove {variable}"
            )
            problems.append(_set_problem(item, source, variable, expected))
    return problems


def _set_problem(item: Declared, source: Source, variable: str, expected: str) -> Problem:
    """A problem quoting the value as typed (masked for secrets; a file's path for files)."""
    if source.kind is SourceKind.SECRET_FILE:
        return Problem(variable, source.path, f"the file's content {expected}")
    if item.spec.secret or source.typed is None:
        return Problem(variable, format_value("", secret=True), expected)
    return Problem(variable, source.typed, expected)
