"""Two workers with one ``KTRDR_WORKER_ID``, as real processes.

The second is refused (409 naming the id) for as long as the first is live: it logs
the conflict at ERROR on every attempt, takes no work, and its shutdown leaves the
first registered. When the first crashes, the second registers by itself once the
backend has marked the first unavailable (a crashed worker restarted on another
port comes back without anyone's help).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fleet import Fleet, Server, backend_env, operator_client, worker_env
from support.processes import ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.slow

OPS = "/api/v1/operations"
WORKER_ID = "training-duplicate"
SMALL_TRAINING = {"bars": 200, "hidden_units": 2, "epochs": 2, "seed": 3}
REFUSED = f"KTRDR_WORKER_ID={WORKER_ID} is held by another live worker"


class Duplicates:
    """A backend, and training workers that all claim :data:`WORKER_ID`."""

    def __init__(self, fleet: Fleet, directory: Path) -> None:
        self.fleet = fleet
        self.directory = directory
        port = free_port()
        env = backend_env(port, KTRDR_DB_PATH=str(directory / "ops.db"))
        self.backend = fleet.start_backend(port=port, env=env)

    def start_worker(self) -> Server:
        port = free_port()
        env = worker_env(
            port,
            self.backend.port,
            KTRDR_WORKER_ID=WORKER_ID,
            KTRDR_CHECKPOINT_DIR=str(self.directory / "checkpoints"),
        )
        return self.fleet.start_worker(
            "training", backend_port=self.backend.port, port=port, env=env
        )

    def view(self) -> dict[str, Any] | None:
        return self.fleet.worker_view(self.backend, WORKER_ID)

    def run_one(self) -> dict[str, Any]:
        """Create a small training operation and wait until it finished."""
        with operator_client() as http:
            operation_id = http.post(
                self.backend.url + OPS, json={"type": "training", "parameters": SMALL_TRAINING}
            ).json()["id"]

            def finished() -> dict[str, Any] | None:
                view: dict[str, Any] = http.get(f"{self.backend.url}{OPS}/{operation_id}").json()
                return view if view["status"] in {"completed", "failed", "cancelled"} else None

            return wait_until(finished, timeout_s=60, message=self.logs)

    def logs(self) -> str:
        return "\n".join(child.output() for child in self.fleet.group.children)


@pytest.fixture
def duplicates(tmp_path: Path) -> Iterator[Duplicates]:
    with ProcessGroup(tmp_path) as group:
        yield Duplicates(Fleet(group, tmp_path), tmp_path)


def refusals(worker: Server) -> int:
    return worker.process.stderr().count(REFUSED)


def test_a_duplicate_worker_id_is_refused_takes_no_work_and_cannot_unregister_the_first(
    duplicates: Duplicates,
) -> None:
    """The second worker with a live worker's id: 409s logged at ERROR on every attempt,
    no work, and stopping it leaves the first registered and working.
    """
    first = duplicates.start_worker()
    duplicates.fleet.wait_listed(duplicates.backend, WORKER_ID, endpoint_url=first.url)
    second = duplicates.start_worker()
    wait_until(lambda: refusals(second) >= 3, message=duplicates.logs)
    second_health = second.health()
    done = duplicates.run_one()

    second.process.signal(signal.SIGTERM)
    code = second.process.wait_exit()
    stopped_at = duplicates.view()
    assert stopped_at is not None
    # The first still heartbeats under its own registration after the second is gone.
    after = wait_until(
        lambda: (
            (view := duplicates.view()) is not None
            and view["last_heartbeat_at"] > stopped_at["last_heartbeat_at"]
            and view
        ),
        message=duplicates.logs,
    )
    again = duplicates.run_one()

    second_log = second.process.stderr()
    refused_lines = [line for line in second_log.splitlines() if REFUSED in line]
    assert all(" ERROR " in line for line in refused_lines)
    assert len(refused_lines) == second_log.count("registration refused (attempt")
    assert "HTTP 409 worker_id_conflict" in refused_lines[0]
    assert f"worker id '{WORKER_ID}'" in refused_lines[0]  # the backend's answer names the id
    assert second_health["registered"] is False
    assert done["status"] == "completed", done
    assert again["status"] == "completed", again
    assert f"operation {done['id']} started" in first.process.stderr()
    assert "started (training" not in second_log
    assert code == 0
    assert after["endpoint_url"] == first.url
    assert after["status"] == "idle"
    backend_log = duplicates.backend.process.stderr()
    assert f"registration of worker {WORKER_ID} from {second.url} refused" in backend_log
    assert f"worker {WORKER_ID} (training) unregistered" not in backend_log


def test_a_crashed_worker_restarted_on_another_port_registers_by_itself(
    duplicates: Duplicates,
) -> None:
    """SIGKILL the registered worker: its namesake on another port, refused until then,
    registers once the backend marks the first unavailable, and takes work.
    """
    first = duplicates.start_worker()
    duplicates.fleet.wait_listed(duplicates.backend, WORKER_ID, endpoint_url=first.url)
    restarted = duplicates.start_worker()
    wait_until(lambda: refusals(restarted) >= 1, message=duplicates.logs)

    first.process.signal(signal.SIGKILL)
    first.process.wait_exit()
    listed = duplicates.fleet.wait_listed(
        duplicates.backend, WORKER_ID, endpoint_url=restarted.url, status="idle"
    )
    done = duplicates.run_one()

    assert listed["endpoint_url"] == restarted.url
    assert done["status"] == "completed", done
    assert f"operation {done['id']} started" in restarted.process.stderr()
    assert restarted.health()["registered"] is True
