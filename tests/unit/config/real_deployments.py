"""The environments real ktrdr deployments give their backends and workers.

Written for these tests from the public repository kpiteira/ktrdr (the system ktrdr
0.4 replaces): its compose files for local, sandbox, canary and homelab (current and
earlier layouts), the per-slot sandbox template, the root and ``docker/`` compose
files, its env examples and the env file its LXC provisioning script writes. Only
variables and values are kept, with compose's ``${NAME:-default}`` resolved to the
default and secrets injected at deploy time replaced by placeholders. Variables that
configure nothing ktrdr reads (``PYTHONPATH``, ``GF_*``) are kept too: a deployment
carries them, so the new system must accept them.

Each :class:`Deployment` says what the environment meant under the old system: the
worker's backend URL, type and port, the backend's database engine, host, name and
user, the log format. ``refused`` is the exact problem line when, as deployed, the
new system must refuse to start (the meaning cannot be carried), and ``fix`` is the
change that line asks for; ``needs_secrets`` marks a deployment that asks for
production strictness and so must first be given real secrets (the tests derive
those lines and values from the declarations).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ktrdr.config import WorkerType
from ktrdr.config.bundles import Component

TEXT = {"KTRDR_LOG_FORMAT": "text"}


@attrs.frozen
class Deployment:
    """One service's environment as deployed, and what it meant."""

    name: str
    #: Where it comes from in kpiteira/ktrdr.
    origin: str
    component: Component
    #: The type the old command ran (``backtest_worker:app``); the entrypoint fixes it.
    worker_type: WorkerType | None
    environ: Mapping[str, str]
    #: Variable → effective value, as ``ktrdr config show`` prints it.
    meaning: Mapping[str, str]
    refused: str | None = None
    fix: Mapping[str, str] = attrs.field(factory=dict)
    #: Whether ``ktrdr config migrate`` makes the fix itself (not a secret it cannot know).
    migrate_fixes: bool = False
    needs_secrets: bool = False


def _worker(
    name: str,
    origin: str,
    kind: WorkerType,
    environ: Mapping[str, str],
    *,
    backend: str,
    port: int,
    public_url: str | None = None,
    refused: str | None = None,
    fix: Mapping[str, str] | None = None,
    migrate_fixes: bool = False,
) -> Deployment:
    meaning = {
        "KTRDR_WORKER_BACKEND_URL": backend,
        "KTRDR_WORKER_TYPE": kind.value,
        "KTRDR_WORKER_PORT": str(port),
        **TEXT,
    }
    if public_url is not None:
        meaning["KTRDR_WORKER_PUBLIC_URL"] = public_url
    return Deployment(
        name, origin, "worker", kind, environ, meaning, refused, fix or {}, migrate_fixes
    )


def _backend(
    name: str,
    origin: str,
    environ: Mapping[str, str],
    *,
    engine: str = "postgresql",
    host: str = "db",
    database: str = "ktrdr",
    user: str = "ktrdr",
    refused: str | None = None,
    fix: Mapping[str, str] | None = None,
) -> Deployment:
    meaning = {"KTRDR_DB_ENGINE": engine, **TEXT}
    if engine == "postgresql":
        meaning |= {"KTRDR_DB_HOST": host, "KTRDR_DB_NAME": database, "KTRDR_DB_USER": user}
    return Deployment(name, origin, "backend", None, environ, meaning, refused, fix or {})


BACKTEST, TRAINING = WorkerType.BACKTEST, WorkerType.TRAINING
_OLD_DB = {
    "DB_HOST": "db",
    "DB_PORT": "5432",
    "DB_NAME": "ktrdr",
    "DB_USER": "ktrdr",
    "DB_PASSWORD": "localdev",
}
_NEW_DB = {"KTRDR_" + name: value for name, value in _OLD_DB.items()}
_IB_HOST_SERVICE = {
    "USE_IB_HOST_SERVICE": "true",
    "IB_HOST_SERVICE_URL": "http://host.docker.internal:5001",
}

