"""The worker API: register, heartbeat, unregister, list and get.

Registering needs the shared ``Authorization: Bearer <KTRDR_AUTH_WORKER_TOKEN>`` and
answers with the worker's own credential; heartbeats and unregister need that
credential (``ktrdr.api.worker_auth``), so one worker cannot act for another. Both
are checked before the body is read. Every failure is a 4xx JSON ``ErrorBody`` (an
unknown worker id is the registry's ``UnknownWorker``, a 404 by
``ktrdr.errors.HTTP_STATUSES``, whatever the credential: the worker's cue to register
again; an id a live worker holds at another endpoint is a 409); a refused request
leaves the registry untouched. Reads sweep liveness first, so a listed status is current.
What a registration or heartbeat means for operations (progress, dispatch) is left
to the injected :class:`WorkerEvents`.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Annotated, Any, Protocol

import attrs
from fastapi import APIRouter, Query, Request, Response

from ktrdr.api.cursors import MAX_CURSOR_LENGTH
from ktrdr.api.liveness import LivenessPolicy, sweep
from ktrdr.api.registry import WorkerRecord, WorkerRegistry
from ktrdr.api.worker_auth import WorkerCredentialAuth, authenticated_worker
from ktrdr.api.workers_listing import MAX_WORKERS_PAGE, WorkerListing
from ktrdr.config import CheckpointSettings, WorkerSettings, env_name
from ktrdr.errors import WorkerIdConflict
from ktrdr.protocol import (
    HANDOFF_HEADER,
    REGISTER_PATH,
    WORKERS_PATH,
    ErrorBody,
    HeartbeatRequest,
    OperationType,
    RegisterRequest,
    RegisterResponse,
    WorkerStatus,
    WorkerView,
)
from ktrdr.web import ApiError, BearerAuth

logger = logging.getLogger(__name__)

#: Nesting allowed in free-form JSON (capabilities, progress details). Deeper values
#: are refused at the door: they serve no purpose and can exhaust recursion later.
MAX_JSON_DEPTH = 16

_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or wrong worker token"},
    413: {"model": ErrorBody, "description": "request body too large"},
    422: {"model": ErrorBody, "description": "invalid request body"},
}
_CREDENTIAL_ERRORS: dict[int | str, dict[str, Any]] = {
    **_WRITE_ERRORS,
    401: {"model": ErrorBody, "description": "not this worker's current credential"},
}
_LIST_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "invalid filter, limit or cursor"},
    429: {"model": ErrorBody, "description": "workers listed too often (see Retry-After)"},
}
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown worker id"}
}


class WorkerEvents(Protocol):
    """Told about every accepted registration and heartbeat, after the registry changed."""

    async def registered(self, record: WorkerRecord) -> None:
        """``record`` was just registered (or registered again)."""
        ...

    async def heartbeat(
        self, previous: WorkerRecord, record: WorkerRecord, request: HeartbeatRequest
    ) -> None:
        """``request`` turned ``previous`` into ``record`` (may raise a 409 for its operation)."""
        ...

    async def unregistered(self, record: WorkerRecord) -> None:
        """``record`` (as it was) was just unregistered."""
        ...


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests dicts/lists deeper than ``limit`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _check_depth(value: Any, field: str) -> None:
    if json_depth_exceeds(value, MAX_JSON_DEPTH):
        detail = [
            {
                "loc": ["body", field],
                "msg": f"nested deeper than {MAX_JSON_DEPTH} levels",
                "type": "too_deep",
            }
        ]
        raise ApiError(422, "invalid_request", detail)


def _json(view: WorkerView | RegisterResponse, status_code: int = 200) -> Response:
    # Serialised once by pydantic (the model was validated when it was built).
    return Response(view.model_dump_json(), status_code=status_code, media_type="application/json")


def workers_routers(
    *,
    registry: WorkerRegistry,
    clock: Callable[[], datetime.datetime],
    policy: LivenessPolicy,
    auth: BearerAuth,
    credentials: WorkerCredentialAuth,
    events: WorkerEvents,
    listing: WorkerListing,
) -> tuple[APIRouter, APIRouter, APIRouter]:
    """The ``/api/v1/workers`` routes over ``registry``: (a worker's own, register, reads).

    ``auth`` checks the shared worker token (registration), ``credentials`` a worker's
    own credential (heartbeat, unregister); ``listing`` answers ``GET /api/v1/workers``.
    Include all three directly in the app: FastAPI matches nested routers level by
    level, and the heartbeat route (by far the most frequent request) is matched first.
    """
    router = APIRouter(tags=["workers"])
    own = APIRouter(route_class=credentials.route_class(), tags=["workers"])
    writes = APIRouter(route_class=auth.route_class(), tags=["workers"])

    def drift_of(record: WorkerRecord) -> bool:
        return registry.drifting(record)

    async def heartbeat(worker_id: str, body: HeartbeatRequest, request: Request) -> Response:
        if body.status is WorkerStatus.UNAVAILABLE:
            detail = [
                {
                    "loc": ["body", "status"],
                    "msg": "the backend decides 'unavailable'; send idle, busy or stopping",
                    "type": "enum",
                }
            ]
            raise ApiError(422, "invalid_request", detail)
        if body.progress is not None:
            _check_depth(body.progress.details, "progress.details")
        previous = authenticated_worker(request)  # its credential was checked: it is registered
        record = registry.heartbeat(worker_id, body, now=clock())
        await events.heartbeat(previous, record, body)
        return _json(record.view(drift=drift_of(record)))

    # Documented from its signature, served without FastAPI's dependency solving.
    own.add_api_route(
        WORKERS_PATH + "/{worker_id}/heartbeat",
        heartbeat,
        methods=["POST"],
        response_model=WorkerView,
        responses={**_CREDENTIAL_ERRORS, **_UNKNOWN},
        summary="Record a heartbeat: status, current operation and its progress",
        route_class_override=credentials.route_class(plain_body=HeartbeatRequest),
    )

    @writes.post(
        REGISTER_PATH,
        response_model=RegisterResponse,
        status_code=200,
        responses={
            201: {"model": RegisterResponse, "description": "newly registered"},
            409: {"model": ErrorBody, "description": "a live worker holds the id elsewhere"},
            **_WRITE_ERRORS,
        },
        summary="Register a worker (idempotent per worker id); answers its new credential",
    )
    async def register(body: RegisterRequest) -> Response:
        _check_depth(body.capabilities, "capabilities")
        try:
            registration = registry.register(body, now=clock())
        except WorkerIdConflict:  # a 409 naming the id; the worker retries until it is free
            holder = registry.get(body.worker_id)
            logger.warning(
                "registration of worker %s from %s refused: a live worker holds that id at %s",
                body.worker_id,
                body.endpoint_url,
                holder.endpoint_url,
            )
            raise
        record, created = registration.record, registration.created
        await events.registered(record)
        drift = drift_of(record)
        verb = "registered" if created else "re-registered"
        logger.info(
            "worker %s (%s) %s at %s",
            record.worker_id,
            record.worker_type.value,
            verb,
            record.endpoint_url,
        )
        if drift:
            logger.warning(
                "worker %s runs a configuration (fingerprint %s) that differs from other "
                "%s workers; compare their %s* settings and %s",
                record.worker_id,
                record.config_fingerprint,
                record.worker_type.value,
                CheckpointSettings.PREFIX,
                env_name(attrs.fields(WorkerSettings).heartbeat_interval),
            )
        view = record.view(drift=drift)
        answer = RegisterResponse.model_construct(**dict(view), credential=registration.credential)
        response = _json(answer, 201 if created else 200)
        # This backend takes ``take_next`` in reports (a header: no old worker refuses it).
        response.headers[HANDOFF_HEADER] = "1"
        return response

    @own.delete(
        WORKERS_PATH + "/{worker_id}",
        status_code=204,
        responses={**_CREDENTIAL_ERRORS, **_UNKNOWN},
        summary="Unregister a worker (it is shutting down)",
    )
    async def unregister(worker_id: str) -> Response:
        record = registry.unregister(worker_id)
        logger.info("worker %s (%s) unregistered", record.worker_id, record.worker_type.value)
        await events.unregistered(record)
        return Response(status_code=204)

    @router.get(
        WORKERS_PATH,
        response_model=list[WorkerView],
        responses=_LIST_ERRORS,
        summary="Registered workers by id: all, or one page (?limit=, next page in Link)",
    )
    async def list_workers(
        request: Request,
        worker_type: Annotated[OperationType | None, Query(alias="type")] = None,
        status: Annotated[WorkerStatus | None, Query()] = None,
        limit: Annotated[int | None, Query(ge=1, le=MAX_WORKERS_PAGE)] = None,
        cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
    ) -> Response:
        sweep(registry, clock(), policy)
        return await listing.respond(
            request, worker_type=worker_type, status=status, limit=limit, cursor=cursor
        )

    @router.get(
        WORKERS_PATH + "/{worker_id}",
        response_model=WorkerView,
        responses=_UNKNOWN,
        summary="One registered worker",
    )
    async def get_worker(worker_id: str) -> Response:
        sweep(registry, clock(), policy)
        record = registry.get(worker_id)
        return _json(record.view(drift=drift_of(record)))

    return own, writes, router


__all__ = ["MAX_JSON_DEPTH", "WorkerEvents", "json_depth_exceeds", "workers_routers"]
