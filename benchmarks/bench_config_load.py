"""Benchmark: load the full ``all`` configuration bundle, ktrdr vs pydantic-settings.

Run with ``.venv/bin/python benchmarks/bench_config_load.py``. Both loaders read the
same process environment in the same run, from an empty working directory (so
neither finds a dotenv file), in two scenarios:

- ``empty``: no ktrdr variable set (every value is a default);
- ``20 set``: 20 variables set, half of them by their deprecated names.

ktrdr's side is ``validate_all("all", os.environ)``: a fresh loader and converter per
call, provenance recorded, unknown-variable detection on. The pydantic-settings side
is one ``BaseSettings`` class per concern with the same fields, types, defaults,
range checks and deprecated names (``AliasChoices``), duration strings parsed by a
``BeforeValidator``. The target is ktrdr's median wall time <= 0.1 x
pydantic-settings' (CPU time is printed beside it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ktrdr.config import (
    DbEngine,
    Environment,
    LogFormat,
    LogLevel,
    WorkerType,
    deprecated_names,
    validate_all,
)

TARGET_RATIO = 0.1

#: 20 variables, 10 of them by a deprecated name; a valid production configuration.
TWENTY_SET = {
    # deprecated names (10)
    "ENVIRONMENT": "production",
    "WORKER_PORT": "5010",
    "WORKER_ID": "training-bench-1",
    "WORKER_REMOVAL_THRESHOLD": "10m",
    "CHECKPOINT_DIR": "data/bench-checkpoints",
    "CHECKPOINT_EPOCH_INTERVAL": "5",
    "ORPHAN_TIMEOUT_SECONDS": "120",
    "OPERATIONS_CACHE_TTL": "2s",
    "DB_HOST": "db.internal",
    "LOG_LEVEL": "debug",
    # current names (10)
    "KTRDR_WORKER_HEARTBEAT_INTERVAL": "5s",
    "KTRDR_WORKER_PUBLIC_URL": "http://worker-1.internal:5010",
    "KTRDR_CHECKPOINT_BAR_INTERVAL": "500",
    "KTRDR_ORPHAN_CHECK_INTERVAL": "30s",
    "KTRDR_OPS_MAX_OPERATIONS": "500",
    "KTRDR_DB_ENGINE": "postgresql",
    "KTRDR_DB_PASSWORD": "bench-password",
    "KTRDR_LOG_FORMAT": "json",
    "KTRDR_AUTH_OPERATOR_TOKEN": "bench-operator-token",
    "KTRDR_AUTH_WORKER_TOKEN": "bench-token",
}


# --- the equivalent pydantic-settings model -------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip().lower())
        if match is None:
            message = "expected a duration such as 90, 90s, 5m or 1h"
            raise ValueError(message)
        return datetime.timedelta(seconds=float(match[1]) * _UNIT[match[2]])
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Duration = Annotated[datetime.timedelta, BeforeValidator(_duration)]
_CONFIG = SettingsConfigDict(env_file=".env.local", extra="ignore", case_sensitive=True)


def _names(new: str) -> AliasChoices:
    old = [o for o, n in deprecated_names().items() if n == new]
    return AliasChoices(new, *old)


def _f(default: Any, new: str, **kwargs: Any) -> Any:
    return Field(default, validation_alias=_names(new), **kwargs)


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


class PEnvironment(BaseSettings):
    model_config = _CONFIG
    env: Annotated[Environment, BeforeValidator(_lower)] = _f(Environment.DEVELOPMENT, "KTRDR_ENV")
    acknowledge_insecure_defaults: bool = _f(False, "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS")


class PWorker(BaseSettings):
    model_config = _CONFIG
    type: WorkerType | None = _f(None, "KTRDR_WORKER_TYPE")
    host: str = _f("0.0.0.0", "KTRDR_WORKER_HOST", min_length=1)
    port: int = _f(5003, "KTRDR_WORKER_PORT", ge=1, le=65535)
    id: str = _f("worker-host-5003", "KTRDR_WORKER_ID", min_length=1)
    public_url: str = _f("http://host:5003", "KTRDR_WORKER_PUBLIC_URL", pattern=r"^https?://")
    backend_url: str = _f("http://localhost:8000", "KTRDR_WORKER_BACKEND_URL")
    heartbeat_interval: Duration = _f(_seconds(10), "KTRDR_WORKER_HEARTBEAT_INTERVAL")
    registration_timeout: Duration = _f(_seconds(10), "KTRDR_WORKER_REGISTRATION_TIMEOUT")
    shutdown_timeout: Duration = _f(_seconds(25), "KTRDR_WORKER_SHUTDOWN_TIMEOUT")
    stop_grace: Duration = _f(_seconds(10), "KTRDR_WORKER_STOP_GRACE")
    max_memory: int | None = _f(None, "KTRDR_WORKER_MAX_MEMORY", ge=1)
    stale_after: int = _f(3, "KTRDR_WORKER_STALE_AFTER", ge=1, le=1000)
    removal_threshold: Duration = _f(_seconds(300), "KTRDR_WORKER_REMOVAL_THRESHOLD")


class PCheckpoint(BaseSettings):
    model_config = _CONFIG
    epoch_interval: int = _f(10, "KTRDR_CHECKPOINT_EPOCH_INTERVAL", ge=1)
    time_interval: Duration = _f(_seconds(300), "KTRDR_CHECKPOINT_TIME_INTERVAL")
    bar_interval: int = _f(10000, "KTRDR_CHECKPOINT_BAR_INTERVAL", ge=1)
    dir: Path = _f(Path("data/checkpoints"), "KTRDR_CHECKPOINT_DIR")
    max_age_days: int = _f(30, "KTRDR_CHECKPOINT_MAX_AGE_DAYS", ge=1, le=36500)


class PData(BaseSettings):
    model_config = _CONFIG
    dir: Path = _f(Path("data"), "KTRDR_DATA_DIR")
    max_file_size: int = _f(1024**3, "KTRDR_DATA_MAX_FILE_SIZE", ge=1)


class POrphan(BaseSettings):
    model_config = _CONFIG
    timeout: Duration = _f(_seconds(60), "KTRDR_ORPHAN_TIMEOUT")
    check_interval: Duration = _f(_seconds(15), "KTRDR_ORPHAN_CHECK_INTERVAL")
    batch_size: int = _f(100, "KTRDR_ORPHAN_BATCH_SIZE", ge=1, le=10000)


class POperations(BaseSettings):
    model_config = _CONFIG
    cache_ttl: Duration = _f(_seconds(1), "KTRDR_OPS_CACHE_TTL")
    max_operations: int = _f(10000, "KTRDR_OPS_MAX_OPERATIONS", ge=1)
    cleanup_interval: Duration = _f(_seconds(3600), "KTRDR_OPS_CLEANUP_INTERVAL")
    retention_days: int = _f(7, "KTRDR_OPS_RETENTION_DAYS", ge=1, le=36500)
    cleanup_batch_size: int = _f(1000, "KTRDR_OPS_CLEANUP_BATCH_SIZE", ge=1, le=100000)


class PDatabase(BaseSettings):
    model_config = _CONFIG
    engine: DbEngine = _f(DbEngine.SQLITE, "KTRDR_DB_ENGINE")
    path: Path = _f(Path("data/ktrdr.db"), "KTRDR_DB_PATH")
    host: str = _f("localhost", "KTRDR_DB_HOST", min_length=1)
    port: int = _f(5432, "KTRDR_DB_PORT", ge=1, le=65535)
    name: str = _f("ktrdr", "KTRDR_DB_NAME", min_length=1)
    user: str = _f("ktrdr", "KTRDR_DB_USER", min_length=1)
    password: SecretStr = _f(SecretStr("localdev"), "KTRDR_DB_PASSWORD")
    echo: bool = _f(False, "KTRDR_DB_ECHO")


class PLogging(BaseSettings):
    model_config = _CONFIG
    level: Annotated[LogLevel, BeforeValidator(_upper)] = _f(LogLevel.INFO, "KTRDR_LOG_LEVEL")
    format: LogFormat = _f(LogFormat.TEXT, "KTRDR_LOG_FORMAT")


class PAPI(BaseSettings):
    model_config = _CONFIG
    host: str = _f("127.0.0.1", "KTRDR_API_HOST", min_length=1)
    port: int = _f(8000, "KTRDR_API_PORT", ge=1, le=65535)
    docs: bool | None = _f(None, "KTRDR_API_DOCS")


class PAuth(BaseSettings):
    model_config = _CONFIG
    worker_token: SecretStr = _f(SecretStr("local-dev-worker-token"), "KTRDR_AUTH_WORKER_TOKEN")
    operator_token: SecretStr = _f(
        SecretStr("local-dev-operator-token"), "KTRDR_AUTH_OPERATOR_TOKEN"
    )


class PMetrics(BaseSettings):
    model_config = _CONFIG
    enabled: bool = _f(True, "KTRDR_METRICS_ENABLED")
    token: SecretStr | None = _f(None, "KTRDR_METRICS_TOKEN")


class PTracing(BaseSettings):
    model_config = _CONFIG
    enabled: bool = _f(False, "KTRDR_OTEL_ENABLED")
    otlp_endpoint: str = _f("http://jaeger:4317", "KTRDR_OTEL_OTLP_ENDPOINT", pattern=r"^https?://")
    service_name: str = _f("ktrdr", "KTRDR_OTEL_SERVICE_NAME", min_length=1)
    console_output: bool = _f(False, "KTRDR_OTEL_CONSOLE_OUTPUT")


_PYDANTIC_CLASSES = (
    PEnvironment,
    PWorker,
    PCheckpoint,
    PData,
    POrphan,
    POperations,
    PDatabase,
    PLogging,
    PAPI,
    PAuth,
    PMetrics,
    PTracing,
)


def load_pydantic() -> tuple[BaseSettings, ...]:
    """Load every pydantic-settings class from the process environment."""
    return tuple(cls() for cls in _PYDANTIC_CLASSES)


def load_ktrdr() -> object:
    """Load ktrdr's ``all`` bundle from the process environment."""
    return validate_all("all", os.environ)


