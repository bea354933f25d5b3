"""Delivering the outbox: every outcome reaches the backend, however long it is away.

:class:`OutcomeDelivery` runs on the worker's event loop. :meth:`~OutcomeDelivery.submit`
makes an outcome durable in the :class:`~ktrdr.workers.outbox.Outbox` (in a thread)
before anything is sent; one background task then sends the pending outcomes, oldest
first, for as long as the worker runs. What the backend answers decides what happens
to an entry:

- acknowledged (2xx): the entry is removed, and so is the operation's checkpoint when
  the operation completed (until then both are kept; only the checkpoint of the
  entry's attempt: one a later attempt claimed stays);
- no usable answer (connection refused, a timeout, 5xx such as 503
  ``store_unavailable``, 429): kept and retried with capped exponential backoff, and
  at once when the worker (re-)registers;
- our credential refused (401): register again, then send again;
- 409 (the operation already ended another way, or this is not its current attempt:
  ``stale_attempt``, it was retried elsewhere): final; the entry is dropped with a
  warning, never retried, the backend's outcome stands;
- 404 (the operation no longer exists): dropped with a warning;
- any other 4xx (the backend cannot read the entry): moved to ``rejected/`` with an
  error naming the file, for an operator to look at; never retried.

A report this run of the worker made asks the backend for the next operation
(``take_next``) when ``take_next()`` says the worker can take one now (idle, not
stopping); a report left by an earlier run never does. An answer that hands one over
goes to ``on_handoff`` before the entry counts as delivered, so :meth:`stop` never
returns between the two.

Entries an earlier run of the worker left are loaded at start (:meth:`load`) and sent
once it registers. While an outcome waits, the worker still takes new work. On
shutdown, :meth:`stop` tries until its deadline and keeps whatever is left on disk for
the next start. Only the event loop touches this object; file I/O runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ktrdr.errors import (
    BackendError,
    BackendRejected,
    BackendUnavailable,
    CheckpointFenced,
    WorkerNotRegistered,
)
from ktrdr.protocol import Handoff
from ktrdr.vocabulary import OperationStatus
from ktrdr.workers.backend_client import BackendClient
from ktrdr.workers.backoff import Backoff
from ktrdr.workers.checkpoints import CheckpointStore
from ktrdr.workers.outbox import Outbox, OutboxEntry

__all__ = ["Context", "Delivery", "OutcomeDelivery"]

#: Makes the context each attempt to send an entry runs in (e.g. its trace span).
Context = Callable[[], contextlib.AbstractContextManager[object]]

logger = logging.getLogger(__name__)

#: Log a failed delivery at WARNING on the first attempt and every Nth.
_LOG_EVERY = 10
#: Statuses whose refusal (409) is the usual race with the backend, not news.
_QUIET_REFUSALS = {OperationStatus.CANCELLED.value}


class Delivery(enum.Enum):
    """How an outcome left the outbox."""

    #: The backend acknowledged it.
    DELIVERED = "delivered"
    #: The backend refused it for good (409, 404): its own outcome stands.
    REFUSED = "refused"
    #: The backend cannot read it: moved to ``rejected/`` (or dropped, if in memory).
    SET_ASIDE = "set aside"


class OutcomeDelivery:
    """Sends the outbox's outcomes to the backend until each is acknowledged.

    ``register_again(seen)`` registers the worker unless a registration happened since
    the backend client's ``registrations`` counter read ``seen`` (the worker's own
    registration lock); ``backoff`` is the retry schedule (fresh after each success).
    ``take_next()`` says whether a report may ask for the next operation now;
    ``on_handoff`` takes the operation an answer hands over (by default: never asked).
    """

    def __init__(
        self,
        *,
        outbox: Outbox,
        backend: BackendClient,
        checkpoints: CheckpointStore | None,
        register_again: Callable[[int], Awaitable[None]],
        backoff: Callable[[], Backoff],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        take_next: Callable[[], bool] = lambda: False,
        on_handoff: Callable[[Handoff], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self._take_next = take_next
        self._on_handoff = on_handoff
        self._backend = backend
        self._checkpoints = checkpoints
        self._register_again = register_again
        self._new_backoff = backoff
        self._sleep = sleep
        self._pending: dict[str, OutboxEntry] = {}
        self._attempts: dict[str, int] = {}
        self._waiters: dict[str, asyncio.Future[Delivery]] = {}
        self._contexts: dict[str, Context] = {}
        #: Operations whose outcome this run made (only their reports ask for more).
        self._live: set[str] = set()
        self._wake = asyncio.Event()
        self._reset = False
        self._empty = asyncio.Event()
        self._empty.set()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    # -- what the worker asks -------------------------------------------------

    @property
    def pending_ids(self) -> list[str]:
        """Operations whose outcome waits for the backend, oldest first."""
        return list(self._pending)

    async def load(self) -> int:
        """Take in the entries an earlier run left on disk; how many there are.

        Unreadable entries are moved to ``corrupt/`` and logged as errors; an outbox
        that cannot be listed is logged, never fatal (new outcomes still go through).
        """
        try:
            scan = await asyncio.to_thread(self.outbox.scan)
        except OSError as exc:
            logger.error(
                "cannot read the outbox %s (%s): outcomes left by an earlier run are "
                "not delivered until it can be read",
                self.outbox.directory,
                exc.strerror or exc,
            )
            return 0
        for aside in scan.set_aside:
            logger.error(
                "an outbox entry cannot be used (%s): set aside at %s, not delivered",
                aside.problem,
                aside.path,
            )
        found = [e for e in scan.entries if e.operation_id not in self._pending]
        for entry in found:
            self._add(entry)
        if found:
            logger.info(
                "found %d undelivered outcome(s) from an earlier run in %s (operations %s); "
                "delivering them once registered",
                len(found),
                self.outbox.directory,
                ", ".join(e.operation_id for e in found),
            )
            self._wake.set()
        return len(found)

    def write(self, operation_id: str, report: Mapping[str, Any]) -> OutboxEntry:
        """Make the outcome durable in the outbox (blocking: call it from a thread).

        When the disk refuses it (full, read-only), the entry lives in memory only and
        an error says a worker restart before delivery would lose it. Touches no
        asyncio state, so the job's supervising thread may call it.
        """
        try:
            return self.outbox.put(operation_id, report)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            logger.error(
                "the outcome of operation %s cannot be written to the outbox %s (%s); "
                "delivering it from memory only: a worker restart before the backend "
                "has it would lose it",
                operation_id,
                self.outbox.directory,
                reason,
            )
            return OutboxEntry(
                operation_id=operation_id,
                report=dict(report),
                written_at=datetime.datetime.now(datetime.timezone.utc),
                path=None,
            )

    def enqueue(
        self, entry: OutboxEntry, *, context: Context | None = None
    ) -> asyncio.Future[Delivery]:
        """Queue an entry :meth:`write` returned; resolves once it left the outbox.

        A newer outcome of the same operation takes the older one's place (and its
        waiter): only the newest is sent. Each attempt to send it runs within
        ``context()`` (the operation's trace span). A waiter still pending when the
        delivery stops is cancelled (the entry stays on disk).
        """
        operation_id = entry.operation_id
        self._contexts[operation_id] = context or contextlib.nullcontext
        self._live.add(operation_id)
        waiter = self._waiters.get(operation_id)
        if waiter is None or waiter.done():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[operation_id] = waiter
        self._pending.pop(operation_id, None)
        self._attempts.pop(operation_id, None)
        self._add(entry)
        self._wake.set()
        if not self._stopped:
            self.start()
        return waiter

    async def submit(
        self, operation_id: str, report: Mapping[str, Any]
    ) -> asyncio.Future[Delivery]:
        """:meth:`write` (in a thread), then :meth:`enqueue`: durable before it is sent."""
        entry = await asyncio.to_thread(self.write, operation_id, report)
        return self.enqueue(entry)

    def wake(self, *, fresh: bool = False) -> None:
        """Try now (e.g. after a registration); ``fresh`` restarts the backoff."""
        self._reset = self._reset or fresh
        self._wake.set()

    def start(self) -> None:
        """Start the delivery task (idempotent; :meth:`submit` starts it too)."""
        if self._task is None and not self._stopped:
            self._task = asyncio.create_task(self._run(), name="outcome-delivery")

    async def stop(self, timeout_s: float) -> list[str]:
        """Try to deliver for up to ``timeout_s``, then stop; the ids still pending.

        Without a credential (never registered) nothing can be sent, so it does not
        wait. Outcomes still pending stay on disk for the next start.
        """
        self._stopped = True
        if self._pending and self._backend.has_credential and timeout_s > 0:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._empty.wait(), timeout=timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = list(self._pending.values())
        for waiter in self._waiters.values():
            waiter.cancel()
        kept = [e.operation_id for e in left if e.path is not None]
        lost = [e.operation_id for e in left if e.path is None]
        if kept:
            logger.warning(
                "%d outcome(s) not delivered yet (operations %s); kept in %s and "
                "delivered after the next start",
                len(kept),
                ", ".join(kept),
                self.outbox.directory,
            )
        if lost:
            logger.error(
                "%d outcome(s) not delivered and not on disk (operations %s): lost",
                len(lost),
                ", ".join(lost),
            )
        return [e.operation_id for e in left]

    # -- the delivery task ----------------------------------------------------

    def _add(self, entry: OutboxEntry) -> None:
        self._pending[entry.operation_id] = entry
        self._empty.clear()

    async def _run(self) -> None:
        backoff = self._new_backoff()
        while True:
            if self._reset:
                backoff.reset()
                self._reset = False
            self._wake.clear()
            if not self._pending or not self._backend.has_credential:
                await self._wake.wait()
                continue
            failed = await self._round()
            if failed is None:
                backoff.reset()
                continue
            entry, exc = failed
            attempt = self._attempts.get(entry.operation_id, 0) + 1
            self._attempts[entry.operation_id] = attempt
            delay = backoff.next_delay()
            if attempt == 1 or attempt % _LOG_EVERY == 0:
                logger.warning(
                    "outcome of operation %s not delivered (attempt %d): %s; kept in the "
                    "outbox, retrying in %.2gs",
                    entry.operation_id,
                    attempt,
                    exc,
                    delay,
                )
            await self._nap(delay)

    async def _nap(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if woken (a new outcome, a registration)."""
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()

    async def _round(self) -> tuple[OutboxEntry, BackendError] | None:
        """Send every pending outcome once, oldest first; the first that must wait."""
        for entry in list(self._pending.values()):
            if self._pending.get(entry.operation_id) is not entry:
                continue  # replaced meanwhile: the newer one comes later in this round
            problem = await self._send(entry)
            if problem is not None:
                return entry, problem
        return None

    async def _send(self, entry: OutboxEntry) -> BackendError | None:
        """One delivery (two if the credential must be renewed); the error to retry on."""
        for renewed in (False, True):
            seen = self._backend.registrations
            context = self._contexts.get(entry.operation_id, contextlib.nullcontext)
            ask = (
                self._on_handoff is not None
                and entry.operation_id in self._live
                and self._take_next()
            )
            try:
                with context():
                    handoff = await self._backend.report_operation(
                        entry.operation_id, entry.report, take_next=ask
                    )
            except WorkerNotRegistered as exc:
                if renewed:
                    return exc
                try:
                    await self._register_again(seen)
                except BackendError as failed:
                    return failed
                continue
            except BackendRejected as exc:
                await self._refused(entry, exc)
                return None
            except BackendUnavailable as exc:
                return exc
            if handoff is not None and self._on_handoff is not None:
                self._on_handoff(handoff)  # before the entry counts as delivered
            await self._delivered(entry)
            return None
        return None  # pragma: no cover - the loop always returns

    async def _delivered(self, entry: OutboxEntry) -> None:
        attempts = self._attempts.get(entry.operation_id, 0)
        if entry.status == OperationStatus.COMPLETED.value and self._checkpoints is not None:
            try:  # its attempt's checkpoint only: a later attempt's claim is left alone
                await asyncio.to_thread(
                    self._checkpoints.delete, entry.operation_id, attempt=entry.attempt
                )
            except CheckpointFenced as exc:
                logger.info("operation %s: checkpoint kept: %s", entry.operation_id, exc)
        await self._forget(entry, Delivery.DELIVERED)
        if attempts:
            logger.info(
                "outcome of operation %s (%s) delivered after %d failed attempt(s)",
                entry.operation_id,
                entry.status,
                attempts,
            )
        else:
            logger.info("outcome of operation %s (%s) delivered", entry.operation_id, entry.status)

    async def _refused(self, entry: OutboxEntry, exc: BackendRejected) -> None:
        operation_id = entry.operation_id
        if exc.status_code in (404, 409):
            await self._forget(entry, Delivery.REFUSED)
            quiet = exc.status_code == 409 and entry.status in _QUIET_REFUSALS
            logger.log(
                logging.INFO if quiet else logging.WARNING,
                "outcome of operation %s (%s) not taken by the backend: %s; dropped (the "
                "backend's outcome stands)",
                operation_id,
                entry.status,
                exc,
            )
            return
        try:
            aside = await asyncio.to_thread(self.outbox.set_aside, entry, str(exc))
        except OSError as error:  # the entry stays; the next start tries it again
            where = f"left at {entry.path} (it could not be moved: {error.strerror or error})"
        else:
            # None: in memory only, or a newer outcome of the operation replaced it.
            where = "dropped" if aside is None else f"not retried, kept at {aside.path}"
        self._finish(entry, Delivery.SET_ASIDE)
        logger.error(
            "outcome of operation %s refused by the backend: %s; %s", operation_id, exc, where
        )

    async def _forget(self, entry: OutboxEntry, how: Delivery) -> None:
        if entry.path is not None:  # a newer entry of the operation is left alone
            try:
                await asyncio.to_thread(self.outbox.remove, entry)
            except OSError as exc:
                logger.warning(
                    "could not remove outbox entry %s (%s); the next start sends it again",
                    entry.path,
                    exc.strerror or exc,
                )
        self._finish(entry, how)

    def _finish(self, entry: OutboxEntry, how: Delivery) -> None:
        operation_id = entry.operation_id
        if self._pending.get(operation_id) is entry:
            del self._pending[operation_id]
            self._live.discard(operation_id)
            self._attempts.pop(operation_id, None)
            self._contexts.pop(operation_id, None)
            waiter = self._waiters.pop(operation_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(how)
        if not self._pending:
            self._empty.set()
