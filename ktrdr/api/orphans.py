"""The orphan detector: retries (or fails) running operations that no worker reports any more.

Decision: the detector needs no list of live workers. Every heartbeat that names an
operation stamps its ``last_reported_at`` (written in batches by
:class:`~ktrdr.api.reports.OperationReports`), so an operation
whose stamp is older than ``timeout`` is one that no live worker has reported for that
long: its worker died, restarted without it, or lost it. That attempt is lost: the
operation goes back to the queue to resume from its checkpoint on another worker, or,
once ``KTRDR_OPS_MAX_ATTEMPTS`` attempts were lost, is marked failed with a reason
naming the worker, when it was last seen, and the attempts.

After a backend restart, every worker gets one full ``timeout`` to report again before
anything is failed: the backend's own downtime is not the workers' silence. The same
grace follows an outage of the store (:class:`~ktrdr.api.store_health.StoreHealth`
says when it came back), and nothing is judged while the store is down: stamps and
reports could not be written then. Each round first writes the heartbeat stamps still
held in memory (the ``prepare`` hook of :meth:`OrphanDetector.run_forever`), so an
operation is never judged on a stamp older than the heartbeats the backend received.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable

import attrs

from ktrdr.api.metrics import AttemptLoss
from ktrdr.api.periodic import Wait, run_until_stopped, wait_or_stop
from ktrdr.api.store import OperationRecord, OperationStore
from ktrdr.api.store_health import StoreHealth
from ktrdr.config import OrphanDetectorSettings, env_name
from ktrdr.log_context import attempt_of, operation_context

__all__ = ["OrphanDetector", "orphan_reason"]

logger = logging.getLogger(__name__)


def orphan_reason(
    record: OperationRecord, *, now: datetime.datetime, timeout: datetime.timedelta
) -> str:
    """Why an attempt was lost as an orphan, for the user reading it."""
    last = record.last_reported_at
    worker = record.worker_id or "(none)"
    if last is None:
        seen = "never reported it"
    else:
        silence = (now - last).total_seconds()
        seen = f"last reported it at {last.isoformat()} ({silence:.0f}s ago)"
    variable = env_name(attrs.fields(OrphanDetectorSettings).timeout)
    return (
        f"orphaned: worker {worker} {seen}, longer than {variable}="
        f"{timeout.total_seconds():g}s; the worker stopped or lost the operation"
    )


class OrphanDetector:
    """Loses the attempt of every running operation unreported for longer than ``timeout``.

    ``clock`` returns aware UTC datetimes. ``max_attempts`` is
    ``KTRDR_OPS_MAX_ATTEMPTS`` (1: fail at the first orphaned attempt). :meth:`check`
    does one round (tests call it directly); :meth:`run_forever` repeats it every
    ``check_interval``. With ``health``, nothing is judged while the store is
    unavailable, nor for one ``timeout`` after it came back.
    """

    def __init__(
        self,
        *,
        store: OperationStore,
        settings: OrphanDetectorSettings,
        clock: Callable[[], datetime.datetime],
        wait: Wait = wait_or_stop,
        health: StoreHealth | None = None,
        max_attempts: int = 1,
    ) -> None:
        self._store = store
        self._health = health
        self._settings = settings
        self._max_attempts = max_attempts
        self._clock = clock
        self._wait = wait
        self._started_at = clock()

    def check(self) -> list[OperationRecord]:
        """One round: lose the orphans' attempts; returns them as they are now
        (pending again for a retry, or failed).
        """
        now = self._clock()
        timeout = self._settings.timeout
        cutoff = now - timeout
        if cutoff < self._grace_from():
            return []  # within the grace period after a (re)start or a store outage
        failed: list[OperationRecord] = []
        for record in self._store.unreported_since(cutoff):
            reason = orphan_reason(record, now=now, timeout=timeout)
            done = self._store.lose(
                record.id,
                worker_id=record.worker_id or "",
                attempt=record.attempt,
                now=now,
                reason=reason,
                max_attempts=self._max_attempts,
                cutoff=cutoff,
                cause=AttemptLoss.ORPHANED,
            )
            if done is not None:
                with operation_context(record.id, attempt=attempt_of(record)):
                    logger.warning("operation %s %s: %s", record.id, done.status.value, done.error)
                failed.append(done)
        return failed

    def _grace_from(self) -> datetime.datetime:
        """Start of the current grace period: this detector's start or the store's
        return from its last outage; the far future while the store is down.
        """
        health = self._health
        if health is None:
            return self._started_at
        if not health.available:
            return datetime.datetime.max.replace(tzinfo=datetime.timezone.utc)
        recovered = health.recovered_at
        return self._started_at if recovered is None else max(self._started_at, recovered)

    async def run_forever(
        self,
        stop_event: asyncio.Event,
        *,
        prepare: Callable[[], Awaitable[object]] | None = None,
    ) -> int:
        """Check now and every ``check_interval`` until ``stop_event`` is set.

        ``prepare`` runs before each check (the app writes the heartbeat stamps held in
        memory); if it fails, that round judges nothing.
        """

        async def round_() -> None:
            if prepare is not None:
                await prepare()
            await asyncio.to_thread(self.check)

        return await run_until_stopped(
            "orphan detection",
            round_,
            interval=self._settings.check_interval,
            stop_event=stop_event,
            wait=self._wait,
        )
