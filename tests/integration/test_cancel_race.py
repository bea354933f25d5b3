"""A cancel sent right after its create, with real processes: never lost, never completed.

The cancel can reach the backend while the operation is still pending, while the
dispatcher claims it, or while its start is on the way to the worker. Whichever it
is, the operation ends cancelled and the worker is idle again soon, although the
job, left alone, would run for minutes. The backend reaches the worker through a TCP
proxy that holds each start request for a moment (a slow network path), so the
cancel would overtake the start if the backend let it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fleet import Fleet, Server, backend_env, operator_client, worker_env
from support.processes import ProcessGroup, free_port, wait_until
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
ROUNDS = 8
#: How long the proxy holds a start request on its way to the worker.
START_LATENCY_S = 0.5
#: Minutes of work if nobody stops it.
ENDLESS_TRAINING = {"bars": 20_000, "hidden_units": 256, "epochs": 10_000, "seed": 1}
#: Milliseconds of work.
SMALL_TRAINING = {"bars": 100, "hidden_units": 1, "epochs": 1, "seed": 2}
FINISHED = {"completed", "failed", "cancelled"}


def start_latency(chunk: bytes) -> float:
    """Hold ``POST /operations`` (a start; cancels have a longer path) on its way."""
    return START_LATENCY_S if chunk.startswith(b"POST /operations HTTP/") else 0.0


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Fleet, Server, Server]]:
    with ProcessGroup(tmp_path) as group:
        fleet = Fleet(group, tmp_path)
        backend_port = free_port()
        backend = fleet.start_backend(
            port=backend_port, env=backend_env(backend_port, KTRDR_DB_PATH=str(tmp_path / "o.db"))
        )
        port = free_port()
        with TcpProxy("127.0.0.1", port, latency=start_latency) as proxy:
            env = worker_env(
                port,
                backend_port,
                KTRDR_CHECKPOINT_DIR=str(tmp_path / "ck"),
                KTRDR_WORKER_PUBLIC_URL=f"http://127.0.0.1:{proxy.port}",
            )
            worker = fleet.start_worker("training", backend_port=backend_port, port=port, env=env)
            fleet.wait_listed(backend, worker.health()["worker_id"], status="idle")
            yield fleet, backend, worker


def test_cancel_immediately_after_create_never_lets_the_operation_run_on(
    fleet: tuple[Fleet, Server, Server],
) -> None:
    """Create then cancel at once, many times: each ends cancelled and the worker, free
    again, completes the small operation created after it.
    """
    _, backend, worker = fleet
    ids: list[str] = []
    finals: list[dict[str, Any]] = []
    followers: list[dict[str, Any]] = []
    with operator_client() as http:

        def finished(operation_id: str) -> dict[str, Any] | None:
            view: dict[str, Any] = http.get(f"{backend.url}{OPS}/{operation_id}").json()
            return view if view["status"] in FINISHED else None

        for _ in range(ROUNDS):
            created = http.post(
                backend.url + OPS, json={"type": "training", "parameters": ENDLESS_TRAINING}
            )
            operation_id = created.json()["id"]
            cancelled = http.post(f"{backend.url}{OPS}/{operation_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            ids.append(operation_id)
            # The next operation runs only once the worker is free of the cancelled one.
            follower = http.post(
                backend.url + OPS, json={"type": "training", "parameters": SMALL_TRAINING}
            ).json()["id"]
            followers.append(
                wait_until(
                    lambda follower=follower: finished(follower),  # type: ignore[misc]
                    timeout_s=60,
                    message=lambda: backend.process.output() + worker.process.output(),
                )
            )
            finals.append(http.get(f"{backend.url}{OPS}/{operation_id}").json())
    worker_log = worker.process.stderr()

    assert [view["status"] for view in finals] == ["cancelled"] * ROUNDS, finals
    assert all(view["result"] is None for view in finals)
    assert [view["status"] for view in followers] == ["completed"] * ROUNDS, followers
    for operation_id in ids:
        assert f"operation {operation_id} ended: completed" not in worker_log
        if f"operation {operation_id} started" in worker_log:
            # Told by the cancel itself, or (the cancel having overtaken the start on the
            # backend) by the heartbeat answer that its attempt is no longer current.
            stopped = re.compile(
                rf"operation {operation_id}"
                r"(: cancellation requested| attempt \d+ is no longer current)"
            )
            assert stopped.search(worker_log), operation_id
