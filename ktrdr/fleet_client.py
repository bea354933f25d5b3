"""An operator's HTTP client for the backend: workers and operations.

Used by the ``ktrdr workers`` / ``ktrdr ops`` commands and ``ktrdr up``. Every
request carries the operator token (``Authorization: Bearer``). It returns the
backend's JSON as plain data and turns failures into the backend errors of
``ktrdr.errors``, each printable as one line: :class:`BackendUnreachable` (no
answer), :class:`BackendUnavailable` (5xx, 429), :class:`OperatorTokenRefused` (401,
naming the variable to set), :class:`BackendRejected` (other 4xx); all are
:class:`BackendError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import attrs
import httpx

from ktrdr.config import AuthSettings, Secret, env_name
from ktrdr.errors import (
    BackendError,
    BackendRejected,
    BackendUnavailable,
    BackendUnreachable,
    OperatorTokenRefused,
)
from ktrdr.protocol import MAX_PAGE_ITEMS, OPERATIONS_PATH, WORKERS_PATH
from ktrdr.web.http_client import backend_error

#: A 429's Retry-After the client waits out when following pages (longer: it gives up).
MAX_RETRY_AFTER_S = 30
#: 429s in a row the client waits out before it gives up.
MAX_RETRIES = 5


def _retry_after(response: httpx.Response) -> int | None:
    """Seconds a 429 asks to wait, if it says and it is short enough to wait."""
    try:
        seconds = int(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if 0 <= seconds <= MAX_RETRY_AFTER_S else None


def _one(operation_id: str) -> str:
    """The path of one operation; the id is percent-encoded, so it stays one segment."""
    return f"{OPERATIONS_PATH}/{quote(operation_id, safe='')}"


class FleetClient:
    """Thin typed-at-the-edges wrapper over the backend's operator endpoints.

    ``token`` is the operator token (None sends none); ``token_source`` says where it
    came from (``file data/operator_token``), for the message of a 401. ``sleep``
    waits out a 429's ``Retry-After`` while following pages.
    """

    def __init__(
        self,
        *,
        base_url: str,
        client: httpx.Client,
        token: Secret | None = None,
        token_source: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._sleep = sleep
        self._headers = {"Authorization": f"Bearer {token.reveal()}"} if token else {}
        self._token_source = token_source or ("a token" if token else "no token sent")

    def _request(self, method: str, path: str, *, patient: bool = False, **kwargs: Any) -> Any:
        """One request; ``patient`` waits out a few short 429s (listing budgets) first."""
        url = self.base_url + path
        for _ in range(MAX_RETRIES + 1):
            try:
                response = self._client.request(method, url, headers=self._headers, **kwargs)
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
                message = f"cannot reach the backend at {self.base_url} ({reason})"
                raise BackendUnreachable(message) from None
            wait = _retry_after(response) if response.status_code == 429 and patient else None
            if wait is None:
                break
            self._sleep(max(wait, 1))  # pacing against the backend's Retry-After
        if response.status_code == httpx.codes.UNAUTHORIZED:
            raise self._refused()
        if response.status_code >= 400:
            raise backend_error(response)
        return response.json()

    def _refused(self) -> OperatorTokenRefused:
        variable = env_name(attrs.fields(AuthSettings).operator_token)
        message = (
            f"the backend at {self.base_url} refused the operator token "
            f"({self._token_source}); set {variable} (or {variable}_FILE, or --token) "
            "to the backend's operator token"
        )
        return OperatorTokenRefused(message, status_code=401)

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        result: dict[str, Any] = self._request("GET", "/health")
        return result

    def workers(
        self, *, worker_type: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """``GET /api/v1/workers``: every registered worker (of that type, in that status)."""
        params = {k: v for k, v in (("type", worker_type), ("status", status)) if v}
        result: list[dict[str, Any]] = self._request(
            "GET", WORKERS_PATH, patient=True, params=params
        )
        return result

    def submit(
        self, operation_type: str, parameters: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """``POST /api/v1/operations``: create an operation (each attempt limited to
        ``timeout_s`` seconds, if given); returns it.
        """
        body: dict[str, Any] = {"type": operation_type, "parameters": parameters}
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        result: dict[str, Any] = self._request("POST", OPERATIONS_PATH, json=body)
        return result

    def operations(
        self,
        *,
        status: str | None = None,
        operation_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
        cursor: str | None = None,
        include_result: bool = False,
    ) -> dict[str, Any]:
        """``GET /api/v1/operations``: one page ``{"items", "total", "next_cursor", ...}``.

        ``cursor`` (a previous page's ``next_cursor``, with the same filters)
        continues after that page; results only if asked.
        """
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        elif offset:
            params["offset"] = offset
        if include_result:
            params["include"] = "result"
        if status:
            params["status"] = status
        if operation_type:
            params["type"] = operation_type
        result: dict[str, Any] = self._request(
            "GET", OPERATIONS_PATH, patient=cursor is not None, params=params
        )
        return result

    def operation_pages(
        self,
        *,
        status: str | None = None,
        operation_type: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        include_result: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Pages of ``GET /api/v1/operations`` until ``limit`` operations (None: all).

        Follows each page's ``next_cursor`` (the first page may skip ``offset`` rows)
        in pages of at most 200, waiting out a short ``429`` ``Retry-After`` between
        pages. The last page is cut to ``limit``.
        """
        left = limit
        cursor = None
        while left is None or left > 0:
            size = MAX_PAGE_ITEMS if left is None else min(left, MAX_PAGE_ITEMS)
            page = self.operations(
                status=status,
                operation_type=operation_type,
                limit=size,
                offset=offset,
                cursor=cursor,
                include_result=include_result,
            )
            if left is not None:
                left -= len(page["items"])
            yield page
            cursor = page.get("next_cursor")
            if cursor is None:
                return

    def operation(self, operation_id: str) -> dict[str, Any]:
        """``GET /api/v1/operations/{id}``."""
        result: dict[str, Any] = self._request("GET", _one(operation_id))
        return result

    def series(self, operation_id: str) -> dict[str, Any]:
        """``GET /api/v1/operations/{id}/series``: ``{"x": ..., "series": {name: [[x, y]]}}``."""
        result: dict[str, Any] = self._request("GET", _one(operation_id) + "/series")
        return result

    def logs(self, operation_id: str) -> dict[str, Any]:
        """``GET /api/v1/operations/{id}/logs``: the worker-side log ``{"lines": [...]}``."""
        result: dict[str, Any] = self._request("GET", _one(operation_id) + "/logs")
        return result

    def cancel(self, operation_id: str) -> dict[str, Any]:
        """``POST /api/v1/operations/{id}/cancel``."""
        result: dict[str, Any] = self._request("POST", _one(operation_id) + "/cancel")
        return result

    def resume(self, operation_id: str) -> dict[str, Any]:
        """``POST /api/v1/operations/{id}/resume``."""
        result: dict[str, Any] = self._request("POST", _one(operation_id) + "/resume")
        return result


__all__ = [
    "BackendError",
    "BackendRejected",
    "BackendUnavailable",
    "BackendUnreachable",
    "FleetClient",
    "OperatorTokenRefused",
]
