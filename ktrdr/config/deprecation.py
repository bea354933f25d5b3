"""Deprecated variable names: the old→new table and the warnings a user sees.

The table is generated from the field declarations (``setting(deprecated=...)``).
Warnings are written to a text stream (stderr in entrypoints) rather than only
``warnings.warn``, because Python's default filters hide ``DeprecationWarning`` under
most runners. A :class:`DeprecationReporter` writes each old name at most once; an
entrypoint validates its configuration once, at startup, so each warning appears
once per process. When a value mapping changed the value, the warning quotes both:
``WORKER_TYPE=backtesting is deprecated: use KTRDR_WORKER_TYPE=backtest``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import TextIO

from ktrdr.config.fields import declared
from ktrdr.config.results import DeprecatedUse
from ktrdr.config.settings import ALL_SETTINGS

#: Deprecated names stop working in this release (and not before this date).
REMOVAL_VERSION = "1.0.0"
REMOVAL_DATE = datetime.date(2027, 6, 30)
#: Every line a reporter writes starts with this.
WARNING_PREFIX = "ktrdr: warning: "


def deprecated_names() -> dict[str, str]:
    """Every deprecated name mapped to the variable that replaces it."""
    return {
        old: item.env
        for cls in ALL_SETTINGS
        for item in declared(cls)
        for old in item.spec.deprecated
    }


def value_mappings() -> list[tuple[str, str, str]]:
    """``(names, mapping, new variable)`` for every declared value mapping, for the docs."""
    rows = []
    for cls in ALL_SETTINGS:
        for item in declared(cls):
            by_mapping: dict[str, list[str]] = {}
            for name in item.names:
                mapping = item.maps.get(name)
                if mapping is not None:
                    by_mapping.setdefault(mapping.described, []).append(name)
            for described, names in by_mapping.items():
                rows.append((", ".join(f"`{n}`" for n in names), described, item.env))
    return rows


def removal_notice(old: str) -> str:
    """When ``old`` stops working."""
    return f"{old} stops working in ktrdr {REMOVAL_VERSION} (not before {REMOVAL_DATE})"


def message_for(use: DeprecatedUse) -> str:
    """The one-line warning for one deprecated name (or old value) found set."""
    removal = removal_notice(use.old)
    if use.read_as is not None and use.ignored_for is None:
        if use.old == use.new:
            removal = (
                f"The old value stops working in ktrdr {REMOVAL_VERSION} "
                f"(not before {REMOVAL_DATE})"
            )
        return f"{use.old}={use.value} is deprecated: use {use.new}={use.read_as}. {removal}."
    if use.ignored_for is None:
        return f"{use.old} is deprecated; rename it to {use.new}. {removal}."
    if use.values_differ:
        return (
            f"CONFLICT: {use.old} is deprecated and was IGNORED: {use.ignored_for} is also "
            f"set, to a DIFFERENT value, and wins. Remove {use.old}. {removal}."
        )
    return (
        f"{use.old} is deprecated and was ignored: {use.ignored_for} is also set (same "
        f"value) and wins. Remove {use.old}. {removal}."
    )


class DeprecationReporter:
    """Writes each deprecated-name warning at most once to ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._reported: set[tuple[str, str | None]] = set()

    def report(self, uses: Iterable[DeprecatedUse]) -> list[str]:
        """Write warnings for the uses not reported yet; return the lines written."""
        lines = []
        for use in uses:
            key = (use.old, use.value)
            if key in self._reported:
                continue
            self._reported.add(key)
            line = WARNING_PREFIX + message_for(use)
            self._stream.write(line + "\n")
            lines.append(line)
        self._stream.flush()
        return lines
