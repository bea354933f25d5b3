"""The operator's dashboard at ``/ui``: the fleet, the operations, one operation's page.

Served by the backend itself from files inside this package (``static/``,
``templates/``): no Node build, no CDN. A browser signs in once with the operator
token and gets a session cookie (:mod:`~ktrdr.api.dashboard.session`); the
:class:`~ktrdr.api.dashboard.gate.OperatorGate` in front of the whole backend takes
that cookie, or the token, on every operator route and page. See docs/dashboard.md.
"""

from __future__ import annotations

from ktrdr.api.dashboard.gate import LOGIN_PATH, PAGES_PREFIX, OperatorGate
from ktrdr.api.dashboard.pages import FLEET_PATH, STATIC_PATH, dashboard_router, mount_static
from ktrdr.api.dashboard.session import (
    CSRF_HEADER,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    DashboardSessions,
)

__all__ = [
    "CSRF_HEADER",
    "FLEET_PATH",
    "LOGIN_PATH",
    "PAGES_PREFIX",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE",
    "STATIC_PATH",
    "DashboardSessions",
    "OperatorGate",
    "dashboard_open",
    "dashboard_router",
    "mount_static",
]


def dashboard_open(method: str, path: str) -> bool:
    """True for what the dashboard serves without a session: the sign-in page, static files."""
    return path == LOGIN_PATH or path.startswith(STATIC_PATH + "/")
