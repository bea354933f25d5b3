"""Bearer-token authentication: the shared worker token, the operator token.

The check runs before the request body is read (a route class, or
:class:`BearerAuthMiddleware` in front of the whole app, never a dependency), so an
unauthenticated request gets 401 whatever its body, changes nothing and learns
nothing about the schema. Tokens are compared in constant time (their SHA-256
digests, so not even the length leaks); neither the expected nor the offered token
ever appears in a response or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import attrs
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ktrdr.config import AuthSettings, Secret, env_name
from ktrdr.web.http_errors import ApiError, error_response

if TYPE_CHECKING:
    from fastapi.routing import APIRoute

_SCHEME = "bearer"


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class BearerAuth:
    """Accepts requests carrying ``Authorization: Bearer <token>`` for one secret token."""

    def __init__(self, token: Secret, *, variable: str | None = None) -> None:
        """``variable`` names the setting holding the token in the 401 message."""
        self._expected = _digest(token.reveal().encode("utf-8"))
        self._variable = variable or env_name(attrs.fields(AuthSettings).worker_token)

    @property
    def variable(self) -> str:
        """The setting holding the expected token (named in the 401 message)."""
        return self._variable

    def is_authorized(self, authorization: str | None) -> bool:
        """True when ``authorization`` is ``Bearer <the token>`` (constant-time compare)."""
        if not authorization:
            return False
        scheme, _, offered = authorization.partition(" ")
        if scheme.lower() != _SCHEME or not offered:
            return False
        offered_digest = _digest(offered.strip().encode("utf-8", "surrogateescape"))
        return hmac.compare_digest(offered_digest, self._expected)

    def refusal(self) -> ApiError:
        """The 401 a request without the token gets; it names the variable, never a token."""
        message = (
            "missing or wrong bearer token; send 'Authorization: Bearer <token>' "
            f"with the token configured in {self._variable}"
        )
        return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})

    def check(self, request: Request) -> None:
        """Raise 401 unless ``request`` carries the token."""
        if not self.is_authorized(request.headers.get("authorization")):
            raise self.refusal()

    def route_class(self) -> type[APIRoute]:
        """An ``APIRoute`` class whose routes check the token before anything else.

        Plain Starlette routes (the worker's) call :meth:`check` themselves instead.
        """
        # Imported here: only FastAPI apps (the backend) use it, and they have FastAPI loaded.
        from fastapi.routing import APIRoute

        auth = self

        class AuthenticatedRoute(APIRoute):
            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()

                async def checked(request: Request) -> Response:
                    auth.check(request)
                    return await handler(request)

                return checked

        return AuthenticatedRoute


class BearerAuthMiddleware:
    """ASGI middleware: every HTTP request needs the token unless ``exempt`` says otherwise.

    Closed by default: a route added later, or a path that matches nothing, needs the
    token too. ``exempt(method, path)`` is asked first (it should be cheap: it runs
    on every request, the workers' heartbeats included). The refusal is the same
    JSON 401 as :meth:`BearerAuth.check`, sent before anything reads the body.
    """

    def __init__(
        self, app: ASGIApp, *, auth: BearerAuth, exempt: Callable[[str, str], bool]
    ) -> None:
        self.app = app
        self._auth = auth
        self._exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and not self._exempt(scope["method"], scope["path"])
            and not self._auth.is_authorized(Headers(scope=scope).get("authorization"))
        ):
            refusal = self._auth.refusal()
            response = error_response(
                refusal.status_code, refusal.error, refusal.detail, headers=refusal.headers
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


__all__ = ["BearerAuth", "BearerAuthMiddleware"]
