"""What loading settings produces: where each value came from, and what was found.

Records only, shared by the loader that fills them and by everything that reports
on a load (validation, ``config show``, deprecation warnings, docs): a value's
:class:`Source`, a :class:`Problem` worded in the user's terms, a deprecated name
used (:class:`DeprecatedUse`), a value that carries no setting (:class:`IgnoredValue`)
and the :class:`LoadResult` of one settings class. Nothing here reads the
environment, parses a value or prints.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Generic, TypeVar

import attrs

S = TypeVar("S")

#: Longest value shown in a problem line; longer values are cut (and still refused).
_MAX_SHOWN_CHARS = 120

__all__ = ["DeprecatedUse", "IgnoredValue", "LoadResult", "Problem", "Source", "SourceKind"]


class SourceKind(str, enum.Enum):
    """Where a value came from, highest precedence first."""

    ENV = "env"
    DEPRECATED = "deprecated"
    SECRET_FILE = "file"  # noqa: S105 - a source kind, not a password
    DOTENV = "dotenv"
    ENTRYPOINT = "entrypoint"
    INFERRED = "inferred"
    DEFAULT = "default"


@attrs.frozen
class Source:
    """The origin of one loaded value: its kind and the variable that supplied it.

    ``path`` is the file read (dotenv file, or the file a ``_FILE`` variable names);
    ``deprecated`` marks an old name read from the dotenv file; ``detail`` is how a
    derived default reads (``<type>-<hostname>-<port>``), or why a value was inferred.
    ``typed`` is the value as the user wrote it (None for secrets), kept so that
    messages quote it; ``read_as`` is what a value mapping turned it into.
    """

    kind: SourceKind
    variable: str | None = None
    path: str | None = attrs.field(default=None, kw_only=True)
    deprecated: bool = attrs.field(default=False, kw_only=True)
    detail: str | None = attrs.field(default=None, kw_only=True)
    typed: str | None = attrs.field(default=None, kw_only=True, eq=False, repr=False)
    read_as: str | None = attrs.field(default=None, kw_only=True)

    def describe(self) -> str:
        """A short human description, e.g. ``env WORKER_PORT (deprecated)``."""
        if self.kind is SourceKind.DEFAULT:
            return "default" if self.detail is None else f"default ({self.detail})"
        if self.kind is SourceKind.ENTRYPOINT:
            return "set by the entrypoint"
        if self.kind is SourceKind.INFERRED:
            return f"inferred from {self.variable} ({self.detail})"
        if self.kind is SourceKind.SECRET_FILE:
            return f"file {self.path} (from {self.variable})"
        notes = []
        if self.deprecated or self.kind is SourceKind.DEPRECATED:
            notes.append("deprecated")
        if self.read_as is not None:
            notes.append(f"{self.typed} read as {self.read_as}")
        old = f" ({'; '.join(notes)})" if notes else ""
        if self.kind is SourceKind.DOTENV:
            return f"dotenv {self.path}: {self.variable}{old}"
        return f"env {self.variable}{old}"


@attrs.frozen
class Problem:
    """One reason the configuration cannot be used, in the user's terms."""

    variable: str
    #: The offending value as the user typed it (masked for secrets); None: not shown.
    shown_value: str | None
    expected: str
    #: How the value reads once parsed (``30s`` for ``30``), shown after it when different.
    normalised: str | None = attrs.field(default=None, kw_only=True)

    def __str__(self) -> str:
        if self.shown_value is None:
            return f"{self.variable}: {self.expected}"
        shown = repr(self.shown_value[:_MAX_SHOWN_CHARS])
        if len(self.shown_value) > _MAX_SHOWN_CHARS:
            shown += f"... ({len(self.shown_value)} characters)"
        if self.normalised is not None and self.normalised != self.shown_value.strip():
            shown += f" ({self.normalised[:_MAX_SHOWN_CHARS]})"
        return f"{self.variable}={shown}: {self.expected}"


@attrs.frozen
class DeprecatedUse:
    """A deprecated name (or an old value of a current name) found set, and what happened.

    ``old == new`` when the name is current and only the value is old
    (``KTRDR_WORKER_TYPE=backtesting``).
    """

    old: str
    new: str
    #: The variable whose value was used instead (None: the old name's value was used).
    ignored_for: str | None = None
    values_differ: bool = False
    #: The value typed, and what it reads as now, when a value mapping changed it.
    value: str | None = attrs.field(default=None, kw_only=True)
    read_as: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class IgnoredValue:
    """A value that carries no setting (an old label, an old format string), reported."""

    variable: str
    #: As typed (masked for secrets).
    value: str
    #: The setting it was read for.
    setting: str
    reason: str


@attrs.frozen
class LoadResult(Generic[S]):
    """The outcome of loading one settings class: a value or problems, never both."""

    settings: S | None
    #: Field name → where its value came from (every field has one).
    sources: Mapping[str, Source]
    problems: tuple[Problem, ...]
    deprecations: tuple[DeprecatedUse, ...]
    ignored: tuple[IgnoredValue, ...] = ()
