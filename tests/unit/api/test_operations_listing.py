"""GET /api/v1/operations at scale: cursors over HTTP, bounded offset and count, 429."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.backend import Backend, make_backend, open_store
from support.operation_rows import insert_rows, row

from ktrdr.api.cursors import CURSOR_TTL
from ktrdr.api.list_budget import ListBudget, ListBudgets
from ktrdr.api.operations_listing import MAX_OFFSET
from ktrdr.api.store import OperationStore
from ktrdr.protocol import MAX_COUNTED, MAX_PAGE_ITEMS

pytestmark = pytest.mark.anyio

OPS = "/api/v1/operations"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OperationStore]:
    """A fresh SQLite store with 95 operations (op-00000000 .. op-00000094)."""
    store = open_store(tmp_path)
    insert_rows(store, [row(i) for i in range(95)])
    yield store
    store.close()


@pytest.fixture
def backend(store: OperationStore) -> Backend:
    """A backend over ``store``."""
    return make_backend(store)


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    """An operator's client."""
    async with backend.client() as client:
        yield client


async def follow(client: httpx.AsyncClient, params: dict[str, Any]) -> list[str]:
    """Every id over all pages, following next_cursor."""
    seen: list[str] = []
    query = dict(params)
    while True:
        response = await client.get(OPS, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return seen
        query = {k: v for k, v in params.items() if k != "offset"} | {"cursor": page["next_cursor"]}


@pytest.mark.parametrize(
    "params", [{}, {"status": "completed"}, {"type": "backtest", "status": "completed"}]
)
async def test_following_next_cursor_lists_every_operation_once(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    """Pages of 10 chained by next_cursor give exactly the one big page's operations."""
    whole = (await client.get(OPS, params={**params, "limit": MAX_PAGE_ITEMS})).json()

    paged = await follow(client, {**params, "limit": 10})

    assert paged == [item["id"] for item in whole["items"]]
    assert whole["next_cursor"] is None


async def test_a_page_says_total_and_whether_more_follow(client: httpx.AsyncClient) -> None:
    """The first page carries the count, limit, offset and a cursor; the last has none."""
    first = (await client.get(OPS, params={"limit": 90})).json()
    last = (await client.get(OPS, params={"limit": 90, "cursor": first["next_cursor"]})).json()

    assert (first["total"], first["limit"], first["offset"]) == (95, 90, 0)
    assert isinstance(first["next_cursor"], str)
    assert [len(first["items"]), len(last["items"])] == [90, 5]
    assert last["next_cursor"] is None


async def test_the_total_is_null_above_the_counted_maximum(
    store: OperationStore, client: httpx.AsyncClient
) -> None:
    """More than MAX_COUNTED matches: total is null (the page itself is unchanged)."""
    insert_rows(store, [row(i) for i in range(95, MAX_COUNTED + 1)])

    page = (await client.get(OPS, params={"limit": 5})).json()
    filtered = (await client.get(OPS, params={"limit": 5, "status": "pending"})).json()

    assert page["total"] is None
    assert len(page["items"]) == 5
    assert filtered["total"] == (MAX_COUNTED + 1) // 20


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": MAX_PAGE_ITEMS + 1}, "limit"),
        ({"offset": MAX_OFFSET + 1}, "offset"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "a" * 1025}, "cursor"),
    ],
)
async def test_bad_paging_is_422_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    """limit over 200, offset over 10,000, a malformed or overlong cursor: 422 at that field."""
    response = await client.get(OPS, params=params)

    assert response.status_code == 422
    assert [item["loc"] for item in response.json()["detail"]] == [["query", field]]


async def _cursor(client: httpx.AsyncClient, **params: Any) -> str:
    page = (await client.get(OPS, params={"limit": 3, **params})).json()
    cursor: str = page["next_cursor"]
    return cursor


async def test_a_cursor_with_other_filters_is_422(client: httpx.AsyncClient) -> None:
    """A cursor from the completed listing cannot page the failed listing."""
    cursor = await _cursor(client, status="completed")

    response = await client.get(OPS, params={"status": "failed", "cursor": cursor})

    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["query", "cursor"]
    assert "another listing" in detail["msg"]


async def test_a_workers_cursor_is_not_an_operations_cursor(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """A cursor from GET /api/v1/workers is refused here (another listing)."""
    for i in range(3):
        backend.register(f"w{i}")
    workers = await client.get("/api/v1/workers", params={"limit": 1})
    cursor = httpx.URL(workers.links["next"]["url"]).params["cursor"]

    response = await client.get(OPS, params={"cursor": cursor})

    assert response.status_code == 422
    assert "another listing" in response.json()["detail"][0]["msg"]


async def test_an_expired_cursor_is_422(backend: Backend, client: httpx.AsyncClient) -> None:
    """A cursor past its lifetime is refused, saying it expired and what to do."""
    cursor = await _cursor(client)
    backend.clock.advance(CURSOR_TTL.total_seconds() + 1)

    response = await client.get(OPS, params={"cursor": cursor})

    assert response.status_code == 422
    assert "expired" in response.json()["detail"][0]["msg"]
    assert "start again without cursor" in response.json()["detail"][0]["msg"]


async def test_a_cursor_from_before_a_restart_is_422(
    backend: Backend, store: OperationStore
) -> None:
    """Another backend (or this one after a restart) does not accept the cursor."""
    async with backend.client() as client:
        cursor = await _cursor(client)
    async with make_backend(store).client() as client:
        response = await client.get(OPS, params={"cursor": cursor})

    assert response.status_code == 422
    assert "not issued by this backend" in response.json()["detail"][0]["msg"]


async def test_cursor_and_offset_together_are_422(client: httpx.AsyncClient) -> None:
    """A request cannot both skip rows and continue from a cursor."""
    cursor = await _cursor(client)

    response = await client.get(OPS, params={"cursor": cursor, "offset": 3})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "offset"]


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_listing_too_often_is_429_with_retry_after(store: OperationStore) -> None:
    """Past the operations budget a page is 429 with Retry-After; after it, 200 again."""
    clock = Monotonic()
    budgets = ListBudgets(
        workers=ListBudget(what="workers", rate_per_s=1000, clock=clock),
        operations=ListBudget(what="operations", rate_per_s=50, clock=clock),
    )
    async with make_backend(store, budgets=budgets).client() as client:
        first = await client.get(OPS, params={"limit": 95})  # 45 in debt: 0.9 s
        refused = await client.get(OPS, params={"limit": 1})
        clock.now += int(refused.headers["retry-after"])
        again = await client.get(OPS, params={"limit": 1})

    assert first.status_code == 200
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert "at most 50 operations per second" in refused.json()["detail"]
    assert again.status_code == 200


async def test_the_api_description_documents_cursor_and_limits(
    client: httpx.AsyncClient,
) -> None:
    """OpenAPI shows the cursor parameter, the bounds and the 429 of the listing."""
    schema = (await client.get("/openapi.json")).json()
    listing = schema["paths"][OPS]["get"]
    parameters = {p["name"]: p["schema"] for p in listing["parameters"]}

    assert "cursor" in parameters
    assert parameters["limit"]["maximum"] == MAX_PAGE_ITEMS
    assert parameters["offset"]["maximum"] == MAX_OFFSET
    assert "429" in listing["responses"]
    assert "next_cursor" in schema["components"]["schemas"]["OperationList"]["properties"]
