"""The backend entrypoint: validation before anything, a server built from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from support.backend import open_store
from support.processes import free_port

from ktrdr.api.main import GRACEFUL_REQUESTS_TIMEOUT_S, build_server, open_store_or_exit, run
from ktrdr.config import DatabaseSettings, DbEngine, Secret, validate_all
from ktrdr.web import GracefulServer
from ktrdr.web.http_client import CLIENT_KEEPALIVE_EXPIRY
from ktrdr.workers.entrypoint import backend_http_client


def test_bad_configuration_exits_1_with_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    """run() turns a configuration error into exit code 1 and a report on stderr."""
    with pytest.raises(SystemExit) as exited:
        run({"KTRDR_API_PORT": "eighty", "KTRDR_DB_ENGINE": "oracle"}, env_file=None)

    stderr = capsys.readouterr().err
    assert exited.value.code == 1
    assert "KTRDR_API_PORT='eighty'" in stderr
    assert "KTRDR_DB_ENGINE='oracle'" in stderr
    assert "Traceback" not in stderr


def test_server_listens_on_exactly_the_configured_host_and_port(tmp_path: Path) -> None:
    """The uvicorn server is built from KTRDR_API_HOST and KTRDR_API_PORT, nothing else."""
    config = validate_all(
        "backend", {"KTRDR_API_HOST": "127.0.0.2", "KTRDR_API_PORT": "8123"}, env_file=None
    )
    store = open_store(tmp_path)

    server = build_server(config, store=store)
    store.close()

    assert isinstance(server, GracefulServer)
    assert (server.config.host, server.config.port) == ("127.0.0.2", 8123)
    assert server.config.lifespan == "on"
    assert server.config.log_config is None
    assert server.config.timeout_graceful_shutdown == GRACEFUL_REQUESTS_TIMEOUT_S


@pytest.mark.anyio
async def test_workers_idle_connections_expire_before_the_backends_server_closes_them(
    tmp_path: Path,
) -> None:
    """A heartbeat or report is never sent on a connection the backend is closing for
    idleness: the worker's client drops idle connections well before the server does.
    """
    config = validate_all("backend", {}, env_file=None)
    store = open_store(tmp_path)
    server = build_server(config, store=store)
    store.close()
    client = backend_http_client("http://127.0.0.1:8000")
    pool = client._transport._pool  # type: ignore[attr-defined]
    await client.aclose()

    assert pool._keepalive_expiry == CLIENT_KEEPALIVE_EXPIRY.total_seconds()
    assert CLIENT_KEEPALIVE_EXPIRY.total_seconds() <= server.config.timeout_keep_alive / 2


def test_sqlite_store_is_created_at_ktrdr_db_path(tmp_path: Path) -> None:
    """Zero configuration: the SQLite file (and its directory) appear at KTRDR_DB_PATH."""
    path = tmp_path / "nested" / "ktrdr.db"

    store = open_store_or_exit(DatabaseSettings(path=path))
    store.close()

    assert path.is_file()


def test_an_unusable_sqlite_path_exits_1_naming_ktrdr_db_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database directory that cannot be created: exit 1, KTRDR_DB_PATH named, no traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(SystemExit) as exited:
        open_store_or_exit(DatabaseSettings(path=blocker / "db" / "ktrdr.db"))

    stderr = capsys.readouterr().err
    assert exited.value.code == 1
    assert "KTRDR_DB_PATH" in stderr
    assert "Traceback" not in stderr


def test_a_database_from_a_newer_ktrdr_exits_1_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A schema revision this code does not know stops the backend before serving."""
    path = tmp_path / "ktrdr.db"
    open_store_or_exit(DatabaseSettings(path=path)).close()
    engine = sa.create_engine(f"sqlite+pysqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()

    with pytest.raises(SystemExit) as exited:
        open_store_or_exit(DatabaseSettings(path=path))

    stderr = capsys.readouterr().err
    assert exited.value.code == 1
    assert stderr.startswith("ktrdr: the operations database is at schema revision '9999'")
    assert stderr.count("\n") == 1


def test_an_unreachable_postgresql_exits_1_naming_the_variables_not_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """PostgreSQL down: exit 1 with the KTRDR_DB_* names to check, the password masked."""
    settings = DatabaseSettings(
        engine=DbEngine.POSTGRESQL,
        host="127.0.0.1",
        port=free_port(),
        password=Secret("hunter2-secret"),
    )

    with pytest.raises(SystemExit) as exited:
        open_store_or_exit(settings)

    stderr = capsys.readouterr().err
    assert exited.value.code == 1
    assert "KTRDR_DB_HOST" in stderr
    assert "KTRDR_DB_PASSWORD" in stderr
    assert "hunter2-secret" not in stderr
