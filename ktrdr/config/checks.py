"""Checks of structured setting values, shared by the settings declarations.

A check is declared once, with its field (``setting(check=...)``); it then runs as
the field's attrs validator, so a settings object built directly in a test is
checked too, and the loader runs the same check per value to report every problem
at once under the variable's name. Each check raises ``ValueError`` whose message
is ``expected ...``, and carries that expectation as ``expected`` for the docs.
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs

from ktrdr.config.types import Secret
from ktrdr.vocabulary import ID_RULE, id_problem


class Check(Protocol):
    """A callable that raises ``ValueError("expected ...")`` for a value it refuses."""

    @property
    def expected(self) -> str:
        """What a valid value looks like, e.g. ``a number between 1 and 65535``."""
        ...

    def __call__(self, value: Any) -> None: ...


_WHITESPACE = re.compile(r"\s")
#: Visible ASCII, ``!`` to ``~``: what a bearer token may hold.
_VISIBLE_ASCII = re.compile(r"[!-~]+")


def _refuse(expected: str) -> ValueError:
    return ValueError(f"expected {expected}")


@attrs.frozen
class IntRange:
    """A whole number between ``low`` and ``high`` (inclusive; no upper bound when None)."""

    low: int
    high: int | None = None

    @property
    def expected(self) -> str:
        if self.high is None:
            return f"a whole number of at least {self.low}"
        return f"a whole number between {self.low} and {self.high}"

    def __call__(self, value: Any) -> None:
        if value < self.low or (self.high is not None and value > self.high):
            raise _refuse(self.expected)


def _seconds_text(value: datetime.timedelta) -> str:
    return f"{value.total_seconds():g}s"


@attrs.frozen
class DurationRange:
    """A duration between ``low`` and ``high`` (inclusive; no upper bound when None)."""

    low: datetime.timedelta
    high: datetime.timedelta | None = None

    @property
    def expected(self) -> str:
        low = _seconds_text(self.low)
        if self.high is None:
            return f"a duration of at least {low}"
        return f"a duration between {low} and {_seconds_text(self.high)}"

    def __call__(self, value: Any) -> None:
        if value < self.low or (self.high is not None and value > self.high):
            raise _refuse(self.expected)


@attrs.frozen
class HttpUrl:
    """An absolute ``http://`` or ``https://`` URL with a host and a valid port."""

    @property
    def expected(self) -> str:
        return "an http:// or https:// URL with a host, e.g. http://backend:8000"

    def __call__(self, value: Any) -> None:
        if not _is_http_url(str(value)):
            raise _refuse(self.expected)


@functools.lru_cache(maxsize=64)
def _is_http_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL with a host and a valid port.

    Cached: parsing costs about 5 µs, and a URL is checked at least twice per load
    (its value, then the settings object it goes into).
    """
    try:
        parts = urlsplit(text)
        # ``.port`` raises ValueError for a port that is not a number in range.
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        valid = valid and (parts.port is None or parts.port > 0)
    except ValueError:
        valid = False
    return valid and not _WHITESPACE.search(text)


@attrs.frozen
class HostName:
    """A bind address or host name: not empty, no whitespace."""

    @property
    def expected(self) -> str:
        return "a host name or IP address, e.g. 0.0.0.0 or db.internal"

    def __call__(self, value: Any) -> None:
        text = str(value)
        if not text or _WHITESPACE.search(text):
            raise _refuse(self.expected)


@attrs.frozen
class NonEmpty:
    """A string (or secret) with at least one non-space character."""

    @property
    def expected(self) -> str:
        return "a non-empty value"

    def __call__(self, value: Any) -> None:
        text = value.reveal() if isinstance(value, Secret) else str(value)
        if not text.strip():
            raise _refuse(self.expected)


@attrs.frozen
class Token:
    """A bearer token: visible ASCII only (``!`` to ``~``), so it fits an HTTP header as is.

    A token with other characters passes a loose check and then fails on the wire
    (httpx refuses non-ASCII header values; a space splits the header), so a worker
    would never register. Refused at startup instead, naming the variable.
    """

    @property
    def expected(self) -> str:
        return (
            "a token of visible ASCII characters (no spaces, no accents), "
            "e.g. the output of `openssl rand -hex 24`"
        )

    def __call__(self, value: Any) -> None:
        text = value.reveal() if isinstance(value, Secret) else str(value)
        if not _VISIBLE_ASCII.fullmatch(text):
            raise _refuse(self.expected)


@attrs.frozen
class Unset:
    """``inner``'s check, or no value at all (an optional setting left unset)."""

    inner: Check

    @property
    def expected(self) -> str:
        return self.inner.expected

    def __call__(self, value: Any) -> None:
        if value is not None:
            self.inner(value)


@attrs.frozen
class Identifier:
    """A worker or operation id (``ktrdr.vocabulary``'s id rule, the one the wire checks)."""

    @property
    def expected(self) -> str:
        return ID_RULE

    def __call__(self, value: Any) -> None:
        problem = id_problem(str(value))
        if problem is not None:
            raise ValueError(problem)


PORT = IntRange(1, 65535)
POSITIVE_DURATION = DurationRange(datetime.timedelta(milliseconds=1))
NON_NEGATIVE_DURATION = DurationRange(datetime.timedelta(0))
HTTP_URL = HttpUrl()
HOST = HostName()
NON_EMPTY = NonEmpty()
TOKEN = Token()
OPTIONAL_TOKEN = Unset(TOKEN)
IDENTIFIER = Identifier()
