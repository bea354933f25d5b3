"""The retention loop: deletes finished operations older than ``KTRDR_OPS_RETENTION_DAYS``.

What is due is the operations service's decision (:meth:`OperationsService.cleanup`,
which also clears its read cache); this module only runs it now and every
``cleanup_interval`` on the shared periodic loop, and never touches the store itself.
"""

from __future__ import annotations

import asyncio

from ktrdr.api.operations import OperationsService
from ktrdr.api.periodic import Wait, run_until_stopped, wait_or_stop

__all__ = ["RetentionCleaner"]


class RetentionCleaner:
    """Runs :meth:`OperationsService.cleanup` every ``cleanup_interval``.

    The app lifespan starts :meth:`run_forever` as a task and sets the stop event on
    shutdown; tests call :meth:`run_once` or pass a fake ``wait``.
    """

    def __init__(self, *, service: OperationsService, wait: Wait = wait_or_stop) -> None:
        self._service = service
        self._wait = wait

    def run_once(self) -> int:
        """One cleanup round now; the number of operations deleted."""
        return self._service.cleanup()

    async def run_forever(self, stop_event: asyncio.Event) -> int:
        """Clean up now and every ``cleanup_interval`` until ``stop_event`` is set."""
        return await run_until_stopped(
            "operations retention cleanup",
            self.run_once,
            interval=self._service.settings.cleanup_interval,
            stop_event=stop_event,
            wait=self._wait,
        )
