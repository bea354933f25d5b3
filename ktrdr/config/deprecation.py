"""Deprecated variable names: the old→new table and the warnings a user sees.

The table is generated from the field declarations (``setting(deprecated=...)``).
Warnings go to a text stream (stderr in entrypoints) because Python's default
filters hide ``DeprecationWarning`` under most runners; each old name is reported
at most once per reporter, and an entrypoint builds exactly one reporter.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import TextIO

from ktrdr.config.fields import declared
from ktrdr.config.loader import DeprecatedUse
from ktrdr.config.settings import ALL_SETTINGS

#: Deprecated names stop working in this release.
REMOVAL_VERSION = "1.0.0"
REMOVAL_DATE = datetime.date(2027, 6, 30)


def deprecated_names() -> dict[str, str]:
    """Every deprecated name mapped to the variable that replaces it."""
    return {
        old: item.env
        for cls in ALL_SETTINGS
        for item in declared(cls)
        for old in item.spec.deprecated
    }


def message_for(use: DeprecatedUse) -> str:
    """The one-line warning for one deprecated name found set."""
    removal = f"it stops working in ktrdr {REMOVAL_VERSION} ({REMOVAL_DATE.isoformat()})"
    if use.ignored_for is None:
        return f"{use.old} is deprecated; rename it to {use.new} ({removal})."
    if use.values_differ:
        return (
            f"{use.old} is deprecated and was IGNORED: {use.ignored_for} is also set "
            f"with a DIFFERENT value, and {use.ignored_for} wins. Remove {use.old} ({removal})."
        )
    return (
        f"{use.old} is deprecated and was ignored because {use.ignored_for} is also set "
        f"(same value); remove {use.old} ({removal})."
    )


class DeprecationReporter:
    """Writes each deprecated-name warning once to ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._reported: set[str] = set()

    def report(self, uses: Iterable[DeprecatedUse]) -> list[str]:
        """Write warnings for the uses not reported yet; return the lines written."""
        lines = []
        for use in uses:
            if use.old in self._reported:
                continue
            self._reported.add(use.old)
            line = f"ktrdr: warning: {message_for(use)}"
            self._stream.write(line + "\n")
            lines.append(line)
        self._stream.flush()
        return lines
