"""The backend app factory: injected collaborators, the liveness loop in the lifespan."""

from __future__ import annotations

import asyncio
import datetime

import anyio
import pytest

from ktrdr.api import WorkerRegistry, create_app, utc_now
from ktrdr.api.app import MAX_SWEEP_INTERVAL, MIN_SWEEP_INTERVAL, sweep_interval
from ktrdr.config import BackendConfig, validate_all
from ktrdr.protocol import OperationType, RegisterRequest

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def _config(**environ: str) -> BackendConfig:
    return validate_all("backend", environ, env_file=None)


def test_utc_now_is_aware_utc() -> None:
    """The production clock returns timezone-aware UTC datetimes."""
    assert utc_now().utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        ("10s", datetime.timedelta(seconds=5)),
        ("0.05s", MIN_SWEEP_INTERVAL),
        ("20s", MAX_SWEEP_INTERVAL),
    ],
)
def test_sweep_interval_is_half_the_heartbeat_within_bounds(
    interval: str, expected: datetime.timedelta
) -> None:
    """The liveness sweep runs every half heartbeat, clamped to [50 ms, 5 s]."""
    config = _config(KTRDR_WORKER_HEARTBEAT_INTERVAL=interval)

    assert sweep_interval(config) == expected


@pytest.mark.anyio
async def test_lifespan_sweeps_dead_workers_without_any_request() -> None:
    """While the app runs, its background sweep removes a silent worker on its own."""
    now = [T0]
    registry = WorkerRegistry()
    config = _config(
        KTRDR_WORKER_HEARTBEAT_INTERVAL="0.1s",
        KTRDR_WORKER_STALE_AFTER="1",
        KTRDR_WORKER_REMOVAL_THRESHOLD="1s",
    )
    app = create_app(config, clock=lambda: now[0], registry=registry)
    registry.register(
        RegisterRequest(
            worker_id="w",
            worker_type=OperationType.BACKTEST,
            endpoint_url="http://w:5003",
            heartbeat_interval_s=0.1,
            config_fingerprint="fp",
        ),
        now=T0,
    )
    now[0] = T0 + datetime.timedelta(seconds=2)

    async with app.router.lifespan_context(app):
        with anyio.fail_after(10):
            while "w" in registry:
                await anyio.sleep(0.01)

    assert len(registry) == 0


@pytest.mark.anyio
async def test_lifespan_stops_its_background_task_on_shutdown() -> None:
    """Leaving the lifespan cancels the sweep loop (no task left running)."""
    app = create_app(_config(), clock=utc_now, registry=WorkerRegistry())

    def sweepers() -> list[asyncio.Task[object]]:
        return [
            t
            for t in asyncio.all_tasks()
            if not t.done() and "run_periodically" in repr(t.get_coro())
        ]

    async with app.router.lifespan_context(app):
        during = sweepers()
    after = sweepers()

    assert len(during) == 1
    assert after == []