# --- deploy/environments/local/docker-compose.yml (and the root docker-compose.dev.yml)
LOCAL = "deploy/environments/local/docker-compose.yml"
_LOCAL_COMMON = {"ENVIRONMENT": "development", "LOG_LEVEL": "INFO", "PYTHONPATH": "/app"}
LOCAL_BACKEND = _backend(
    "local/backend",
    LOCAL,
    {
        **_LOCAL_COMMON,
        **_OLD_DB,
        "DATABASE_URL": "postgresql://ktrdr:localdev@db:5432/ktrdr",
        "KTRDR_API_URL": "http://backend:8000",
        "OTLP_ENDPOINT": "http://jaeger:4317",
        **_IB_HOST_SERVICE,
        "JWT_SECRET": "local-dev-secret-minimum-32-characters-long",
        "AGENT_ENABLED": "false",
        "ANTHROPIC_API_KEY": "",
    },
)


def _local_worker(
    service: str, kind: WorkerType, port: int, origin: str, layout: str
) -> Deployment:
    public_url = f"http://{service}:{port}"
    environ = {
        **_LOCAL_COMMON,
        "KTRDR_API_URL": "http://backend:8000",
        "WORKER_TYPE": "backtesting" if kind is BACKTEST else "training",
        "WORKER_PORT": str(port),
        "WORKER_PUBLIC_BASE_URL": public_url,
        "OTLP_ENDPOINT": "http://jaeger:4317",
        **_OLD_DB,
    }
    return _worker(
        f"{layout}/{service}",
        origin,
        kind,
        environ,
        backend="http://backend:8000",
        port=port,
        public_url=public_url,
    )


_LOCAL_LAYOUT = (
    ("backtest-worker-1", BACKTEST, 5003),
    ("backtest-worker-2", BACKTEST, 5004),
    ("training-worker-1", TRAINING, 5005),
    ("training-worker-2", TRAINING, 5006),
)
LOCAL_WORKERS = [_local_worker(*layout, LOCAL, "local") for layout in _LOCAL_LAYOUT]

# --- docker-compose.sandbox.yml (parallel sandbox stacks)
SANDBOX = "docker-compose.sandbox.yml"
SANDBOX_BACKEND = _backend(
    "sandbox/backend",
    SANDBOX,
    {
        **_LOCAL_COMMON,
        "AGENT_MODEL": "claude-opus-4-5-20251101",
        "USE_STUB_WORKERS": "false",
        "STUB_WORKER_FAST": "false",
        **_OLD_DB,
        "DATABASE_URL": "postgresql://ktrdr:localdev@db:5432/ktrdr",
        "KTRDR_API_URL": "http://backend:8000",
        "OTLP_ENDPOINT": "http://jaeger:4317",
        "CHECKPOINT_DIR": "/app/data/checkpoints",
        **_IB_HOST_SERVICE,
        "JWT_SECRET": "local-dev-secret-minimum-32-characters-long",
        "AGENT_ENABLED": "false",
        "AGENT_TRIGGER_INTERVAL_SECONDS": "300",
        "ANTHROPIC_API_KEY": "",
        "AGENT_TRAINING_START_DATE": "2015-01-01",
        "AGENT_TRAINING_END_DATE": "2019-12-31",
        "AGENT_BACKTEST_START_DATE": "2020-01-01",
        "AGENT_BACKTEST_END_DATE": "2021-12-31",
    },
)


def _sandbox_worker(service: str, kind: WorkerType, port: int) -> Deployment:
    deployment = _local_worker(service, kind, port, SANDBOX, "sandbox")
    environ = {**deployment.environ, "CHECKPOINT_DIR": "/app/data/checkpoints"}
    return attrs.evolve(deployment, environ=environ)


SANDBOX_WORKERS = [_sandbox_worker(*layout) for layout in _LOCAL_LAYOUT]

