"""Bearer-token authentication for write endpoints (the shared worker token).

The check runs before the request body is read (a route class, not a dependency),
so an unauthenticated request gets 401 whatever its body, and learns nothing about
the schema. Tokens are compared in constant time; neither the expected nor the
offered token ever appears in a response or a log line.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Any

import attrs
from fastapi import Request, Response
from fastapi.routing import APIRoute

from ktrdr.config import AuthSettings, Secret, env_name
from ktrdr.web.http_errors import ApiError

_SCHEME = "bearer"


class BearerAuth:
    """Accepts requests carrying ``Authorization: Bearer <token>`` for one secret token."""

    def __init__(self, token: Secret, *, variable: str | None = None) -> None:
        """``variable`` names the setting holding the token in the 401 message."""
        self._expected = token.reveal().encode("utf-8")
        self._variable = variable or env_name(attrs.fields(AuthSettings).worker_token)

    def is_authorized(self, authorization: str | None) -> bool:
        """True when ``authorization`` is ``Bearer <the token>`` (constant-time compare)."""
        if not authorization:
            return False
        scheme, _, offered = authorization.partition(" ")
        if scheme.lower() != _SCHEME or not offered:
            return False
        return hmac.compare_digest(offered.strip().encode("utf-8"), self._expected)

    def check(self, request: Request) -> None:
        """Raise 401 unless ``request`` carries the token."""
        if not self.is_authorized(request.headers.get("authorization")):
            message = (
                "missing or wrong bearer token; send 'Authorization: Bearer <token>' "
                f"with the token configured in {self._variable}"
            )
            raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})

    def route_class(self) -> type[APIRoute]:
        """An ``APIRoute`` class whose routes check the token before anything else."""
        auth = self

        class AuthenticatedRoute(APIRoute):
            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()

                async def checked(request: Request) -> Response:
                    auth.check(request)
                    return await handler(request)

                return checked

        return AuthenticatedRoute


__all__ = ["BearerAuth"]