# --- measurement ------------------------------------------------------------------------


def _medians_us(
    ours: Callable[[], object], theirs: Callable[[], object], *, rounds: int, number: int
) -> dict[str, tuple[float, float]]:
    """Median per-call time of each loader, in microseconds: ``{"wall": ..., "cpu": ...}``.

    Rounds alternate between the two loaders, so a change in machine load during the
    run affects both sides alike. Wall time is what a caller waits; CPU time (this
    process's, ``time.process_time``) is the work itself, which other processes on a
    shared machine do not inflate.
    """
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    samples: dict[str, dict[Callable[[], object], list[float]]] = {
        kind: {ours: [], theirs: []} for kind in clocks
    }
    for _ in range(rounds):
        for func in (ours, theirs):
            start = {kind: clock() for kind, clock in clocks.items()}
            for _ in range(number):
                func()
            for kind, clock in clocks.items():
                samples[kind][func].append((clock() - start[kind]) / number * 1e6)
    return {
        kind: (statistics.median(by[ours]), statistics.median(by[theirs]))
        for kind, by in samples.items()
    }


def _set_environment(variables: dict[str, str]) -> None:
    """Make the process environment hold exactly ``variables`` among the names read."""
    read = set(deprecated_names()) | {n for n in os.environ if n.startswith("KTRDR_")}
    for name in read:
        os.environ.pop(name, None)
    os.environ.update(variables)


