"""A backend started on a database ktrdr 0.4.0 made, with real processes (SQLite, PostgreSQL).

The database holds a pending and a finished operation and no ``alembic_version``.
The backend must upgrade it at startup, dispatch the pending operation to a worker
and list the finished one with its result.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from support.fleet import Fleet, backend_env, worker_env
from support.postgres import backend_database_env, fresh_database
from support.processes import ProcessGroup, free_port, wait_until
from support.schema_0_4_0 import (
    FINISHED_ID,
    FINISHED_RESULT,
    PENDING_ID,
    create_0_4_0_database,
)

from ktrdr.api.migrations import head_revision

pytestmark = pytest.mark.slow

OPERATOR_TOKEN = "operator-token-for-the-upgrade-test"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A 0.4.0 database and the backend variables naming it (plus its URL under "url")."""
    if request.param == "sqlite":
        path = tmp_path / "data" / "ktrdr.db"
        url = sa.URL.create("sqlite+pysqlite", database=str(path))
        create_0_4_0_database(url)
        yield {"url": url, "KTRDR_DB_PATH": str(path)}
        return
    with fresh_database("ktrdr_upgrade") as url:
        create_0_4_0_database(url)
        yield {"url": url, **backend_database_env(url)}


def test_a_0_4_0_database_is_upgraded_at_start_and_its_operations_go_on(
    old_database: dict[str, Any], tmp_path: Path
) -> None:
    """Backend on a 0.4.0 database: stamped and upgraded; pending dispatched, finished listed."""
    url = old_database.pop("url")
    backend_port = free_port()
    with ProcessGroup(tmp_path) as group, httpx.Client(timeout=10) as http:
        fleet = Fleet(group, tmp_path)
        env = backend_env(
            backend_port,
            KTRDR_AUTH_OPERATOR_TOKEN=OPERATOR_TOKEN,
            KTRDR_OPS_RETENTION_DAYS="36500",  # the old operation finished on a fixed date
            **old_database,
        )
        backend = fleet.start_backend(port=backend_port, env=env)
        worker_port = free_port()
        fleet.start_worker(
            "backtest",
            backend_port=backend_port,
            port=worker_port,
            env=worker_env(
                worker_port, backend_port, KTRDR_CHECKPOINT_DIR=str(tmp_path / "checkpoints")
            ),
        )
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        operations = f"{backend.url}/api/v1/operations"

        def completed() -> dict[str, Any] | None:
            view: dict[str, Any] = http.get(f"{operations}/{PENDING_ID}", headers=headers).json()
            return view if view.get("status") == "completed" else None

        done = wait_until(completed, timeout_s=60, message=backend.process.output)
        finished = http.get(f"{operations}/{FINISHED_ID}", headers=headers).json()
        listed = http.get(operations, headers=headers).json()
        log = backend.process.output()

    assert done["result"], done
    assert finished.get("status") == "completed", finished
    assert finished.get("result") == FINISHED_RESULT
    assert {item["id"] for item in listed["items"]} == {PENDING_ID, FINISHED_ID}
    assert "recognised a ktrdr 0.4.0 database, stamped it 0001" in log
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    assert stored == [head_revision()]
