"""An operator's HTTP client for the backend: workers and operations.

Used by the ``ktrdr workers`` / ``ktrdr ops`` commands and ``ktrdr up``. It returns
the backend's JSON as plain data and turns failures into the backend errors of
``ktrdr.errors``, each printable as one line: :class:`BackendUnreachable` (no
answer), :class:`BackendUnavailable` (5xx, 429), :class:`BackendRejected` (4xx);
all are :class:`BackendError`.
"""

from __future__ import annotations

from typing import Any

import httpx

from ktrdr.errors import BackendError, BackendRejected, BackendUnavailable, BackendUnreachable
from ktrdr.protocol import OPERATIONS_PATH, WORKERS_PATH
from ktrdr.web.http_client import backend_error


class FleetClient:
    """Thin typed-at-the-edges wrapper over the backend's operator endpoints."""

    def __init__(self, *, base_url: str, client: httpx.Client) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.base_url + path
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            message = f"cannot reach the backend at {self.base_url} ({reason})"
            raise BackendUnreachable(message) from None
        if response.status_code >= 400:
            raise backend_error(response)
        return response.json()

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        result: dict[str, Any] = self._request("GET", "/health")
        return result

    def workers(self) -> list[dict[str, Any]]:
        """``GET /api/v1/workers``: every registered worker."""
        result: list[dict[str, Any]] = self._request("GET", WORKERS_PATH)
        return result

    def submit(self, operation_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/v1/operations``: create an operation; returns it."""
        body = {"type": operation_type, "parameters": parameters}
        result: dict[str, Any] = self._request("POST", OPERATIONS_PATH, json=body)
        return result

    def operations(
        self,
        *,
        status: str | None = None,
        operation_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """``GET /api/v1/operations``: a page ``{"items", "total", ...}``."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        if operation_type:
            params["type"] = operation_type
        result: dict[str, Any] = self._request("GET", OPERATIONS_PATH, params=params)
        return result

    def operation(self, operation_id: str) -> dict[str, Any]:
        """``GET /api/v1/operations/{id}``."""
        result: dict[str, Any] = self._request("GET", f"{OPERATIONS_PATH}/{operation_id}")
        return result

    def cancel(self, operation_id: str) -> dict[str, Any]:
        """``POST /api/v1/operations/{id}/cancel``."""
        result: dict[str, Any] = self._request("POST", f"{OPERATIONS_PATH}/{operation_id}/cancel")
        return result

    def resume(self, operation_id: str) -> dict[str, Any]:
        """``POST /api/v1/operations/{id}/resume``."""
        result: dict[str, Any] = self._request("POST", f"{OPERATIONS_PATH}/{operation_id}/resume")
        return result


__all__ = [
    "BackendError",
    "BackendRejected",
    "BackendUnavailable",
    "BackendUnreachable",
    "FleetClient",
]
