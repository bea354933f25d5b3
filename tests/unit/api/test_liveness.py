"""Liveness: silent workers become unavailable, then are removed (pure, fake time)."""

from __future__ import annotations

import datetime
import logging

import pytest

from ktrdr.api.liveness import LivenessPolicy, LivenessVerdict, assess, sweep
from ktrdr.api.registry import WorkerRegistry
from ktrdr.config import WorkerSettings
from ktrdr.protocol import HeartbeatRequest, OperationType, RegisterRequest, WorkerStatus

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
POLICY = LivenessPolicy(stale_after=3, removal_threshold=datetime.timedelta(seconds=300))


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


def _registry(
    *workers: tuple[str, float], registry: WorkerRegistry | None = None, last_seen: float = 0
) -> WorkerRegistry:
    """Workers ``(id, heartbeat interval s)``, last heard of ``last_seen`` s after T0."""
    registry = registry if registry is not None else WorkerRegistry()
    for worker_id, interval_s in workers:
        request = RegisterRequest(
            worker_id=worker_id,
            worker_type=OperationType.TRAINING,
            endpoint_url="http://127.0.0.1:9/host",
            heartbeat_interval_s=interval_s,
            config_fingerprint="fp",
        )
        registry.register(request, now=T0 + _seconds(last_seen))
    return registry


def test_policy_comes_from_the_worker_settings() -> None:
    """KTRDR_WORKER_STALE_AFTER and KTRDR_WORKER_REMOVAL_THRESHOLD feed the policy."""
    settings = WorkerSettings(stale_after=5, removal_threshold=_seconds(60))

    assert LivenessPolicy.from_settings(settings) == LivenessPolicy(
        stale_after=5, removal_threshold=_seconds(60)
    )


def test_a_worker_is_unavailable_only_after_missing_stale_after_beats() -> None:
    """At exactly 3 intervals of silence a worker is fine; just past it, unavailable."""
    records = _registry(("w", 10)).records()

    assert assess(records, T0 + _seconds(30), POLICY) == LivenessVerdict()
    assert assess(records, T0 + _seconds(30.001), POLICY).unavailable == ("w",)


def test_each_worker_is_judged_by_the_interval_it_registered_with() -> None:
    """A 1 s worker is stale after 3 s of silence while a 10 s worker is still fine."""
    records = _registry(("fast", 1), ("slow", 10)).records()

    verdict = assess(records, T0 + _seconds(5), POLICY)

    assert verdict.unavailable == ("fast",)
    assert verdict.removed == ()


def test_a_worker_silent_past_the_removal_threshold_is_removed() -> None:
    """Past the removal threshold a worker is removed (not also listed as unavailable)."""
    records = _registry(("w", 10)).records()

    verdict = assess(records, T0 + _seconds(300.5), POLICY)

    assert verdict == LivenessVerdict(unavailable=(), removed=("w",))


def test_an_already_unavailable_worker_is_not_reported_again() -> None:
    """Only the transition to unavailable is reported, once."""
    registry = _registry(("w", 10))
    registry.mark_unavailable(["w"])

    assert assess(registry.records(), T0 + _seconds(60), POLICY) == LivenessVerdict()


def test_sweep_applies_the_verdict_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    """sweep marks stale workers unavailable, removes dead ones and says so in the log."""
    registry = _registry(("stale", 10), ("fresh", 3600))
    _registry(("dead", 1), registry=registry, last_seen=-100)
    caplog.set_level(logging.WARNING, logger="ktrdr.api.liveness")
    policy = LivenessPolicy(stale_after=3, removal_threshold=_seconds(40))

    verdict = sweep(registry, T0 + _seconds(31), policy)

    assert verdict == LivenessVerdict(unavailable=("stale",), removed=("dead",))
    assert registry.get("stale").status is WorkerStatus.UNAVAILABLE
    assert registry.get("fresh").status is WorkerStatus.IDLE
    assert "dead" not in registry
    assert "worker stale missed 3 heartbeats" in caplog.text
    assert "worker dead silent for more than" in caplog.text


def test_a_quiet_sweep_changes_nothing() -> None:
    """With every worker on time, sweep returns an empty (falsy) verdict."""
    registry = _registry(("w", 10))

    verdict = sweep(registry, T0 + _seconds(1), POLICY)

    assert not verdict
    assert registry.get("w").status is WorkerStatus.IDLE


def test_a_sweep_visits_only_the_workers_that_are_due() -> None:
    """With 1,000 workers, a sweep where two went silent examines about two records
    per heartbeat interval, not the fleet; the verdict is the full assessment's."""
    visited: list[int] = []
    registry = WorkerRegistry(meter=visited.append)
    _registry(("quiet-1", 10), ("quiet-2", 1), registry=registry)
    _registry(*((f"w{i:04d}", 10 if i % 2 else 1) for i in range(1000)), registry=registry)
    now = T0 + _seconds(29)
    for i in range(1000):  # everyone but the two quiet ones spoke at 29 s
        registry.heartbeat(f"w{i:04d}", HeartbeatRequest(status=WorkerStatus.IDLE), now=now)
    visited.clear()

    verdict = sweep(registry, T0 + _seconds(31), POLICY)

    assert sorted(verdict.unavailable) == ["quiet-1", "quiet-2"]
    assert sum(visited) <= 2 * 3  # per interval: the due one, the first not due, its move
