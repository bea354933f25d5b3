"""Whether the operations store answers: outages noticed, logged once, answered as 503.

The backend keeps serving while its database is unreachable. Workers still register
and heartbeat (the registry is in memory and heartbeat stamps wait in memory), and
every request that needs the store gets a 503 ``store_unavailable`` with a
``Retry-After`` header and ``Connection: close`` (the connection ends cleanly after
a complete answer, so a client behind a proxy reconnects), never a bare 500.
``GET /health`` probes the store and answers 503 while it is down.

:class:`StoreHealth` watches the engine through SQLAlchemy events: a connection-level
failure marks the store unavailable (one ERROR line per outage), the next statement
that succeeds marks it available again (one WARNING line with the outage's length)
and records that moment, from which the orphan detector gives workers a grace period.
Nothing here retries or reconnects: the next request or loop round simply tries
again, and the engine's ``pool_pre_ping`` replaces connections the outage killed.
This module never shows the database password.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine, ExceptionContext

from ktrdr.web import error_response

__all__ = [
    "OUTAGE_ERRORS",
    "PROBE_TIMEOUT",
    "RETRY_AFTER",
    "STORE_UNAVAILABLE",
    "StoreHealth",
    "install_store_error_handlers",
    "is_store_outage",
    "store_unavailable_response",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]

#: The ``error`` code of every answer given because the store is unreachable.
STORE_UNAVAILABLE = "store_unavailable"
#: What ``Retry-After`` tells clients while the store is unreachable.
RETRY_AFTER = datetime.timedelta(seconds=5)
#: How long ``GET /health`` waits for the store to answer ``SELECT 1``.
PROBE_TIMEOUT = datetime.timedelta(seconds=3)
#: SQLAlchemy errors that mean "the database cannot be used now", not "this request is
#: wrong": connection refused or lost, server shutting down, disk full, pool exhausted.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
)
_DETAIL = "the operations store is unavailable; retry in {seconds:g}s"


def is_store_outage(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot be used now (try again later)."""
    if isinstance(exc, OUTAGE_ERRORS):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


def store_unavailable_response(
    retry_after: datetime.timedelta = RETRY_AFTER, **extra: Any
) -> JSONResponse:
    """The 503 every request that needs the unreachable store gets.

    ``Connection: close`` makes the server end the connection after this complete
    answer (never mid-response), so keep-alive clients reconnect cleanly.
    """
    seconds = max(1, round(retry_after.total_seconds()))
    headers = {"Retry-After": str(seconds), "Connection": "close"}
    if extra:
        body = {"error": STORE_UNAVAILABLE, "detail": _DETAIL.format(seconds=seconds), **extra}
        return JSONResponse(body, status_code=503, headers=headers)
    return error_response(503, STORE_UNAVAILABLE, _DETAIL.format(seconds=seconds), headers=headers)


