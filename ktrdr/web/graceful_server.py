"""uvicorn, with our shutdown chained to its own signal handling (never replacing it).

uvicorn installs SIGTERM/SIGINT handlers while it serves; on a signal it finishes the
requests in flight, runs the app's lifespan shutdown (where a worker stops its
operation and unregisters) and then *re-raises* the signal against the handlers that
were in place before it started. Two hooks make that work for us:

- :class:`GracefulServer` calls ``on_exit_requested`` from uvicorn's own
  ``handle_exit`` (after uvicorn has done its part), so a worker stops taking work the
  moment the signal arrives; and ``on_listening`` once the socket is bound, so a
  worker registers only when it can actually be reached.
- :class:`ExitSignals` provides the handlers uvicorn restores and re-raises against.
  With Python's default SIGTERM disposition the re-raise would kill the process after
  a clean shutdown (exit status -15); ours route the signal to the server instead, so
  a process that shut down cleanly exits 0. A signal that arrives before the server
  exists is remembered and makes the server shut down as soon as it has started.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from types import FrameType, TracebackType

import uvicorn

#: The signals uvicorn treats as "shut down gracefully".
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulServer(uvicorn.Server):
    """A ``uvicorn.Server`` with hooks for "listening" and "exit requested"."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_listening: Callable[[], Awaitable[None]] | None = None,
        on_exit_requested: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self._on_exit_requested = on_exit_requested

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, then ``on_listening`` once the socket is bound."""
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit and self._on_listening is not None:
            await self._on_listening()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's own handling first, then ours (signal context: set flags only)."""
        super().handle_exit(sig, frame)
        self._notify_exit()

    def request_exit(self) -> None:
        """Ask the server to shut down gracefully, as a signal would (idempotent)."""
        self.should_exit = True
        self._notify_exit()

    def _notify_exit(self) -> None:
        if self._on_exit_requested is not None:
            self._on_exit_requested()


class ExitSignals:
    """Process-level SIGTERM/SIGINT handlers that hand the signal to a server.

    Use around the whole run: ``with ExitSignals() as signals: ...; signals.attach(server)``.
    Outside the main thread (tests running a server in a thread) it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._server: GracefulServer | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> ExitSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def attach(self, server: GracefulServer) -> None:
        """Route later signals to ``server``; replay one that came before it existed."""
        self._server = server
        if self.requested:
            server.request_exit()

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        self.requested = True
        if self._server is not None:
            self._server.request_exit()


__all__ = ["EXIT_SIGNALS", "ExitSignals", "GracefulServer"]
