"""The operations API over HTTP (in process): bodies, field errors, 404/409/429, reports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.backend import AUTH, Backend, backend_config, make_backend, open_store
from support.tracing import memory_tracing, trace_hex

from ktrdr.api.store import OperationStore
from ktrdr.protocol import OperationStatus, WorkerStatus

pytestmark = pytest.mark.anyio

OPS = "/api/v1/operations"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OperationStore]:
    """A fresh SQLite store (the store's own tests cover PostgreSQL too)."""
    store = open_store(tmp_path)
    yield store
    store.close()


@pytest.fixture
def backend(store: OperationStore) -> Backend:
    """A backend with the default settings and one idle training worker, tr-1."""
    backend = make_backend(store)
    backend.register("tr-1")
    return backend


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to ``backend`` in process."""
    async with backend.client() as http:
        yield http
    await backend.dispatcher.aclose()


async def create(client: httpx.AsyncClient, kind: str = "training", **params: Any) -> Any:
    response = await client.post(OPS, json={"type": kind, "parameters": params})
    assert response.status_code == 201, response.text
    return response.json()


async def running_on_tr1(backend: Backend, client: httpx.AsyncClient) -> Any:
    """A training operation the dispatcher has started on tr-1 (claimed at its creation)."""
    created = await create(client, epochs=5)
    await backend.dispatcher.drain()
    assert backend.workers.started()[-1] == ("tr-1", created["id"])
    return created


# --- create -------------------------------------------------------------------------


async def test_a_creation_while_a_worker_waits_starts_it_without_a_round(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """tr-1 is idle: the creating transaction claims the operation for it (the answer
    says running, attempt 1) and its start is sent; no round is needed. The next
    creation finds tr-1 busy and stays pending.
    """
    created = await create(client, epochs=5)
    await backend.dispatcher.drain()
    rounds = await backend.dispatcher.dispatch_once()
    second = await create(client, epochs=5)

    assert (created["status"], created["worker_id"], created["attempt"]) == ("running", "tr-1", 1)
    assert backend.workers.started() == [("tr-1", created["id"])]
    assert rounds == []
    assert (second["status"], second["attempt"]) == ("pending", 0)
    assert backend.store.get(second["id"]).status is OperationStatus.PENDING


async def test_create_answers_201_with_the_pending_operation(client: httpx.AsyncClient) -> None:
    """POST: 201, pending, the type, and every parameter with its default filled in."""
    response = await client.post(OPS, json={"type": "backtest", "parameters": {"seed": 7}})

    body = response.json()
    assert response.status_code == 201
    assert (body["status"], body["type"], body["worker_id"], body["resume"]) == (
        "pending",
        "backtest",
        None,
        False,
    )
    assert body["parameters"]["seed"] == 7
    assert body["parameters"]["fast_window"] == 10
    assert body["progress"] is None
    assert body["created_at"] == "2026-01-01T00:00:00Z"


async def test_unknown_type_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    """An unknown operation type is a 422 whose detail points at body.type."""
    response = await client.post(OPS, json={"type": "mining", "parameters": {}})

    body = response.json()
    assert response.status_code == 422
    assert body["error"] == "invalid_request"
    assert [item["loc"] for item in body["detail"]] == [["body", "type"]]
    assert "training" in body["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("kind", "parameters", "locs"),
    [
        ("training", {"epochs": "many"}, [["body", "parameters", "epochs"]]),
        (
            "training",
            {"epochs": 0, "seed": -1},
            [["body", "parameters", "seed"], ["body", "parameters", "epochs"]],
        ),
        ("training", {"epoch": 3}, [["body", "parameters", "epoch"]]),
        ("backtest", {"fast_window": 40, "slow_window": 20}, [["body", "parameters"]]),
        ("backtest", {"commission": "NaN"}, [["body", "parameters", "commission"]]),
    ],
    ids=["wrong-type", "out-of-range", "unknown-name", "cross-field", "nan"],
)
async def test_bad_parameters_are_422_with_one_item_per_field(
    client: httpx.AsyncClient, kind: str, parameters: dict[str, Any], locs: list[list[str]]
) -> None:
    """Wrong types, ranges, unknown names and cross-field rules each name the field."""
    response = await client.post(OPS, json={"type": kind, "parameters": parameters})

    assert response.status_code == 422, response.text
    assert sorted(item["loc"] for item in response.json()["detail"]) == sorted(locs)


async def test_cross_field_error_says_which_fields(client: httpx.AsyncClient) -> None:
    """fast_window >= slow_window: the message names both windows."""
    response = await client.post(
        OPS, json={"type": "backtest", "parameters": {"fast_window": 40, "slow_window": 20}}
    )

    assert response.json()["detail"][0]["msg"] == (
        "fast_window (40) must be smaller than slow_window (20)"
    )


async def test_missing_type_and_non_object_parameters_are_422(client: httpx.AsyncClient) -> None:
    """A body without a type, or with parameters that are not an object, is refused."""
    missing = await client.post(OPS, json={"parameters": {}})
    listed = await client.post(OPS, json={"type": "training", "parameters": [1, 2]})

    assert (missing.status_code, listed.status_code) == (422, 422)
    assert missing.json()["detail"][0]["loc"] == ["body", "type"]
    assert listed.json()["detail"][0]["loc"] == ["body", "parameters"]


async def test_creating_beyond_max_operations_is_429_naming_the_variable(
    store: OperationStore,
) -> None:
    """KTRDR_OPS_MAX_OPERATIONS=2: the third live operation is refused with 429."""
    backend = make_backend(store, backend_config(KTRDR_OPS_MAX_OPERATIONS="2"))
    async with backend.client() as client:
        await create(client)
        await create(client)
        refused = await client.post(OPS, json={"type": "training"})
        listed = (await client.get(OPS)).json()

    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_operations"
    assert "KTRDR_OPS_MAX_OPERATIONS=2" in refused.json()["detail"]
    assert listed["total"] == 2


# --- read ---------------------------------------------------------------------------


async def test_get_returns_the_operation_and_404s_for_an_unknown_id(
    client: httpx.AsyncClient,
) -> None:
    """GET by id: the same view as created; an unknown id is a JSON 404."""
    created = await create(client)

    found = await client.get(f"{OPS}/{created['id']}")
    missing = await client.get(f"{OPS}/no-such-operation")

    assert found.json() == created
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "unknown_operation",
        "detail": "no operation with id 'no-such-operation'",
    }


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("POST", "/cancel"), ("POST", "/resume")]
)
@pytest.mark.parametrize("bad_id", ["nul%00byte", "x" * 200, "-leading-dash", "sp ace"])
async def test_ids_that_cannot_exist_are_422_without_a_lookup(
    client: httpx.AsyncClient, method: str, suffix: str, bad_id: str
) -> None:
    """Malformed ids (a NUL byte would crash PostgreSQL) are refused at the door."""
    response = await client.request(method, f"{OPS}/{bad_id}{suffix}")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "operation_id"]


async def test_list_filters_by_status_and_type_and_pages_newest_first(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """?status, ?type, ?limit and ?offset select a page; total counts every match."""
    ids = []
    for kind in ("training", "backtest", "training", "backtest", "backtest"):
        ids.append((await create(client, kind))["id"])
        backend.clock.advance(1)
    backend.service.cancel(ids[0])

    backtests = (await client.get(OPS, params={"type": "backtest"})).json()
    page = (await client.get(OPS, params={"limit": 2, "offset": 1})).json()
    cancelled = (await client.get(OPS, params={"status": "cancelled"})).json()

    assert [item["id"] for item in backtests["items"]] == [ids[4], ids[3], ids[1]]
    assert backtests["total"] == 3
    assert [item["id"] for item in page["items"]] == [ids[3], ids[2]]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    assert [item["id"] for item in cancelled["items"]] == [ids[0]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"include": "everything"}, "include"),
        ({"offset": -1}, "offset"),
        ({"offset": 10**30}, "offset"),
        ({"status": "sleeping"}, "status"),
        ({"type": "mining"}, "type"),
        ({"limit": "ten"}, "limit"),
    ],
)
async def test_bad_list_queries_are_422_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    """Out-of-range paging and unknown filters are refused, never a 500."""
    response = await client.get(OPS, params=params)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


async def test_a_page_holds_at_most_200_operations(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """?limit=200 is the largest page; 201 is refused (above) rather than served."""
    for _ in range(201):
        backend.service.create("training", {})

    page = (await client.get(OPS, params={"limit": 200})).json()

    assert (len(page["items"]), page["total"]) == (200, 201)


async def test_listed_operations_carry_no_result_unless_asked(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Without ?include=result a listed item has no result key; with it, the stored result."""
    created = backend.service.create("training", {})
    backend.store.finish(
        created.id,
        status=OperationStatus.COMPLETED,
        now=backend.clock(),
        result={"accuracy": 0.7, "curve": list(range(1000))},
    )
    backend.clock.advance(5)  # past the read cache, which still holds the pending view

    plain = (await client.get(OPS)).json()["items"][0]
    full = (await client.get(OPS, params={"include": "result"})).json()["items"][0]
    one = (await client.get(f"{OPS}/{created.id}")).json()

    assert "result" not in plain
    assert (plain["id"], plain["status"]) == (created.id, "completed")
    assert full["result"] == {"accuracy": 0.7, "curve": list(range(1000))}
    assert one["result"] == full["result"]


# --- cancel and resume --------------------------------------------------------------


async def test_cancel_of_a_pending_operation(client: httpx.AsyncClient) -> None:
    """A pending operation is cancelled at once; no worker is told anything."""
    created = await create(client, "backtest")  # no backtest worker: it stays pending

    response = await client.post(f"{OPS}/{created['id']}/cancel")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["error"]) == (
        "cancelled",
        "cancelled before it started",
    )


