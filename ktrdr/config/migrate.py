"""What ``ktrdr config migrate`` changes in one block of variables, decided from the declarations.

A block is the variables of one env file or of one compose service's
``environment``, in order. :func:`plan` turns it into edits that a file editor
(``ktrdr.config.migrate_files``) applies to the text, so the rules live here once
and stay the loader's rules:

- the variable that wins (new name, then old names by generation) is renamed to
  the current name, its value mapped as the loader reads it
  (``WORKER_TYPE=backtesting`` → ``KTRDR_WORKER_TYPE=backtest``);
- the names it beats are removed (they were ignored anyway);
- a value that carries no setting is removed under the current name (an old
  ``KTRDR_LOG_FORMAT`` format string) and left alone under an old name, which
  other tools may still read (``ENVIRONMENT=canary``, a tracing label);
- an inferred setting is made explicit (``KTRDR_DB_ENGINE=postgresql`` before the
  PostgreSQL host), and so is a worker port that only the public URL said;
- retired variables are removed, and so is a setting's variable set twice, but for
  the last time (the one that counts); other components' variables, settings this
  component does not read and anything unknown are left alone, and noted.

Nothing here reads files or the environment, and secrets' values never appear in
the changes' descriptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import attrs

from ktrdr.config.bundles import Component, uses_field
from ktrdr.config.effects import declaration_of
from ktrdr.config.fields import Declared, declared, format_value
from ktrdr.config.mappings import Ignored
from ktrdr.config.settings import DEFAULT_WORKER_PORT, WorkerSettings
from ktrdr.config.unknown import RETIRED, other_component, suggest, unknown_variables

__all__ = ["Action", "Entry", "Plan", "plan"]

_PORT = next(i for i in declared(WorkerSettings) if i.name == "port")
_PUBLIC_URL = next(i for i in declared(WorkerSettings) if i.name == "public_url")


@attrs.frozen
class Entry:
    """One variable of a block, as written."""

    name: str
    #: The value as the environment would hold it; None when it cannot be read from the
    #: file (a compose pass-through ``NAME`` with no value, an alias, a block scalar).
    value: str | None


@attrs.frozen
class Action:
    """One edit: rename (and maybe revalue) an entry, remove it, or insert before it."""

    kind: str  # "rename", "remove" or "insert"
    #: Index of the entry the edit is about (for "insert": the entry it goes before).
    entry: int
    name: str | None = None
    #: The new value; None keeps the written value (rename) untouched.
    value: str | None = None
    #: The change as the report prints it (secret values never shown).
    text: str = ""


@attrs.frozen
class Plan:
    """The edits for one block and what was deliberately left alone."""

    actions: tuple[Action, ...]
    notes: tuple[str, ...]


def plan(
    entries: Sequence[Entry], component: Component, *, inherited: Mapping[str, str] = {}
) -> Plan:
    """The edits that bring ``entries`` to the current names, for ``component``.

    ``inherited`` holds variables the block receives from elsewhere (a compose merge
    key): they count as set when deciding what to infer.
    """
    actions: list[Action] = []
    notes: list[str] = []
    last: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if entry.name in last and _migrated(entry.name):
            text = f"removed {entry.name}: set again further down, and the last one counts"
            actions.append(Action("remove", last[entry.name], text=text))
        last[entry.name] = index
    groups: dict[str, list[int]] = {}
    for name, index in last.items():
        item = declaration_of(name)
        if item is not None and name in item.names:
            groups.setdefault(item.env, []).append(index)
        elif name in RETIRED:
            actions.append(Action("remove", index, text=f"removed {name}: {RETIRED[name]}"))
        elif (other := other_component(name)) is not None:
            notes.append(f"{name} is read by {other}; left alone")
        elif unknown_variables([name]):
            hint = suggest(name)
            guess = f" (did you mean {' or '.join(hint)}?)" if hint else ""
            notes.append(f"{name} is not a ktrdr setting{guess}; left alone")
    winners: dict[str, int] = {}
    for env, indexes in groups.items():
        item = declaration_of(env)
        assert item is not None  # groups are keyed by declared variables
        winner = _migrate_setting(item, indexes, entries, component, actions, notes)
        if winner is not None:
            winners[env] = winner
    present = set(last) | set(inherited)
    _infer(entries, component, winners, present, actions)
    return Plan(tuple(actions), tuple(notes))


def _migrated(name: str) -> bool:
    """Whether ``migrate`` rewrites or removes ``name`` (a setting's name, or retired)."""
    item = declaration_of(name)
    return (item is not None and name in item.names) or name in RETIRED


def _migrate_setting(
    item: Declared,
    indexes: list[int],
    entries: Sequence[Entry],
    component: Component,
    actions: list[Action],
    notes: list[str],
) -> int | None:
    """Plan one setting's entries; return the index of the entry that now sets it."""
    if not uses_field(component, item.owner, item.name):
        reader = "workers" if uses_field("worker", item.owner, item.name) else "the backend"
        names = ", ".join(entries[i].name for i in indexes)
        notes.append(f"{names}: read by {reader}, not by this {component}; left alone")
        return None
    ordered = sorted(indexes, key=lambda i: item.names.index(entries[i].name))
    reads: list[str | Ignored | None] = []
    for index in ordered:
        read = _read(item, entries[index], notes)
        if isinstance(read, ValueError):
            return None  # a value no mapping carries: left as written, for `config check`
        reads.append(read)
    winner: tuple[int, str | None] | None = None
    for index, read in zip(ordered, reads, strict=True):
        entry = entries[index]
        if isinstance(read, Ignored):
            if entry.name == item.env:
                text = f"removed {_shown(item, entry)}: ignored, {read.reason}"
                actions.append(Action("remove", index, text=text))
            else:
                notes.append(f"{_shown(item, entry)} is ignored: {read.reason}; left alone")
            continue
        if winner is None:
            winner = (index, read)
            continue
        beaten_by = entries[winner[0]].name
        text = f"removed {entry.name}: {beaten_by} is also set and wins"
        actions.append(Action("remove", index, text=text))
    if winner is None:
        return None
    index, value = winner
    entry = entries[index]
    if entry.name != item.env or value is not None:
        actions.append(Action("rename", index, item.env, value, _renamed(item, entry, value)))
    return index


def _read(item: Declared, entry: Entry, notes: list[str]) -> str | Ignored | ValueError | None:
    """The new value when a mapping changes it, an ``Ignored``, or None (keep as written).

    A value the mapping refuses comes back as its ``ValueError`` (and a note).
    """
    mapping = item.maps.get(entry.name)
    if mapping is None or entry.value is None:
        return None
    if "$" in entry.value:
        notes.append(
            f"{entry.name} is interpolated ({entry.value}); check that it reads as "
            f"{item.env} expects ({mapping.described})"
        )
        return None
    try:
        mapped = mapping(entry.value)
    except ValueError as exc:
        notes.append(f"{_shown(item, entry)} cannot be migrated: {exc}; left alone")
        return exc
    if isinstance(mapped, Ignored):
        return mapped
    return mapped if mapped.strip() != entry.value.strip() else None


def _shown(item: Declared, entry: Entry) -> str:
    """``NAME='value'`` (masked for secrets), for the report."""
    if entry.value is None:
        return entry.name
    return f"{entry.name}={format_value(entry.value, secret=item.spec.secret)!r}"


def _renamed(item: Declared, entry: Entry, value: str | None) -> str:
    """``OLD=old → NEW=new``, or ``OLD → NEW`` when the value is kept."""
    if value is None or item.spec.secret:
        return f"{entry.name} → {item.env}"
    return f"{entry.name}={entry.value} → {item.env}={value}"


def _infer(
    entries: Sequence[Entry],
    component: Component,
    winners: Mapping[str, int],
    present: set[str],
    actions: list[Action],
) -> None:
    """Make inferred settings explicit, before the entry they were inferred from."""
    for env, index in winners.items():
        trigger = declaration_of(env)
        assert trigger is not None
        for item in declared(trigger.owner):
            inference = item.spec.inferred
            if inference is None or inference.when != trigger.name:
                continue
            if present.intersection(item.names) or not uses_field(component, item.owner, item.name):
                continue
            value = format_value(inference.value)
            text = f"added {item.env}={value}: inferred, {inference.reason} ({entries[index].name})"
            actions.append(Action("insert", index, item.env, value, text))
    url_index = winners.get(_PUBLIC_URL.env)
    if url_index is None or present.intersection(_PORT.names) or component == "backend":
        return
    url = entries[url_index].value
    if url is None or "$" in url or entries[url_index].name == _PUBLIC_URL.env:
        return
    try:
        port = urlsplit(url.strip()).port
    except ValueError:
        return
    if port is not None and port != DEFAULT_WORKER_PORT:
        text = (
            f"added {_PORT.env}={port}: {entries[url_index].name} names port {port} and "
            "the port was not set (before ktrdr 0.4 it came from `uvicorn --port`; check it)"
        )
        actions.append(Action("insert", url_index, _PORT.env, str(port), text))
