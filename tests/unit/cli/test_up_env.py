"""``ktrdr up``: the environment each child gets, named from the settings declarations."""

from __future__ import annotations

from pathlib import Path

import attrs
from rich.console import Console

from ktrdr.cli.up_cmd import (
    Fleet,
    _StopFlag,
    operator_token,
    operator_variables,
    per_child_variables,
)
from ktrdr.config import WorkerSettings
from ktrdr.supervisor import Supervisor


def _fleet(environ: dict[str, str], data_dir: Path) -> Fleet:
    return Fleet(
        environ=environ,
        data_dir=data_dir,
        api_port=8123,
        console=Console(quiet=True),
        supervisor=Supervisor(),
        stop=_StopFlag(),
    )


def test_per_child_variables_cover_every_name_of_the_per_child_settings() -> None:
    """Current, deprecated and _FILE names of host, port, id, URLs and type are all held back."""
    names = per_child_variables()
    assert {
        "KTRDR_API_HOST",
        "KTRDR_API_PORT",
        "KTRDR_WORKER_ID",
        "WORKER_ID",
        "KTRDR_WORKER_PORT",
        "WORKER_PORT",
        "KTRDR_WORKER_PORT_FILE",
        "WORKER_ENDPOINT_URL",
        "KTRDR_WORKER_PUBLIC_BASE_URL",
        "KTRDR_WORKER_BACKEND_URL",
        "WORKER_TYPE",
    } <= names
    assert "KTRDR_LOG_LEVEL" not in names


def test_child_env_drops_inherited_per_child_values_and_sets_the_overrides(
    tmp_path: Path,
) -> None:
    """Inherited per-child names are gone; overrides are spelt as the declared variables."""
    inherited = {"WORKER_PORT": "9999", "KTRDR_WORKER_TYPE": "backtest", "KTRDR_LOG_LEVEL": "DEBUG"}
    worker = attrs.fields(WorkerSettings)
    env = _fleet(inherited, tmp_path)._env({worker.port: "5100", worker.id: "training-1"})
    assert "WORKER_PORT" not in env
    assert "KTRDR_WORKER_TYPE" not in env
    assert (env["KTRDR_WORKER_PORT"], env["KTRDR_WORKER_ID"]) == ("5100", "training-1")
    assert env["KTRDR_LOG_LEVEL"] == "DEBUG"
    assert env["KTRDR_DB_PATH"] == str(tmp_path / "ktrdr.db")
    assert env["KTRDR_CHECKPOINT_DIR"] == str(tmp_path / "checkpoints")


def test_only_the_backend_gets_the_operator_token(tmp_path: Path) -> None:
    """Operator token variables are held back from every child; the backend gets its own."""
    inherited = {"KTRDR_AUTH_OPERATOR_TOKEN": "op-env-1", "KTRDR_AUTH_OPERATOR_TOKEN_FILE": "/x"}
    token_file = str(tmp_path / "operator_token")
    fleet = Fleet(
        environ=inherited,
        data_dir=tmp_path,
        api_port=8123,
        console=Console(quiet=True),
        supervisor=Supervisor(),
        stop=_StopFlag(),
        backend_env={"KTRDR_AUTH_OPERATOR_TOKEN_FILE": token_file},
    )
    worker = attrs.fields(WorkerSettings)
    env = fleet._env({worker.id: "training-1"})
    assert not {"KTRDR_AUTH_OPERATOR_TOKEN", "KTRDR_AUTH_OPERATOR_TOKEN_FILE"} & set(env)
    assert operator_variables() == {"KTRDR_AUTH_OPERATOR_TOKEN", "KTRDR_AUTH_OPERATOR_TOKEN_FILE"}


def test_without_a_configured_token_up_makes_one_in_the_data_dir(tmp_path: Path) -> None:
    """No token configured: <data dir>/operator_token, given to the backend through _FILE."""
    found, backend_env = operator_token({}, tmp_path)
    path = tmp_path / "operator_token"
    assert backend_env == {"KTRDR_AUTH_OPERATOR_TOKEN_FILE": str(path)}
    assert path.read_text().strip() == found.secret.reveal()
    assert found.source.endswith("operator_token (created)")
    again, _ = operator_token({}, tmp_path)
    assert again.secret == found.secret
    assert again.source.endswith("operator_token (kept)")


def test_a_configured_token_is_passed_on_as_configured(tmp_path: Path) -> None:
    """KTRDR_AUTH_OPERATOR_TOKEN set: the backend gets that variable, no file is written."""
    found, backend_env = operator_token({"KTRDR_AUTH_OPERATOR_TOKEN": "op-env-2"}, tmp_path)
    assert backend_env == {"KTRDR_AUTH_OPERATOR_TOKEN": "op-env-2"}
    assert (found.secret.reveal(), found.source) == ("op-env-2", "env KTRDR_AUTH_OPERATOR_TOKEN")
    assert not (tmp_path / "operator_token").exists()
