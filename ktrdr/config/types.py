"""Value types of settings: enums with the accepted spellings, and a secret wrapper.

These types are what settings fields hold; turning strings into them is the
converter's job (``ktrdr.config.converter``), not theirs. ``WorkerType`` is defined
in ``ktrdr.vocabulary`` (the wire's ``OperationType`` is the same enum) and
re-exported here with the other value types.
"""

from __future__ import annotations

import enum

from ktrdr.vocabulary import WorkerType


class Environment(str, enum.Enum):
    """``KTRDR_ENV``: how strict validation is (see ``ktrdr.config.validation``)."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


class DbEngine(str, enum.Enum):
    """Which store the backend uses."""

    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class LogFormat(str, enum.Enum):
    """How log lines are rendered."""

    TEXT = "text"
    JSON = "json"


class LogLevel(str, enum.Enum):
    """Standard logging levels, by name."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class ByteSize(int):
    """A number of bytes, shown the way an operator writes it (``512M``, ``2G``, ``1500``).

    Binary units (K = 1024). Only the display is special: arithmetic gives plain ints.
    """

    _UNITS = (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024))

    def __str__(self) -> str:
        value = int(self)
        for suffix, factor in self._UNITS:
            if value >= factor and value % factor == 0:
                return f"{value // factor}{suffix}"
        return str(value)

    def __repr__(self) -> str:
        return f"ByteSize({str(self)!r})"


class Secret:
    """A string that never shows itself in a repr, str, format, log line or report.

    Call :meth:`reveal` at the one place the real value is needed (an HTTP header,
    a database URL). Deliberately not an attrs class: ``attrs.asdict`` and cattrs
    would otherwise recurse into it and copy the value out.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the real value. Only for the code that must send it somewhere."""
        return self._value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return self._value == other._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __str__(self) -> str:
        return "********"

    def __repr__(self) -> str:
        return "Secret('********')"


__all__ = ["DbEngine", "Environment", "LogFormat", "LogLevel", "Secret", "WorkerType"]