# --- deploy/environments/canary/docker-compose.yml (production image before merge)
CANARY = "deploy/environments/canary/docker-compose.yml"
_CANARY_DB = {
    "DB_HOST": "db",
    "DB_PORT": "5432",
    "DB_NAME": "ktrdr_canary",
    "DB_USER": "ktrdr_canary",
    "DB_PASSWORD": "canary_password",
}
_CANARY_PATHS = {
    "SHARED_MOUNT_PATH": "/mnt/ktrdr_data",
    "DATA_DIR": "/mnt/ktrdr_data/data",
    "MODELS_DIR": "/mnt/ktrdr_data/models",
    "STRATEGIES_DIR": "/mnt/ktrdr_data/strategies",
}
CANARY_BACKEND = _backend(
    "canary/backend",
    CANARY,
    {
        **_CANARY_DB,
        "JWT_SECRET": "canary_jwt_secret_at_least_32_characters",
        "KTRDR_API_HOST": "0.0.0.0",
        "KTRDR_API_PORT": "8000",
        "ENVIRONMENT": "canary",
        "LOG_LEVEL": "INFO",
        **_CANARY_PATHS,
    },
    database="ktrdr_canary",
    user="ktrdr_canary",
)
CANARY_WORKERS = [
    _worker(
        f"canary/{service}",
        CANARY,
        kind,
        {
            "KTRDR_API_URL": "http://backend:8000",
            "WORKER_TYPE": "backtesting" if kind is BACKTEST else "training",
            "WORKER_PORT": str(port),
            "WORKER_PUBLIC_BASE_URL": f"http://{service}:{port}",
            **_CANARY_PATHS,
            **_CANARY_DB,
        },
        backend="http://backend:8000",
        port=port,
        public_url=f"http://{service}:{port}",
    )
    for service, kind, port in (
        ("backtest-worker", BACKTEST, 5003),
        ("training-worker", TRAINING, 5004),
    )
]

# --- deploy/environments/homelab: core, workers, GPU worker, and the core stack's .env
HOMELAB = "deploy/environments/homelab/docker-compose.core.yml"
HOMELAB_WORKERS_FILE = "deploy/environments/homelab/docker-compose.workers.yml"
HOMELAB_GPU = "deploy/environments/homelab/docker-compose.gpu-worker.yml"
_HOMELAB_SECRETS = {"KTRDR_DB_USER": "ktrdr_homelab", "KTRDR_DB_PASSWORD": "from-1password-db"}
_HOMELAB_DATA = {
    "KTRDR_DATA_DIR": "/mnt/ktrdr_data/data",
    "KTRDR_DATA_MODELS_DIR": "/mnt/ktrdr_data/models",
    "KTRDR_DATA_STRATEGIES_DIR": "/mnt/ktrdr_data/strategies",
}
HOMELAB_BACKEND = _backend(
    "homelab/backend",
    HOMELAB,
    {
        "KTRDR_DB_HOST": "db",
        "KTRDR_DB_PORT": "5432",
        "KTRDR_DB_NAME": "ktrdr",
        **_HOMELAB_SECRETS,
        "KTRDR_AUTH_JWT_SECRET": "from-1password-jwt",
        "KTRDR_API_HOST": "0.0.0.0",
        "KTRDR_API_PORT": "8000",
        "KTRDR_API_ENVIRONMENT": "homelab",
        "KTRDR_LOG_LEVEL": "INFO",
        "KTRDR_OTEL_OTLP_ENDPOINT": "http://jaeger:4317",
        **_HOMELAB_DATA,
        "KTRDR_CHECKPOINT_DIR": "/mnt/ktrdr_data/checkpoints",
    },
    user="ktrdr_homelab",
)
HOMELAB_ENV_CORE = _backend(
    "homelab/.env.core",
    "deploy/environments/homelab/.env.core",
    {
        "KTRDR_DB_HOST": "db",
        "KTRDR_DB_PORT": "5432",
        "KTRDR_DB_NAME": "ktrdr",
        "KTRDR_API_HOST": "0.0.0.0",
        "KTRDR_API_PORT": "8000",
        "KTRDR_API_ENVIRONMENT": "homelab",
        "KTRDR_LOG_LEVEL": "INFO",
        "KTRDR_OTEL_OTLP_ENDPOINT": "http://jaeger:4317",
        "GF_AUTH_ANONYMOUS_ENABLED": "true",
        "GF_AUTH_ANONYMOUS_ORG_ROLE": "Admin",
        "IMAGE_TAG": "latest",
    },
)
_HOMELAB_BACKEND_URL = "http://backend.ktrdr.home.mynerd.place:8000"


