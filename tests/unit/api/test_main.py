"""The backend entrypoint: validation before anything, a server built from the settings."""

from __future__ import annotations

import pytest

from ktrdr.api.main import GRACEFUL_REQUESTS_TIMEOUT_S, build_server, run
from ktrdr.config import validate_all
from ktrdr.web import GracefulServer


def test_bad_configuration_exits_1_with_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    """run() turns a configuration error into exit code 1 and a report on stderr."""
    with pytest.raises(SystemExit) as exited:
        run({"KTRDR_API_PORT": "eighty", "KTRDR_DB_ENGINE": "oracle"}, env_file=None)

    stderr = capsys.readouterr().err
    assert exited.value.code == 1
    assert "KTRDR_API_PORT='eighty'" in stderr
    assert "KTRDR_DB_ENGINE='oracle'" in stderr
    assert "Traceback" not in stderr


def test_server_listens_on_exactly_the_configured_host_and_port() -> None:
    """The uvicorn server is built from KTRDR_API_HOST and KTRDR_API_PORT, nothing else."""
    config = validate_all(
        "backend", {"KTRDR_API_HOST": "127.0.0.2", "KTRDR_API_PORT": "8123"}, env_file=None
    )

    server = build_server(config)

    assert isinstance(server, GracefulServer)
    assert (server.config.host, server.config.port) == ("127.0.0.2", 8123)
    assert server.config.lifespan == "on"
    assert server.config.log_config is None
    assert server.config.timeout_graceful_shutdown == GRACEFUL_REQUESTS_TIMEOUT_S
