"""The worker's client for the backend: register, heartbeat, unregister, report.

It wraps an injected ``httpx.AsyncClient`` (tests use ``httpx.MockTransport``) and
turns every outcome into a return value or one of three exceptions from
``ktrdr.errors``, so the runtime decides about retries by type:
:class:`~ktrdr.errors.BackendUnavailable` (network trouble, 5xx: try again later),
:class:`~ktrdr.errors.BackendRejected` (4xx: this request will not succeed as is),
:class:`~ktrdr.errors.WorkerNotRegistered` (404 or 401 on a worker path: the backend
forgot us or no longer takes our credential, register again).

A backend that can hand a worker its next operation in the answer to a report says
so in its registration answer (``HANDOFF_HEADER``); only then does a report carry
``take_next`` (a backend from before it would refuse the field), and the answer's
``next_operation`` is read (:meth:`BackendClient.report_operation` returns it).

Two secrets: the shared worker token, sent only to register, and the credential the
registration answers with, sent on every heartbeat, report and unregister (a new
registration replaces it). Both go in headers only, never in a log line or a message.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from ktrdr.config import Secret
from ktrdr.errors import (
    AttemptNotCurrent,
    BackendRejected,
    BackendUnreachable,
    WorkerNotRegistered,
)
from ktrdr.protocol import (
    HANDOFF_HEADER,
    OPERATIONS_PATH,
    REGISTER_PATH,
    WORKERS_PATH,
    Handoff,
    HeartbeatRequest,
    OperationReport,
    RegisterRequest,
    RegisterResponse,
    ReleaseOperationRequest,
)
from ktrdr.web.http_client import (
    backend_error,
    bearer_headers,
    describe_error,
    read_error_body,
)

logger = logging.getLogger(__name__)

#: The backend's error code for a heartbeat or report of an attempt that is not current.
STALE_ATTEMPT = "stale_attempt"


class BackendClient:
    """Typed calls to the backend's worker and operation-report endpoints."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        token: Secret,
        timeout: datetime.timedelta,
    ) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self._token_headers = bearer_headers(token)
        #: Headers carrying the latest registration's credential (None: not registered).
        self._worker_headers: dict[str, str] | None = None
        #: Bumped by every registration, so a caller can tell whether it re-registered.
        self.registrations = 0
        #: True when the latest registration's answer said the backend hands over the
        #: next operation in the answer to a report (reports may carry ``take_next``).
        self.hands_off = False
        self.timeout_s = timeout.total_seconds()

    @property
    def has_credential(self) -> bool:
        """True once a registration answered with a credential."""
        return self._worker_headers is not None

    def _credential_headers(self, what: str) -> dict[str, str]:
        if self._worker_headers is None:
            message = f"{what}: not registered yet (no credential)"
            raise WorkerNotRegistered(message, status_code=401)
        return self._worker_headers

    async def _send(
        self,
        method: str,
        path: str,
        body: BaseModel | None = None,
        *,
        headers: dict[str, str],
        timeout_s: float | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        url = self.base_url + path
        if body is not None:
            content = body.model_dump_json().encode()
        timeout = self.timeout_s if timeout_s is None else max(0.01, timeout_s)
        try:
            response = await self._http.request(
                method, url, content=content, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            message = f"{method} {url} failed: {type(exc).__name__}"
            raise BackendUnreachable(message) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise backend_error(response, f"{method} {url}")
        return response

    async def register(self, request: RegisterRequest) -> None:
        """``POST /api/v1/workers/register`` with the shared token; keeps the credential."""
        response = await self._send("POST", REGISTER_PATH, request, headers=self._token_headers)
        if response.status_code >= 400:
            raise backend_error(response, "registration")
        try:
            answer = RegisterResponse.model_validate_json(response.content)
        except ValidationError:
            message = "registration: the backend's answer carries no usable credential"
            raise BackendRejected(message, status_code=response.status_code) from None
        self._worker_headers = bearer_headers(Secret(answer.credential))
        self.hands_off = response.headers.get(HANDOFF_HEADER) == "1"
        self.registrations += 1

    async def heartbeat(self, worker_id: str, request: HeartbeatRequest) -> None:
        """``POST /api/v1/workers/{id}/heartbeat``.

        Raises ``WorkerNotRegistered`` on 404 (the backend forgot us) and on 401 (our
        credential was replaced): either way, register again.
        """
        path = f"{WORKERS_PATH}/{quote(worker_id, safe='')}/heartbeat"
        headers = self._credential_headers("heartbeat")
        response = await self._send("POST", path, request, headers=headers)
        if response.status_code in (401, 404):
            message = f"heartbeat: {describe_error(response)}"
            raise WorkerNotRegistered(message, status_code=response.status_code)
        _raise_if_stale(response, "heartbeat")
        if response.status_code >= 400:
            raise backend_error(response, "heartbeat")

    async def unregister(self, worker_id: str, *, timeout_s: float | None = None) -> bool:
        """``DELETE /api/v1/workers/{id}``; False when the backend did not know us
        (or we never registered).
        """
        if self._worker_headers is None:
            return False
        path = f"{WORKERS_PATH}/{quote(worker_id, safe='')}"
        response = await self._send(
            "DELETE", path, headers=self._worker_headers, timeout_s=timeout_s
        )
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise backend_error(response, "unregister")
        self._worker_headers = None
        return True

    async def report_operation(
        self,
        operation_id: str,
        report: OperationReport | Mapping[str, Any],
        *,
        take_next: bool = False,
        timeout_s: float | None = None,
    ) -> Handoff | None:
        """``POST /api/v1/operations/{id}/report``, once; the next operation the answer
        hands over, if any.

        ``report`` is the model or its body as plain JSON (an outbox entry: sent exactly
        as stored); ``take_next`` adds the request for the next operation (only when
        the backend said it :attr:`hands_off`). Raises
        :class:`~ktrdr.errors.BackendUnavailable` (no answer, 5xx, 429: try again
        later), ``WorkerNotRegistered`` on 401 (register again, then report again) or
        :class:`~ktrdr.errors.BackendRejected` for any other 4xx (a 409: the backend
        will not take this outcome). Retrying is the caller's business
        (``ktrdr.workers.delivery`` retries for as long as the worker runs).
        """
        path = f"{OPERATIONS_PATH}/{quote(operation_id, safe='')}/report"
        headers = self._credential_headers(f"report of operation {operation_id}")
        body: dict[str, Any] = (
            json.loads(report.model_dump_json()) if isinstance(report, BaseModel) else dict(report)
        )
        if take_next and self.hands_off:
            body["take_next"] = True
        content = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        response = await self._send(
            "POST", path, content=content, headers=headers, timeout_s=timeout_s
        )
        if response.status_code == 401:
            message = f"report of operation {operation_id}: {describe_error(response)}"
            raise WorkerNotRegistered(message, status_code=401)
        _raise_if_stale(response, f"report of operation {operation_id}")
        if response.status_code >= 400:
            raise backend_error(response, f"report of operation {operation_id}")
        return _handoff_in(response, operation_id)

    async def release_operation(self, operation_id: str, request: ReleaseOperationRequest) -> None:
        """``POST /api/v1/operations/{id}/release``: give back an operation handed over
        that this worker could not start. Raises like :meth:`report_operation`.
        """
        path = f"{OPERATIONS_PATH}/{quote(operation_id, safe='')}/release"
        headers = self._credential_headers(f"release of operation {operation_id}")
        response = await self._send("POST", path, request, headers=headers)
        if response.status_code == 401:
            message = f"release of operation {operation_id}: {describe_error(response)}"
            raise WorkerNotRegistered(message, status_code=401)
        if response.status_code >= 400:
            raise backend_error(response, f"release of operation {operation_id}")


def _handoff_in(response: httpx.Response, operation_id: str) -> Handoff | None:
    """The ``next_operation`` of a report's answer; None when it has none.

    An answer that names one this worker cannot read is logged: the backend has it
    running here, and its orphan detector will queue it again.
    """
    if b'"next_operation"' not in response.content:
        return None
    try:
        handed = json.loads(response.content)["next_operation"]
        return Handoff.model_validate(handed) if handed is not None else None
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        logger.error(
            "the answer to the report of operation %s hands over an operation this worker "
            "cannot read (%s); the backend will find it orphaned",
            operation_id,
            type(exc).__name__,
        )
        return None


def _raise_if_stale(response: httpx.Response, what: str) -> None:
    """Raise :class:`AttemptNotCurrent` for a 409 ``stale_attempt`` answer."""
    if response.status_code != 409:
        return
    body = read_error_body(response)
    if body is not None and body.error == STALE_ATTEMPT:
        raise AttemptNotCurrent(f"{what}: {describe_error(response)}", status_code=409)


__all__ = ["STALE_ATTEMPT", "BackendClient"]
