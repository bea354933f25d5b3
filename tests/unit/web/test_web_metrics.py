"""GET /metrics plumbing: token check before anything is read, format by Accept header."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.routing import Route

from ktrdr.config import Secret
from ktrdr.web import BearerAuth
from ktrdr.web.metrics import METRICS_PATH, ScrapeAuth, metrics_endpoint

pytestmark = pytest.mark.anyio


def _client(refreshed: list[bool]) -> httpx.AsyncClient:
    registry = CollectorRegistry()
    Counter("ktrdr_test_events", "events", registry=registry).inc(3)

    async def refresh() -> None:
        refreshed.append(True)

    auth = ScrapeAuth.of(BearerAuth(Secret("own-token"), variable="KTRDR_OWN"), Secret("scrape"))
    endpoint = metrics_endpoint(registry, auth=auth, refresh=refresh)
    app = Starlette(routes=[Route(METRICS_PATH, endpoint, methods=["GET"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://server")


async def test_a_refused_scrape_reads_nothing() -> None:
    """401 naming both variables; the scrape-time refresh never ran."""
    refreshed: list[bool] = []
    async with _client(refreshed) as client:
        response = await client.get(METRICS_PATH, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "KTRDR_OWN or KTRDR_METRICS_TOKEN" in response.json()["detail"]
    assert refreshed == []


async def test_either_token_reads_the_text_format_or_openmetrics_when_asked() -> None:
    """The server's own token and the scrape token both read; Accept picks OpenMetrics."""
    refreshed: list[bool] = []
    async with _client(refreshed) as client:
        text = await client.get(METRICS_PATH, headers={"Authorization": "Bearer own-token"})
        open_metrics = await client.get(
            METRICS_PATH,
            headers={
                "Authorization": "Bearer scrape",
                "Accept": "application/openmetrics-text; version=1.0.0",
            },
        )
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    assert "ktrdr_test_events_total 3.0" in text.text
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")
    assert refreshed == [True, True]
