"""The project's cattrs converter: turns environment strings into typed setting values.

This is the only module that imports cattrs, and the only place strings become
typed values. Every parser raises ``ValueError("expected ...")``; the loader
attaches the variable name and the (masked) value. The global cattrs converter is
never used: :func:`make_converter` builds a private one.

The loader structures through :func:`structure_hook`: each type's hook is resolved
once per process, through one private converter that nothing can register hooks
on. Building a converter per load (about 180 µs) and dispatching each type through
it for the first time (about 20 µs per type) was most of a load's cost.
"""

from __future__ import annotations

import datetime
import enum
import functools
import math
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cattrs

from ktrdr.config.types import (
    ByteSize,
    DbEngine,
    Environment,
    LogFormat,
    LogLevel,
    Secret,
    WorkerType,
)

TRUE_SPELLINGS = ("true", "1", "yes", "on")
FALSE_SPELLINGS = ("false", "0", "no", "off")
#: The enums settings use; each gets an exact hook (see :func:`make_converter`).
SETTING_ENUMS: tuple[type[enum.Enum], ...] = (
    Environment,
    WorkerType,
    DbEngine,
    LogFormat,
    LogLevel,
)

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
#: Longest duration accepted (100 years); beyond it, timedelta arithmetic can overflow.
_MAX_DURATION_S = 100 * 365 * 86400.0
_MAX_INT_DIGITS = 18
_BYTE_SIZE = re.compile(r"(?P<number>\d+)\s*(?P<unit>[kmgt]?)(?:i?b)?")
_BYTE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
#: Largest byte size accepted (1 PiB): beyond any machine, and far from int overflow in C.
_MAX_BYTES = 1024**5

#: The converter type the loader holds (so that only this module imports cattrs).
Converter = cattrs.BaseConverter

EXPECT_BOOL = "a boolean, one of: " + ", ".join(TRUE_SPELLINGS + FALSE_SPELLINGS)
EXPECT_INT = "a whole number"
EXPECT_DURATION = "a duration such as 90 (seconds), 90s, 5m or 1h"
EXPECT_PATH = "a filesystem path"
EXPECT_BYTES = "a size in bytes such as 512M, 2G or 1048576 (K, M, G, T are powers of 1024)"
EXPECT_STR = "text"
EXPECT_SECRET = "a non-empty secret"  # noqa: S105 - a message, not a password


def _refuse(expected: str) -> ValueError:
    return ValueError(f"expected {expected}")


