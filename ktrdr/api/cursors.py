"""Opaque, signed, expiring cursors for keyset pagination (workers and operations lists).

A cursor says where the previous page ended (the sort key of its last item), which
listing it belongs to (its kind and filters) and until when it is valid. It is
base64url JSON plus an HMAC-SHA256 tag under a key the backend draws when it starts,
so a client cannot forge or alter one, and a cursor from another listing, another
backend or an earlier run of this one is refused rather than silently misread.
Cursors do not survive a backend restart: the client starts again from the first
page. Nothing here speaks HTTP; :class:`~ktrdr.errors.InvalidCursor` carries a message
a route returns as a 422 naming ``cursor``, never quoting the cursor itself.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ktrdr.errors import InvalidCursor

__all__ = ["CURSOR_TTL", "MAX_CURSOR_LENGTH", "CursorCodec", "InvalidCursor"]

#: How long a cursor stays valid after the page that issued it.
CURSOR_TTL = datetime.timedelta(hours=1)
#: Longest cursor accepted (an issued one is far shorter).
MAX_CURSOR_LENGTH = 1024
#: Bytes of the HMAC tag kept in a cursor.
_TAG_BYTES = 16
_VERSION = 1
_RESTART = "start again without cursor (from the first page)"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@attrs.frozen(kw_only=True)
class CursorCodec:
    """Issues and checks cursors; ``clock`` returns aware UTC datetimes.

    ``key`` signs the cursors (draw one per process with :meth:`random`).
    """

    key: bytes = attrs.field(repr=False)
    clock: Callable[[], datetime.datetime]
    ttl: datetime.timedelta = CURSOR_TTL

    @classmethod
    def random(cls, clock: Callable[[], datetime.datetime]) -> CursorCodec:
        """A codec with a fresh random key (the backend's, for one run)."""
        return cls(key=secrets.token_bytes(32), clock=clock)

    def encode(self, kind: str, filters: Mapping[str, str | None], position: Sequence[str]) -> str:
        """A cursor for the page after ``position`` in listing ``kind`` with ``filters``."""
        expires = self.clock() + self.ttl
        payload = {
            "v": _VERSION,
            "k": kind,
            "f": _filters(filters),
            "p": list(position),
            "e": int(expires.timestamp()),
        }
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(body)}.{_b64(self._tag(body))}"

    def decode(self, cursor: str, kind: str, filters: Mapping[str, str | None]) -> list[str]:
        """The position a cursor of listing ``kind`` with ``filters`` carries.

        Raises :class:`InvalidCursor` saying what is wrong with it: malformed,
        not issued by this backend (or altered), for another listing or other
        filters, or expired.
        """
        if len(cursor) > MAX_CURSOR_LENGTH:
            message = (
                f"cursor is longer than {MAX_CURSOR_LENGTH} characters; "
                f"pass the next_cursor of the previous page unchanged, or {_RESTART}"
            )
            raise InvalidCursor(message)
        body_text, dot, tag_text = cursor.partition(".")
        try:
            if not dot:
                raise ValueError("no tag")
            body, tag = _unb64(body_text), _unb64(tag_text)
        except (ValueError, binascii.Error):
            message = (
                "cursor is malformed: expected the next_cursor of the previous page, "
                f"unchanged; {_RESTART}"
            )
            raise InvalidCursor(message) from None
        if not hmac.compare_digest(tag, self._tag(body)):
            message = (
                "cursor was not issued by this backend, or was altered (cursors do not "
                f"survive a backend restart); {_RESTART}"
            )
            raise InvalidCursor(message)
        payload = _payload(body)
        if payload.get("k") != kind or payload.get("f") != _filters(filters):
            message = (
                "cursor belongs to another listing (another path or other filters); use "
                f"it with the same path and filters as the page that gave it, or {_RESTART}"
            )
            raise InvalidCursor(message)
        expires = datetime.datetime.fromtimestamp(payload["e"], datetime.timezone.utc)
        if self.clock() > expires:
            minutes = self.ttl.total_seconds() / 60
            message = f"cursor expired (cursors are valid for {minutes:g} minutes); {_RESTART}"
            raise InvalidCursor(message)
        return [str(part) for part in payload["p"]]

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self.key, body, hashlib.sha256).digest()[:_TAG_BYTES]


def _filters(filters: Mapping[str, str | None]) -> list[list[str]]:
    """The filters that are set, in a canonical order."""
    return [[name, value] for name, value in sorted(filters.items()) if value is not None]


def _payload(body: bytes) -> dict[str, Any]:
    """A signed body is ours, so it parses; anything else is a bug, not a client's cursor."""
    payload = json.loads(body)
    if (
        not isinstance(payload, dict)
        or payload.get("v") != _VERSION
        or not isinstance(payload.get("e"), int)
        or not isinstance(payload.get("p"), list)
    ):
        message = f"cursor is from another version of the backend; {_RESTART}"
        raise InvalidCursor(message)
    return payload
