"""The dashboard behind the operator gate, in process: sign-in, sessions, CSRF, pages, fleet."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from support.backend import OPERATOR_TOKEN, Backend, make_backend, open_store

from ktrdr.api.dashboard import DashboardSessions, pages
from ktrdr.config import Secret
from ktrdr.protocol import HeartbeatRequest, OperationType, Progress, WorkerStatus

pytestmark = pytest.mark.anyio

OPS = "/api/v1/operations"
#: A parameter value no page may show before sign-in.
MARKER = "LEAKCHECK9"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A backend with worker tr-1 running an operation at 40%, and one pending operation."""
    store = open_store(tmp_path)
    backend = make_backend(store)
    backend.register("tr-1")
    running = backend.service.create("training", {"symbol": MARKER})
    backend.service.start(running.id, worker_id="tr-1")
    beat = HeartbeatRequest(
        status=WorkerStatus.BUSY,
        current_operation_id=running.id,
        progress=Progress(percent=40, message="epoch 20"),
    )
    backend.registry.heartbeat("tr-1", beat, now=backend.clock())
    backend.service.report_progress(running.id, worker_id="tr-1", progress=beat.progress)
    backend.service.create("backtest", {"symbol": MARKER})
    yield backend
    await backend.dispatcher.aclose()
    store.close()


def browser(
    backend: Backend, base_url: str = "http://testserver", address: str = "127.0.0.1"
) -> httpx.AsyncClient:
    """A client with no token, keeping cookies like a browser, from ``address``."""
    transport = httpx.ASGITransport(backend.app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


async def sign_in(client: httpx.AsyncClient, token: str = OPERATOR_TOKEN) -> httpx.Response:
    return await client.post(
        "/ui/login",
        content=f"token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def csrf_of(client: httpx.AsyncClient) -> str:
    page = await client.get("/ui/")
    assert page.status_code == 200, page.text
    found = re.search(r'<meta name="ktrdr-csrf" content="([0-9a-f]{64})">', page.text)
    assert found, page.text
    return found[1]


@pytest.mark.parametrize(
    "path", ["/ui/", "/ui/operations/abc", "/ui", "/ui/anything-else"], ids=str
)
async def test_pages_without_a_session_send_the_browser_to_sign_in(
    backend: Backend, path: str
) -> None:
    """No session: a page answers a redirect to /ui/login and carries no data."""
    async with browser(backend) as client:
        response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    assert MARKER not in response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ui/api/fleet"),
        ("GET", OPS + "/{op}/series"),
        ("GET", OPS),
        ("POST", OPS + "/{op}/cancel"),
        ("POST", "/ui/logout"),
    ],
)
async def test_data_and_actions_without_a_session_are_401(
    backend: Backend, method: str, path: str
) -> None:
    """Reads and writes without token or session: JSON 401, nothing leaked, nothing changed."""
    op = backend.store.running()[0].id
    async with browser(backend) as client:
        response = await client.request(method, path.format(op=op))
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert MARKER not in response.text
    assert backend.store.get(op).status.value == "running"


async def test_the_sign_in_page_shows_only_the_form(backend: Backend) -> None:
    """The open sign-in page: a form naming the variable, strict CSP, no data, no token."""
    async with browser(backend) as client:
        response = await client.get("/ui/login")
    assert response.status_code == 200
    assert '<input id="token" name="token" type="password"' in response.text
    assert "KTRDR_AUTH_OPERATOR_TOKEN" in response.text
    assert MARKER not in response.text
    assert OPERATOR_TOKEN not in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert "<script" not in response.text


async def test_a_wrong_token_is_refused_without_a_cookie(backend: Backend) -> None:
    """A wrong token: 401, the form again with the reason, no session cookie."""
    async with browser(backend) as client:
        response = await sign_in(client, "not-the-token")
        page = await client.get("/ui/")
    assert response.status_code == 401
    assert "That is not the operator token (KTRDR_AUTH_OPERATOR_TOKEN)." in response.text
    assert "set-cookie" not in response.headers
    assert page.status_code == 303


