"""Dashboard sessions: a signed cookie instead of the operator token in a browser.

Signing in at ``/ui/login`` with the operator token sets one cookie,
``ktrdr_session``: a random session id signed with a timestamp (itsdangerous), under a
key derived from the operator token. It is ``HttpOnly`` (no script can read it),
``SameSite=Strict`` (a browser never sends it with a request another site starts),
``Secure`` when the dashboard is served over https, and valid for
:data:`SESSION_MAX_AGE`. Nothing is stored on the server: changing
``KTRDR_AUTH_OPERATOR_TOKEN`` changes the key and ends every session at once.

Requests a session authenticates that change something must also carry the session's
CSRF token (``X-CSRF-Token``; the dashboard's pages hold it), derived from the session
id with the same key, and must not come from another site (``Sec-Fetch-Site``).
Neither the token, the key nor a session id is ever logged.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, TimestampSigner

from ktrdr.config import Secret

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE",
    "DashboardSessions",
    "cross_site",
]

SESSION_COOKIE = "ktrdr_session"
CSRF_HEADER = "x-csrf-token"
#: How long a sign-in lasts.
SESSION_MAX_AGE = datetime.timedelta(hours=12)
#: ``Sec-Fetch-Site`` values of a request another site (or a sibling subdomain) started.
_FOREIGN_SITES = frozenset({"cross-site", "same-site"})


def cross_site(sec_fetch_site: str | None) -> bool:
    """True when the browser says another site started the request.

    Browsers send ``Sec-Fetch-Site`` with every request and scripts cannot set it;
    ``same-origin`` (the dashboard itself), ``none`` (typed into the address bar)
    and its absence (not a browser) pass.
    """
    return (sec_fetch_site or "").strip().lower() in _FOREIGN_SITES


class DashboardSessions:
    """Issues and checks session cookies and their CSRF tokens for one operator token."""

    def __init__(
        self, operator_token: Secret, *, max_age: datetime.timedelta = SESSION_MAX_AGE
    ) -> None:
        key = hmac.new(
            operator_token.reveal().encode("utf-8", "surrogateescape"),
            b"ktrdr dashboard sessions",
            hashlib.sha256,
        ).digest()
        self._signer = TimestampSigner(key, salt="ktrdr.dashboard.session")
        self._csrf_key = hmac.new(key, b"csrf", hashlib.sha256).digest()
        self.max_age = max_age

    def new_session(self) -> str:
        """A fresh cookie value (a signed, timestamped random id)."""
        return self._signer.sign(secrets.token_urlsafe(24)).decode("ascii")

    def session_id(self, cookie: str | None) -> str | None:
        """The session id in a valid, unexpired ``cookie``; None otherwise."""
        if not cookie:
            return None
        try:
            raw: bytes = self._signer.unsign(cookie, max_age=int(self.max_age.total_seconds()))
        except (BadSignature, UnicodeError):  # SignatureExpired is a BadSignature
            return None
        return raw.decode("ascii", "replace")

    def csrf_token(self, session_id: str) -> str:
        """The CSRF token of ``session_id`` (what the pages give their scripts)."""
        return hmac.new(self._csrf_key, session_id.encode("ascii"), hashlib.sha256).hexdigest()

    def csrf_matches(self, session_id: str, offered: str | None) -> bool:
        """True when ``offered`` is ``session_id``'s CSRF token (constant-time compare)."""
        if not offered:
            return False
        expected = self.csrf_token(session_id)
        return hmac.compare_digest(expected.encode("ascii"), offered.strip().encode("utf-8"))