def _homelab_worker(service: str, kind: WorkerType, port: int) -> Deployment:
    public_url = f"http://workers-b.ktrdr.home.mynerd.place:{port}"
    environ = {
        "KTRDR_API_CLIENT_BASE_URL": _HOMELAB_BACKEND_URL,
        "KTRDR_WORKER_TYPE": "backtesting" if kind is BACKTEST else "training",
        "KTRDR_WORKER_PORT": str(port),
        "KTRDR_WORKER_PUBLIC_BASE_URL": public_url,
        "KTRDR_DATA_SHARED_MOUNT_PATH": "/mnt/ktrdr_data",
        **_HOMELAB_DATA,
        "KTRDR_CHECKPOINT_DIR": "/mnt/ktrdr_data/checkpoints",
        "KTRDR_OTEL_OTLP_ENDPOINT": "http://backend.ktrdr.home.mynerd.place:4317",
        "KTRDR_DB_HOST": "backend.ktrdr.home.mynerd.place",
        "KTRDR_DB_PORT": "5432",
        "KTRDR_DB_NAME": "ktrdr",
        **_HOMELAB_SECRETS,
    }
    return _worker(
        f"homelab/{service}",
        HOMELAB_WORKERS_FILE,
        kind,
        environ,
        backend=_HOMELAB_BACKEND_URL,
        port=port,
        public_url=public_url,
    )


_HOMELAB_LAYOUT = (
    ("backtest-worker-1", BACKTEST, 5003),
    ("backtest-worker-2", BACKTEST, 5004),
    ("backtest-worker-3", BACKTEST, 5007),
    ("training-worker-1", TRAINING, 5005),
    ("training-worker-2", TRAINING, 5006),
    ("training-worker-3", TRAINING, 5008),
)
HOMELAB_WORKERS = [_homelab_worker(*layout) for layout in _HOMELAB_LAYOUT]
_GPU_URL = "http://ktrdr-gpuworker.ktrdr.home.mynerd.place:5005"
HOMELAB_GPU_WORKER = _worker(
    "homelab/training-worker-gpu",
    HOMELAB_GPU,
    TRAINING,
    {
        "KTRDR_API_CLIENT_BASE_URL": _HOMELAB_BACKEND_URL,
        "KTRDR_WORKER_TYPE": "training",
        "KTRDR_WORKER_PORT": "5005",
        "KTRDR_WORKER_PUBLIC_BASE_URL": _GPU_URL,
        "KTRDR_WORKER_HAS_GPU": "true",
        "KTRDR_DATA_SHARED_MOUNT_PATH": "/mnt/ktrdr_data",
        **_HOMELAB_DATA,
        "KTRDR_OTEL_OTLP_ENDPOINT": "http://backend.ktrdr.home.mynerd.place:4317",
        "KTRDR_DB_HOST": "backend.ktrdr.home.mynerd.place",
        "KTRDR_DB_PORT": "5432",
        "KTRDR_DB_NAME": "ktrdr",
        **_HOMELAB_SECRETS,
        "NVIDIA_VISIBLE_DEVICES": "all",
        "CUDA_VISIBLE_DEVICES": "0",
    },
    backend=_HOMELAB_BACKEND_URL,
    port=5005,
    public_url=_GPU_URL,
)

# --- deploy/homelab (the earlier homelab layout, before the KTRDR_ prefix)
HOMELAB_V1 = "deploy/homelab/docker-compose.core.yml"
_V1_SECRETS = {"DB_USER": "ktrdr_homelab", "DB_PASSWORD": "from-1password-db"}
HOMELAB_V1_BACKEND = _backend(
    "homelab-v1/backend",
    HOMELAB_V1,
    {
        "DB_HOST": "db",
        "DB_PORT": "5432",
        "DB_NAME": "ktrdr",
        **_V1_SECRETS,
        "JWT_SECRET": "from-1password-jwt",
        "KTRDR_API_HOST": "0.0.0.0",
        "KTRDR_API_PORT": "8000",
        "ENVIRONMENT": "homelab",
        "LOG_LEVEL": "INFO",
        "OTLP_ENDPOINT": "http://jaeger:4317",
        "SHARED_MOUNT_PATH": "/mnt/ktrdr_data",
    },
    user="ktrdr_homelab",
)


