"""GET /api/v1/workers at scale: filters, pages with cursors, the listing budget (429)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from support.backend import AUTH, Backend, make_backend, open_store

from ktrdr.api.cursors import CURSOR_TTL
from ktrdr.api.list_budget import ListBudget, ListBudgets
from ktrdr.api.store import OperationStore
from ktrdr.protocol import HeartbeatRequest, OperationType, WorkerStatus

pytestmark = pytest.mark.anyio

WORKERS = "/api/v1/workers"


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperationStore]:
    """One operations store for the module (these tests are about workers)."""
    store = open_store(tmp_path_factory.mktemp("operations"))
    yield store
    store.close()


@pytest.fixture
def backend(shared_store: OperationStore) -> Backend:
    """A backend with 30 workers: w00..w29, even ones training, every third busy."""
    backend = make_backend(shared_store)
    for i in range(30):
        worker_id = f"w{i:02d}"
        kind = OperationType.TRAINING if i % 2 == 0 else OperationType.BACKTEST
        backend.register(worker_id, kind)
        if i % 3 == 0:
            busy = HeartbeatRequest(status=WorkerStatus.BUSY, current_operation_id=f"op-{i}")
            backend.registry.heartbeat(worker_id, busy, now=backend.clock())
    return backend


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    """An operator's client for ``backend``."""
    async with backend.client() as client:
        yield client


def ids(response: httpx.Response) -> list[str]:
    return [item["worker_id"] for item in response.json()]


async def follow(client: httpx.AsyncClient, url: str) -> tuple[list[str], int]:
    """Every worker id over all pages from ``url`` (following Link rel=next); pages read."""
    seen: list[str] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        response = await client.get(next_url)
        assert response.status_code == 200, response.text
        seen += ids(response)
        pages += 1
        link = response.links.get("next")
        next_url = None if link is None else link["url"]
    return seen, pages


async def test_without_limit_the_whole_fleet_is_one_array_by_id(client: httpx.AsyncClient) -> None:
    """No limit: every worker, ordered by id, with the count in X-Total-Count and no Link."""
    response = await client.get(WORKERS)

    assert ids(response) == [f"w{i:02d}" for i in range(30)]
    assert response.headers["x-total-count"] == "30"
    assert "link" not in response.headers


async def test_type_and_status_filter_the_list(client: httpx.AsyncClient) -> None:
    """type and status select workers; X-Total-Count counts the matches."""
    training = await client.get(WORKERS, params={"type": "training"})
    busy = await client.get(WORKERS, params={"status": "busy"})
    both = await client.get(WORKERS, params={"type": "backtest", "status": "busy"})

    assert ids(training) == [f"w{i:02d}" for i in range(0, 30, 2)]
    assert ids(busy) == [f"w{i:02d}" for i in range(0, 30, 3)]
    assert ids(both) == ["w03", "w09", "w15", "w21", "w27"]
    assert both.headers["x-total-count"] == "5"


