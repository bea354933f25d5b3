"""Fetching an operation's worker-side log: which workers are asked, what is kept of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from support.backend import Backend, make_backend, open_store

from ktrdr.api.operation_logs import MAX_LINE_FIELDS, parse_lines
from ktrdr.protocol import OperationType

pytestmark = pytest.mark.anyio

OPS = "/api/v1/operations"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A backend with training workers tr-1 and tr-2 and backtest worker bt-1."""
    store = open_store(tmp_path)
    backend = make_backend(store)
    for worker in ("tr-1", "tr-2"):
        backend.register(worker)
    backend.register("bt-1", OperationType.BACKTEST)
    yield backend
    await backend.dispatcher.aclose()
    store.close()


def test_only_json_objects_with_plain_values_are_kept() -> None:
    """Garbage, arrays and bad UTF-8 are dropped; nested values become text; fields capped."""
    wide = {f"k{i}": i for i in range(MAX_LINE_FIELDS + 10)}
    body = b"\n".join(
        [
            b'{"message": "kept", "attempt": 1}',
            b"<html>not json</html>",
            b"[1, 2]",
            b"\xff\xfe",
            b'{"message": "nested", "extra": {"a": [1]}}',
            httpx.Response(200, json=wide).content,
        ]
    )
    lines = parse_lines(body)
    assert lines[0] == {"message": "kept", "attempt": 1}
    assert lines[1] == {"message": "nested", "extra": "{'a': [1]}"}
    assert len(lines[2]) == MAX_LINE_FIELDS
    assert len(lines) == 3


async def test_the_log_comes_from_the_worker_that_ran_it(backend: Backend) -> None:
    """The operation's worker is asked first and its lines are answered with its id."""
    operation = backend.service.create("training", {})
    backend.service.start(operation.id, worker_id="tr-2")
    async with backend.client() as client:
        response = await client.get(f"{OPS}/{operation.id}/logs")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["worker_id"] == "tr-2"
    assert body["lines"] == [{"level": "INFO", "message": f"tr-2 ran {operation.id}", "attempt": 1}]
    assert body["truncated"] is False
    assert backend.workers.attempts[0] == ("GET", "tr-2", f"/operations/{operation.id}/logs")


async def test_another_worker_of_its_type_is_asked_when_its_own_has_none(backend: Backend) -> None:
    """A worker that answers 404 or cannot be reached is passed over; never another type's."""
    operation = backend.service.create("training", {})
    backend.service.start(operation.id, worker_id="tr-1")
    backend.workers.answers["tr-1"] = 404
    async with backend.client() as client:
        found = await client.get(f"{OPS}/{operation.id}/logs")
        backend.workers.answers["tr-2"] = httpx.ConnectError("refused")
        missing = await client.get(f"{OPS}/{operation.id}/logs")
        unknown = await client.get(f"{OPS}/no-such-op/logs")

    assert found.json()["worker_id"] == "tr-2"
    assert missing.status_code == 404
    assert missing.json()["error"] == "log_not_found"
    assert "last ran on worker tr-1" in missing.json()["detail"]
    assert "asked tr-1, tr-2" in missing.json()["detail"]
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_operation"
    assert all(host != "bt-1" for _, host, _ in backend.workers.attempts)