def _homelab_v1_worker(service: str, kind: WorkerType, port: int) -> Deployment:
    public_url = f"http://workers-b.ktrdr.home.mynerd.place:{port}"
    environ = {
        "KTRDR_API_URL": _HOMELAB_BACKEND_URL,
        "WORKER_TYPE": "backtesting" if kind is BACKTEST else "training",
        "WORKER_PORT": str(port),
        "WORKER_PUBLIC_BASE_URL": public_url,
        "SHARED_MOUNT_PATH": "/mnt/ktrdr_data",
        "OTLP_ENDPOINT": "http://backend.ktrdr.home.mynerd.place:4317",
        "DB_HOST": "backend.ktrdr.home.mynerd.place",
        "DB_PORT": "5432",
        "DB_NAME": "ktrdr",
        **_V1_SECRETS,
    }
    return _worker(
        f"homelab-v1/{service}",
        "deploy/homelab/docker-compose.workers.yml",
        kind,
        environ,
        backend=_HOMELAB_BACKEND_URL,
        port=port,
        public_url=public_url,
    )


HOMELAB_V1_WORKERS = [_homelab_v1_worker(*layout) for layout in _HOMELAB_LAYOUT]

# --- ktrdr/cli/kinfra/templates/docker-compose.base.yml (one sandbox slot)
SLOT = "ktrdr/cli/kinfra/templates/docker-compose.base.yml"
_SLOT_COMMON = {
    "KTRDR_API_ENVIRONMENT": "development",
    "KTRDR_LOG_LEVEL": "INFO",
    "PYTHONPATH": "/app",
}
SLOT_BACKEND = _backend(
    "slot/backend",
    SLOT,
    {
        **_SLOT_COMMON,
        **_NEW_DB,
        "DATABASE_URL": "postgresql://ktrdr:localdev@db:5432/ktrdr",
        "KTRDR_OTEL_OTLP_ENDPOINT": "http://jaeger:4317",
        "KTRDR_IB_HOST_ENABLED": "true",
        "KTRDR_IB_HOST_HOST": "host.docker.internal",
        "KTRDR_IB_HOST_PORT": "5001",
        "KTRDR_AUTH_JWT_SECRET": "local-dev-secret-minimum-32-characters-long",
    },
)
SLOT_WORKERS = [
    _worker(
        f"slot/{service}",
        SLOT,
        kind,
        {
            **_SLOT_COMMON,
            "KTRDR_API_CLIENT_BASE_URL": "http://backend:8000/api/v1",
            "WORKER_TYPE": "backtesting" if kind is BACKTEST else "training",
            "KTRDR_WORKER_PORT": str(port),
            "KTRDR_OTEL_OTLP_ENDPOINT": "http://jaeger:4317",
            **_NEW_DB,
        },
        backend="http://backend:8000",
        port=port,
    )
    for service, kind, port in (
        ("backtest-worker", BACKTEST, 5003),
        ("training-worker", TRAINING, 5005),
    )
]

# --- docker/docker-compose.yml (the first distributed layout: no database yet)
DOCKER = "docker/docker-compose.yml"
_DOCKER_COMMON = {
    "ENVIRONMENT": "development",
    "LOG_LEVEL": "INFO",
    "PYTHONPATH": "/app",
    "KTRDR_API_URL": "http://backend:8000",
}
DOCKER_BACKEND = _backend(
    "docker/backend",
    DOCKER,
    {
        **_DOCKER_COMMON,
        "OTLP_ENDPOINT": "http://jaeger:4317",
        "IB_HOST": "172.17.0.1",
        "IB_PORT": "4002",
        "IB_CLIENT_ID": "1",
        **_IB_HOST_SERVICE,
    },
    engine="sqlite",
)
DOCKER_WORKER = _worker(
    "docker/backtest-worker",
    DOCKER,
    BACKTEST,
    {**_DOCKER_COMMON, "WORKER_PORT": "5003", "WORKER_IP": "0.0.0.0", **_IB_HOST_SERVICE},
    backend="http://backend:8000",
    port=5003,
)

