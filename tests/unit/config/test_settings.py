"""The variable table of DESIGN.md, pinned against the declarations of every class.

Names and defaults are the contract: a renamed variable, a changed default or a
dropped deprecated name fails here. Per-class behaviour lives in the per-class files.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import attrs
import pytest
from config_helpers import load

from ktrdr.config import (
    ALL_SETTINGS,
    APISettings,
    AuthSettings,
    DatabaseSettings,
    DbEngine,
    Environment,
    EnvironmentSettings,
    LogFormat,
    LoggingSettings,
    LogLevel,
    Secret,
)
from ktrdr.config.fields import declared

#: variable → (deprecated names, default as docs/show print it), from DESIGN.md.
DESIGN_TABLE: dict[str, tuple[tuple[str, ...], str]] = {
    "KTRDR_ENV": (("ENVIRONMENT", "KTRDR_ENVIRONMENT", "KTRDR_API_ENVIRONMENT"), "development"),
    "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": ((), "false"),
    "KTRDR_WORKER_TYPE": (("WORKER_TYPE",), "(set by the entrypoint)"),
    "KTRDR_WORKER_HOST": ((), "0.0.0.0"),
    "KTRDR_WORKER_PORT": (("WORKER_PORT",), "5003"),
    "KTRDR_WORKER_ID": (("WORKER_ID",), "<type>-<hostname>-<port>"),
    "KTRDR_WORKER_PUBLIC_URL": (
        (
            "WORKER_PUBLIC_BASE_URL",
            "WORKER_ENDPOINT_URL",
            "KTRDR_WORKER_PUBLIC_BASE_URL",
            "KTRDR_WORKER_ENDPOINT_URL",
        ),
        "http://<hostname>:<port>",
    ),
    "KTRDR_WORKER_BACKEND_URL": (
        ("KTRDR_API_CLIENT_BASE_URL", "KTRDR_API_URL"),
        "http://localhost:8000",
    ),
    "KTRDR_WORKER_HEARTBEAT_INTERVAL": ((), "10s"),
    "KTRDR_WORKER_REGISTRATION_TIMEOUT": ((), "10s"),
    "KTRDR_WORKER_SHUTDOWN_TIMEOUT": ((), "25s"),
    "KTRDR_WORKER_STOP_GRACE": ((), "10s"),
    "KTRDR_WORKER_MAX_MEMORY": ((), "(unlimited)"),
    "KTRDR_WORKER_STALE_AFTER": ((), "3"),
    "KTRDR_WORKER_REMOVAL_THRESHOLD": (("WORKER_REMOVAL_THRESHOLD",), "300s"),
    "KTRDR_CHECKPOINT_EPOCH_INTERVAL": (("CHECKPOINT_EPOCH_INTERVAL",), "10"),
    "KTRDR_CHECKPOINT_TIME_INTERVAL": (
        ("CHECKPOINT_TIME_INTERVAL_SECONDS", "KTRDR_CHECKPOINT_TIME_INTERVAL_SECONDS"),
        "300s",
    ),
    "KTRDR_CHECKPOINT_BAR_INTERVAL": ((), "10000"),
    "KTRDR_CHECKPOINT_DIR": (("CHECKPOINT_DIR",), "data/checkpoints"),
    "KTRDR_CHECKPOINT_MAX_AGE_DAYS": (("CHECKPOINT_MAX_AGE_DAYS",), "30"),
    "KTRDR_DATA_DIR": (("DATA_DIR",), "data"),
    "KTRDR_DATA_MAX_FILE_SIZE": ((), "1G"),
    "KTRDR_ORPHAN_TIMEOUT": (("ORPHAN_TIMEOUT_SECONDS", "KTRDR_ORPHAN_TIMEOUT_SECONDS"), "60s"),
    "KTRDR_ORPHAN_CHECK_INTERVAL": (
        ("ORPHAN_CHECK_INTERVAL_SECONDS", "KTRDR_ORPHAN_CHECK_INTERVAL_SECONDS"),
        "15s",
    ),
    "KTRDR_ORPHAN_BATCH_SIZE": ((), "100"),
    "KTRDR_OPS_CACHE_TTL": (("OPERATIONS_CACHE_TTL",), "1s"),
    "KTRDR_OPS_MAX_OPERATIONS": ((), "10000"),
    "KTRDR_OPS_CLEANUP_INTERVAL": (("KTRDR_OPS_CLEANUP_INTERVAL_SECONDS",), "3600s"),
    "KTRDR_OPS_RETENTION_DAYS": ((), "7"),
    "KTRDR_OPS_CLEANUP_BATCH_SIZE": ((), "100"),
    "KTRDR_OPS_MAX_ATTEMPTS": ((), "3"),
    "KTRDR_OPS_DEFAULT_TIMEOUT": ((), "0 (no limit)"),
    "KTRDR_OPS_STALL_TIMEOUT": ((), "30m"),
    "KTRDR_DB_ENGINE": ((), "sqlite"),
    "KTRDR_DB_PATH": ((), "data/ktrdr.db"),
    "KTRDR_DB_HOST": (("DB_HOST",), "localhost"),
    "KTRDR_DB_PORT": (("DB_PORT",), "5432"),
    "KTRDR_DB_NAME": (("DB_NAME",), "ktrdr"),
    "KTRDR_DB_USER": (("DB_USER",), "ktrdr"),
    "KTRDR_DB_PASSWORD": (("DB_PASSWORD",), "(insecure development value)"),
    "KTRDR_DB_ECHO": (("DB_ECHO",), "false"),
    "KTRDR_LOG_LEVEL": (("LOG_LEVEL", "KTRDR_LOGGING_LEVEL"), "INFO"),
    "KTRDR_LOG_FORMAT": (("KTRDR_LOGGING_FORMAT", "KTRDR_LOG_JSON_OUTPUT"), "text"),
    "KTRDR_API_HOST": ((), "127.0.0.1"),
    "KTRDR_API_PORT": ((), "8000"),
    "KTRDR_API_DOCS": ((), "true; false when KTRDR_ENV=production"),
    "KTRDR_AUTH_WORKER_TOKEN": ((), "(insecure development value)"),
    "KTRDR_AUTH_OPERATOR_TOKEN": ((), "(insecure development value)"),
    # issue 12 (Prometheus metrics), beyond DESIGN.md's table
    "KTRDR_METRICS_ENABLED": ((), "true"),
    "KTRDR_METRICS_TOKEN": ((), "(unset)"),
    # issue 12 (tracing), the names of the system ktrdr replaces
    "KTRDR_OTEL_ENABLED": ((), "false"),
    "KTRDR_OTEL_OTLP_ENDPOINT": (("OTLP_ENDPOINT",), "http://jaeger:4317"),
    "KTRDR_OTEL_SERVICE_NAME": ((), "ktrdr"),
    "KTRDR_OTEL_CONSOLE_OUTPUT": ((), "false"),
}

DECLARED = [item for cls in ALL_SETTINGS for item in declared(cls)]


def test_declared_variables_are_exactly_the_design_table() -> None:
    """Every variable of DESIGN.md is declared, in order, and nothing else is."""
    assert [item.env for item in DECLARED] == list(DESIGN_TABLE)


@pytest.mark.parametrize("item", DECLARED, ids=lambda i: i.env)
def test_deprecated_names_and_default_match_the_design_table(item: object) -> None:
    """Each variable's deprecated names and default are the ones DESIGN.md promises."""
    deprecated, default = DESIGN_TABLE[item.env]  # type: ignore[attr-defined]
    assert item.spec.deprecated == deprecated  # type: ignore[attr-defined]
    assert item.default_text() == default  # type: ignore[attr-defined]


