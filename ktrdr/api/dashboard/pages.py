"""The dashboard's routes: sign-in, the pages, the fleet snapshot and the static files.

Pages are HTML shells filled in the browser: ``static/dashboard.js`` reads the
operator API (``/api/v1/...``, with the session cookie) and ``GET /ui/api/fleet``,
and polls them every second, so the pages update without a reload. Every value is
put in the page as text by the script, never as markup, and a strict
Content-Security-Policy allows only the backend's own scripts and styles: no CDN, no
inline script. The sign-in page carries nothing but the form.

The gate (``ktrdr.api.dashboard.gate``) has already authenticated everything here
except ``/ui/login`` and ``/ui/static/``, which are open. The fleet snapshot lists at
most :data:`FLEET_PAGE` workers (by id) with the total, so a dashboard left open on a
large fleet costs the backend a bounded amount each second.
"""

from __future__ import annotations

import asyncio
import datetime
import html
import logging
import re
import string
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

import ktrdr
from ktrdr.api.dashboard.gate import LOGIN_PATH, PAGES_PREFIX
from ktrdr.api.dashboard.session import SESSION_COOKIE, DashboardSessions, cross_site
from ktrdr.api.dashboard.throttle import SignInThrottle
from ktrdr.api.liveness import LivenessPolicy, sweep
from ktrdr.api.operations import OperationNotFound, OperationsService
from ktrdr.api.registry import WorkerRegistry
from ktrdr.protocol import DASHBOARD_PATH, ID_PATTERN
from ktrdr.web import BearerAuth

__all__ = ["FLEET_PAGE", "FLEET_PATH", "STATIC_PATH", "dashboard_router", "mount_static"]

logger = logging.getLogger(__name__)

STATIC_PATH = f"{PAGES_PREFIX}/static"
FLEET_PATH = f"{PAGES_PREFIX}/api/fleet"
#: Most workers the fleet snapshot lists (by id; ``total`` counts them all).
FLEET_PAGE = 200
HOME_PATH = DASHBOARD_PATH
#: Pages may use only the backend's own files; nothing may frame them.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_ID = re.compile(ID_PATTERN)


def _template(name: str) -> string.Template:
    text = resources.files("ktrdr.api.dashboard").joinpath(f"templates/{name}").read_text("utf-8")
    return string.Template(text)


def _page(template: string.Template, status_code: int = 200, **values: str) -> HTMLResponse:
    """``template`` with ``values`` HTML-escaped (and the version, for cache busting)."""
    escaped = {key: html.escape(value, quote=True) for key, value in values.items()}
    body = template.substitute(version=html.escape(ktrdr.__version__), **escaped)
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def _secure(request: Request) -> bool:
    """True when the browser talks https to us (directly or through a trusted proxy)."""
    return request.url.scheme == "https"


def dashboard_router(
    *,
    auth: BearerAuth,
    sessions: DashboardSessions,
    service: OperationsService,
    registry: WorkerRegistry,
    policy: LivenessPolicy,
    clock: Callable[[], datetime.datetime],
) -> APIRouter:
    """The ``/ui`` routes (left out of the API description)."""
    router = APIRouter(include_in_schema=False)
    throttle = SignInThrottle()
    templates = {name: _template(f"{name}.html") for name in ("login", "fleet", "operation")}

    def csrf_of(request: Request) -> str:
        session = sessions.session_id(request.cookies.get(SESSION_COOKIE))
        return sessions.csrf_token(session) if session is not None else ""

    @router.get(PAGES_PREFIX)
    async def root() -> Response:
        return RedirectResponse(HOME_PATH, status_code=308)

    @router.get(LOGIN_PATH)
    async def login_form(request: Request) -> Response:
        if sessions.session_id(request.cookies.get(SESSION_COOKIE)) is not None:
            return RedirectResponse(HOME_PATH, status_code=303)
        return _page(templates["login"], message="", variable=auth.variable)

    @router.post(LOGIN_PATH)
    async def login(request: Request) -> Response:
        if cross_site(request.headers.get("sec-fetch-site")):
            return _page(
                templates["login"],
                403,
                message="Sign in from this page, not from another site.",
                variable=auth.variable,
            )
        try:
            form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=4)
        except ValueError:  # more fields than the form has
            form = {}
        client = request.client.host if request.client else "?"
        wait_s = throttle.retry_after(client)
        if wait_s is not None:
            refused = _page(
                templates["login"],
                429,
                message=f"Too many wrong tokens from this address ({throttle.limit}); "
                f"try again in {wait_s} s.",
                variable=auth.variable,
            )
            refused.headers["Retry-After"] = str(wait_s)
            return refused
        token = (form.get("token") or [""])[0]
        if not token or not auth.is_authorized(f"Bearer {token}"):
            throttle.failed(client)
            logger.warning("dashboard sign-in refused (wrong operator token) from %s", client)
            return _page(
                templates["login"],
                401,
                message=f"That is not the operator token ({auth.variable}).",
                variable=auth.variable,
            )
        response = RedirectResponse(HOME_PATH, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            sessions.new_session(),
            max_age=int(sessions.max_age.total_seconds()),
            path="/",
            secure=_secure(request),
            httponly=True,
            samesite="strict",
        )
        return response

    @router.post(f"{PAGES_PREFIX}/logout")
    async def logout(request: Request) -> Response:
        response = Response(status_code=204)
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=_secure(request), httponly=True, samesite="strict"
        )
        return response

    @router.get(HOME_PATH)
    async def fleet_page(request: Request) -> Response:
        return _page(templates["fleet"], csrf=csrf_of(request))

    @router.get(PAGES_PREFIX + "/operations/{operation_id}")
    async def operation_page(request: Request, operation_id: str) -> Response:
        if not _ID.fullmatch(operation_id):
            return RedirectResponse(HOME_PATH, status_code=303)
        return _page(templates["operation"], csrf=csrf_of(request), operation_id=operation_id)

    @router.get(FLEET_PATH)
    async def fleet() -> Response:
        now = clock()
        sweep(registry, now, policy)
        records, _ = registry.page(limit=FLEET_PAGE)
        drift = {record.worker_id: registry.drifting(record) for record in records}
        total = len(registry)

        def snapshot() -> dict[str, Any]:
            workers = []
            for record in records:
                item = record.view(drift=drift[record.worker_id]).model_dump(mode="json")
                item["heartbeat_age_s"] = max(0.0, record.silence(now).total_seconds())
                item["operation"] = _operation_of(service, record.current_operation_id)
                workers.append(item)
            return {"now": now.isoformat(), "total": total, "workers": workers}

        return JSONResponse(
            await asyncio.to_thread(snapshot), headers={"Cache-Control": "no-store"}
        )

    return router


def _operation_of(service: OperationsService, operation_id: str | None) -> Mapping[str, Any] | None:
    """The running operation's id, type, status and progress (None if gone or none)."""
    if operation_id is None:
        return None
    try:
        view = service.get(operation_id)
    except OperationNotFound:
        return None
    return view.model_dump(mode="json", include={"id", "type", "status", "progress"})


def mount_static(app: FastAPI) -> None:
    """Serve ``static/`` (scripts, styles, licences) at ``/ui/static``: open, no data."""
    app.mount(
        STATIC_PATH,
        StaticFiles(packages=[("ktrdr.api.dashboard", "static")]),
        name="dashboard-static",
    )
