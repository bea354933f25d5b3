"""GracefulServer and ExitSignals: our shutdown chained to uvicorn's, never replacing it."""

from __future__ import annotations

import asyncio
import signal
import socket

import pytest
import uvicorn
from fastapi import FastAPI

from ktrdr.web import EXIT_SIGNALS, ExitSignals, GracefulServer


def _server(**hooks: object) -> GracefulServer:
    config = uvicorn.Config(FastAPI(), host="127.0.0.1", port=0, log_config=None)
    return GracefulServer(config, **hooks)  # type: ignore[arg-type]


def test_handle_exit_keeps_uvicorns_behaviour_and_calls_the_hook() -> None:
    """A signal sets uvicorn's should_exit (its own handling) and then runs our hook."""
    calls: list[str] = []
    server = _server(on_exit_requested=lambda: calls.append("exit"))

    server.handle_exit(signal.SIGTERM, None)

    assert server.should_exit is True
    assert server.force_exit is False
    assert calls == ["exit"]


def test_a_second_sigint_still_forces_exit_as_uvicorn_does() -> None:
    """uvicorn's 'second Ctrl-C forces exit' survives the override."""
    server = _server()

    server.handle_exit(signal.SIGINT, None)
    server.handle_exit(signal.SIGINT, None)

    assert server.force_exit is True


def test_request_exit_asks_for_a_graceful_shutdown() -> None:
    """request_exit behaves like a signal: should_exit and the hook."""
    calls: list[str] = []
    server = _server(on_exit_requested=lambda: calls.append("exit"))

    server.request_exit()

    assert server.should_exit is True
    assert calls == ["exit"]


def test_exit_signals_install_and_restore_handlers() -> None:
    """Inside the block SIGTERM/SIGINT go to ExitSignals; afterwards the old ones are back."""
    before = {sig: signal.getsignal(sig) for sig in EXIT_SIGNALS}

    with ExitSignals() as signals:
        inside = {sig: signal.getsignal(sig) for sig in EXIT_SIGNALS}

    assert all(handler == signals._handle for handler in inside.values())
    assert {sig: signal.getsignal(sig) for sig in EXIT_SIGNALS} == before


def test_a_signal_before_the_server_exists_is_replayed_on_attach() -> None:
    """SIGTERM during startup is remembered: the server exits as soon as it is attached."""
    calls: list[str] = []
    with ExitSignals() as signals:
        signal.raise_signal(signal.SIGTERM)
        server = _server(on_exit_requested=lambda: calls.append("exit"))
        assert server.should_exit is False
        signals.attach(server)

    assert signals.requested is True
    assert server.should_exit is True
    assert calls == ["exit"]


def test_a_signal_after_attach_goes_to_the_server() -> None:
    """Once attached, a SIGTERM (e.g. uvicorn's re-raise after shutdown) reaches the server."""
    with ExitSignals() as signals:
        server = _server()
        signals.attach(server)
        signal.raise_signal(signal.SIGTERM)

    assert server.should_exit is True


@pytest.mark.anyio
async def test_on_listening_runs_once_the_socket_accepts_connections() -> None:
    """on_listening is called after the bind, so a worker registers only when reachable."""
    connected: list[bool] = []
    server: GracefulServer

    async def on_listening() -> None:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        with socket.create_connection((host, port), timeout=5):
            connected.append(True)
        server.request_exit()

    server = _server(on_listening=on_listening)
    await asyncio.wait_for(server.serve(), timeout=30)

    assert connected == [True]
    assert server.started is True
