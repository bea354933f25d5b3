"""Port checks before a server starts, so a taken port is a one-line configuration error.

uvicorn reports a failed bind as a log line and exit status 3 after running the
app's startup; checking first lets the entrypoint name the variable that chose the
port and exit 1 like any other configuration problem.
"""

from __future__ import annotations

import socket

from ktrdr.errors import ConfigurationError


def ensure_bindable(host: str, port: int, *, variable: str) -> None:
    """Raise ``ConfigurationError`` naming ``variable`` when ``host:port`` cannot be bound.

    Uses ``SO_REUSEADDR`` as uvicorn does, so a port whose old connections linger in
    TIME_WAIT counts as free. The check races with other processes by nature; the
    server's own bind remains the final word.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = exc.strerror or "cannot bind"
            message = (
                f"{variable}={port}: cannot listen on {host}:{port} ({reason}); "
                "stop the process using it or choose another port"
            )
            raise ConfigurationError([message]) from None
