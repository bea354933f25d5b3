"""Real ktrdr deployments keep their meaning under the new configuration.

Each environment of ``real_deployments`` (written from kpiteira/ktrdr's deployment
files) is a test case three times: as deployed, it starts with the meaning it had or
is refused with the one problem line that says what to change; with
``KTRDR_ENV=production`` and real secrets it is accepted; and ``ktrdr config
migrate`` rewrites it into a file that passes ``config check`` with the same meaning,
uses no deprecated name, and migrates to itself.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import pytest
import yaml
from config_helpers import load, problems_of
from dotenv import dotenv_values
from real_deployments import ALL, Deployment

from ktrdr.config import effective_values
from ktrdr.config.bundles import settings_classes, uses_field
from ktrdr.config.fields import FILE_SUFFIX, declared
from ktrdr.config.migrate_files import migrate_compose, migrate_env
from ktrdr.config.settings import DatabaseSettings

IDS = [deployment.name for deployment in ALL]


def _load(deployment: Deployment, environ: Mapping[str, str]) -> dict[str, str]:
    """The effective values (as ``config show`` prints them) of ``environ``."""
    config = load(deployment.component, environ, worker_type=deployment.worker_type)
    return {row.variable: row.value for row in effective_values(config)}


def _meaning(deployment: Deployment, effective: Mapping[str, str]) -> dict[str, str]:
    return {name: effective[name] for name in deployment.meaning}


def _secrets(deployment: Deployment) -> dict[str, str]:
    """A real value for each secret the component checks (the database's on PostgreSQL)."""
    on_postgresql = deployment.meaning.get("KTRDR_DB_ENGINE") == "postgresql"
    secrets = {}
    for cls in settings_classes(deployment.component).values():
        for item in declared(cls):
            if not item.spec.insecure_default:
                continue
            if cls is DatabaseSettings and not on_postgresql:
                continue
            if uses_field(deployment.component, cls, item.name):
                secrets[item.env] = f"prod-{item.name}-5f2a"
    return secrets


def _production(deployment: Deployment) -> dict[str, str]:
    """Production strictness with real secrets for whatever the component uses."""
    return {"KTRDR_ENV": "production", **_secrets(deployment)}


def _fix(deployment: Deployment) -> dict[str, str]:
    """What the refusal asks for: the change it names, or real secrets."""
    return {**deployment.fix, **(_secrets(deployment) if deployment.needs_secrets else {})}


def _secret_lines(deployment: Deployment) -> list[str]:
    """The problems of production strictness with development secrets, one per secret."""
    return [
        f"{name}: still the insecure development default; KTRDR_ENV=production needs a "
        f"real secret (set {name} or {name}{FILE_SUFFIX})"
        for name in _secrets(deployment)
    ]


def _env_file(environ: Mapping[str, str]) -> str:
    """``environ`` as an env file, values double-quoted as a careful operator would."""
    lines = ["# written from a real ktrdr deployment\n"]
    lines.extend(f'{name}="{value}"\n' for name, value in environ.items())
    return "".join(lines)


@pytest.mark.parametrize("deployment", ALL, ids=IDS)
def test_as_deployed_the_meaning_is_kept_or_the_change_is_named(deployment: Deployment) -> None:
    """Same backend URL, worker type and port, database and log format; or one exact problem."""
    environ = dict(deployment.environ)
    if deployment.refused is not None or deployment.needs_secrets:
        problems = problems_of(deployment.component, environ, worker_type=deployment.worker_type)
        refused = [deployment.refused] if deployment.refused else _secret_lines(deployment)
        assert problems == refused
        environ |= _fix(deployment)
    assert _meaning(deployment, _load(deployment, environ)) == dict(deployment.meaning)


@pytest.mark.parametrize("deployment", ALL, ids=IDS)
def test_production_with_real_secrets_accepts_it(deployment: Deployment) -> None:
    """KTRDR_ENV=production and real secrets: accepted, with the same meaning."""
    environ = {**deployment.environ, **_fix(deployment), **_production(deployment)}
    meaning = {**deployment.meaning, "KTRDR_ENV": "production"}
    effective = _load(deployment, environ)
    assert {name: effective[name] for name in meaning} == meaning


@pytest.mark.parametrize("deployment", ALL, ids=IDS)
def test_migrate_output_passes_check_with_the_same_meaning(deployment: Deployment) -> None:
    """The migrated env file loads cleanly, means the same, and migrates to itself."""
    result = migrate_env(_env_file(deployment.environ), "deployed.env", deployment.component)
    migrated = {k: v or "" for k, v in dotenv_values(stream=io.StringIO(result.text)).items()}
    if not deployment.migrate_fixes:
        migrated |= _fix(deployment)
    config = load(deployment.component, migrated, worker_type=deployment.worker_type)
    effective = {row.variable: row.value for row in effective_values(config)}
    assert _meaning(deployment, effective) == dict(deployment.meaning)
    assert config.report.deprecations == ()
    again = migrate_env(result.text, "deployed.env", deployment.component)
    assert (again.changes, again.text) == ((), result.text)


def _compose_file(deployments: list[Deployment], *, as_list: bool) -> str:
    """The services of one compose file, environments as a list or a mapping."""
    lines = ["# written from a real ktrdr deployment", "services:"]
    for deployment in deployments:
        module = "ktrdr.api.main:app"
        if deployment.worker_type is not None:
            kind = deployment.worker_type.value
            module = f"ktrdr.{kind}ing.{kind}_worker:app".replace("traininging", "training")
        lines += [
            f"  {deployment.name.split('/')[-1]}:",
            "    image: ghcr.io/kpiteira/ktrdr-backend:latest",
            f'    command: ["python", "-m", "uvicorn", "{module}"]',
            "    environment:",
        ]
        for name, value in deployment.environ.items():
            lines.append(f'      - "{name}={value}"' if as_list else f'      {name}: "{value}"')
    return "\n".join(lines) + "\n"


COMPOSE_FILES = sorted({d.origin for d in ALL if d.origin.endswith(".yml")})


@pytest.mark.parametrize("origin", COMPOSE_FILES)
@pytest.mark.parametrize("as_list", [True, False], ids=["list", "mapping"])
def test_migrated_compose_files_keep_every_services_meaning(origin: str, as_list: bool) -> None:
    """config migrate on a compose file: each service's migrated environment means the same."""
    deployments = [d for d in ALL if d.origin == origin]
    result = migrate_compose(_compose_file(deployments, as_list=as_list), origin)
    services = yaml.safe_load(result.text)["services"]
    for deployment in deployments:
        block = services[deployment.name.split("/")[-1]]["environment"]
        pairs = [item.split("=", 1) for item in block] if as_list else block.items()
        environ = {name: str(value) for name, value in pairs}
        if not deployment.migrate_fixes:
            environ |= _fix(deployment)
        config = load(deployment.component, environ, worker_type=deployment.worker_type)
        effective = {row.variable: row.value for row in effective_values(config)}
        assert _meaning(deployment, effective) == dict(deployment.meaning), deployment.name
        assert config.report.deprecations == (), deployment.name
    assert migrate_compose(result.text, origin).changes == ()
