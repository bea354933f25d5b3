"""Field checks shared by the settings declarations.

Each check raises ``ValueError`` whose message says what is expected; the validation
report puts that message next to the variable name and the offending value.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit


def int_range(low: int, high: int | None = None) -> Callable[[Any], None]:
    """A number between ``low`` and ``high`` (inclusive; no upper bound when None)."""

    def check(value: Any) -> None:
        if value < low or (high is not None and value > high):
            expected = f"between {low} and {high}" if high is not None else f"at least {low}"
            message = f"expected a number {expected}"
            raise ValueError(message)

    return check


PORT = int_range(1, 65535)


def duration_range(
    low: datetime.timedelta, high: datetime.timedelta | None = None
) -> Callable[[Any], None]:
    """A duration between ``low`` and ``high`` (inclusive)."""

    def check(value: Any) -> None:
        if value < low or (high is not None and value > high):
            lo = f"{low.total_seconds():g}s"
            expected = f"between {lo} and {high.total_seconds():g}s" if high else f"at least {lo}"
            message = f"expected a duration {expected}"
            raise ValueError(message)

    return check


POSITIVE_DURATION = duration_range(datetime.timedelta(milliseconds=1))
NON_NEGATIVE_DURATION = duration_range(datetime.timedelta(0))


def http_url(value: Any) -> None:
    """An absolute http(s) URL with a host."""
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        message = "expected an http:// or https:// URL with a host, e.g. http://backend:8000"
        raise ValueError(message)
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        message = "expected a URL whose port is a number between 1 and 65535"
        raise ValueError(message) from None


def non_empty(value: Any) -> None:
    """A string with at least one non-space character."""
    if not str(value).strip():
        message = "expected a non-empty value"
        raise ValueError(message)
