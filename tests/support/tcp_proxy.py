"""A TCP proxy a test controls: forward, then cut every connection and refuse new ones.

Put it between a process and a server (the backend and PostgreSQL) to make a real
network outage: :meth:`TcpProxy.cut` closes every forwarded connection at once (both
ends see the connection drop, as when a database restarts or a link fails) and
answers new ones by closing them (``refuse``) or by holding them open without a
byte (``hang``, a black hole); :meth:`TcpProxy.restore` forwards again. ``latency``
delays chosen requests on their way to the server (a slow path for one kind of
request, as a congested network gives it), keeping each connection's bytes in order.
With ``tap=True`` it also keeps every chunk the clients sent, in order
(:meth:`client_chunks`), so a test can see what a process said (its heartbeats).
The proxy runs in a thread of the test process, one selector loop, no dependency.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import selectors
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["Mode", "TcpProxy"]

_CHUNK = 65536


class Mode(str, enum.Enum):
    """What the proxy does with a connection."""

    FORWARD = "forward"
    #: New connections are accepted and closed at once.
    REFUSE = "refuse"
    #: New connections are accepted and never answered (nor forwarded).
    HANG = "hang"


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; a context manager (stops on exit).

    ``latency(chunk)`` gives the seconds to hold a chunk a client sent before it goes
    on to the server (0: at once); later chunks of that connection wait behind it.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        latency: Callable[[bytes], float] | None = None,
        tap: bool = False,
    ) -> None:
        self._target = (target_host, target_port)
        self._latency = latency
        self._tap = tap
        self._chunks: list[bytes] = []
        #: Chunks held on their way to the server, per client socket: (due, bytes).
        self._held_chunks: dict[socket.socket, collections.deque[tuple[float, bytes]]] = {}
        self._clients: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        #: Each forwarded socket -> its peer.
        self._peers: dict[socket.socket, socket.socket] = {}
        self._held: list[socket.socket] = []
        self._mode = Mode.FORWARD
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: list[str] = []
        self._done = threading.Event()
        self._stopped = threading.Event()
        #: Connections accepted in all (forwarded or not).
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def mode(self) -> Mode:
        """What new connections get now."""
        return self._mode

    @property
    def forwarded(self) -> int:
        """Connections being forwarded right now."""
        return len(self._peers) // 2

    def cut(self, mode: Mode = Mode.REFUSE) -> None:
        """Drop every connection now; new ones get ``mode`` until :meth:`restore`."""
        self._command(mode.value)

    def restore(self) -> None:
        """Forward new connections again (held ones are dropped)."""
        self._command(Mode.FORWARD.value)

    def stop(self) -> None:
        """Close everything and end the thread."""
        if not self._stopped.is_set():
            self._command("stop")
            self._thread.join(timeout=10)

    def client_chunks(self) -> list[bytes]:
        """What the clients sent so far, chunk by chunk, in order (with ``tap=True``)."""
        with self._lock:
            return list(self._chunks)

    # --- the loop (proxy thread) ------------------------------------------------------

    def _command(self, command: str) -> None:
        """Hand ``command`` to the loop and wait until it has been applied."""
        done = threading.Event()
        with self._lock:
            self._pending.append(command)
            self._done = done
        self._wake_w.send(b"x")
        done.wait(timeout=10)

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                for key, _ in self._selector.select(timeout=self._next_due()):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        self._apply_commands()
                    elif sock is self._listener:
                        self._accept()
                    elif sock in self._peers:
                        self._pump(sock)
                self._release_due()
        finally:
            self._close_all()
            self._selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _apply_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(1024)
        with self._lock:
            commands, self._pending = self._pending, []
            done = self._done
        for command in commands:
            if command == "stop":
                self._stopped.set()
                continue
            self._close_all()
            self._mode = Mode(command)
        done.set()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        if self._mode is Mode.REFUSE:
            client.close()
            return
        if self._mode is Mode.HANG:
            self._held.append(client)
            return
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, None)
        self._peers[client] = upstream
        self._peers[upstream] = client
        self._clients.add(client)

    def _pump(self, sock: socket.socket) -> None:
        peer = self._peers[sock]
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        if self._tap and sock in self._clients:
            with self._lock:
                self._chunks.append(data)
        if sock in self._clients and self._latency is not None:
            queue = self._held_chunks.setdefault(sock, collections.deque())
            delay = self._latency(data)
            if queue or delay > 0:
                due = time.monotonic() + delay
                queue.append((max(due, queue[-1][0]) if queue else due, data))
                return
        self._send(sock, peer, data)

    def _send(self, sock: socket.socket, peer: socket.socket, data: bytes) -> None:
        try:
            peer.setblocking(True)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._drop(sock)

    def _next_due(self) -> float:
        dues = [queue[0][0] for queue in self._held_chunks.values() if queue]
        if not dues:
            return 0.5
        return max(0.0, min(dues) - time.monotonic())

    def _release_due(self) -> None:
        now = time.monotonic()
        for sock, queue in list(self._held_chunks.items()):
            while queue and queue[0][0] <= now:
                _, data = queue.popleft()
                peer = self._peers.get(sock)
                if peer is None:
                    queue.clear()
                    break
                self._send(sock, peer, data)

    def _drop(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        for item in (sock, peer):
            if item is None:
                continue
            self._peers.pop(item, None)
            self._clients.discard(item)
            self._held_chunks.pop(item, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(item)
            item.close()

    def _close_all(self) -> None:
        for sock in list(self._peers):
            self._drop(sock)
        for sock in self._held:
            sock.close()
        self._held = []
