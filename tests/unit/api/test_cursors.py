"""Listing cursors: round trip, and every way a cursor can be unusable (each named)."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ktrdr.api.cursors import CURSOR_TTL, MAX_CURSOR_LENGTH, CursorCodec, InvalidCursor

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
FILTERS: dict[str, str | None] = {"status": "completed", "type": None}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


def codec(clock: Clock | None = None, key: bytes = b"k" * 32) -> CursorCodec:
    return CursorCodec(key=key, clock=clock or Clock())


def test_a_cursor_gives_back_its_position() -> None:
    """decode(encode(p)) is p for the same listing and filters."""
    c = codec()
    cursor = c.encode("operations", FILTERS, ["2026-01-01T00:00:00+00:00", "op-9"])

    assert c.decode(cursor, "operations", FILTERS) == ["2026-01-01T00:00:00+00:00", "op-9"]


def test_unset_filters_do_not_matter_only_set_ones() -> None:
    """A filter given as None is the same listing as the filter left out."""
    c = codec()
    cursor = c.encode("operations", {"status": "completed", "type": None}, ["x"])

    assert c.decode(cursor, "operations", {"status": "completed"}) == ["x"]


@pytest.mark.parametrize(
    ("kind", "filters"),
    [
        ("workers", FILTERS),
        ("operations", {"status": "failed"}),
        ("operations", {"status": "completed", "type": "training"}),
        ("operations", {}),
    ],
)
def test_a_cursor_of_another_listing_is_refused(kind: str, filters: dict[str, str]) -> None:
    """Another path or other filters: refused, saying so."""
    c = codec()
    cursor = c.encode("operations", FILTERS, ["x"])

    with pytest.raises(InvalidCursor, match="belongs to another listing"):
        c.decode(cursor, kind, filters)


def test_a_cursor_of_another_backend_or_run_is_refused() -> None:
    """A cursor signed with another key (another backend, before a restart) is refused."""
    cursor = codec(key=b"a" * 32).encode("operations", FILTERS, ["x"])

    with pytest.raises(InvalidCursor, match="not issued by this backend"):
        codec(key=b"b" * 32).decode(cursor, "operations", FILTERS)


def test_an_altered_cursor_is_refused() -> None:
    """Changing one character of the signed part makes it unusable."""
    c = codec()
    cursor = c.encode("operations", FILTERS, ["x"])
    body, _, tag = cursor.partition(".")
    altered = ("B" if body[0] != "B" else "C") + body[1:] + "." + tag

    with pytest.raises(InvalidCursor, match="not issued by this backend, or was altered"):
        c.decode(altered, "operations", FILTERS)


def test_an_expired_cursor_is_refused_naming_its_lifetime() -> None:
    """Past its lifetime a cursor is refused; just before, it still works."""
    clock = Clock()
    c = codec(clock)
    cursor = c.encode("operations", FILTERS, ["x"])

    clock.now = T0 + CURSOR_TTL - datetime.timedelta(seconds=1)
    assert c.decode(cursor, "operations", FILTERS) == ["x"]
    clock.now = T0 + CURSOR_TTL + datetime.timedelta(seconds=1)
    with pytest.raises(InvalidCursor, match=r"expired .*valid for 60 minutes"):
        c.decode(cursor, "operations", FILTERS)


@pytest.mark.parametrize("cursor", ["", "garbage", "a.b.c", "!!!.???", "eyJ2IjoxfQ"])
def test_malformed_cursors_are_refused(cursor: str) -> None:
    """Anything that is not an issued cursor gets InvalidCursor, never another error."""
    with pytest.raises(InvalidCursor, match="cursor"):
        codec().decode(cursor, "operations", FILTERS)


def test_an_overlong_cursor_is_refused_before_decoding() -> None:
    """A cursor over the length bound is refused naming the bound."""
    with pytest.raises(InvalidCursor, match=f"longer than {MAX_CURSOR_LENGTH}"):
        codec().decode("a" * (MAX_CURSOR_LENGTH + 1), "operations", FILTERS)


def test_the_key_is_not_in_the_repr() -> None:
    """The signing key never shows in a repr or log line."""
    assert "kkkk" not in repr(codec())


@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_with_invalid_cursor_only(text: str) -> None:
    """No input makes decode fail with anything but InvalidCursor, whose message never quotes it."""
    with pytest.raises(InvalidCursor) as refused:
        codec().decode(text, "operations", FILTERS)
    assert len(text) < 8 or text not in str(refused.value)
