"""A request-body size limit for our servers, as plain ASGI middleware.

A declared ``Content-Length`` over the limit is refused before the body is read; a
chunked body is counted as it streams and refused as soon as it crosses the limit.
Either way the client gets 413 with a JSON ``ErrorBody`` and the app sees nothing.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ktrdr.web.http_errors import ApiError, error_response


class BodyTooLarge(ApiError):
    """Raised from ``receive`` when a streamed body crosses the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", _message(limit))


def _message(limit: int) -> str:
    return f"request body is larger than the {limit} bytes this server accepts"


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Refuse HTTP request bodies larger than ``max_body_bytes`` with 413."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count what is actually received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            response = error_response(413, "payload_too_large", _message(limit))
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


__all__ = ["BodyLimitMiddleware", "BodyTooLarge"]