class StoreHealth:
    """The store's availability as the backend last saw it, from ``engine``'s events.

    Thread-safe: the events fire in whichever thread used the engine. ``clock``
    returns aware UTC datetimes. Call :meth:`close` to stop watching the engine.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        clock: Clock,
        retry_after: datetime.timedelta = RETRY_AFTER,
        probe_timeout: datetime.timedelta = PROBE_TIMEOUT,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.retry_after = retry_after
        self._probe_timeout_s = probe_timeout.total_seconds()
        self._lock = threading.Lock()
        self._down_since: datetime.datetime | None = None
        self._reason = ""
        self._recovered_at: datetime.datetime | None = None
        self._probe: asyncio.Task[bool] | None = None
        sa.event.listen(engine, "handle_error", self._on_error)
        sa.event.listen(engine, "after_cursor_execute", self._on_success)

    def close(self) -> None:
        """Stop watching the engine."""
        sa.event.remove(self._engine, "handle_error", self._on_error)
        sa.event.remove(self._engine, "after_cursor_execute", self._on_success)

    # --- state ------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False from a connection-level failure until a statement succeeds again."""
        return self._down_since is None

    @property
    def down_since(self) -> datetime.datetime | None:
        """When the current outage began (None: the store is available)."""
        return self._down_since

    @property
    def reason(self) -> str:
        """Why the store is unavailable (the driver's words, password masked); "" if it is not."""
        return self._reason if self._down_since is not None else ""

    @property
    def recovered_at(self) -> datetime.datetime | None:
        """When the store last came back from an outage (None: no outage seen)."""
        return self._recovered_at

    def failed(self, exc: BaseException) -> None:
        """Note a connection-level failure (logged once per outage)."""
        self._mark_down(self._describe(exc))

    def _mark_down(self, reason: str) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = self._clock()
            self._reason = reason
        seconds = round(self.retry_after.total_seconds())
        logger.error(
            "the operations store is unavailable (%s); requests that need it answer 503 "
            "%s (Retry-After: %ds) until it is back",
            reason,
            STORE_UNAVAILABLE,
            seconds,
        )

    def succeeded(self) -> None:
        """Note a statement that worked: the end of an outage, if one was going on."""
        if self._down_since is None:  # the hot path: one attribute read, no lock
            return
        now = self._clock()
        with self._lock:
            since = self._end_outage(now)
        if since is None:
            return  # another thread noted the recovery first
        logger.warning(
            "the operations store is available again after %.1fs",
            (now - since).total_seconds(),
        )

    def _end_outage(self, now: datetime.datetime) -> datetime.datetime | None:
        """Under the lock: mark the store available; when the outage began, or None."""
        since, self._down_since = self._down_since, None
        if since is not None:
            self._reason = ""
            self._recovered_at = now
        return since

    # --- probing ----------------------------------------------------------------------

    def probe(self) -> bool:
        """Run ``SELECT 1`` now (blocking); True when the store answered."""
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            if not is_store_outage(exc):
                raise
            self.failed(exc)
            return False
        return True

    async def check(self) -> bool:
        """:meth:`probe` in a thread, at most one at a time, waiting at most the probe timeout.

        A probe that does not answer in time counts as unavailable (the store is
        hanging) and goes on in the background; the next check waits for it.
        """
        probe = self._probe
        if probe is None or probe.done():
            probe = self._probe = asyncio.ensure_future(asyncio.to_thread(self.probe))
        try:
            return await asyncio.wait_for(asyncio.shield(probe), self._probe_timeout_s)
        except asyncio.TimeoutError:
            self._mark_down(f"no answer to SELECT 1 within {self._probe_timeout_s:g}s")
            return False

    # --- engine events ----------------------------------------------------------------

    def _on_error(self, context: ExceptionContext) -> None:
        if context.is_pre_ping:
            return  # the pool replaces that connection and tries again
        error = context.sqlalchemy_exception
        if context.is_disconnect or (error is not None and is_store_outage(error)):
            self.failed(error if error is not None else context.original_exception)

    def _on_success(self, *_args: Any) -> None:
        self.succeeded()

    def _describe(self, exc: BaseException) -> str:
        """One line: the driver's reason, with the password (if any) masked."""
        original = getattr(exc, "orig", None) or exc
        text = " ".join(str(original).split()) or type(original).__name__
        password = self._engine.url.password
        if password:
            text = text.replace(str(password), "********")
        return text[:300]


def install_store_error_handlers(app: FastAPI, health: StoreHealth) -> None:
    """Answer every store outage that escapes a route with :func:`store_unavailable_response`."""

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        if not is_store_outage(exc):
            raise exc  # not an outage: the app's handler for unexpected errors answers
        health.failed(exc)  # pool timeouts never reach the engine's error event
        return store_unavailable_response(health.retry_after)

    for error in (*OUTAGE_ERRORS, sa.exc.DBAPIError):
        app.add_exception_handler(error, unavailable)
