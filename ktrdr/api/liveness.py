"""Worker liveness: which registered workers are silent, and which to forget.

:func:`assess` is a pure function of the records, the time and the policy, so unit
tests drive it with a fake clock; :func:`sweep` applies the same rule to a registry.
The backend runs ``sweep`` periodically and before answering reads, so a listed
status is never older than the request. A sweep costs the number of workers whose
status changes, not the size of the fleet: it walks the registry's silence order
(per heartbeat interval, most silent first) and stops at the first worker not due.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable

import attrs

from ktrdr.api.registry import WorkerRecord, WorkerRegistry
from ktrdr.config import WorkerSettings
from ktrdr.protocol import WorkerStatus

logger = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class LivenessPolicy:
    """When a silent worker becomes unavailable, and when it is removed."""

    #: Missed heartbeats (at the interval the worker registered with) before unavailable.
    stale_after: int
    #: Silence after which the worker is forgotten.
    removal_threshold: datetime.timedelta

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> LivenessPolicy:
        """``KTRDR_WORKER_STALE_AFTER`` and ``KTRDR_WORKER_REMOVAL_THRESHOLD``."""
        return cls(stale_after=settings.stale_after, removal_threshold=settings.removal_threshold)

    def stale_limit(self, record: WorkerRecord) -> datetime.timedelta:
        """How long ``record`` may stay silent before it is unavailable."""
        return self.stale_after * record.heartbeat_interval


@attrs.frozen(kw_only=True)
class LivenessVerdict:
    """What changes: workers that just became unavailable, workers to forget."""

    unavailable: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.unavailable or self.removed)


def assess(
    records: Iterable[WorkerRecord], now: datetime.datetime, policy: LivenessPolicy
) -> LivenessVerdict:
    """Decide, for every record, whether it just went unavailable or must be removed."""
    unavailable: list[str] = []
    removed: list[str] = []
    for record in records:
        silence = record.silence(now)
        if silence > policy.removal_threshold:
            removed.append(record.worker_id)
        elif silence > policy.stale_limit(record) and record.status is not WorkerStatus.UNAVAILABLE:
            unavailable.append(record.worker_id)
    return LivenessVerdict(unavailable=tuple(unavailable), removed=tuple(removed))


def assess_registry(
    registry: WorkerRegistry, now: datetime.datetime, policy: LivenessPolicy
) -> LivenessVerdict:
    """:func:`assess` over ``registry``, visiting only the workers that are due.

    Within one heartbeat interval, workers are ordered by last heartbeat, so the walk
    stops at the first one still within its limit: everyone after it heard later.
    """
    unavailable: list[str] = []
    removed: list[str] = []
    for interval, alive, dead in registry.silent_first():
        stale_limit = policy.stale_after * interval
        for record in alive:
            silence = record.silence(now)
            if silence > policy.removal_threshold:
                removed.append(record.worker_id)
            elif silence > stale_limit:
                unavailable.append(record.worker_id)
            else:
                break
        for record in dead:
            if record.silence(now) <= policy.removal_threshold:
                break
            removed.append(record.worker_id)
    return LivenessVerdict(unavailable=tuple(unavailable), removed=tuple(removed))


def sweep(
    registry: WorkerRegistry, now: datetime.datetime, policy: LivenessPolicy
) -> LivenessVerdict:
    """Apply the liveness rule to ``registry`` (:func:`assess_registry`); log what changed."""
    verdict = assess_registry(registry, now, policy)
    if verdict:
        registry.mark_unavailable(verdict.unavailable)
        registry.remove(verdict.removed)
        for worker_id in verdict.unavailable:
            logger.warning(
                "worker %s missed %d heartbeats; marked unavailable", worker_id, policy.stale_after
            )
        for worker_id in verdict.removed:
            logger.warning(
                "worker %s silent for more than %s; removed from the registry",
                worker_id,
                policy.removal_threshold,
            )
    return verdict


__all__ = ["LivenessPolicy", "LivenessVerdict", "assess", "assess_registry", "sweep"]
