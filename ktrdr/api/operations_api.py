"""The operations API: create, list, get, series, cancel, resume; and the workers' reports.

``POST /api/v1/operations/{id}/report`` is for workers and needs the reporting
worker's own credential (``ktrdr.api.worker_auth``, checked before the body is read);
the rest is the operator's API. Store calls run in
threads, so a slow database never blocks heartbeats. Every failure is a 4xx JSON
``ErrorBody``: bad type or parameters 422 with one item per field, unknown id 404, a
transition the operation's status forbids 409, too many live operations 429. The
service's errors pass through: ``ktrdr.web`` answers them with the status
``ktrdr.errors.HTTP_STATUSES`` gives them.

Responses stay bounded: a listing page holds at most :data:`MAX_PAGE_ITEMS`
operations and no results unless ``?include=result`` asks for them, and every
operation view is serialised in a thread with its store read, so a page of large
results never holds the event loop (and with it the workers' heartbeats).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

import attrs
from fastapi import APIRouter, BackgroundTasks, Path, Query, Request, Response
from pydantic import BaseModel, ValidationError

from ktrdr.api.cursors import MAX_CURSOR_LENGTH
from ktrdr.api.dispatcher import Dispatcher
from ktrdr.api.operation_logs import OperationLog, fetch_operation_log
from ktrdr.api.operations import OperationsService
from ktrdr.api.operations_listing import MAX_OFFSET, OperationListing
from ktrdr.api.registry import WorkerRegistry
from ktrdr.api.reports import OperationReports
from ktrdr.api.worker_auth import WorkerCredentialAuth, authenticated_worker
from ktrdr.api.workers_api import MAX_JSON_DEPTH, json_depth_exceeds
from ktrdr.config import OperationsSettings, env_name
from ktrdr.log_context import attempt_of, operation_context
from ktrdr.protocol import (
    ID_PATTERN,
    MAX_PAGE_ITEMS,
    OPERATIONS_PATH,
    CreateOperationRequest,
    ErrorBody,
    OperationList,
    OperationReport,
    OperationSeries,
    OperationStatus,
    OperationType,
    OperationView,
    ReleaseOperationRequest,
    ReportAnswer,
)
from ktrdr.tracing import current_traceparent
from ktrdr.web import ApiError, describe_validation_errors

__all__ = ["MAX_OFFSET", "OperationLogView", "operations_routers"]

logger = logging.getLogger(__name__)


_ONE = OPERATIONS_PATH + "/{operation_id}"
#: An id that cannot exist (wrong characters, too long) is refused before any lookup.
OperationId = Annotated[str, Path(pattern=ID_PATTERN)]
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "invalid request (one item per field)"}
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown operation id"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "not allowed in the operation's current status"}
}


class OperationLogView(BaseModel):
    """``GET /api/v1/operations/{id}/logs``: the lines (JSON objects, oldest first)."""

    operation_id: str
    worker_id: str
    truncated: bool
    lines: list[dict[str, Any]]

    @classmethod
    def of(cls, log: OperationLog) -> OperationLogView:
        """The wire form of a fetched log (``worker_id`` is set)."""
        return cls.model_construct(
            operation_id=log.operation_id,
            worker_id=log.worker_id or "",
            truncated=log.truncated,
            lines=log.lines,
        )


def _json(view: BaseModel, status_code: int = 200) -> Response:
    return Response(view.model_dump_json(), status_code=status_code, media_type="application/json")


async def _json_of(read: Callable[[], BaseModel], *, exclude: Any = None) -> Response:
    """``read()`` (a store read) and its serialisation, both in a thread."""

    def body() -> str:
        return read().model_dump_json(exclude=exclude)

    return Response(await asyncio.to_thread(body), media_type="application/json")


def _field_error(loc: list[str | int], message: str, kind: str) -> ApiError:
    return ApiError(422, "invalid_request", [{"loc": loc, "msg": message, "type": kind}])


def _check_depth(value: Any, loc: list[str | int]) -> None:
    if json_depth_exceeds(value, MAX_JSON_DEPTH):
        raise _field_error(loc, f"nested deeper than {MAX_JSON_DEPTH} levels", "too_deep")


def _parameter_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """The model's field errors, located in the request body (``body.parameters.<f>``)."""
    items = describe_validation_errors(exc.errors())
    for item in items:
        item["loc"] = ["body", "parameters", *item["loc"]]
        item["msg"] = item["msg"].removeprefix("Value error, ")
    return items