async def test_cancel_of_a_running_operation_tells_its_worker(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """A running operation is marked cancelled, then its worker is asked to stop."""
    created = await running_on_tr1(backend, client)

    response = await client.post(f"{OPS}/{created['id']}/cancel")

    assert response.json()["status"] == "cancelled"
    assert backend.workers.cancels == [("tr-1", created["id"])]


async def test_cancel_of_a_finished_operation_is_409(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Cancelling an operation that already ended is a conflict, and changes nothing."""
    created = await create(client, "backtest")  # pending: no backtest worker
    await client.post(f"{OPS}/{created['id']}/cancel")

    again = await client.post(f"{OPS}/{created['id']}/cancel")

    assert again.status_code == 409
    assert again.json()["error"] == "invalid_transition"
    assert "it is cancelled" in again.json()["detail"]
    assert backend.store.get(created["id"]).error == "cancelled before it started"


@pytest.mark.parametrize("action", ["cancel", "resume"])
async def test_cancel_and_resume_of_an_unknown_id_are_404(
    client: httpx.AsyncClient, action: str
) -> None:
    """Both actions on an id that does not exist answer 404."""
    response = await client.post(f"{OPS}/nope/{action}")

    assert response.status_code == 404
    assert response.json()["error"] == "unknown_operation"


async def test_resume_requeues_with_the_resume_flag_and_dispatches_it(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Resume of a cancelled operation: pending with resume=true, sent with resume=true."""
    created = await running_on_tr1(backend, client)
    await client.post(f"{OPS}/{created['id']}/cancel")
    report = {"worker_id": "tr-1", "attempt": 1, "status": "cancelled", "checkpoint_saved": True}
    await client.post(
        f"{OPS}/{created['id']}/report", json=report, headers=backend.worker_auth("tr-1")
    )

    resumed = await client.post(f"{OPS}/{created['id']}/resume")
    await backend.dispatcher.dispatch_once()

    assert resumed.status_code == 200
    assert (resumed.json()["status"], resumed.json()["resume"]) == ("pending", True)
    assert [body["resume"] for _, body in backend.workers.starts] == [False, True]
    assert backend.store.get(created["id"]).status is OperationStatus.RUNNING


async def test_resume_of_a_pending_or_completed_operation_is_409(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Only failed or cancelled operations can be resumed."""
    pending = await create(client, "backtest")
    done = await running_on_tr1(backend, client)
    report = {"worker_id": "tr-1", "attempt": 1, "status": "completed", "result": {"accuracy": 0.5}}
    await client.post(
        f"{OPS}/{done['id']}/report", json=report, headers=backend.worker_auth("tr-1")
    )

    responses = [await client.post(f"{OPS}/{op['id']}/resume") for op in (pending, done)]

    assert [r.status_code for r in responses] == [409, 409]
    assert "only failed or cancelled operations can be" in responses[1].json()["detail"]


@pytest.mark.parametrize("csv_path", ["/etc/shadow", "../secrets.csv", "bars\x00.csv"])
async def test_a_csv_path_outside_the_data_directory_is_422_naming_it(
    backend: Backend, client: httpx.AsyncClient, csv_path: str
) -> None:
    """Absolute, climbing or NUL csv_path: 422 on parameters.csv_path, nothing created."""
    response = await client.post(
        OPS, json={"type": "backtest", "parameters": {"csv_path": csv_path}}
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "parameters", "csv_path"]
    assert backend.store.count_live() == 0


# --- worker reports -----------------------------------------------------------------


async def test_the_running_worker_reports_completion_with_its_result(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """A report from the worker that runs it stores the result and frees the worker."""
    created = await running_on_tr1(backend, client)
    report = {
        "worker_id": "tr-1",
        "attempt": 1,
        "status": "completed",
        "result": {"accuracy": 0.61},
    }

    response = await client.post(
        f"{OPS}/{created['id']}/report", json=report, headers=backend.worker_auth("tr-1")
    )
    shown = (await client.get(f"{OPS}/{created['id']}")).json()

    assert response.status_code == 200
    assert (shown["status"], shown["result"], shown["worker_id"]) == (
        "completed",
        {"accuracy": 0.61},
        "tr-1",
    )
    assert backend.registry.get("tr-1").status is WorkerStatus.IDLE


async def test_a_queued_operation_goes_to_the_worker_as_soon_as_it_reports(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """After a report the worker is idle at once: the next operation needs no heartbeat."""
    first = await running_on_tr1(backend, client)
    backend.clock.advance(1)
    queued = await create(client, epochs=2)
    report = {"worker_id": "tr-1", "attempt": 1, "status": "completed", "result": {"accuracy": 0.5}}

    await client.post(
        f"{OPS}/{first['id']}/report", json=report, headers=backend.worker_auth("tr-1")
    )
    await backend.dispatcher.dispatch_once()

    assert backend.workers.started() == [("tr-1", first["id"]), ("tr-1", queued["id"])]


async def test_a_report_needs_the_workers_own_credential(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """No credential, a wrong one or the shared worker token: 401, the operation keeps running."""
    created = await running_on_tr1(backend, client)
    report = {"worker_id": "tr-1", "attempt": 1, "status": "completed", "result": {}}

    answers = [
        await client.post(f"{OPS}/{created['id']}/report", json=report, headers=headers)
        for headers in ({}, {"Authorization": "Bearer x"}, AUTH)
    ]

    assert [r.status_code for r in answers] == [401, 401, 401]
    assert backend.store.get(created["id"]).status is OperationStatus.RUNNING


async def test_a_report_from_another_worker_is_409(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """A registered worker reporting an operation it does not run gets 409, nothing changes."""
    created = await running_on_tr1(backend, client)
    backend.register("tr-2")
    report = {"worker_id": "tr-2", "attempt": 1, "status": "failed", "error": "not mine"}

    response = await client.post(
        f"{OPS}/{created['id']}/report", json=report, headers=backend.worker_auth("tr-2")
    )

    assert response.status_code == 409
    assert response.json() == {
        "error": "stale_attempt",
        "detail": f"operation {created['id']}: attempt 1 is not worker tr-2's; "
        "the current attempt is 1 (running on worker tr-1)",
    }
    assert backend.store.get(created["id"]).status is OperationStatus.RUNNING


async def test_a_report_naming_another_worker_than_its_credential_is_401(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """tr-2's credential on a report that claims to be tr-1's: 401, nothing changes."""
    created = await running_on_tr1(backend, client)
    backend.register("tr-2")
    report = {"worker_id": "tr-1", "attempt": 1, "status": "completed", "result": {"forged": True}}

    response = await client.post(
        f"{OPS}/{created['id']}/report", json=report, headers=backend.worker_auth("tr-2")
    )

    assert response.status_code == 401
    assert "cannot report for another worker" in response.json()["detail"]
    assert backend.store.get(created["id"]).status is OperationStatus.RUNNING


async def test_a_late_report_of_a_cancelled_operation_is_409_and_frees_the_worker(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Cancelled first, reported later: the cancel stands, the worker is idle again."""
    created = await running_on_tr1(backend, client)
    await client.post(f"{OPS}/{created['id']}/cancel")
    report = {"worker_id": "tr-1", "attempt": 1, "status": "completed", "result": {"accuracy": 1}}

    response = await client.post(
        f"{OPS}/{created['id']}/report", json=report, headers=backend.worker_auth("tr-1")
    )

    assert response.status_code == 409
    assert backend.store.get(created["id"]).status is OperationStatus.CANCELLED
    assert backend.registry.get("tr-1").status is WorkerStatus.IDLE


async def test_a_shutdown_report_queues_a_retry_from_the_checkpoint(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """A cancelled report (the worker shut down) loses the attempt: pending again to resume,
    the runner's words and "checkpoint saved" kept in the reason.
    """
    created = await running_on_tr1(backend, client)
    report = {
        "worker_id": "tr-1",
        "attempt": 1,
        "status": "cancelled",
        "error": "stopped at epoch 3/5 (shutdown)",
        "checkpoint_saved": True,
    }

    response = await client.post(
        f"{OPS}/{created['id']}/report", json=report, headers=backend.worker_auth("tr-1")
    )

    record = backend.store.get(created["id"])
    assert response.status_code == 200
    assert (record.status, record.resume, record.attempt, record.lost_attempts) == (
        OperationStatus.PENDING,
        True,
        1,
        1,
    )
    assert record.error == (
        "attempt 1 lost: worker tr-1 stopped it (stopped at epoch 3/5 (shutdown); "
        "checkpoint saved); retrying from its last checkpoint "
        "(2 of KTRDR_OPS_MAX_ATTEMPTS=3 attempts left)"
    )


async def test_a_nul_byte_in_a_reported_error_is_stored_escaped(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """An error quoting input with a NUL byte is kept readable (PostgreSQL refuses NUL)."""
    created = await running_on_tr1(backend, client)
    report = {"worker_id": "tr-1", "attempt": 1, "status": "failed", "error": "bad value 'a\x00b'"}

    response = await client.post(
        f"{OPS}/{created['id']}/report", json=report, headers=backend.worker_auth("tr-1")
    )

    assert response.status_code == 200
    assert backend.store.get(created["id"]).error == "bad value 'a\\x00b'"


@pytest.mark.parametrize(
    ("report", "field"),
    [
        ({"worker_id": "tr-1", "attempt": 1, "status": "running"}, "status"),
        (
            {
                "worker_id": "tr-1",
                "attempt": 1,
                "status": "completed",
                "result": {"x": float("nan")},
            },
            "result",
        ),
        ({"worker_id": "tr-1", "attempt": 1, "status": "done"}, "status"),
        ({"attempt": 1, "status": "completed"}, "worker_id"),
        ({"worker_id": "tr-1", "attempt": 0, "status": "completed"}, "attempt"),
    ],
    ids=["not-final", "nan", "unknown-status", "no-worker", "attempt-0"],
)
async def test_bad_reports_are_422_and_change_nothing(
    backend: Backend, client: httpx.AsyncClient, report: dict[str, Any], field: str
) -> None:
    """A non-final status, NaN, an unknown status, a missing worker or attempt: 422 naming it."""
    created = await running_on_tr1(backend, client)

    response = await client.post(
        f"{OPS}/{created['id']}/report",
        content=json.dumps(report),
        headers={**backend.worker_auth("tr-1"), "Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", field]
    assert backend.store.get(created["id"]).status is OperationStatus.RUNNING


async def test_a_report_of_an_unknown_operation_is_404(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Reporting an id the backend does not know (deleted, never created) is 404."""
    report = {"worker_id": "tr-1", "attempt": 1, "status": "completed", "result": {}}

    response = await client.post(
        f"{OPS}/gone/report", json=report, headers=backend.worker_auth("tr-1")
    )

    assert response.status_code == 404


# --- heartbeats -----------------------------------------------------------------------


async def test_heartbeat_progress_reaches_the_operation(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """A heartbeat naming the operation stores its progress and stamps last_reported_at."""
    created = await running_on_tr1(backend, client)
    backend.clock.advance(3)
    beat = {
        "status": "busy",
        "current_operation_id": created["id"],
        "attempt": 1,
        "progress": {"percent": 40, "message": "epoch 2", "details": {"epoch": 2, "loss": 0.6}},
    }

    response = await client.post(
        "/api/v1/workers/tr-1/heartbeat", json=beat, headers=backend.worker_auth("tr-1")
    )
    written = await backend.reports.flush()
    shown = (await client.get(f"{OPS}/{created['id']}")).json()

    assert (response.status_code, written) == (200, 1)
    assert shown["progress"] == beat["progress"]
    assert shown["last_reported_at"] == "2026-01-01T00:00:03Z"


async def test_a_heartbeat_without_progress_still_stamps_the_operation(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """The orphan detector relies on every heartbeat naming the operation, progress or not."""
    created = await running_on_tr1(backend, client)
    backend.clock.advance(5)
    beat = {"status": "busy", "current_operation_id": created["id"], "attempt": 1}

    await client.post(
        "/api/v1/workers/tr-1/heartbeat", json=beat, headers=backend.worker_auth("tr-1")
    )
    await backend.reports.flush()

    record = backend.store.get(created["id"])
    assert record.last_reported_at == backend.clock()
    assert record.progress is None


async def test_heartbeats_are_written_in_one_batch_keeping_the_latest(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Several heartbeats before a write: one row update, the latest time, the last progress."""
    created = await running_on_tr1(backend, client)
    beats = [
        {
            "status": "busy",
            "current_operation_id": created["id"],
            "attempt": 1,
            "progress": {"percent": 10},
        },
        {
            "status": "busy",
            "current_operation_id": created["id"],
            "attempt": 1,
            "progress": {"percent": 20},
        },
        {"status": "busy", "current_operation_id": created["id"], "attempt": 1},
    ]
    for beat in beats:
        backend.clock.advance(1)
        await client.post(
            "/api/v1/workers/tr-1/heartbeat", json=beat, headers=backend.worker_auth("tr-1")
        )

    noted = backend.reports.unwritten
    written = await backend.reports.flush()

    record = backend.store.get(created["id"])
    assert (noted, written) == (1, 1)
    assert record.last_reported_at == backend.clock()
    assert record.progress == {"percent": 20.0, "message": "", "details": {}}


async def test_a_report_supersedes_unwritten_progress(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """Progress noted just before the outcome is not written over the finished operation."""
    created = await running_on_tr1(backend, client)
    beat = {
        "status": "busy",
        "current_operation_id": created["id"],
        "attempt": 1,
        "progress": {"percent": 99},
    }
    await client.post(
        "/api/v1/workers/tr-1/heartbeat", json=beat, headers=backend.worker_auth("tr-1")
    )
    report = {"worker_id": "tr-1", "attempt": 1, "status": "completed", "result": {}}

    await client.post(
        f"{OPS}/{created['id']}/report", json=report, headers=backend.worker_auth("tr-1")
    )

    assert backend.reports.unwritten == 0
    assert backend.store.get(created["id"]).status is OperationStatus.COMPLETED


async def test_unstorable_progress_still_stamps_the_operation(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """NaN in progress details cannot be stored; the heartbeat is still 200 and counted."""
    created = await running_on_tr1(backend, client)
    backend.clock.advance(5)
    beat = {
        "status": "busy",
        "current_operation_id": created["id"],
        "attempt": 1,
        "progress": {"percent": 10, "details": {"loss": float("nan")}},
    }

    response = await client.post(
        "/api/v1/workers/tr-1/heartbeat",
        content=json.dumps(beat),
        headers={**backend.worker_auth("tr-1"), "Content-Type": "application/json"},
    )

    await backend.reports.flush()

    assert response.status_code == 200
    assert backend.store.get(created["id"]).last_reported_at == backend.clock()


async def test_heartbeats_about_operations_that_moved_on_are_409_and_change_nothing(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """A heartbeat naming a cancelled or unknown operation is 409 stale_attempt naming the
    operation (and its current attempt); nothing is noted or changed.
    """
    created = await running_on_tr1(backend, client)
    await client.post(f"{OPS}/{created['id']}/cancel")
    before = backend.store.get(created["id"])

    responses = [
        await client.post(
            "/api/v1/workers/tr-1/heartbeat",
            json={"status": "busy", "current_operation_id": operation_id, "attempt": 1},
            headers=backend.worker_auth("tr-1"),
        )
        for operation_id in (created["id"], "never-existed")
    ]

    assert [r.status_code for r in responses] == [409, 409]
    assert [r.json()["error"] for r in responses] == ["stale_attempt", "stale_attempt"]
    assert responses[0].json()["detail"] == (
        f"operation {created['id']}: attempt 1 is not running; "
        "the current attempt is 1 (cancelled on worker tr-1)"
    )
    assert "operation never-existed does not exist" in responses[1].json()["detail"]
    assert backend.reports.unwritten == 0
    assert backend.store.get(created["id"]) == before


async def test_a_worker_from_before_attempts_speaks_for_the_attempt_it_runs(
    backend: Backend, client: httpx.AsyncClient
) -> None:
    """During an upgrade (backend first): a heartbeat or report without ``attempt`` from
    the worker running the operation counts for its current attempt; from another
    worker it is 409 stale_attempt and changes nothing.
    """
    created = await running_on_tr1(backend, client)
    backend.register("tr-2")
    beat = {"status": "busy", "current_operation_id": created["id"], "progress": {"percent": 5}}
    report = {"status": "completed", "result": {"legacy": True}}

    beats = [
        await client.post(
            f"/api/v1/workers/{worker}/heartbeat", json=beat, headers=backend.worker_auth(worker)
        )
        for worker in ("tr-2", "tr-1")
    ]
    await backend.reports.flush()
    progressed = backend.store.get(created["id"]).progress
    reports = [
        await client.post(
            f"{OPS}/{created['id']}/report",
            json={"worker_id": worker, **report},
            headers=backend.worker_auth(worker),
        )
        for worker in ("tr-2", "tr-1")
    ]

    assert [r.status_code for r in beats] == [409, 200]
    assert [r.status_code for r in reports] == [409, 200]
    assert beats[0].json()["error"] == reports[0].json()["error"] == "stale_attempt"
    assert (progressed or {}).get("percent") == 5
    done = backend.store.get(created["id"])
    assert (done.status, done.attempt, done.result) == (
        OperationStatus.COMPLETED,
        1,
        {"legacy": True},
    )


async def test_openapi_documents_the_operations_api(client: httpx.AsyncClient) -> None:
    """The schema lists every operations route."""
    paths = set((await client.get("/openapi.json")).json()["paths"])

    assert {
        OPS,
        OPS + "/{operation_id}",
        OPS + "/{operation_id}/cancel",
        OPS + "/{operation_id}/resume",
        OPS + "/{operation_id}/report",
    } <= paths


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_parameters = st.dictionaries(
    st.sampled_from(["epochs", "bars", "seed", "csv_path", "fast_window", "x"]),
    _json_values,
    max_size=5,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kind=st.sampled_from(["training", "backtest", "other", 3]), parameters=_parameters)
async def test_arbitrary_creations_are_201_or_422_never_500(
    client: httpx.AsyncClient, kind: Any, parameters: dict[str, Any]
) -> None:
    """Any type and parameters: 201 when valid, else a 422 JSON error naming fields."""
    response = await client.post(
        OPS,
        content=json.dumps({"type": kind, "parameters": parameters}),
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code in {201, 422}, response.text
    if response.status_code == 422:
        assert response.json()["error"] == "invalid_request"
        assert all(item["loc"][0] == "body" for item in response.json()["detail"])


# --- traces -------------------------------------------------------------------------

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
RESUMER = "00-2cf7651916cd43dd8448eb211c80319c-d7ad6b7169203331-01"


async def test_without_tracing_an_operation_has_no_trace_id(client: httpx.AsyncClient) -> None:
    """Tracing off (the default): trace_id is null, whatever the request carries."""
    response = await client.post(
        OPS, json={"type": "training", "parameters": {}}, headers={"traceparent": CALLER}
    )
    assert response.json()["trace_id"] is None


async def test_create_and_resume_each_begin_an_attempts_trace(store: OperationStore) -> None:
    """trace_id is the create request's trace; a resume's new attempt is the resume's trace."""
    memory = memory_tracing(component="backend")
    backend = make_backend(store, tracing=memory.tracing)
    async with backend.client() as client:
        created = await client.post(
            OPS, json={"type": "training", "parameters": {}}, headers={"traceparent": CALLER}
        )
        view = created.json()
        assert view["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert (await client.get(f"{OPS}/{view['id']}")).json()["trace_id"] == view["trace_id"]
        await client.post(f"{OPS}/{view['id']}/cancel")
        resumed = await client.post(f"{OPS}/{view['id']}/resume", headers={"traceparent": RESUMER})
    assert resumed.json()["trace_id"] == "2cf7651916cd43dd8448eb211c80319c"
    create_span = memory.named(f"POST {OPS}")
    assert store.get(view["id"]).trace_parent is not None
    assert trace_hex(create_span) == view["trace_id"]
    await backend.dispatcher.aclose()
    memory.close()