@pytest.mark.parametrize(
    "body",
    ["", "token=", "&".join(f"f{i}=x" for i in range(50)), "token=%FF%FE", "token"],
    ids=["empty", "blank", "many-fields", "not-utf8", "no-value"],
)
async def test_a_malformed_sign_in_is_the_same_refusal(backend: Backend, body: str) -> None:
    """Empty, blank, oversized or garbled forms: the 401 form again, never a 500 or a cookie."""
    async with browser(backend) as client:
        response = await client.post(
            "/ui/login",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


async def test_wrong_tokens_from_one_address_are_throttled_not_others(backend: Backend) -> None:
    """After 10 wrong tokens within a minute an address gets 429 (Retry-After), even with
    the right token and without a cookie; another address still signs in.
    """
    async with browser(backend, address="192.0.2.7") as guesser:
        wrong = [await sign_in(guesser, "not-the-token") for _ in range(10)]
        throttled = await sign_in(guesser, "still-not-it")
        right_but_throttled = await sign_in(guesser)
    async with browser(backend, address="198.51.100.3") as other:
        elsewhere = await sign_in(other)
    assert [response.status_code for response in wrong] == [401] * 10
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert "Too many wrong tokens" in throttled.text
    assert right_but_throttled.status_code == 429
    assert "set-cookie" not in right_but_throttled.headers
    assert elsewhere.status_code == 303
    assert elsewhere.headers["set-cookie"].startswith("ktrdr_session=")


async def test_signing_in_sets_an_httponly_strict_cookie_and_opens_the_pages(
    backend: Backend,
) -> None:
    """The right token: a 303 to /ui/ with an HttpOnly, SameSite=Strict session cookie."""
    async with browser(backend) as client:
        response = await sign_in(client)
        cookie = response.headers["set-cookie"]
        page = await client.get("/ui/")
        operation_page = await client.get(f"/ui/operations/{backend.store.list().items[0].id}")
        again = await client.get("/ui/login")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    assert cookie.startswith("ktrdr_session=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", "max-age=43200"} <= attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    assert OPERATOR_TOKEN not in cookie
    assert page.status_code == 200
    assert 'data-page="fleet"' in page.text
    assert operation_page.status_code == 200
    assert 'data-page="operation"' in operation_page.text
    assert again.status_code == 303  # already signed in


async def test_over_https_the_cookie_is_secure(backend: Backend) -> None:
    """Served over https (directly or via a trusted proxy), the cookie is marked Secure."""
    async with browser(backend, "https://dashboard.example") as client:
        response = await sign_in(client)
    assert "secure" in response.headers["set-cookie"].lower().split("; ")


async def test_a_session_reads_the_api_and_the_fleet(backend: Backend) -> None:
    """Signed in, the browser reads operations, series and the fleet with its cookie only."""
    async with browser(backend) as client:
        await sign_in(client)
        listing = await client.get(OPS)
        fleet = await client.get("/ui/api/fleet")
    assert listing.status_code == 200
    assert listing.json()["total"] == 2
    worker = fleet.json()["workers"][0]
    assert worker["worker_id"] == "tr-1"
    assert worker["status"] == "busy"
    assert worker["heartbeat_age_s"] == 0.0
    assert worker["fingerprint_drift"] is False
    assert worker["operation"]["progress"]["percent"] == 40
    assert worker["operation"]["type"] == "training"


async def test_writes_need_the_sessions_csrf_token(backend: Backend) -> None:
    """Cookie without CSRF token, with another's, or started by another site: 403, nothing made."""
    body = {"type": "training", "parameters": {}}
    async with browser(backend) as client:
        await sign_in(client)
        csrf = await csrf_of(client)
        other = DashboardSessions(Secret(OPERATOR_TOKEN)).csrf_token("another-session")
        missing = await client.post(OPS, json=body)
        wrong = await client.post(OPS, json=body, headers={"X-CSRF-Token": other})
        foreign = await client.post(
            OPS, json=body, headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
        )
        before = backend.store.list().total
        made = await client.post(
            OPS, json=body, headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"}
        )
    assert [r.status_code for r in (missing, wrong, foreign)] == [403, 403, 403]
    assert "X-CSRF-Token" in missing.json()["detail"]
    assert "cross-site" in foreign.json()["detail"]
    assert before == 2
    assert made.status_code == 201


async def test_signing_in_from_another_site_is_refused(backend: Backend) -> None:
    """A sign-in form posted from another site sets no cookie."""
    async with browser(backend) as client:
        response = await client.post(
            "/ui/login",
            content=f"token={OPERATOR_TOKEN}",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Sec-Fetch-Site": "cross-site",
            },
        )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def test_signing_out_clears_the_cookie(backend: Backend) -> None:
    """Sign-out (a CSRF-protected POST) expires the cookie; pages redirect again."""
    async with browser(backend) as client:
        await sign_in(client)
        csrf = await csrf_of(client)
        response = await client.post("/ui/logout", headers={"X-CSRF-Token": csrf})
        page = await client.get("/ui/")
    assert response.status_code == 204
    assert 'ktrdr_session=""' in response.headers["set-cookie"]
    assert page.status_code == 303


