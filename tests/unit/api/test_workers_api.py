"""The backend's worker API over HTTP (in process): auth, idempotence, liveness, bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.backend import AUTH, TOKEN, backend_config, make_backend, open_store

from ktrdr.api.store import OperationStore
from ktrdr.api.workers_api import MAX_JSON_DEPTH, json_depth_exceeds
from ktrdr.config import BackendConfig
from ktrdr.protocol import MAX_BODY_BYTES

pytestmark = pytest.mark.anyio

REGISTER = "/api/v1/workers/register"


class Api:
    """An app over a registry and a fake clock, plus a client for it."""

    def __init__(self, store: OperationStore, config: BackendConfig | None = None) -> None:
        self.backend = make_backend(store, config or backend_config())
        self.clock = self.backend.clock
        self.registry = self.backend.registry
        self.app = self.backend.app

    def client(self) -> httpx.AsyncClient:
        return self.backend.client()

    def snapshot(self) -> list[Any]:
        return [r.view().model_dump(mode="json") for r in self.registry.records()]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperationStore]:
    """One operations store for the module (these tests are about workers)."""
    store = open_store(tmp_path_factory.mktemp("operations"))
    yield store
    store.close()


def registration(worker_id: str = "training-a-5003", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "worker_id": worker_id,
        "worker_type": "training",
        "endpoint_url": "http://127.0.0.1:9/a",
        "capabilities": {"operation_types": ["training"]},
        "heartbeat_interval_s": 10,
        "config_fingerprint": "0123456789abcdef",
    }
    body.update(overrides)
    return body


async def register(
    client: httpx.AsyncClient, worker_id: str = "training-a-5003", **overrides: Any
) -> dict[str, str]:
    """Register through the API; the worker's own ``Authorization`` header."""
    response = await client.post(REGISTER, json=registration(worker_id, **overrides), headers=AUTH)
    assert response.status_code in (200, 201), response.text
    return {"Authorization": f"Bearer {response.json()['credential']}"}


@pytest.fixture
def api(shared_store: OperationStore) -> Api:
    """A fresh backend app with an empty registry."""
    return Api(shared_store)


