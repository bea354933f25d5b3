"""Store outages: 503 store_unavailable with Retry-After, /health, recovery, orphan grace.

The outage is real: the SQLite database's directory is moved away with the pool
emptied, so every new connection fails to open the file (as when a volume is lost),
and moved back for the recovery. The PostgreSQL outage through a TCP proxy is in
tests/integration/test_store_outage.py.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.backend import AUTH, OPERATOR_AUTH, Backend, FakeClock, make_backend

from ktrdr.api.orphans import OrphanDetector
from ktrdr.api.store import OperationStore
from ktrdr.api.store_health import (
    RETRY_AFTER,
    STORE_UNAVAILABLE,
    StoreHealth,
    is_store_outage,
)
from ktrdr.config import OrphanDetectorSettings
from ktrdr.protocol import OperationStatus, OperationType

OPS = "/api/v1/operations"


class MovableDatabase:
    """A SQLite store whose directory a test can take away and give back."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "db"
        self.away = root / "db-away"
        self.store = OperationStore.open_url(f"sqlite+pysqlite:///{self.directory / 'ops.db'}")

    def take_away(self) -> None:
        """Empty the pool and move the directory: no connection can open the file."""
        self.store.engine.dispose()
        self.directory.rename(self.away)

    def give_back(self) -> None:
        self.away.rename(self.directory)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[MovableDatabase]:
    database = MovableDatabase(tmp_path)
    yield database
    if database.away.exists():
        database.give_back()
    database.store.close()


@pytest.fixture
def backend(database: MovableDatabase) -> Iterator[Backend]:
    backend = make_backend(database.store)
    yield backend
    backend.health.close()


def test_outage_errors_are_told_from_other_database_errors() -> None:
    """Connection-level errors are outages; a constraint violation or a bug is not."""
    refused = sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    closed = sa.exc.InterfaceError("SELECT 1", {}, Exception("connection already closed"))
    invalidated = sa.exc.DatabaseError(
        "SELECT 1", {}, Exception("terminated"), connection_invalidated=True
    )
    duplicate = sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    assert is_store_outage(refused)
    assert is_store_outage(closed)
    assert is_store_outage(invalidated)
    assert is_store_outage(sa.exc.TimeoutError("QueuePool limit reached"))
    assert not is_store_outage(duplicate)
    assert not is_store_outage(ValueError("bug"))


@pytest.mark.anyio
async def test_requests_needing_the_store_get_503_with_retry_after_while_it_is_gone(
    backend: Backend, database: MovableDatabase
) -> None:
    """Create, list, get and cancel answer 503 store_unavailable + Retry-After, never 500."""
    async with backend.client() as client:
        existing = (await client.post(OPS, json={"type": "training"})).json()["id"]
        database.take_away()
        backend.clock.advance(2)  # past the read cache (KTRDR_OPS_CACHE_TTL)
        answers = [
            await client.post(OPS, json={"type": "training"}),
            await client.get(OPS),
            await client.get(f"{OPS}/{existing}"),
            await client.post(f"{OPS}/{existing}/cancel"),
        ]

    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == STORE_UNAVAILABLE
        assert answer.headers["retry-after"] == str(int(RETRY_AFTER.total_seconds()))
        assert answer.headers["connection"] == "close"
    assert not backend.health.available


@pytest.mark.anyio
async def test_health_is_503_while_the_store_is_gone_and_200_once_it_is_back(
    backend: Backend, database: MovableDatabase
) -> None:
    """GET /health probes the store: 503 naming it while it is gone, 200 after, no restart."""
    async with backend.client(operator=False) as client:
        before = await client.get("/health")
        database.take_away()
        during = await client.get("/health")
        database.give_back()
        after = await client.get("/health")
        created = await client.post(OPS, json={"type": "training"}, headers=OPERATOR_AUTH)

    assert before.status_code == 200
    assert before.json()["store"] == "ok"
    assert during.status_code == 503
    assert during.json()["status"] == "unavailable"
    assert during.json()["store"] == "unavailable"
    assert during.json()["error"] == STORE_UNAVAILABLE
    assert "retry-after" in during.headers
    assert after.status_code == 200
    assert after.json()["status"] == "ok"
    assert created.status_code == 201


@pytest.mark.anyio
async def test_workers_register_and_heartbeat_through_an_outage(
    backend: Backend, database: MovableDatabase
) -> None:
    """The registry is in memory: registration and heartbeats still work, stamps wait."""
    running = backend.service.create("training", {})
    async with backend.client(operator=False) as client:
        registered = await client.post(
            "/api/v1/workers/register",
            json={
                "worker_id": "w1",
                "worker_type": "training",
                "endpoint_url": "http://127.0.0.1:9/w1",
                "heartbeat_interval_s": 1,
                "config_fingerprint": "fp",
            },
            headers=AUTH,
        )
        credential = {"Authorization": f"Bearer {registered.json()['credential']}"}
        backend.service.start(running.id, worker_id="w1")
        database.take_away()
        beat = await client.post(
            "/api/v1/workers/w1/heartbeat",
            json={"status": "busy", "current_operation_id": running.id, "attempt": 1},
            headers=credential,
        )
        with pytest.raises(sa.exc.OperationalError):
            await backend.reports.flush()
        kept = backend.reports.unwritten
        database.give_back()
        written = await backend.reports.flush()

    assert registered.status_code == 201
    assert beat.status_code == 200
    assert (kept, written) == (1, 1)
    assert backend.store.get(running.id).last_reported_at == backend.clock()