def parse_bool(raw: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off``, any case."""
    text = raw.strip().lower()
    if text in TRUE_SPELLINGS:
        return True
    if text in FALSE_SPELLINGS:
        return False
    raise _refuse(EXPECT_BOOL)


def parse_int(raw: str) -> int:
    """A whole number written in decimal digits, optionally signed."""
    text = raw.strip()
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise _refuse(EXPECT_INT)
    if len(digits) > _MAX_INT_DIGITS:
        raise _refuse(f"{EXPECT_INT} of at most {_MAX_INT_DIGITS} digits")
    return int(text)


def parse_duration(raw: str) -> datetime.timedelta:
    """``90``, ``90s``, ``1.5s``, ``250ms``, ``5m``, ``1h``, ``2d``; a bare number is seconds."""
    text = raw.strip().lower()
    match = _DURATION.fullmatch(text) if text.isascii() else None
    if match is None:
        if text.startswith("-") and _DURATION.fullmatch(text[1:].strip()):
            raise _refuse("a duration that is not negative, e.g. 90s, 5m or 1h")
        raise _refuse(EXPECT_DURATION)
    seconds = float(match["number"]) * _UNIT_SECONDS[match["unit"]]
    if not math.isfinite(seconds) or seconds > _MAX_DURATION_S:
        raise _refuse("a duration of at most 100 years")
    return datetime.timedelta(seconds=seconds)


def parse_byte_size(raw: str) -> ByteSize:
    """``512M``, ``2G``, ``64K`` or plain bytes; any case, ``MB`` and ``MiB`` read as ``M``."""
    text = raw.strip().lower()
    match = _BYTE_SIZE.fullmatch(text) if text.isascii() else None
    if match is None or len(match["number"]) > _MAX_INT_DIGITS:
        raise _refuse(EXPECT_BYTES)
    value = int(match["number"]) * _BYTE_UNITS[match["unit"]]
    if value <= 0 or value > _MAX_BYTES:
        raise _refuse("a size of at least 1 byte and at most 1024T")
    return ByteSize(value)


def parse_path(raw: str) -> Path:
    """A filesystem path; empty strings and NUL bytes are refused."""
    text = raw.strip()
    if not text or "\x00" in text:
        raise _refuse(EXPECT_PATH)
    return Path(text)


def parse_str(raw: str) -> str:
    """A string with surrounding whitespace removed; NUL bytes are refused."""
    if "\x00" in raw:
        raise _refuse("text without NUL characters")
    return raw.strip()


def parse_secret(raw: str) -> Secret:
    """A secret; surrounding whitespace (a secret file's trailing newline) is removed."""
    text = raw.strip()
    if not text or "\x00" in text:
        raise _refuse(EXPECT_SECRET)
    return Secret(text)


def parse_enum(raw: str, cls: type[enum.Enum]) -> enum.Enum:
    """A member of ``cls`` by value, any case."""
    member = _members_by_value(cls).get(raw.strip().lower())
    if member is None:
        raise _refuse(_enum_expectation(cls))
    return member


@functools.cache
def _members_by_value(cls: type[enum.Enum]) -> dict[str, enum.Enum]:
    """``cls``'s members by lower-cased value (the first member wins, as a scan would)."""
    table: dict[str, enum.Enum] = {}
    for member in cls:
        table.setdefault(str(member.value).lower(), member)
    return table


def _enum_expectation(cls: type[enum.Enum]) -> str:
    return "one of: " + ", ".join(str(m.value) for m in cls)


#: The non-enum types settings use: parser and what it expects.
_SCALARS: dict[type[Any], tuple[Callable[[str], Any], str]] = {
    bool: (parse_bool, EXPECT_BOOL),
    int: (parse_int, EXPECT_INT),
    str: (parse_str, EXPECT_STR),
    datetime.timedelta: (parse_duration, EXPECT_DURATION),
    Path: (parse_path, EXPECT_PATH),
    ByteSize: (parse_byte_size, EXPECT_BYTES),
    Secret: (parse_secret, EXPECT_SECRET),
}


def optional_inner_type(type_: Any) -> Any:
    """``X`` for ``X | None`` (or ``Optional[X]``), else None."""
    if typing.get_origin(type_) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(type_) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return None


def expectation(type_: Any) -> str:
    """What a valid string for ``type_`` looks like (for messages and the docs)."""
    inner = optional_inner_type(type_)
    if inner is not None:
        type_ = inner
    if isinstance(type_, type) and issubclass(type_, enum.Enum):
        return _enum_expectation(type_)
    return _SCALARS[type_][1]


def make_converter() -> Converter:
    """Build a private converter with the project's string hooks.

    A ``BaseConverter`` is enough: it structures scalars only, never whole classes
    (the loader builds the settings objects), so ``Converter``'s code generation for
    attrs classes would only cost construction time.
    """
    converter = cattrs.BaseConverter()
    for type_, (parse, _) in _SCALARS.items():
        converter.register_structure_hook(type_, _string_hook(parse))
    # Each enum exactly: class dispatch would otherwise send enums of strings to the
    # ``str`` hook (``str`` precedes ``Enum`` in their MRO), and an exact entry is
    # also the cheapest lookup.
    for enum_type in SETTING_ENUMS:
        converter.register_structure_hook(enum_type, parse_enum)
    # ``X | None`` needs no hook: cattrs structures a value that is not None as ``X``.
    return converter


def _string_hook(parse: Callable[[str], Any]) -> Callable[[str, Any], Any]:
    def hook(raw: str, _type: Any) -> Any:
        return parse(raw)

    return hook


@functools.cache
def _hook_source() -> Converter:
    """The private converter hooks are resolved through (built once, never modified)."""
    return make_converter()


def structure_hook(type_: Any) -> Callable[[str], Any]:
    """The function structuring a raw string as ``type_`` (resolved once per type).

    It behaves as ``structure(make_converter(), raw, type_)``: same hook, same errors.
    The converter caches the hook it resolves, so asking again costs a dispatch only.
    """
    hook = _hook_source().get_structure_hook(type_)

    def structure_as_type(raw: str) -> Any:
        return hook(raw, type_)

    return structure_as_type


def structure(converter: Converter, raw: str, type_: Any) -> Any:
    """Structure one raw string; raises ``ValueError("expected ...")`` on failure.

    A type without a hook raises cattrs' ``StructureHandlerNotFoundError``: that is a
    declaration bug, not bad input, and a test covers every declared type.
    """
    return converter.structure(raw, type_)
