"""The project's cattrs converter: turns environment strings into typed setting values.

This is the only module that imports cattrs, and the only place strings become
typed values. Every hook raises ``ValueError`` whose message says what was expected;
the loader attaches the variable name. The global cattrs converter is never used.
"""

from __future__ import annotations

import datetime
import enum
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import cattrs

from ktrdr.config.types import DbEngine, Environment, LogFormat, LogLevel, Secret, WorkerType

TRUE_SPELLINGS = ("true", "1", "yes", "on")
FALSE_SPELLINGS = ("false", "0", "no", "off")
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
#: Longest duration accepted (100 years); beyond it, timedelta arithmetic overflows.
_MAX_DURATION_S = 100 * 365 * 86400.0
_MAX_INT_DIGITS = 18


def parse_bool(raw: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off``, any case."""
    text = raw.strip().lower()
    if text in TRUE_SPELLINGS:
        return True
    if text in FALSE_SPELLINGS:
        return False
    accepted = ", ".join(TRUE_SPELLINGS + FALSE_SPELLINGS)
    message = f"expected a boolean, one of: {accepted}"
    raise ValueError(message)


def parse_int(raw: str) -> int:
    """A whole number written in decimal digits, optionally signed."""
    text = raw.strip()
    digits = text.lstrip("+-")
    if not digits.isascii() or not digits.isdigit() or len(text) - len(digits) > 1:
        message = "expected a whole number"
        raise ValueError(message)
    if len(digits) > _MAX_INT_DIGITS:
        message = f"expected a whole number of at most {_MAX_INT_DIGITS} digits"
        raise ValueError(message)
    return int(text)


def parse_duration(raw: str) -> datetime.timedelta:
    """``90``, ``90s``, ``1.5s``, ``250ms``, ``5m``, ``1h``, ``2d``; a bare number is seconds."""
    text = raw.strip().lower()
    match = _DURATION.fullmatch(text) if text.isascii() else None
    if match is None:
        if text.startswith("-"):
            message = "expected a duration that is not negative, e.g. 90, 90s, 5m or 1h"
        else:
            message = "expected a duration such as 90 (seconds), 90s, 5m or 1h"
        raise ValueError(message)
    seconds = float(match["number"]) * _UNIT_SECONDS[match["unit"]]
    if not math.isfinite(seconds) or seconds > _MAX_DURATION_S:
        message = "expected a duration of at most 100 years"
        raise ValueError(message)
    return datetime.timedelta(seconds=seconds)


def parse_path(raw: str) -> Path:
    """A filesystem path; empty strings and NUL bytes are refused."""
    text = raw.strip()
    if not text or "\x00" in text:
        message = "expected a filesystem path"
        raise ValueError(message)
    return Path(text)


def parse_str(raw: str) -> str:
    """A string with surrounding whitespace removed; NUL bytes are refused."""
    if "\x00" in raw:
        message = "expected text without NUL characters"
        raise ValueError(message)
    return raw.strip()


def parse_secret(raw: str) -> Secret:
    """A secret; surrounding whitespace (a secret file's trailing newline) is removed."""
    text = raw.strip()
    if not text:
        message = "expected a non-empty secret"
        raise ValueError(message)
    return Secret(text)


def _parse_enum(raw: str, cls: type[enum.Enum]) -> enum.Enum:
    text = raw.strip()
    for member in cls:
        if str(member.value).lower() == text.lower():
            return member
    accepted = ", ".join(str(m.value) for m in cls)
    message = f"expected one of: {accepted}"
    raise ValueError(message)


def make_converter() -> cattrs.Converter:
    """Build the converter with the project's string hooks (a new one per call)."""
    converter = cattrs.Converter()
    converter.register_structure_hook(bool, lambda raw, _: parse_bool(raw))
    converter.register_structure_hook(int, lambda raw, _: parse_int(raw))
    converter.register_structure_hook(str, lambda raw, _: parse_str(raw))
    converter.register_structure_hook(datetime.timedelta, lambda raw, _: parse_duration(raw))
    converter.register_structure_hook(Path, lambda raw, _: parse_path(raw))
    converter.register_structure_hook(Secret, lambda raw, _: parse_secret(raw))
    # Each enum explicitly: cattrs' class dispatch would otherwise send str-based
    # enums to its default ``str`` hook before any predicate hook is asked.
    for enum_type in (Environment, WorkerType, DbEngine, LogFormat, LogLevel):
        converter.register_structure_hook(enum_type, _parse_enum)
    # A set variable always means a value: ``X | None`` structures as ``X``.
    converter.register_structure_hook_func(
        _optional_inner_type, lambda raw, t: converter.structure(raw, _optional_inner_type(t))
    )
    return converter


def _optional_inner_type(type_: Any) -> Any:
    """``X`` for ``X | None`` (or ``Optional[X]``), else None."""
    if typing.get_origin(type_) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(type_) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return None


def structure(converter: cattrs.Converter, raw: str, type_: Any) -> Any:
    """Structure one raw string; raises ``ValueError`` with the expectation on failure."""
    try:
        return converter.structure(raw, type_)
    except cattrs.BaseValidationError as exc:
        # Unions wrap the hook's error; surface the innermost message.
        inner = exc.exceptions[0] if exc.exceptions else exc
        raise ValueError(str(inner)) from None
