"""Backend entrypoint: ``python -m ktrdr.api.main`` (and ``ktrdr backend``).

Validates the configuration first (deprecation warnings on stderr, exit 1 with the
report on a bad configuration, no traceback), then serves the app on
``KTRDR_API_HOST:KTRDR_API_PORT``. Only :func:`main` reads ``os.environ``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import uvicorn

from ktrdr.api.app import create_app, utc_now
from ktrdr.api.registry import WorkerRegistry
from ktrdr.config import DEFAULT_ENV_FILE, BackendConfig, LogLevel
from ktrdr.logs import configure_logging
from ktrdr.startup import load_or_exit
from ktrdr.web import ExitSignals, GracefulServer

logger = logging.getLogger("ktrdr.api")

#: How long uvicorn waits for requests in flight after SIGTERM.
GRACEFUL_REQUESTS_TIMEOUT_S = 5


def build_server(config: BackendConfig) -> GracefulServer:
    """The backend's uvicorn server, bound to exactly the configured host and port."""
    app = create_app(config, clock=utc_now, registry=WorkerRegistry())
    host, port = config.api.host, config.api.port

    async def announce() -> None:
        logger.info("backend listening on %s:%d", host, port)

    uvicorn_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=config.logging.level is LogLevel.DEBUG,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_REQUESTS_TIMEOUT_S,
    )
    return GracefulServer(uvicorn_config, on_listening=announce)


def run(environ: Mapping[str, str], *, env_file: str | Path | None = DEFAULT_ENV_FILE) -> int:
    """Validate, then serve until SIGTERM/SIGINT; returns the exit code (0)."""
    with ExitSignals() as signals:
        config = load_or_exit("backend", environ, env_file=env_file)
        configure_logging(config.logging)
        server = build_server(config)
        signals.attach(server)
        server.run()
    return 0


def main() -> None:
    """Console entry point: the process environment is read here and only here."""
    raise SystemExit(run(os.environ))


if __name__ == "__main__":
    main()