@pytest.fixture
async def client(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to ``api`` in process."""
    async with api.client() as http:
        yield http


async def test_register_creates_then_is_idempotent(api: Api, client: httpx.AsyncClient) -> None:
    """First registration is 201, the same again is 200, and the list holds one worker."""
    first = await client.post(REGISTER, json=registration(), headers=AUTH)
    second = await client.post(REGISTER, json=registration(), headers=AUTH)

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["worker_id"] == "training-a-5003"
    assert len(api.registry) == 1


async def test_list_is_a_bare_array_with_the_promised_fields(client: httpx.AsyncClient) -> None:
    """GET /api/v1/workers is a JSON array; each item has the fields operators rely on."""
    await client.post(REGISTER, json=registration(), headers=AUTH)

    response = await client.get("/api/v1/workers")

    assert response.status_code == 200
    items = response.json()
    assert isinstance(items, list)
    assert items[0] == {
        "worker_id": "training-a-5003",
        "worker_type": "training",
        "endpoint_url": "http://127.0.0.1:9/a",
        "status": "idle",
        "current_operation_id": None,
        "last_heartbeat_at": "2026-01-01T00:00:00Z",
        "registered_at": "2026-01-01T00:00:00Z",
        "capabilities": {"operation_types": ["training"]},
        "config_fingerprint": "0123456789abcdef",
        "heartbeat_interval_s": 10.0,
        "fingerprint_drift": False,
    }


async def test_get_one_worker_and_an_unknown_one(client: httpx.AsyncClient) -> None:
    """GET /api/v1/workers/{id} returns the worker, or 404 unknown_worker."""
    await client.post(REGISTER, json=registration(), headers=AUTH)

    known = await client.get("/api/v1/workers/training-a-5003")
    unknown = await client.get("/api/v1/workers/nobody")

    assert known.json()["worker_type"] == "training"
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_worker"
    assert "'nobody'" in unknown.json()["detail"]


async def test_heartbeat_records_status_and_operation(api: Api, client: httpx.AsyncClient) -> None:
    """A heartbeat updates status, current operation and the heartbeat time."""
    own = await register(client)
    operation = api.backend.service.create("training", {})
    api.backend.service.start(operation.id, worker_id="training-a-5003")
    api.clock.advance(7)
    beat = {
        "status": "busy",
        "current_operation_id": operation.id,
        "attempt": 1,
        "progress": {"percent": 12.5},
    }

    response = await client.post(
        "/api/v1/workers/training-a-5003/heartbeat", json=beat, headers=own
    )

    assert response.status_code == 200
    view = (await client.get("/api/v1/workers/training-a-5003")).json()
    assert view["status"] == "busy"
    assert view["current_operation_id"] == operation.id
    assert view["last_heartbeat_at"] == "2026-01-01T00:00:07Z"
    assert api.registry.get("training-a-5003").progress is not None


async def test_heartbeat_from_an_unknown_worker_is_404(api: Api, client: httpx.AsyncClient) -> None:
    """A heartbeat for an unregistered id gets 404 (the worker's cue to re-register)."""
    response = await client.post(
        "/api/v1/workers/ghost/heartbeat", json={"status": "idle"}, headers=AUTH
    )

    assert response.status_code == 404
    assert response.json()["error"] == "unknown_worker"
    assert len(api.registry) == 0


async def test_delete_unregisters_and_then_404s(api: Api, client: httpx.AsyncClient) -> None:
    """DELETE removes the worker (204); deleting again is 404."""
    own = await register(client)

    first = await client.delete("/api/v1/workers/training-a-5003", headers=own)
    second = await client.delete("/api/v1/workers/training-a-5003", headers=own)

    assert first.status_code == 204
    assert second.status_code == 404
    assert (await client.get("/api/v1/workers")).json() == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
    ids=["missing", "wrong", "other-scheme", "empty", "longer"],
)
async def test_writes_without_the_right_token_get_401_and_change_nothing(
    api: Api, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """Register, heartbeat and delete refuse a missing or wrong token (or credential): 401."""
    await register(client, "kept")
    before = api.snapshot()

    responses = [
        await client.post(REGISTER, json=registration("intruder"), headers=headers),
        await client.post(
            "/api/v1/workers/kept/heartbeat", json={"status": "busy"}, headers=headers
        ),
        await client.delete("/api/v1/workers/kept", headers=headers),
    ]

    assert [r.status_code for r in responses] == [401, 401, 401]
    assert all(r.json()["error"] == "unauthorized" for r in responses)
    assert all(r.headers["www-authenticate"] == "Bearer" for r in responses)
    assert "KTRDR_AUTH_WORKER_TOKEN" in responses[0].json()["detail"]
    assert TOKEN not in responses[0].text
    assert api.snapshot() == before


# -- per-worker credentials ----------------------------------------------------------------


async def test_the_registration_answer_carries_a_credential_no_read_shows(
    api: Api, client: httpx.AsyncClient
) -> None:
    """Register answers a credential; neither the list nor the worker's view carries it."""
    own = await register(client)
    credential = own["Authorization"].removeprefix("Bearer ")

    listed = await client.get("/api/v1/workers")
    one = await client.get("/api/v1/workers/training-a-5003")

    assert len(credential) >= 40
    assert credential not in listed.text
    assert credential not in one.text
    assert credential not in repr(api.registry.get("training-a-5003"))


async def test_heartbeat_and_unregister_refuse_the_shared_token_and_other_credentials(
    api: Api, client: httpx.AsyncClient
) -> None:
    """The shared token, another worker's credential or a stale one: 401, nothing changes."""
    first = await register(client, "victim")
    stale = first
    current = await register(client, "victim")  # a new registration replaces the credential
    other = await register(client, "other", endpoint_url="http://127.0.0.1:9/b")
    before = api.snapshot()

    answers = [
        await client.post(
            "/api/v1/workers/victim/heartbeat", json={"status": "stopping"}, headers=headers
        )
        for headers in (AUTH, other, stale)
    ] + [await client.delete("/api/v1/workers/victim", headers=h) for h in (AUTH, other, stale)]

    assert [r.status_code for r in answers] == [401] * 6
    assert all(r.headers["www-authenticate"] == "Bearer" for r in answers)
    assert "credential" in answers[0].json()["detail"]
    assert api.snapshot() == before
    ok = await client.post(
        "/api/v1/workers/victim/heartbeat", json={"status": "idle"}, headers=current
    )
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [AUTH, {"Authorization": "Bearer some-other-credential"}],
    ids=["shared-token", "unknown-credential"],
)
async def test_a_heartbeat_for_an_unknown_id_is_404_whatever_the_credential(
    api: Api, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """An id the backend does not know is 404 (re-register), not 401, whatever is presented."""
    response = await client.post(
        "/api/v1/workers/forgotten/heartbeat", json={"status": "idle"}, headers=headers
    )

    assert response.status_code == 404
    assert response.json()["error"] == "unknown_worker"


async def test_a_live_workers_id_cannot_be_registered_from_another_endpoint(
    api: Api, client: httpx.AsyncClient
) -> None:
    """Same id, different endpoint, while the first is live: 409 and its credential stands."""
    own = await register(client)
    before = api.snapshot()

    taken = await client.post(
        REGISTER, json=registration(endpoint_url="http://127.0.0.1:9/attacker"), headers=AUTH
    )

    assert taken.status_code == 409
    assert taken.json()["error"] == "worker_id_conflict"
    assert "credential" not in taken.json()
    assert api.snapshot() == before
    beat = await client.post(
        "/api/v1/workers/training-a-5003/heartbeat", json={"status": "idle"}, headers=own
    )
    assert beat.status_code == 200


@pytest.mark.parametrize(
    ("endpoint_url", "words"),
    [
        ("http://127.0.0.1:9/internal/admin?x=", "no query string"),
        ("http://127.0.0.1:9/internal/admin?", "no query string"),
        ("http://a:5003/#frag", "no fragment"),
        ("http://user:pw@a:5003", "no user-info"),
        ("http://a:5003/x/../admin", "segments"),
        ("http://a:5003/\n", "visible ASCII"),
    ],
    ids=["query", "empty-query", "fragment", "user-info", "dot-segments", "control"],
)
async def test_endpoint_urls_that_are_not_base_urls_get_422_naming_the_field(
    api: Api, client: httpx.AsyncClient, endpoint_url: str, words: str
) -> None:
    """Only scheme, host, port and a path prefix: anything else is 422 on endpoint_url."""
    response = await client.post(
        REGISTER, json=registration(endpoint_url=endpoint_url), headers=AUTH
    )

    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "endpoint_url"]
    assert words in item["msg"]
    assert len(api.registry) == 0


async def test_token_is_checked_before_the_body_is_parsed(client: httpx.AsyncClient) -> None:
    """An unauthenticated malformed body is 401, not a 422 describing the schema."""
    response = await client.post(
        REGISTER, content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 401


async def test_reads_need_no_token(client: httpx.AsyncClient) -> None:
    """GET endpoints are open (operators and health checks read them)."""
    assert (await client.get("/api/v1/workers")).status_code == 200
    assert (await client.get("/health")).json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b"{not json", ["body", 1]),
        (json.dumps(registration(worker_id=None)).encode(), ["body", "worker_id"]),
        (
            json.dumps({k: v for k, v in registration().items() if k != "worker_type"}).encode(),
            ["body", "worker_type"],
        ),
        (json.dumps(registration(worker_type="gpu")).encode(), ["body", "worker_type"]),
        (
            json.dumps(registration(heartbeat_interval_s="often")).encode(),
            ["body", "heartbeat_interval_s"],
        ),
        (
            json.dumps(registration(heartbeat_interval_s=0)).encode(),
            ["body", "heartbeat_interval_s"],
        ),
        (json.dumps(registration(endpoint_url="ftp://x")).encode(), ["body", "endpoint_url"]),
        (json.dumps(registration(worker_id="has space")).encode(), ["body", "worker_id"]),
        (json.dumps(registration(surprise=1)).encode(), ["body", "surprise"]),
        (b"[]", ["body"]),
    ],
    ids=[
        "malformed",
        "null-id",
        "missing-type",
        "unknown-type",
        "string-interval",
        "zero-interval",
        "bad-url",
        "bad-id",
        "extra-field",
        "array",
    ],
)
async def test_bad_registration_bodies_get_422_naming_the_field(
    api: Api, client: httpx.AsyncClient, body: bytes, loc: list[Any]
) -> None:
    """Each malformed registration is a 422 whose detail points at the offending field."""
    response = await client.post(
        REGISTER, content=body, headers={**AUTH, "Content-Type": "application/json"}
    )

    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] == "invalid_request"
    assert loc in [item["loc"] for item in payload["detail"]]
    assert len(api.registry) == 0