# --- docker-compose.yml and the two production compose files (backend only)
ROOT_BACKEND = _backend(
    "root/backend",
    "docker-compose.yml",
    {"ENVIRONMENT": "development", "LOG_LEVEL": "INFO", "PYTHONPATH": "/app"},
    engine="sqlite",
)
PROD_BACKEND = attrs.evolve(
    _backend(
        "prod/backend",
        "docker-compose.prod.yml, docker/docker-compose.prod.yml",
        {"ENVIRONMENT": "production", "LOG_LEVEL": "WARNING"},
        engine="sqlite",
    ),
    needs_secrets=True,
)

# --- env examples: the API's, the distributed layout's and the local development one
API_ENV_EXAMPLE = _backend(
    ".env.example",
    ".env.example",
    {
        "KTRDR_API_TITLE": "KTRDR API",
        "KTRDR_API_DESCRIPTION": "REST API for KTRDR trading system",
        "KTRDR_API_VERSION": "1.0.5",
        "KTRDR_API_HOST": "127.0.0.1",
        "KTRDR_API_PORT": "8000",
        "KTRDR_API_RELOAD": "True",
        "KTRDR_API_LOG_LEVEL": "INFO",
        "KTRDR_API_ENVIRONMENT": "development",
        "KTRDR_API_API_PREFIX": "/api/v1",
        "KTRDR_API_CORS_ORIGINS": "*",
        "KTRDR_API_CORS_ALLOW_CREDENTIALS": "True",
        "KTRDR_API_CORS_ALLOW_METHODS": "*",
        "KTRDR_API_CORS_ALLOW_HEADERS": "*",
        "KTRDR_API_CORS_MAX_AGE": "600",
    },
    engine="sqlite",
)
_DISTRIBUTED = {
    "KTRDR_IB_HOST_ENABLED": "true",
    "KTRDR_IB_HOST_HOST": "host.docker.internal",
    "KTRDR_IB_HOST_PORT": "5001",
    "KTRDR_IB_HOST": "172.17.0.1",
    "KTRDR_IB_PORT": "4002",
    "KTRDR_IB_CLIENT_ID": "1",
    "KTRDR_API_CLIENT_BASE_URL": "http://backend:8000/api/v1",
    "KTRDR_OPS_CACHE_TTL": "1",
    "KTRDR_WORKER_HEALTH_CHECK_INTERVAL": "10",
    "KTRDR_WORKER_HEALTH_CHECK_TIMEOUT": "5",
    "KTRDR_WORKER_HEALTH_CHECK_FAILURES": "3",
    "KTRDR_WORKER_REMOVAL_THRESHOLD": "300",
    "KTRDR_API_ENVIRONMENT": "development",
}
DISTRIBUTED_BACKEND = _backend(
    ".env.distributed.example (backend)", ".env.distributed.example", _DISTRIBUTED, engine="sqlite"
)
DISTRIBUTED_WORKER = _worker(
    ".env.distributed.example (worker)",
    ".env.distributed.example",
    BACKTEST,
    _DISTRIBUTED,
    backend="http://backend:8000",
    port=5003,
)
_DEV_EXAMPLE = {
    **{name: value for name, value in _NEW_DB.items() if name != "KTRDR_DB_ECHO"},
    "KTRDR_AUTH_JWT_SECRET": "local-dev-secret-minimum-32-characters-long",
    "KTRDR_API_CLIENT_BASE_URL": "http://backend:8000/api/v1",
    "KTRDR_IB_HOST_ENABLED": "true",
    "KTRDR_IB_HOST_HOST": "host.docker.internal",
    "KTRDR_IB_HOST_PORT": "5001",
    "KTRDR_OTEL_OTLP_ENDPOINT": "http://jaeger:4317",
    "GF_ADMIN_PASSWORD": "admin",
}
DEV_EXAMPLE_BACKEND = _backend(".env.dev.example (backend)", ".env.dev.example", _DEV_EXAMPLE)
DEV_EXAMPLE_WORKER = _worker(
    ".env.dev.example (worker)",
    ".env.dev.example",
    TRAINING,
    _DEV_EXAMPLE,
    backend="http://backend:8000",
    port=5003,
)

