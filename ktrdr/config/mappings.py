"""Value mappings: what an old value means in the new setting.

A deprecated name can carry more than a name. ``WORKER_TYPE=backtesting`` says
``backtest`` in the new vocabulary, ``KTRDR_LOG_JSON_OUTPUT=true`` is a boolean where
the new setting is a choice (``KTRDR_LOG_FORMAT=json``), a backend address ending in
``/api/v1`` names the API root where the new setting wants the server, and
``ENVIRONMENT=canary`` was a free-form label that never meant strictness. A mapping is
declared next to the field, like the old names themselves (``setting(old_values=...)``
or ``old(NAME, mapping)`` in ``deprecated=``), so the loader, the warnings, the docs
and ``ktrdr config migrate`` all read the same declaration.

A mapping works on the raw string, before the converter (which stays the one place
where strings become typed values): it returns the string the new setting reads, an
:class:`Ignored` when the value carries no setting at all, or raises
``ValueError("expected ...")`` for a value no mapping can carry.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from ktrdr.config.converter import EXPECT_BOOL, parse_bool

__all__ = ["BoolChoice", "FormatString", "Ignored", "Label", "Spellings", "TrimSuffix", "ValueMap"]


@attrs.frozen
class Ignored:
    """The value carries no setting; ``reason`` says why, in the operator's terms."""

    reason: str


class ValueMap(Protocol):
    """Turns an old raw value into the new setting's raw value (or :class:`Ignored`)."""

    @property
    def described(self) -> str:
        """How the mapping reads in the docs, e.g. ``backtesting → backtest``."""
        ...

    def __call__(self, raw: str) -> str | Ignored: ...


def _code(text: str) -> str:
    return f"`{text}`"


@attrs.frozen
class Spellings:
    """Old spellings (any case) become the new one; any other value passes unchanged."""

    table: tuple[tuple[str, str], ...]

    @property
    def described(self) -> str:
        return ", ".join(f"{_code(old)} → {_code(new)}" for old, new in self.table)

    def __call__(self, raw: str) -> str | Ignored:
        text = raw.strip().lower()
        for old, new in self.table:
            if text == old:
                return new
        return raw


@attrs.frozen
class TrimSuffix:
    """A URL ending in ``suffix`` (an API root such as ``/api/v1``) loses it."""

    suffix: str

    @property
    def described(self) -> str:
        return f"a trailing {_code(self.suffix)} is dropped"

    def __call__(self, raw: str) -> str | Ignored:
        text = raw.strip().rstrip("/")
        if text.endswith(self.suffix):
            return text[: -len(self.suffix)].rstrip("/")
        return raw


@attrs.frozen
class BoolChoice:
    """An old boolean switch that now selects one of two choices."""

    true: str
    false: str

    @property
    def described(self) -> str:
        return f"{_code('true')} → {_code(self.true)}, {_code('false')} → {_code(self.false)}"

    def __call__(self, raw: str) -> str | Ignored:
        try:
            return self.true if parse_bool(raw) else self.false
        except ValueError:
            message = f"expected {EXPECT_BOOL} (it selects {self.true} or {self.false})"
            raise ValueError(message) from None


@attrs.frozen
class Label:
    """An old free-form label: the new setting's own values pass, listed ones map.

    Any other value is ignored (and reported), never refused: the old name never
    stopped a deployment, so the new one must not either.
    """

    #: The values the new setting accepts, which pass unchanged.
    accepted: tuple[str, ...]
    table: tuple[tuple[str, str], ...]
    #: What to do instead, appended to the reason a value is ignored.
    hint: str

    @property
    def described(self) -> str:
        mapped = ", ".join(f"{_code(old)} → {_code(new)}" for old, new in self.table)
        return f"{mapped}; any other value is ignored (reported): it was a label"

    def __call__(self, raw: str) -> str | Ignored:
        text = raw.strip().lower()
        if text in self.accepted:
            return raw
        for old, new in self.table:
            if text == old:
                return new
        accepted = ", ".join(self.accepted)
        return Ignored(f"not one of {accepted} (before ktrdr 0.4 it was a free label); {self.hint}")


@attrs.frozen
class FormatString:
    """A ``logging`` format string (``%(message)s``), which the variable held before 0.4."""

    @property
    def described(self) -> str:
        return "a logging format string (`%(message)s`, its meaning before ktrdr 0.4) is ignored"

    def __call__(self, raw: str) -> str | Ignored:
        if "%(" in raw or "{" in raw:
            return Ignored(
                "a logging format string, what this variable meant before ktrdr 0.4; "
                "it now chooses between text and json"
            )
        return raw