async def test_heartbeat_cannot_claim_unavailable(api: Api, client: httpx.AsyncClient) -> None:
    """'unavailable' is the backend's verdict; a worker sending it gets 422."""
    own = await register(client)

    response = await client.post(
        "/api/v1/workers/training-a-5003/heartbeat", json={"status": "unavailable"}, headers=own
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "status"]
    assert api.registry.get("training-a-5003").status.value == "idle"


async def test_deeply_nested_capabilities_are_refused(api: Api, client: httpx.AsyncClient) -> None:
    """Capabilities nested past the depth limit get 422 instead of being stored."""
    deep: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = {"k": deep}

    response = await client.post(REGISTER, json=registration(capabilities=deep), headers=AUTH)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "capabilities"]
    assert len(api.registry) == 0


async def test_absurdly_deep_json_is_a_4xx_not_a_crash(api: Api, client: httpx.AsyncClient) -> None:
    """JSON nested beyond the parser's recursion limit is refused with a 4xx."""
    body = b"[" * 100_000 + b"]" * 100_000

    response = await client.post(
        REGISTER, content=body, headers={**AUTH, "Content-Type": "application/json"}
    )

    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert len(api.registry) == 0


async def test_oversized_bodies_get_413(api: Api, client: httpx.AsyncClient) -> None:
    """A body over MAX_BODY_BYTES is 413, whether declared or streamed in chunks."""
    padding = "x" * MAX_BODY_BYTES
    declared = await client.post(
        REGISTER, json=registration(capabilities={"pad": padding}), headers=AUTH
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * (MAX_BODY_BYTES // 2)

    streamed = await client.post(
        REGISTER, content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )

    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert declared.json()["error"] == "payload_too_large"
    assert len(api.registry) == 0


async def test_a_silent_worker_becomes_unavailable_then_disappears(
    shared_store: OperationStore,
) -> None:
    """With stale_after=3 and a 10 s interval: unavailable after 30 s, removed after 60 s."""
    config = backend_config(KTRDR_WORKER_STALE_AFTER="3", KTRDR_WORKER_REMOVAL_THRESHOLD="60s")
    api = Api(shared_store, config)
    async with api.client() as client:
        await client.post(REGISTER, json=registration(), headers=AUTH)
        api.clock.advance(30)
        at_limit = (await client.get("/api/v1/workers/training-a-5003")).json()["status"]
        api.clock.advance(0.5)
        stale = (await client.get("/api/v1/workers")).json()[0]["status"]
        api.clock.advance(30)
        gone = (await client.get("/api/v1/workers")).json()

    assert (at_limit, stale, gone) == ("idle", "unavailable", [])


async def test_a_heartbeat_makes_an_unavailable_worker_available(
    api: Api, client: httpx.AsyncClient
) -> None:
    """An unavailable worker that heartbeats again is listed with its reported status."""
    own = await register(client)
    api.clock.advance(31)
    assert (await client.get("/api/v1/workers")).json()[0]["status"] == "unavailable"

    await client.post(
        "/api/v1/workers/training-a-5003/heartbeat", json={"status": "idle"}, headers=own
    )

    assert (await client.get("/api/v1/workers")).json()[0]["status"] == "idle"


async def test_fingerprint_drift_is_flagged_in_the_list(client: httpx.AsyncClient) -> None:
    """Two training workers with different fingerprints are both flagged; a backtest is not."""
    await client.post(REGISTER, json=registration("t1", config_fingerprint="aaa"), headers=AUTH)
    await client.post(REGISTER, json=registration("t2", config_fingerprint="bbb"), headers=AUTH)
    await client.post(
        REGISTER,
        json=registration("b1", worker_type="backtest", config_fingerprint="ccc"),
        headers=AUTH,
    )

    items = (await client.get("/api/v1/workers")).json()

    assert {i["worker_id"]: i["fingerprint_drift"] for i in items} == {
        "b1": False,
        "t1": True,
        "t2": True,
    }


async def test_unknown_routes_and_methods_get_json_errors(client: httpx.AsyncClient) -> None:
    """404 and 405 from routing are JSON ErrorBody too."""
    missing = await client.get("/api/v1/nothing")
    wrong_method = await client.put("/api/v1/workers")

    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "method_not_allowed")


async def test_openapi_schema_documents_the_worker_api(client: httpx.AsyncClient) -> None:
    """The OpenAPI schema lists every worker endpoint with its request model."""
    schema = (await client.get("/openapi.json")).json()

    assert set(schema["paths"]) >= {
        "/health",
        "/api/v1/workers",
        "/api/v1/workers/register",
        "/api/v1/workers/{worker_id}",
        "/api/v1/workers/{worker_id}/heartbeat",
    }
    register = schema["paths"]["/api/v1/workers/register"]["post"]
    assert "RegisterRequest" in json.dumps(register["requestBody"])
    # Served without FastAPI's dependency solving, still documented from its signature.
    heartbeat = schema["paths"]["/api/v1/workers/{worker_id}/heartbeat"]["post"]
    assert "HeartbeatRequest" in json.dumps(heartbeat["requestBody"])
    assert "WorkerView" in json.dumps(heartbeat["responses"]["200"])


def test_json_depth_limit_counts_nesting() -> None:
    """json_depth_exceeds is true only past the limit, for dicts and lists alike."""
    assert json_depth_exceeds({"a": [1, {"b": 2}]}, 3) is False
    assert json_depth_exceeds({"a": [1, {"b": {}}]}, 3) is True
    assert json_depth_exceeds("scalar", 0) is False


# -- property-based: nothing a client sends yields a 500 or changes state wrongly ----------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_field_values = st.dictionaries(
    st.sampled_from(sorted(registration())) | st.text(max_size=12), _json_values, max_size=8
)
_bodies = st.one_of(
    _field_values.map(lambda d: json.dumps(d).encode()),
    # A valid registration with some fields replaced or added.
    _field_values.map(lambda extra: json.dumps({**registration(), **extra}).encode()),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
_headers = st.sampled_from([AUTH, {}, {"Authorization": "Bearer nope"}])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_bodies, headers=_headers)
async def test_arbitrary_registration_bodies_never_500(
    shared_store: OperationStore, body: bytes, headers: dict[str, str]
) -> None:
    """Any body: 201/200 with a valid registration, else 4xx JSON and an unchanged registry."""
    api = Api(shared_store)
    async with api.client() as client:
        response = await client.post(
            REGISTER, content=body, headers={**headers, "Content-Type": "application/json"}
        )
    assert response.status_code in {200, 201, 400, 401, 413, 422}, response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "detail"}
        assert len(api.registry) == 0
    else:
        assert headers == AUTH
        assert len(api.registry) == 1


@settings(max_examples=100, deadline=None)
@given(
    worker_id=st.text(min_size=1, max_size=40).filter(
        lambda s: "/" not in s and s not in {".", ".."}
    ),
    body=_bodies,
    headers=_headers,
)
async def test_arbitrary_heartbeats_never_500_or_touch_other_workers(
    shared_store: OperationStore, worker_id: str, body: bytes, headers: dict[str, str]
) -> None:
    """Random ids and bodies on the heartbeat route: 4xx JSON unless valid, never a 500."""
    api = Api(shared_store)
    async with api.client() as client:
        await client.post(REGISTER, json=registration("known"), headers=AUTH)
        before = api.snapshot()
        response = await client.post(
            f"/api/v1/workers/{quote(worker_id, safe='')}/heartbeat",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert "error" in response.json()
        assert api.snapshot() == before