def _check_equivalent() -> None:
    """Both loaders must agree on the values, or the comparison means nothing."""
    ours = validate_all("all", os.environ)
    theirs = {type(s).__name__: s for s in load_pydantic()}
    assert ours.worker.port == theirs["PWorker"].port  # type: ignore[attr-defined]
    assert ours.orphan.timeout == theirs["POrphan"].timeout  # type: ignore[attr-defined]
    assert ours.logging.level == theirs["PLogging"].level  # type: ignore[attr-defined]
    assert ours.database.host == theirs["PDatabase"].host  # type: ignore[attr-defined]


def main() -> int:
    """Run both scenarios; exit 1 when a ratio misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--number", type=int, default=200)
    args = parser.parse_args()

    missed = False
    with tempfile.TemporaryDirectory() as empty_dir:
        os.chdir(empty_dir)  # neither loader may find a dotenv file
        print(f"Python {sys.version.split()[0]}, {args.rounds} rounds x {args.number} loads")
        print(f"{'scenario':10} {'clock':5} {'ktrdr µs':>10} {'pydantic µs':>12} {'ratio':>7}")
        for label, variables in (("empty", {}), ("20 set", TWENTY_SET)):
            _set_environment(variables)
            _check_equivalent()
            medians = _medians_us(load_ktrdr, load_pydantic, rounds=args.rounds, number=args.number)
            for kind, (ours, theirs) in medians.items():
                ratio = ours / theirs
                missed = missed or (kind == "wall" and ratio > TARGET_RATIO)
                print(f"{label:10} {kind:5} {ours:10.1f} {theirs:12.1f} {ratio:7.3f}")
    print(f"target: wall ratio <= {TARGET_RATIO}: {'missed' if missed else 'met'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