# --- the LXC worker's /opt/ktrdr/.env (scripts/lxc/provision-worker.sh) under systemd
LXC = "scripts/lxc/provision-worker.sh, scripts/deploy/systemd/*.service"
LXC_WORKERS = [
    _worker(
        "lxc/backtesting-worker",
        LXC,
        BACKTEST,
        {
            "KTRDR_API_URL": "http://192.168.1.100:8000",
            "WORKER_ENDPOINT_URL": "http://192.168.1.201:5003",
            "WORKER_TYPE": "backtesting",
            "WORKER_ID": "backtesting-worker-201",
            "WORKER_CAPABILITIES": "cpu",
        },
        backend="http://192.168.1.100:8000",
        port=5003,
        public_url="http://192.168.1.201:5003",
    ),
    # systemd ran `uvicorn ... --port 5004`; the .env never said the port.
    _worker(
        "lxc/training-worker",
        LXC,
        TRAINING,
        {
            "KTRDR_API_URL": "http://192.168.1.100:8000",
            "WORKER_ENDPOINT_URL": "http://192.168.1.202:5004",
            "WORKER_TYPE": "training",
            "WORKER_ID": "training-worker-202",
            "WORKER_CAPABILITIES": "cpu",
        },
        backend="http://192.168.1.100:8000",
        port=5004,
        public_url="http://192.168.1.202:5004",
        refused=(
            "WORKER_ENDPOINT_URL='http://192.168.1.202:5004': names port 5004, but "
            "KTRDR_WORKER_PORT is not set, so the worker would listen on 5003: set "
            "KTRDR_WORKER_PORT=5004 (before ktrdr 0.4 the port came from `uvicorn --port`), "
            "or KTRDR_WORKER_PORT=5003 if a port mapping sits in between"
        ),
        fix={"KTRDR_WORKER_PORT": "5004"},
        migrate_fixes=True,
    ),
]

# --- config/deploy/*.env.example: the LXC deployment scripts' own shell environment
DEPLOY_TOOLING = [
    Deployment(
        f"config/deploy/{mode}.env.example",
        f"config/deploy/{mode}.env.example",
        "all",
        None,
        {
            "KTRDR_BACKEND_API": "http://192.168.1.100:8000",
            "KTRDR_GATEWAY": "192.168.1.1",
            "KTRDR_NETMASK": "24",
            "KTRDR_GIT_REPO": "https://github.com/your-org/ktrdr.git",
            "KTRDR_GIT_REF": ref,
            "KTRDR_WORKER_CONFIG": f"config/workers.{mode}.yaml",
            "KTRDR_ENV": env,
        },
        {"KTRDR_ENV": env, "KTRDR_DB_ENGINE": "sqlite"},
        needs_secrets=env == "production",
    )
    for mode, ref, env in (("dev", "develop", "development"), ("prod", "main", "production"))
]

ALL: list[Deployment] = [
    LOCAL_BACKEND,
    *LOCAL_WORKERS,
    SANDBOX_BACKEND,
    *SANDBOX_WORKERS,
    CANARY_BACKEND,
    *CANARY_WORKERS,
    HOMELAB_BACKEND,
    HOMELAB_ENV_CORE,
    *HOMELAB_WORKERS,
    HOMELAB_GPU_WORKER,
    HOMELAB_V1_BACKEND,
    *HOMELAB_V1_WORKERS,
    SLOT_BACKEND,
    *SLOT_WORKERS,
    DOCKER_BACKEND,
    DOCKER_WORKER,
    ROOT_BACKEND,
    PROD_BACKEND,
    API_ENV_EXAMPLE,
    DISTRIBUTED_BACKEND,
    DISTRIBUTED_WORKER,
    DEV_EXAMPLE_BACKEND,
    DEV_EXAMPLE_WORKER,
    *LXC_WORKERS,
    *DEPLOY_TOOLING,
]
