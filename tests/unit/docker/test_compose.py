"""The compose file and Dockerfile, checked with the project's own configuration machinery.

No Docker engine runs in CI, so the containers are not started; instead every ktrdr
service's environment is validated exactly as its entrypoint would validate it.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from ktrdr.config import ConfigurationError, WorkerType, deprecated_names, validate_all
from ktrdr.config.converter import parse_duration

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker" / "compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def _interpolate(value: Any, shell: dict[str, str]) -> Any:
    """Apply compose's ``${NAME:-default}`` interpolation with ``shell`` as the host env."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: shell.get(m["name"], m["default"] or ""), value)
    if isinstance(value, list):
        return [_interpolate(v, shell) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, shell) for k, v in value.items()}
    return value


def _compose(shell: dict[str, str]) -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    result: dict[str, Any] = _interpolate(data, shell)
    return result


def _ktrdr_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).startswith("ktrdr")
    }


def _component(service: dict[str, Any]) -> tuple[str, WorkerType | None]:
    command = service["command"]
    if command[0] == "backend":
        return "backend", None
    assert command[0] == "worker"
    return "worker", WorkerType(command[1])


def _environment_with_secret_files(service: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """The service's environment with /run/secrets/* replaced by real files."""
    env = {k: str(v) for k, v in service["environment"].items()}
    for key, value in env.items():
        if key.endswith("_FILE") and value.startswith("/run/secrets/"):
            secret_name = value.removeprefix("/run/secrets/")
            assert secret_name in service.get("secrets", []), f"{key} needs secret {secret_name}"
            path = tmp_path / secret_name
            if not path.exists():
                path.write_text(secrets.token_hex(24) + "\n")
            env[key] = str(path)
    return env


@pytest.mark.parametrize("mode", ["development", "production"])
def test_every_service_environment_validates(mode: str, tmp_path: Path) -> None:
    """validate_all passes for each ktrdr service's environment in development and production."""
    services = _ktrdr_services(_compose({"KTRDR_ENV": mode}))
    assert set(services) == {"backend", "training-worker", "backtest-worker"}
    for name, service in services.items():
        env = _environment_with_secret_files(service, tmp_path)
        assert env["KTRDR_ENV"] == mode, name
        component, worker_type = _component(service)
        config = validate_all(component, env, env_file=None, worker_type=worker_type)  # type: ignore[call-overload]
        assert config.environment.env.value == mode


def test_production_is_the_compose_default(tmp_path: Path) -> None:
    """Without KTRDR_ENV on the host, every service runs in production mode."""
    for service in _ktrdr_services(_compose({})).values():
        assert service["environment"]["KTRDR_ENV"] == "production"


def test_missing_secret_files_fail_production(tmp_path: Path) -> None:
    """A service whose secret file is absent does not start (the report names the variable)."""
    service = _ktrdr_services(_compose({}))["training-worker"]
    env = {k: str(v) for k, v in service["environment"].items()}
    env["KTRDR_AUTH_WORKER_TOKEN_FILE"] = str(tmp_path / "absent")
    with pytest.raises(ConfigurationError, match="KTRDR_AUTH_WORKER_TOKEN_FILE"):
        validate_all("worker", env, env_file=None, worker_type=WorkerType.TRAINING)


def test_no_deprecated_or_unknown_names() -> None:
    """The compose file uses only current KTRDR_* names (production rejects unknown ones)."""
    old_names = set(deprecated_names())
    for service in _ktrdr_services(_compose({})).values():
        used = set(service["environment"])
        assert not used & old_names
        assert all(name.startswith("KTRDR_") for name in used)


def test_worker_port_is_given_once_and_used_everywhere() -> None:
    """Each worker's KTRDR_WORKER_PORT is the exposed and published container port."""
    for name, service in _ktrdr_services(_compose({})).items():
        if _component(service)[0] != "worker":
            continue
        port = service["environment"]["KTRDR_WORKER_PORT"]
        assert [str(p) for p in service["expose"]] == [port], name
        # Container port only: the host port is chosen by Docker, so workers scale.
        assert [str(p) for p in service["ports"]] == [port], name
    backend = _ktrdr_services(_compose({}))["backend"]
    api_port = backend["environment"]["KTRDR_API_PORT"]
    assert [p.split(":")[-1] for p in backend["ports"]] == [api_port]


def test_grace_period_exceeds_worker_shutdown_timeout() -> None:
    """Docker waits longer than the worker's own shutdown timeout before SIGKILL."""
    for name, service in _ktrdr_services(_compose({})).items():
        if _component(service)[0] != "worker":
            continue
        shutdown = parse_duration(service["environment"]["KTRDR_WORKER_SHUTDOWN_TIMEOUT"])
        grace = parse_duration(service["stop_grace_period"])
        assert grace > shutdown, name


def test_workers_share_the_checkpoint_volume() -> None:
    """Both worker types mount the same checkpoint volume at KTRDR_CHECKPOINT_DIR."""
    mounts = set()
    for service in _ktrdr_services(_compose({})).values():
        if _component(service)[0] == "worker":
            target = service["environment"]["KTRDR_CHECKPOINT_DIR"]
            mounts.update(v for v in service["volumes"] if v.endswith(":" + target))
    assert mounts == {"checkpoints:/app/data/checkpoints"}


def test_dockerfile_runs_ktrdr_as_non_root_with_settings_healthcheck() -> None:
    """The image's entrypoint is ktrdr, it runs as a non-root user, and probes via settings."""
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["ktrdr"\]', text, flags=re.MULTILINE)
    assert re.search(r'CMD \["ktrdr", "health"\]', text)


def test_the_operator_token_reaches_the_backend_alone_as_a_secret_file() -> None:
    """KTRDR_AUTH_OPERATOR_TOKEN_FILE names a compose secret, in the backend and nowhere else."""
    services = _ktrdr_services(_compose({}))
    holders = {
        name
        for name, service in services.items()
        if any(k.startswith("KTRDR_AUTH_OPERATOR_TOKEN") for k in service["environment"])
        or "operator_token" in service.get("secrets", [])
    }
    assert holders == {"backend"}
    backend = services["backend"]
    assert backend["environment"]["KTRDR_AUTH_OPERATOR_TOKEN_FILE"] == "/run/secrets/operator_token"
    assert "operator_token" in backend["secrets"]
    assert _compose({})["secrets"]["operator_token"] == {"file": "./secrets/operator_token"}


def test_the_backend_is_published_on_loopback_only() -> None:
    """Plain HTTP stays on the host: other machines go through a TLS proxy (docs/security.md)."""
    backend = _ktrdr_services(_compose({}))["backend"]
    assert [p.split(":")[0] for p in backend["ports"]] == ["127.0.0.1"]


def test_a_missing_operator_token_file_fails_the_production_backend(tmp_path: Path) -> None:
    """The backend without its operator token secret does not start; the report names it."""
    service = _ktrdr_services(_compose({}))["backend"]
    env = _environment_with_secret_files(service, tmp_path)
    env["KTRDR_AUTH_OPERATOR_TOKEN_FILE"] = str(tmp_path / "absent")
    with pytest.raises(ConfigurationError, match="KTRDR_AUTH_OPERATOR_TOKEN_FILE"):
        validate_all("backend", env, env_file=None)