@pytest.mark.parametrize("item", DECLARED, ids=lambda i: i.env)
def test_variable_name_is_prefix_plus_field_name(item: object) -> None:
    """The environment name is always PREFIX + FIELD, so no alias can override a prefix."""
    assert item.env == item.owner.PREFIX + item.name.upper()  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", ALL_SETTINGS, ids=lambda c: c.__name__)
def test_every_class_is_frozen_and_keyword_only(cls: type) -> None:
    """Settings are frozen (assignment raises) and built with keywords only."""
    settings = cls()
    first = attrs.fields(cls)[0].name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(settings, first, getattr(settings, first))
    assert all(a.kw_only for a in attrs.fields(cls))


def test_environment_defaults_and_overrides() -> None:
    """KTRDR_ENV defaults to development and reads production; acknowledge reads booleans."""
    assert EnvironmentSettings() == EnvironmentSettings(
        env=Environment.DEVELOPMENT, acknowledge_insecure_defaults=False
    )
    config = load("worker", {"KTRDR_ENV": "test", "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "yes"})
    assert config.environment.env is Environment.TEST
    assert config.environment.acknowledge_insecure_defaults is True


@pytest.mark.parametrize("old", ["ENVIRONMENT", "KTRDR_ENVIRONMENT", "KTRDR_API_ENVIRONMENT"])
def test_environment_deprecated_names(old: str) -> None:
    """Each old name of KTRDR_ENV still sets it (case-insensitively) and is reported."""
    config = load("worker", {old: "Test"})
    assert config.environment.env is Environment.TEST
    assert [use.old for use in config.report.deprecations] == [old]


def test_database_defaults() -> None:
    """The backend store defaults to an embedded SQLite file."""
    database = DatabaseSettings()
    assert database.engine is DbEngine.SQLITE
    assert database.path == Path("data/ktrdr.db")
    assert (database.host, database.port, database.name, database.user) == (
        "localhost",
        5432,
        "ktrdr",
        "ktrdr",
    )
    assert database.password.reveal() == "localdev"
    assert database.echo is False


def test_database_overrides_and_deprecated_names() -> None:
    """KTRDR_DB_* and the old DB_* names both configure PostgreSQL."""
    environ = {
        "KTRDR_DB_ENGINE": "PostgreSQL",
        "KTRDR_DB_PATH": "/var/lib/ktrdr/k.db",
        "DB_HOST": "db.internal",
        "DB_PORT": "6543",
        "DB_NAME": "fleet",
        "KTRDR_DB_USER": "svc",
        "DB_PASSWORD": "s3cret-pw",
        "DB_ECHO": "on",
    }
    database = load("backend", environ).database
    assert database.engine is DbEngine.POSTGRESQL
    assert database.path == Path("/var/lib/ktrdr/k.db")
    assert (database.host, database.port, database.name, database.user) == (
        "db.internal",
        6543,
        "fleet",
        "svc",
    )
    assert database.password.reveal() == "s3cret-pw"
    assert database.echo is True


def test_logging_overrides_and_deprecated_names() -> None:
    """KTRDR_LOG_LEVEL accepts any case; LOG_LEVEL and KTRDR_LOGGING_FORMAT still work."""
    assert LoggingSettings() == LoggingSettings(level=LogLevel.INFO, format=LogFormat.TEXT)
    config = load("worker", {"LOG_LEVEL": "debug", "KTRDR_LOGGING_FORMAT": "JSON"})
    assert config.logging == LoggingSettings(level=LogLevel.DEBUG, format=LogFormat.JSON)
    assert load("worker", {"KTRDR_LOGGING_LEVEL": "error"}).logging.level is LogLevel.ERROR


def test_api_defaults_and_overrides() -> None:
    """The backend binds 127.0.0.1:8000 unless KTRDR_API_HOST/PORT say otherwise."""
    assert APISettings() == APISettings(host="127.0.0.1", port=8000)
    config = load("backend", {"KTRDR_API_HOST": "0.0.0.0", "KTRDR_API_PORT": "8080"})
    assert config.api == APISettings(host="0.0.0.0", port=8080)


def test_auth_token_default_and_override() -> None:
    """The worker token is a Secret: the development value by default, else the variable's."""
    assert AuthSettings().worker_token == Secret("local-dev-worker-token")
    token = load("worker", {"KTRDR_AUTH_WORKER_TOKEN": " tok-1 "}).auth.worker_token
    assert token.reveal() == "tok-1"


def test_durations_are_timedeltas() -> None:
    """Every duration field holds a timedelta, never a bare number of seconds."""
    durations = [item for item in DECLARED if item.attribute.type is datetime.timedelta]
    assert len(durations) == 12
    for item in durations:
        assert isinstance(item.attribute.default, datetime.timedelta)
