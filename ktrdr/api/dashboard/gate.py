"""The operator gate: the backend's one check in front of every operator route and page.

A request passes when its path is open (``/health``, the API description, the
workers' own routes, the dashboard's sign-in page and static files), when it carries
the operator token (``Authorization: Bearer``, the CLI and scripts), or when it
carries a valid dashboard session cookie (a browser signed in at ``/ui/login``). A
session-authenticated request that changes something (any method but GET and HEAD)
must also carry the session's CSRF token and must not have been started by another
site; otherwise it is refused with 403 before anything reads it.

Everything else is refused before its body is read: a page of the dashboard
(``GET /ui/...``) with a redirect to the sign-in page, anything else with the JSON 401
of :class:`~ktrdr.web.BearerAuth` that names the variable. Closed by default: a route
added later needs the token (or a session) unless it is declared open.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ktrdr.api.dashboard.session import (
    CSRF_HEADER,
    SESSION_COOKIE,
    DashboardSessions,
    cross_site,
)
from ktrdr.protocol import DASHBOARD_PATH
from ktrdr.web import BearerAuth, error_response

__all__ = ["LOGIN_PATH", "PAGES_PREFIX", "OperatorGate"]

#: Where the dashboard lives, and its sign-in page.
PAGES_PREFIX = DASHBOARD_PATH.rstrip("/")
LOGIN_PATH = f"{PAGES_PREFIX}/login"
#: The dashboard's JSON reads: refused with 401 like the API, never redirected.
_UI_API_PREFIX = f"{PAGES_PREFIX}/api/"
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def _is_page(path: str) -> bool:
    """True for the dashboard's HTML pages (a browser is sent to sign in instead of a 401)."""
    if path != PAGES_PREFIX and not path.startswith(PAGES_PREFIX + "/"):
        return False
    return not path.startswith(_UI_API_PREFIX)


class OperatorGate:
    """ASGI middleware: the operator token, or a dashboard session, or an open path.

    ``exempt(method, path)`` names the open paths (it runs on every request, the
    workers' heartbeats included, so it should be cheap). Without ``sessions`` only
    the token is accepted.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: BearerAuth,
        exempt: Callable[[str, str], bool],
        sessions: DashboardSessions | None = None,
    ) -> None:
        self.app = app
        self._auth = auth
        self._exempt = exempt
        self._sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        if self._exempt(method, path):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self._auth.is_authorized(headers.get("authorization")):
            await self.app(scope, receive, send)
            return
        session = self._session(headers)
        response: Response
        if session is not None:
            refusal = self._forged(method, session, headers)
            if refusal is None:
                await self.app(scope, receive, send)
                return
            response = error_response(403, "forbidden", refusal)
        elif method in _SAFE_METHODS and _is_page(path):
            response = RedirectResponse(LOGIN_PATH, status_code=303)
        else:
            denied = self._auth.refusal()
            response = error_response(
                denied.status_code, denied.error, denied.detail, headers=denied.headers
            )
        await response(scope, receive, send)

    def _session(self, headers: Headers) -> str | None:
        if self._sessions is None:
            return None
        cookie = headers.get("cookie")
        if not cookie:
            return None
        return self._sessions.session_id(cookie_parser(cookie).get(SESSION_COOKIE))

    def _forged(self, method: str, session: str, headers: Headers) -> str | None:
        """Why a session's request is refused as a possible forgery, or None."""
        if method in _SAFE_METHODS:
            return None
        if cross_site(headers.get("sec-fetch-site")):
            return "cross-site request refused: act from the dashboard's own pages"
        assert self._sessions is not None
        if not self._sessions.csrf_matches(session, headers.get(CSRF_HEADER)):
            return (
                "missing or wrong X-CSRF-Token for this dashboard session; "
                "reload the page (or send the operator token instead)"
            )
        return None
