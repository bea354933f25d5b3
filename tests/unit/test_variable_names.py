"""Every ``KTRDR_*`` name spelt in ktrdr's source is one the declarations know.

Code that needs a variable's name asks ``ktrdr.config.env_name``; comments, docstrings
and the config package's own prose may still spell names, and this scan keeps them
true: renaming a setting without updating them fails here. The known set is the
configuration's own (current and deprecated names, ``<NAME>_FILE`` forms, the declared
non-settings variables). A name followed by ``*``, or ending in ``_`` (``KTRDR_``, a class
prefix, ``KTRDR_ACKNOWLEDGE_...``) is a prefix and must start some known variable.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import pytest

import ktrdr
from ktrdr.config.unknown import known_variables

PACKAGE = Path(ktrdr.__file__).parent
#: The declarations themselves: every name in them is known by definition.
DECLARATIONS = PACKAGE / "config" / "settings.py"
#: Deliberately unknown names, as examples of typos: (file, name) → why.
EXAMPLES_OF_TYPOS = {
    ("ktrdr/config/unknown.py", "KTRDR_WORKER_PROT"): "a near-miss spelling in a docstring",
    ("ktrdr/config/unknown.py", "KTRDR_PORT"): "a field name without its concern",
}

_LITERAL = re.compile(r"(?<![A-Za-z0-9_])KTRDR_[A-Za-z0-9_]*(\*)?")


def unknown_literals(text: str, known: Collection[str]) -> list[tuple[int, str]]:
    """``(line, name)`` of each ``KTRDR_*`` literal in ``text`` that ``known`` lacks."""
    found = []
    for match in _LITERAL.finditer(text):
        name = match.group(0).rstrip("*")
        if match.group(1) or name.endswith("_"):
            ok = any(variable.startswith(name) for variable in known)
        else:
            ok = name in known
        if not ok:
            found.append((text.count("\n", 0, match.start()) + 1, match.group(0)))
    return found


def _scan() -> dict[tuple[str, str], list[int]]:
    """(file, name) → lines, for every unknown literal in ktrdr's ``.py`` files."""
    known = known_variables()
    hits: dict[tuple[str, str], list[int]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == DECLARATIONS:
            continue
        shown = path.relative_to(PACKAGE.parent).as_posix()
        for line, name in unknown_literals(path.read_text(encoding="utf-8"), known):
            hits.setdefault((shown, name), []).append(line)
    return hits


def test_every_ktrdr_name_in_the_source_is_a_known_variable() -> None:
    """No ``KTRDR_*`` literal outside settings.py names a variable nobody declares."""
    unexpected = {key: lines for key, lines in _scan().items() if key not in EXAMPLES_OF_TYPOS}
    assert unexpected == {}


def test_the_typo_examples_are_still_there() -> None:
    """Each allowed typo example still occurs (a stale exception would hide a real one)."""
    assert set(EXAMPLES_OF_TYPOS) <= set(_scan())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see KTRDR_WORKER_PORT", []),
        ("old WORKER_PORT or KTRDR_WORKER_PORT_FILE", []),
        ('raise "KTRDR_WORKER_PORTT is wrong"', [(1, "KTRDR_WORKER_PORTT")]),
        ("# line one\n# KTRDR_API_PROT", [(2, "KTRDR_API_PROT")]),
        ("every KTRDR_CHECKPOINT_* setting", []),
        ("every KTRDR_CHECKPOINTS_* setting", [(1, "KTRDR_CHECKPOINTS_*")]),
        ('PREFIX = "KTRDR_"', []),
        ("KTRDR_NOPE_", [(1, "KTRDR_NOPE_")]),
        ("KTRDR_API_Port", [(1, "KTRDR_API_Port")]),
        ("MY_KTRDR_THING", []),
    ],
)
def test_the_scanner_flags_unknown_names(text: str, expected: list[tuple[int, str]]) -> None:
    """Known names, their prefixes and others' names pass; misspellings are reported."""
    assert unknown_literals(text, known_variables()) == expected
