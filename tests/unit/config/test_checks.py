"""Field checks: what they accept, what they refuse, and the expectation they state."""

from __future__ import annotations

import datetime

import pytest
from config_helpers import refusal
from hypothesis import given
from hypothesis import strategies as st

from ktrdr.config import Secret
from ktrdr.config.checks import (
    HOST,
    HTTP_URL,
    IDENTIFIER,
    NON_EMPTY,
    PORT,
    TOKEN,
    DurationRange,
    IntRange,
)
from ktrdr.vocabulary import ID_RULE


def test_int_range_bounds_are_inclusive() -> None:
    """1 and 65535 are ports; 0 and 65536 are not."""
    PORT(1)
    PORT(65535)
    for bad in (0, 65536, -1):
        assert refusal(PORT, bad) == "expected a whole number between 1 and 65535"
    assert refusal(IntRange(3), 2) == "expected a whole number of at least 3"


def test_duration_range() -> None:
    """Durations are compared with their bounds, and the bounds are stated in seconds."""
    check = DurationRange(datetime.timedelta(milliseconds=50), datetime.timedelta(hours=1))
    check(datetime.timedelta(seconds=1))
    assert check.expected == "a duration between 0.05s and 3600s"
    assert (
        refusal(check, datetime.timedelta(hours=2)) == "expected a duration between 0.05s and 3600s"
    )


@pytest.mark.parametrize(
    "url", ["http://backend:8000", "https://w.example", "http://10.0.0.1:1/x", "http://[::1]:80"]
)
def test_http_urls_accepted(url: str) -> None:
    """Absolute http(s) URLs with a host, optional port and path pass."""
    HTTP_URL(url)


@pytest.mark.parametrize(
    "url",
    [
        "backend:8000",
        "ftp://x",
        "http://",
        "http://host:0",
        "http://host:70000",
        "http://host:abc",
        "http://[::1",
        "http://a b",
        "http://x\u2100y:80",
    ],
)
def test_http_urls_refused(url: str) -> None:
    """Missing scheme or host, bad ports, broken IPv6 and spaces are refused, never a crash."""
    assert refusal(HTTP_URL, url).startswith("expected an http:// or https:// URL with a host")


def test_host_and_non_empty() -> None:
    """Hosts have no whitespace; non-empty checks secrets by their real value."""
    HOST("db.internal")
    for bad in ("", "a b", "x\t"):
        assert refusal(HOST, bad).startswith("expected a host name or IP address")
    NON_EMPTY(Secret("x"))
    assert refusal(NON_EMPTY, Secret("  ")) == "expected a non-empty value"


def test_identifier_is_the_vocabulary_id_rule() -> None:
    """The id check states the shared rule and refuses what the wire refuses, saying why."""
    assert IDENTIFIER.expected == ID_RULE
    IDENTIFIER("training-host-5003")
    assert refusal(IDENTIFIER, "a b") == f"expected {ID_RULE} (it contains ' ')"


@pytest.mark.parametrize("token", ["a", "0123abcdef", "A-b_c.d~e!f", "x" * 4096])
def test_tokens_of_visible_ascii_are_accepted(token: str) -> None:
    """Hex, base64url and any visible ASCII pass: they go into a header unchanged."""
    TOKEN(Secret(token))


@pytest.mark.parametrize("token", ["", "two words", "caf\u00e9", "tab\there", "\x7f", "\u200b"])
def test_tokens_a_header_cannot_carry_are_refused(token: str) -> None:
    """Spaces, accents, control and invisible characters: refused, naming what is expected."""
    assert refusal(TOKEN, Secret(token)) == (
        "expected a token of visible ASCII characters (no spaces, no accents), "
        "e.g. the output of `openssl rand -hex 24`"
    )


@given(st.text(max_size=30))
def test_a_token_is_accepted_exactly_when_every_character_is_visible_ascii(text: str) -> None:
    """TOKEN accepts a non-empty text of characters ``!`` to ``~`` and refuses anything else."""
    visible = bool(text) and all("!" <= char <= "~" for char in text)
    try:
        TOKEN(text)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted is visible