def operations_routers(
    *,
    service: OperationsService,
    dispatcher: Dispatcher,
    reports: OperationReports,
    auth: WorkerCredentialAuth,
    listing: OperationListing,
    registry: WorkerRegistry | None = None,
) -> tuple[APIRouter, APIRouter]:
    """The ``/api/v1/operations`` routes: (worker reports, operator routes).

    ``auth`` authenticates the reporting worker by its own credential; ``listing``
    answers ``GET /api/v1/operations``; ``registry`` says which workers to ask for an
    operation's log (``GET .../logs``).

    Include both directly in the app (not nested), like the worker routes.
    """
    router = APIRouter(tags=["operations"])
    writes = APIRouter(route_class=auth.route_class(), tags=["operations"])
    max_operations_variable = env_name(attrs.fields(OperationsSettings).max_operations)

    @router.post(
        OPERATIONS_PATH,
        status_code=201,
        response_model=OperationView,
        responses={
            **_INVALID,
            413: {"model": ErrorBody, "description": "request body too large"},
            429: {"model": ErrorBody, "description": f"{max_operations_variable} reached"},
        },
        summary="Create an operation (running at once when a worker of its type is idle, "
        "else pending until one takes it)",
    )
    async def create_operation(body: CreateOperationRequest) -> Response:
        _check_depth(body.parameters, ["body", "parameters"])
        trace_parent = current_traceparent()  # this request's span begins the first attempt

        def create(idle: list[str]) -> tuple[OperationView, tuple[OperationView, str] | None]:
            return service.create_and_claim(
                body.type,
                body.parameters,
                trace_parent=trace_parent,
                timeout_s=body.timeout_s,
                claim_for=idle,
            )

        try:
            view = await dispatcher.create(body.type, create)
        except ValidationError as exc:
            raise ApiError(422, "invalid_request", _parameter_errors(exc)) from None
        return _json(view, 201)

    @router.get(
        OPERATIONS_PATH,
        response_model=OperationList,
        responses={
            **_INVALID,
            429: {"model": ErrorBody, "description": "operations listed too often (Retry-After)"},
        },
        summary="Operations, newest first, filtered by status and type, one page "
        f"(at most {MAX_PAGE_ITEMS}; the next with ?cursor=next_cursor; results only "
        "with ?include=result)",
    )
    async def list_operations(
        status: Annotated[OperationStatus | None, Query()] = None,
        operation_type: Annotated[OperationType | None, Query(alias="type")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_ITEMS)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
        include: Annotated[Literal["result"] | None, Query()] = None,
    ) -> Response:
        return await listing.respond(
            status=status,
            operation_type=operation_type,
            limit=limit,
            offset=offset,
            cursor=cursor,
            include_result=include == "result",
        )

    @router.get(
        _ONE,
        response_model=OperationView,
        responses=_NOT_FOUND,
        summary="One operation: status, progress, result or error, worker",
    )
    async def get_operation(operation_id: OperationId) -> Response:
        return await _json_of(lambda: service.get(operation_id))

    @router.get(
        _ONE + "/series",
        response_model=OperationSeries,
        responses=_NOT_FOUND,
        summary="One operation's series: loss and accuracy per epoch, or equity per bar",
    )
    async def get_series(operation_id: OperationId) -> Response:
        return await _json_of(lambda: service.series(operation_id))

    @router.get(
        _ONE + "/logs",
        response_model=OperationLogView,
        responses={
            **_NOT_FOUND,
            404: {"model": ErrorBody, "description": "unknown id, or no worker has its log"},
        },
        summary="The operation's worker-side log lines (its job process's included)",
    )
    async def operation_logs(operation_id: OperationId) -> Response:
        view = await asyncio.to_thread(service.get, operation_id)
        if registry is None:  # an app built without the registry cannot reach workers
            raise ApiError(404, "log_not_found", "this backend cannot reach its workers")
        log = await fetch_operation_log(view, registry=registry, dispatcher=dispatcher)
        if log.worker_id is None:
            raise ApiError(404, "log_not_found", log.reason)
        return _json(OperationLogView.of(log))

    @router.post(
        _ONE + "/cancel",
        response_model=OperationView,
        responses={**_NOT_FOUND, **_CONFLICT},
        summary="Cancel a pending or running operation (its worker saves a checkpoint)",
    )
    async def cancel_operation(operation_id: OperationId, background: BackgroundTasks) -> Response:
        view = await asyncio.to_thread(service.cancel, operation_id)
        with operation_context(view.id, attempt=attempt_of(view)):
            logger.info("operation %s cancelled by an operator", view.id)
        if view.worker_id is not None:
            background.add_task(
                dispatcher.cancel_on_worker, view.id, view.worker_id, attempt=view.attempt
            )
        return _json(view)

    @router.post(
        _ONE + "/resume",
        response_model=OperationView,
        responses={**_NOT_FOUND, **_CONFLICT},
        summary="Queue a failed or cancelled operation to continue from its checkpoint",
    )
    async def resume_operation(operation_id: OperationId) -> Response:
        view = await asyncio.to_thread(
            service.resume, operation_id, trace_parent=current_traceparent()
        )
        with operation_context(view.id, attempt=attempt_of(view)):
            logger.info("operation %s queued again to resume from its checkpoint", view.id)
        dispatcher.wake()
        return _json(view)

    @writes.post(
        _ONE + "/report",
        response_model=ReportAnswer,
        responses={
            401: {"model": ErrorBody, "description": "not a registered worker's credential"},
            **_INVALID,
            **_NOT_FOUND,
            **_CONFLICT,
        },
        summary="A worker reports how an attempt ended (only the worker running the "
        "current attempt; 409 stale_attempt otherwise); with take_next, the answer may "
        "carry its next operation",
    )
    async def report_operation(
        operation_id: OperationId, body: OperationReport, request: Request
    ) -> Response:
        if not body.status.finished:
            message = "a report needs a final status: completed, failed or cancelled"
            raise _field_error(["body", "status"], message, "enum")
        if body.result is not None:
            _check_depth(body.result, ["body", "result"])
        try:
            view = await reports.report(operation_id, body, worker=authenticated_worker(request))
        except ValueError as exc:  # e.g. NaN in the result: the store keeps plain JSON only
            raise _field_error(["body", "result"], str(exc), "value_error") from None
        return _json(view)

    @writes.post(
        _ONE + "/release",
        response_model=OperationView,
        responses={
            401: {"model": ErrorBody, "description": "not a registered worker's credential"},
            **_INVALID,
            **_NOT_FOUND,
            **_CONFLICT,
        },
        summary="A worker gives back an operation handed to it with a report's answer that "
        "it could not start (pending again in its old place, the attempt given back)",
    )
    async def release_operation(
        operation_id: OperationId, body: ReleaseOperationRequest, request: Request
    ) -> Response:
        worker = authenticated_worker(request)
        if body.worker_id != worker.worker_id:
            message = (
                f"the credential is worker {worker.worker_id!r}'s; it cannot release "
                "another worker's operation"
            )
            raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
        reason = body.reason or "it could not start it"
        view = await dispatcher.give_back(operation_id, worker, attempt=body.attempt, reason=reason)
        return _json(view)

    return writes, router
