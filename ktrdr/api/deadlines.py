"""Deadlines: fail running operations that ran too long or stopped making progress.

Two rules, checked every second:

- **timeout**: an attempt running past its deadline (``timeout_s`` given on creation,
  else ``KTRDR_OPS_DEFAULT_TIMEOUT``; counted from the attempt's start on its worker)
  is failed with "timed out after N seconds";
- **stall**: a running operation whose progress has not changed for
  ``KTRDR_OPS_STALL_TIMEOUT`` (0 disables) is failed as stalled, even while its worker
  heartbeats (a job hung in a system call, a dead lock, an endless loop).

Both are failures of the job itself: final, never retried (lost attempts are the
orphan detector's). The failed attempt is then no longer current, so its worker is
told so (a cancel marked ``superseded``): it kills the job at once and writes no more
checkpoints for it; the last periodic checkpoint stays for a resume by hand.

The stall rule reads ``progressed_at``, which heartbeats move when the progress they
carry changes; like the orphan detector, each round first writes the heartbeat stamps
held in memory (the ``prepare`` hook), nothing is judged while the store is down, and
stalls get one full stall timeout of grace after the backend starts or the store comes
back (progress that arrived meanwhile could not be recorded). Times come from the
injected clock; the store's conditional updates make a report that lands meanwhile win.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable

import attrs

from ktrdr.api.periodic import Wait, run_until_stopped, wait_or_stop
from ktrdr.api.store import OperationRecord, OperationStore
from ktrdr.api.store_health import StoreHealth
from ktrdr.config import OperationsSettings, env_name
from ktrdr.config.fields import format_duration

__all__ = ["DEFAULT_TICK", "DeadlineWatch", "StopAttempt", "stall_reason", "timeout_reason"]

logger = logging.getLogger(__name__)

#: How often the deadlines are checked.
DEFAULT_TICK = datetime.timedelta(seconds=1)
_FIELDS = attrs.fields(OperationsSettings)
_STALL_TIMEOUT = env_name(_FIELDS.stall_timeout)
_DEFAULT_TIMEOUT = env_name(_FIELDS.default_timeout)

#: Tells a worker its attempt is over: (operation id, worker id, attempt) -> None.
StopAttempt = Callable[[str, str, int], Awaitable[object]]


def timeout_reason(record: OperationRecord) -> str:
    """Why an attempt was failed for running past its deadline."""
    seconds = record.timeout_s if record.timeout_s is not None else 0.0
    return (
        f"timed out after {seconds:g} seconds (attempt {record.attempt} on worker "
        f"{record.worker_id}; the limit is the operation's timeout_s, else "
        f"{_DEFAULT_TIMEOUT}); the job was stopped"
    )


def stall_reason(
    record: OperationRecord, *, now: datetime.datetime, stall: datetime.timedelta
) -> str:
    """Why a running operation was failed as stalled."""
    since = record.progressed_at
    quiet = "" if since is None else f" since {since.isoformat()}"
    silence = 0.0 if since is None else (now - since).total_seconds()
    return (
        f"stalled: its progress has not changed{quiet} ({silence:.0f}s, longer than "
        f"{_STALL_TIMEOUT}={format_duration(stall)}) on worker {record.worker_id} "
        f"(attempt {record.attempt}); the job was stopped"
    )


class DeadlineWatch:
    """Fails timed-out and stalled attempts and has their jobs stopped.

    ``clock`` returns aware UTC datetimes. ``stop`` tells an attempt's worker to kill
    it (the dispatcher's superseding cancel); None leaves the workers alone. With
    ``health``, nothing is judged while the store is unavailable, and stalls not for
    one stall timeout after it came back. :meth:`check` does one round's store work
    (tests call it); :meth:`run_forever` repeats it every ``tick`` and stops the jobs.
    """

    def __init__(
        self,
        *,
        store: OperationStore,
        settings: OperationsSettings,
        clock: Callable[[], datetime.datetime],
        stop: StopAttempt | None = None,
        health: StoreHealth | None = None,
        tick: datetime.timedelta = DEFAULT_TICK,
        wait: Wait = wait_or_stop,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._stop = stop
        self._health = health
        self._tick = tick
        self._wait = wait
        self._started_at = clock()

    def check(self) -> list[OperationRecord]:
        """One round: fail the timed-out and stalled attempts; returns them (failed)."""
        if self._health is not None and not self._health.available:
            return []
        now = self._clock()
        failed: list[OperationRecord] = []
        for record in self._store.overdue(now):
            done = self._store.fail_running(
                record.id,
                worker_id=record.worker_id or "",
                attempt=record.attempt,
                now=now,
                error=timeout_reason(record),
                deadline_before=now,
            )
            if done is not None:
                failed.append(done)
        stall = self._settings.stall_timeout
        cutoff = now - stall
        if stall > datetime.timedelta(0) and cutoff >= self._grace_from():
            for record in self._store.stalled(cutoff):
                done = self._store.fail_running(
                    record.id,
                    worker_id=record.worker_id or "",
                    attempt=record.attempt,
                    now=now,
                    error=stall_reason(record, now=now, stall=stall),
                    progressed_before=cutoff,
                )
                if done is not None:
                    failed.append(done)
        for record in failed:
            logger.warning("operation %s failed: %s", record.id, record.error)
        return failed

    def _grace_from(self) -> datetime.datetime:
        """Start of the stall grace: this watch's start or the store's last return."""
        recovered = self._health.recovered_at if self._health is not None else None
        return self._started_at if recovered is None else max(self._started_at, recovered)

    async def run_once(self) -> list[OperationRecord]:
        """One round, then tell each failed attempt's worker to kill its job."""
        failed = await asyncio.to_thread(self.check)
        if self._stop is not None:
            for record in failed:
                if record.worker_id is not None:
                    await self._stop(record.id, record.worker_id, record.attempt)
        return failed

    async def run_forever(
        self,
        stop_event: asyncio.Event,
        *,
        prepare: Callable[[], Awaitable[object]] | None = None,
    ) -> int:
        """Check now and every ``tick`` until ``stop_event`` is set.

        ``prepare`` runs before each round (the app writes the heartbeat stamps held in
        memory, so fresh progress is seen); if it fails, that round judges nothing.
        """

        async def round_() -> None:
            if prepare is not None:
                await prepare()
            await self.run_once()

        return await run_until_stopped(
            "deadlines",
            round_,
            interval=self._tick,
            stop_event=stop_event,
            wait=self._wait,
        )
