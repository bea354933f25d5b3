"""The retention loop: deletes finished operations older than ``KTRDR_OPS_RETENTION_DAYS``.

What is due is the operations service's decision (:meth:`OperationsService.cleanup_batch`,
which also clears its read cache); this module runs it now and every
``cleanup_interval`` on the shared periodic loop, and never touches the store itself.

A round deletes in batches of ``KTRDR_OPS_CLEANUP_BATCH_SIZE``, each its own short
transaction, and pauses after each batch for as long as the batch took: other
writers (creations, reports, dispatch) get the database between batches, at least
half of the time, instead of waiting behind one long delete. The round's log line
says how many batches it took and their size.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

import attrs

from ktrdr.api.operations import OperationsService
from ktrdr.api.periodic import Wait, run_until_stopped, wait_or_stop
from ktrdr.config import OperationsSettings, env_name

__all__ = ["MAX_PAUSE", "RetentionCleaner", "RetentionRound"]

logger = logging.getLogger(__name__)

#: Longest pause between two batches (a batch taking longer than this is itself a problem).
MAX_PAUSE = datetime.timedelta(seconds=1)


@attrs.frozen(kw_only=True)
class RetentionRound:
    """What one retention round did."""

    #: Operations deleted by each batch, in order (the last one is short or empty).
    batches: tuple[int, ...]
    #: The most one batch may delete (``KTRDR_OPS_CLEANUP_BATCH_SIZE``).
    batch_size: int

    @property
    def deleted(self) -> int:
        """Operations deleted in all."""
        return sum(self.batches)


class RetentionCleaner:
    """Runs retention now and every ``cleanup_interval``, in paced batches.

    The app lifespan starts :meth:`run_forever` as a task and sets the stop event on
    shutdown (a round stops between batches); tests call :meth:`run_once`,
    :meth:`run_round`, or pass fake ``wait`` (between rounds) and ``pause`` (between
    batches).
    """

    def __init__(
        self,
        *,
        service: OperationsService,
        wait: Wait = wait_or_stop,
        pause: Wait = wait_or_stop,
    ) -> None:
        self._service = service
        self._wait = wait
        self._pause = pause

    def run_once(self) -> int:
        """One cleanup now, batch after batch without pausing; the number deleted."""
        return self._service.cleanup()

    async def run_round(self, stop_event: asyncio.Event) -> RetentionRound:
        """One round: delete what is due, batch by batch, pausing between batches."""
        cutoff = self._service.retention_cutoff()
        size = self._service.settings.cleanup_batch_size
        batches: list[int] = []
        while True:
            began = time.monotonic()
            deleted = await asyncio.to_thread(self._service.cleanup_batch, cutoff)
            batches.append(deleted)
            if deleted < size:
                break
            took = min(time.monotonic() - began, MAX_PAUSE.total_seconds())
            if await self._pause(stop_event, took):
                break
        done = RetentionRound(batches=tuple(batches), batch_size=size)
        if done.deleted:
            variable = env_name(attrs.fields(OperationsSettings).cleanup_batch_size)
            logger.info(
                "retention: deleted %d operations finished before %s in %d batches "
                "of at most %d (%s)",
                done.deleted,
                cutoff.isoformat(),
                len(done.batches),
                size,
                variable,
            )
        return done

    async def run_forever(self, stop_event: asyncio.Event) -> int:
        """Clean up now and every ``cleanup_interval`` until ``stop_event`` is set."""

        async def round_() -> None:
            await self.run_round(stop_event)

        return await run_until_stopped(
            "operations retention cleanup",
            round_,
            interval=self._service.settings.cleanup_interval,
            stop_event=stop_event,
            wait=self._wait,
        )