def test_an_outage_is_logged_once_and_its_end_with_its_length(
    database: MovableDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """One ERROR line when the store goes, one WARNING with the outage's length when back."""
    clock = FakeClock()
    health = StoreHealth(engine=database.store.engine, clock=clock)
    database.take_away()
    with caplog.at_level(logging.INFO, logger="ktrdr.api.store_health"):
        for _ in range(3):
            with pytest.raises(sa.exc.OperationalError):
                database.store.count_live()
        down_since = health.down_since
        clock.advance(42)
        database.give_back()
        database.store.count_live()
        database.store.count_live()
    health.close()

    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        (
            "ERROR",
            "the operations store is unavailable (unable to open database file); requests "
            "that need it answer 503 store_unavailable (Retry-After: 5s) until it is back",
        ),
        ("WARNING", "the operations store is available again after 42.0s"),
    ]
    assert down_since is not None
    assert health.available
    assert health.recovered_at == clock()


def test_the_reason_never_shows_the_database_password() -> None:
    """The driver's reason is logged with the URL's password masked."""
    engine = sa.create_engine("postgresql+psycopg://ktrdr:hunter2-secret@127.0.0.1:1/ktrdr")
    health = StoreHealth(engine=engine, clock=FakeClock())
    health.failed(RuntimeError('password "hunter2-secret" rejected'))

    assert health.reason == 'password "********" rejected'
    health.close()
    engine.dispose()


def _running(store: OperationStore, clock: FakeClock, worker: str = "w1") -> str:
    record = store.create(operation_type=OperationType.TRAINING, parameters={}, now=clock())
    store.mark_running(record.id, worker_id=worker, now=clock())
    return record.id


def test_orphans_get_a_full_timeout_of_grace_after_the_store_comes_back(
    database: MovableDatabase,
) -> None:
    """Nothing is judged during an outage, nor for one timeout after the store returns."""
    clock = FakeClock()
    store = database.store
    health = StoreHealth(engine=store.engine, clock=clock)
    settings = OrphanDetectorSettings(timeout=datetime.timedelta(seconds=60))
    detector = OrphanDetector(store=store, settings=settings, clock=clock, health=health)
    operation_id = _running(store, clock)
    clock.advance(30)
    database.take_away()
    with pytest.raises(sa.exc.OperationalError):
        store.count_live()
    clock.advance(70)  # silent for 100 s, store down
    during = detector.check()
    database.give_back()
    clock.advance(10)
    store.count_live()  # the store answers again: the grace starts now
    clock.advance(59)
    within_grace = detector.check()
    clock.advance(2)
    after_grace = detector.check()
    health.close()

    assert during == []
    assert within_grace == []
    assert [r.id for r in after_grace] == [operation_id]
    assert store.get(operation_id).status is OperationStatus.FAILED


class _OneRound:
    """The detector's wait: stop after the first round (no real time passes)."""

    async def __call__(self, stop_event: asyncio.Event, seconds: float) -> bool:
        stop_event.set()
        return True


@pytest.mark.anyio
@pytest.mark.parametrize("flush_first", [True, False])
async def test_orphan_rounds_write_the_heartbeats_held_in_memory_before_judging(
    backend: Backend, flush_first: bool
) -> None:
    """A heartbeat received but not yet written keeps its operation (the false orphan)."""
    detector = OrphanDetector(
        store=backend.store,
        settings=OrphanDetectorSettings(timeout=datetime.timedelta(seconds=60)),
        clock=backend.clock,
        wait=_OneRound(),
    )
    operation_id = _running(backend.store, backend.clock)
    backend.register("w1")
    backend.clock.advance(50)
    async with backend.client(operator=False) as client:
        beat = await client.post(
            "/api/v1/workers/w1/heartbeat",
            json={"status": "busy", "current_operation_id": operation_id, "attempt": 1},
            headers=backend.worker_auth("w1"),
        )
    backend.clock.advance(20)  # 70 s after the stored stamp, 20 s after the heartbeat
    prepare = backend.reports.flush if flush_first else None
    await detector.run_forever(asyncio.Event(), prepare=prepare)

    status = backend.store.get(operation_id).status
    assert beat.status_code == 200
    expected = OperationStatus.RUNNING if flush_first else OperationStatus.FAILED
    assert status is expected


@pytest.mark.anyio
async def test_a_failed_flush_means_no_orphan_is_judged_that_round(
    backend: Backend, database: MovableDatabase
) -> None:
    """If the stamps cannot be written, the round fails before judging anything."""
    operation_id = _running(backend.store, backend.clock)
    backend.register("w1")
    async with backend.client(operator=False) as client:
        await client.post(
            "/api/v1/workers/w1/heartbeat",
            json={"status": "busy", "current_operation_id": operation_id, "attempt": 1},
            headers=backend.worker_auth("w1"),
        )
    backend.clock.advance(120)
    judged: list[object] = []

    class Recording(OrphanDetector):
        def check(self) -> list[object]:  # type: ignore[override]
            judged.append(self)
            return []

    detector = Recording(
        store=backend.store,
        settings=OrphanDetectorSettings(),
        clock=backend.clock,
        wait=_OneRound(),
    )
    database.take_away()
    rounds = await detector.run_forever(asyncio.Event(), prepare=backend.reports.flush)

    assert rounds == 1
    assert judged == []
    assert backend.reports.unwritten == 1