@pytest.mark.parametrize("params", [{}, {"type": "training"}, {"status": "idle"}])
async def test_pages_return_every_matching_worker_exactly_once(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    """Following Link rel=next from ?limit=7 gives the same workers as the full list."""
    full = ids(await client.get(WORKERS, params=params))
    first = httpx.URL(WORKERS, params={**params, "limit": 7})

    paged, pages = await follow(client, str(first))

    assert paged == full
    assert pages == -(-len(full) // 7)


async def test_pages_stay_exact_while_workers_come_and_go(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Workers added or removed mid-listing never make a listed worker appear twice or vanish."""
    first = await client.get(WORKERS, params={"limit": 10})
    seen = ids(first)
    backend.registry.unregister("w05")  # already listed
    backend.registry.unregister("w15")  # not yet listed: gone before its page
    backend.register("w10a")  # sorts after the cursor: listed later
    backend.register("a-first")  # sorts before the cursor: not on later pages
    rest, _ = await follow(client, first.links["next"]["url"])

    listed = seen + rest
    assert len(listed) == len(set(listed))
    assert "w15" not in listed
    assert "w10a" in listed
    assert set(listed) >= {f"w{i:02d}" for i in range(30)} - {"w15"}


async def test_a_page_has_the_same_items_as_the_full_list(client: httpx.AsyncClient) -> None:
    """A page's items are the full list's items (same fields, same drift flags)."""
    full = {item["worker_id"]: item for item in (await client.get(WORKERS)).json()}
    page = (await client.get(WORKERS, params={"limit": 5})).json()

    assert page == [full[item["worker_id"]] for item in page]


async def test_the_list_flags_drift_from_the_kept_fingerprint_counts(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """A second training configuration flags every live training worker, not backtest ones."""
    assert not any(item["fingerprint_drift"] for item in (await client.get(WORKERS)).json())
    register = backend.registry.get("w00")
    request = {
        "worker_id": "w00",
        "worker_type": "training",
        "endpoint_url": register.endpoint_url,
        "heartbeat_interval_s": 1,
        "config_fingerprint": "other",
    }
    answer = await client.post(f"{WORKERS}/register", json=request, headers=AUTH)

    assert answer.json()["fingerprint_drift"] is True
    items = (await client.get(WORKERS)).json()
    flagged = {item["worker_id"] for item in items if item["fingerprint_drift"]}
    assert flagged == {f"w{i:02d}" for i in range(0, 30, 2)}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"type": "nope"}, "type"),
        ({"status": "asleep"}, "status"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "x" * 2000}, "cursor"),
    ],
)
async def test_bad_list_parameters_get_422_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    """A bad limit, filter or cursor is a 422 whose detail is located at that parameter."""
    response = await client.get(WORKERS, params=params)

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert [item["loc"] for item in body["detail"]] == [["query", field]]


async def test_a_cursor_used_with_other_filters_is_422(client: httpx.AsyncClient) -> None:
    """A cursor from the training listing does not page the backtest listing."""
    first = await client.get(WORKERS, params={"type": "training", "limit": 2})
    cursor = httpx.URL(first.links["next"]["url"]).params["cursor"]

    response = await client.get(WORKERS, params={"type": "backtest", "cursor": cursor})

    assert response.status_code == 422
    assert "another listing" in response.json()["detail"][0]["msg"]


async def test_an_expired_cursor_is_422(backend: Backend, client: httpx.AsyncClient) -> None:
    """A cursor older than its lifetime is refused, saying it expired."""
    first = await client.get(WORKERS, params={"limit": 2})
    backend.clock.advance(CURSOR_TTL.total_seconds() + 1)

    response = await client.get(first.links["next"]["url"])

    assert response.status_code == 422
    assert "expired" in response.json()["detail"][0]["msg"]


async def test_a_cursor_of_another_backend_is_422(
    backend: Backend, shared_store: OperationStore
) -> None:
    """A cursor issued by another backend (or before a restart) is refused."""
    async with backend.client() as client:
        first = await client.get(WORKERS, params={"limit": 2})
    other = make_backend(shared_store)
    other.register("w00")
    async with other.client() as client:
        response = await client.get(first.links["next"]["url"])

    assert response.status_code == 422
    assert "not issued by this backend" in response.json()["detail"][0]["msg"]


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_listing_everything_too_often_gets_429_with_retry_after(
    shared_store: OperationStore,
) -> None:
    """Past the workers' budget a listing is 429 with Retry-After; after that wait, 200."""
    clock = Monotonic()
    budgets = ListBudgets(
        workers=ListBudget(what="workers", rate_per_s=20, clock=clock),
        operations=ListBudget(what="operations", rate_per_s=20, clock=clock),
    )
    backend = make_backend(shared_store, budgets=budgets)
    for i in range(50):
        backend.register(f"w{i:02d}")
    async with backend.client() as client:
        first = await client.get(WORKERS)  # 50 listed: 30 in debt, 1.5 s to repay
        refused = await client.get(WORKERS)
        also_pages = await client.get(WORKERS, params={"limit": 1})
        clock.now += int(refused.headers["retry-after"])
        again = await client.get(WORKERS)

    assert first.status_code == 200
    assert len(first.json()) == 50
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["error"] == "too_many_requests"
    assert "at most 20 workers per second" in refused.json()["detail"]
    assert also_pages.status_code == 429
    assert again.status_code == 200


async def test_a_changed_worker_is_listed_as_it_is_now_not_as_cached(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """The JSON kept from an earlier list is not reused once the record or its drift changed."""
    before = {item["worker_id"]: item for item in (await client.get(WORKERS)).json()}
    heartbeat = HeartbeatRequest(status=WorkerStatus.BUSY, current_operation_id="op-x")
    backend.clock.advance(1)
    backend.registry.heartbeat("w01", heartbeat, now=backend.clock())

    after = {item["worker_id"]: item for item in (await client.get(WORKERS)).json()}

    assert before["w01"]["status"] == "idle"
    assert after["w01"]["status"] == "busy"
    assert after["w01"]["current_operation_id"] == "op-x"
    assert after["w01"]["last_heartbeat_at"] != before["w01"]["last_heartbeat_at"]
    assert after["w02"] == before["w02"]