async def test_a_cookie_from_before_a_token_change_opens_nothing(backend: Backend) -> None:
    """A session signed under another operator token is no session."""
    stale = DashboardSessions(Secret("the-previous-operator-token")).new_session()
    async with browser(backend) as client:
        client.cookies.set("ktrdr_session", stale)
        page = await client.get("/ui/")
        fleet = await client.get("/ui/api/fleet")
    assert page.status_code == 303
    assert fleet.status_code == 401


async def test_the_token_still_opens_everything_without_a_cookie(backend: Backend) -> None:
    """Scripts keep using the bearer token, on the dashboard's reads too, with no CSRF token."""
    async with backend.client() as client:
        fleet = await client.get("/ui/api/fleet")
        made = await client.post(OPS, json={"type": "training", "parameters": {}})
    assert fleet.status_code == 200
    assert made.status_code == 201


@pytest.mark.parametrize("name", ["dashboard.js", "chart.js", "dashboard.css", "favicon.svg"])
async def test_static_files_are_served_without_a_session(backend: Backend, name: str) -> None:
    """Scripts, styles and the icon come from the backend itself, open (they hold no data)."""
    async with browser(backend) as client:
        response = await client.get(f"/ui/static/{name}")
    assert response.status_code == 200
    assert len(response.content) > 100


async def test_no_path_leaves_the_static_directory(backend: Backend) -> None:
    """An encoded '..' finds nothing outside static/ (and a miss is a 404, not a listing)."""
    async with browser(backend) as client:
        response = await client.get("/ui/static/..%2Fpages.py")
        missing = await client.get("/ui/static/nothing.js")
    assert response.status_code == 404
    assert missing.status_code == 404


async def test_the_pages_reference_only_the_backends_own_files(backend: Backend) -> None:
    """No CDN: every src and href of every page is a path on the backend."""
    async with browser(backend) as client:
        await sign_in(client)
        pages = [await client.get(p) for p in ("/ui/login", "/ui/", "/ui/operations/x")]
    for page in pages:
        for url in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            assert url.startswith("/ui/"), url


async def test_the_fleet_snapshot_is_bounded_and_counts_every_worker(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past FLEET_PAGE workers the snapshot lists the first ones by id and says how many."""
    monkeypatch.setattr(pages, "FLEET_PAGE", 2)
    for worker_id in ("bt-1", "bt-2", "bt-3"):
        backend.register(worker_id, OperationType.BACKTEST)
    async with backend.client() as client:
        fleet = (await client.get("/ui/api/fleet")).json()
    assert [w["worker_id"] for w in fleet["workers"]] == ["bt-1", "bt-2"]
    assert fleet["total"] == 4
