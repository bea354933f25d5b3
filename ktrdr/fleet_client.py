"""An operator's HTTP client for the backend: workers and operations.

Used by the ``ktrdr workers`` / ``ktrdr ops`` commands and ``ktrdr up``. It returns
the backend's JSON as plain data and turns transport failures and error responses
into two exception types a command can print as one line.
"""

from __future__ import annotations

from typing import Any

import httpx

from ktrdr.errors import KtrdrError
from ktrdr.protocol import OPERATIONS_PATH, WORKERS_PATH


class BackendUnreachable(KtrdrError):
    """The backend did not answer (down, wrong URL, timeout)."""


class BackendError(KtrdrError):
    """The backend answered with an error status; the message is the backend's."""

    def __init__(self, status_code: int, message: str) -> None:
        self.status_code = status_code
        super().__init__(message)


def describe_error_body(response: httpx.Response) -> str:
    """One line from a JSON error body ``{"error", "detail"}`` (422 field errors included)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    message = str(body.get("error") or f"HTTP {response.status_code}")
    detail = body.get("detail")
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body",))
                parts.append(f"{loc}: {item.get('msg', item)}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        message = f"{message}: {'; '.join(parts)}" if parts else message
    elif detail:
        message = f"{message}: {detail}"
    return message


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
            raise BackendError(response.status_code, describe_error_body(response))
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
