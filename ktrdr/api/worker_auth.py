"""Per-worker credentials: who may heartbeat, report and unregister as a worker.

The shared worker token (every worker host has it) only lets a worker register. The
registration answer carries a credential bound to that worker id and that
registration (:class:`~ktrdr.api.registry.WorkerRegistry` issues it), and the worker
routes that act for one worker accept nothing else: not the shared token, not the
operator's token, not another worker's credential. So a holder of the shared token
cannot heartbeat, unregister or report for a worker it is not.

The check runs before the request body is read (a route class, like
:class:`ktrdr.web.BearerAuth`), so a refused request learns nothing about the schema
and changes nothing. A route with a ``{worker_id}`` path parameter checks that
worker's credential, and an id the backend does not know is 404 whatever the
credential (the worker's cue to register again, after a backend restart forgot every
credential); a route without one (the operation report) finds the worker by its
credential. The authenticated record is left in ``request.state.worker``. Nothing here
logs or answers with a credential.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from ktrdr.api.registry import WorkerRecord, WorkerRegistry
from ktrdr.web import ApiError
from ktrdr.web.json_body import plain_body_handler

__all__ = ["WorkerCredentialAuth", "authenticated_worker"]

_SCHEME = "bearer"
#: Longest part of a worker id echoed in a refusal.
_MAX_ECHO = 128
_HOW = (
    "send 'Authorization: Bearer <credential>' with the credential from this worker's "
    "latest registration (the shared worker token only registers)"
)


def _authorization(request: Request) -> str | None:
    """The ``Authorization`` header, read from the raw scope (heartbeats are the hot path)."""
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


def _bearer(authorization: str | None) -> str | None:
    """The credential of ``Bearer <credential>``, or None."""
    if not authorization:
        return None
    scheme, _, offered = authorization.partition(" ")
    offered = offered.strip()
    if scheme.lower() != _SCHEME or not offered:
        return None
    return offered


def _refused(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def authenticated_worker(request: Request) -> WorkerRecord:
    """The worker a :class:`WorkerCredentialAuth` route authenticated for ``request``."""
    record: WorkerRecord = request.state.worker
    return record


class WorkerCredentialAuth:
    """Authenticates worker requests by their per-registration credential."""

    def __init__(self, registry: WorkerRegistry) -> None:
        self._registry = registry

    def authenticate(self, request: Request) -> WorkerRecord:
        """The worker ``request`` acts for; raises 401 (or 404 for an unknown worker id)."""
        credential = _bearer(_authorization(request))
        if credential is None:
            raise _refused(f"missing bearer credential; {_HOW}")
        worker_id = request.path_params.get("worker_id")
        if worker_id is not None:
            record = self._registry.get(worker_id)  # UnknownWorker: 404, register again
            if not record.holds(credential):
                message = f"not the current credential of worker {worker_id[:_MAX_ECHO]!r}; {_HOW}"
                raise _refused(message)
            return record
        holder = self._registry.holder(credential)
        if holder is None:
            raise _refused(f"not the credential of a registered worker; {_HOW}")
        return holder

    def route_class(self, *, plain_body: type[BaseModel] | None = None) -> type[APIRoute]:
        """An ``APIRoute`` class whose routes authenticate the worker before anything else.

        With ``plain_body``, its routes read that model as their ``body`` and skip
        FastAPI's dependency solving (:func:`~ktrdr.web.json_body.plain_body_handler`):
        for the heartbeat, the most frequent request the backend serves.
        """
        auth = self

        class WorkerRoute(APIRoute):
            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler: Callable[[Request], Awaitable[Response]]
                if plain_body is None:
                    handler = super().get_route_handler()
                else:
                    handler = plain_body_handler(self.endpoint, plain_body)

                async def checked(request: Request) -> Response:
                    request.state.worker = auth.authenticate(request)
                    return await handler(request)

                return checked

        return WorkerRoute
