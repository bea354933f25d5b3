"""``GET /metrics``: a prometheus-client registry served the same way by backend and workers.

Each server builds its own :class:`~prometheus_client.CollectorRegistry` (never the
library's global one, so two apps in one test process never share a count) and
serves it here. The route checks its bearer tokens itself, before it reads
anything: the backend's takes the operator token, a worker's the worker token, and
both take ``KTRDR_METRICS_TOKEN`` when it is set (a read-only credential for
Prometheus). The format follows the scraper's ``Accept`` header (the Prometheus
text format, or OpenMetrics when asked for).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import attrs
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from ktrdr.config import MetricsSettings, Secret, env_name
from ktrdr.web.bearer_auth import BearerAuth
from ktrdr.web.http_errors import ApiError, error_response

__all__ = ["METRICS_PATH", "METRICS_TOKEN", "ScrapeAuth", "metrics_endpoint"]

#: Where both servers serve their metrics.
METRICS_PATH = "/metrics"
#: The variable of the read-only scrape token.
METRICS_TOKEN = env_name(attrs.fields(MetricsSettings).token)


class ScrapeAuth:
    """Accepts any of several bearer tokens (the server's own, and the scrape token)."""

    def __init__(self, accepted: Sequence[BearerAuth]) -> None:
        self._accepted = tuple(accepted)

    @classmethod
    def of(cls, own: BearerAuth, scrape_token: Secret | None) -> ScrapeAuth:
        """``own`` and, when it is set, ``KTRDR_METRICS_TOKEN``."""
        accepted = [own]
        if scrape_token is not None:
            accepted.append(BearerAuth(scrape_token, variable=METRICS_TOKEN))
        return cls(accepted)

    def is_authorized(self, authorization: str | None) -> bool:
        """True when ``authorization`` carries one of the accepted tokens."""
        return any(auth.is_authorized(authorization) for auth in self._accepted)

    def refusal(self) -> ApiError:
        """The 401: names the variables that hold an accepted token, never a token."""
        variables = " or ".join(auth.variable for auth in self._accepted)
        message = (
            "missing or wrong bearer token; send 'Authorization: Bearer <token>' "
            f"with the token configured in {variables}"
        )
        return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def metrics_endpoint(
    registry: CollectorRegistry,
    *,
    auth: ScrapeAuth,
    refresh: Callable[[], Awaitable[None]] | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving ``registry``; ``refresh`` runs first (scrape-time gauges).

    An unauthorized request gets the JSON 401 and nothing else: ``refresh`` does not
    run and no metric is read.
    """

    async def metrics(request: Request) -> Response:
        if not auth.is_authorized(request.headers.get("authorization")):
            refusal = auth.refusal()
            return error_response(
                refusal.status_code, refusal.error, refusal.detail, headers=refusal.headers
            )
        if refresh is not None:
            await refresh()
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    return metrics
