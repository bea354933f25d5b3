"""Unknown ``KTRDR_*`` variables: which names ktrdr reads, and "did you mean ...?".

A ``KTRDR_*`` variable that no settings class declares is almost always a typo, and
a typo silently leaves the default in place. Validation reports each one with the
closest declared name (a warning in development, an error in test and production).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable

from ktrdr.config.fields import FILE_SUFFIX, declared
from ktrdr.config.settings import ALL_SETTINGS

PREFIX = "KTRDR_"
#: ``KTRDR_*`` variables that are not settings but are known to exist.
NON_SETTINGS_VARIABLES = frozenset({"KTRDR_TEST_POSTGRES_URL"})
#: How similar (difflib ratio, on the part after ``KTRDR_``) a name must be to suggest it.
SUGGESTION_CUTOFF = 0.7


@functools.cache
def known_variables() -> frozenset[str]:
    """Every variable ktrdr reads: new names, deprecated names and ``_FILE`` forms."""
    names: set[str] = set(NON_SETTINGS_VARIABLES)
    for cls in ALL_SETTINGS:
        for item in declared(cls):
            names.update(item.names)
            names.add(item.file_var)
    return frozenset(names)


@functools.cache
def _replacements() -> dict[str, str]:
    """Every declared name (new or deprecated) without ``KTRDR_`` → the current variable."""
    table: dict[str, str] = {}
    for cls in ALL_SETTINGS:
        for item in declared(cls):
            for name in item.names:
                table.setdefault(name.removeprefix(PREFIX), item.env)
    return table


def unknown_variables(names: Iterable[str]) -> list[str]:
    """The ``KTRDR_*`` names among ``names`` that ktrdr does not read, sorted."""
    known = known_variables()
    return sorted(n for n in names if n.startswith(PREFIX) and n not in known)


def suggest(name: str) -> list[str]:
    """The declared variables ``name`` most likely meant (empty when nothing is close).

    A near-miss spelling (``KTRDR_WORKER_PROT``) gives its closest name; a field name
    without its concern (``KTRDR_PORT``) gives every variable ending that way.
    """
    suffix = ""
    if name.endswith(FILE_SUFFIX) and name[: -len(FILE_SUFFIX)] not in known_variables():
        name, suffix = name[: -len(FILE_SUFFIX)], FILE_SUFFIX
    stem = name.removeprefix(PREFIX)
    table = _replacements()
    by_field = sorted({env for old, env in table.items() if old.endswith("_" + stem)})
    if by_field:
        return [env + suffix for env in by_field]
    close = difflib.get_close_matches(stem, table, n=1, cutoff=SUGGESTION_CUTOFF)
    return [table[close[0]] + suffix] if close else []


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
