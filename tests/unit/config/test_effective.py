"""Effective values: what config show prints, secrets masked, sources described."""

from __future__ import annotations

from config_helpers import load

from ktrdr.config import SourceKind, WorkerType, effective_values


def test_rows_cover_every_variable_of_the_component_in_order() -> None:
    """One row per variable of the component, in declaration order."""
    rows = effective_values(load("worker", {}))
    names = [row.variable for row in rows]
    assert names[:3] == ["KTRDR_ENV", "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS", "KTRDR_WORKER_TYPE"]
    assert names[-8:-6] == ["KTRDR_AUTH_WORKER_TOKEN", "KTRDR_AUTH_OPERATOR_TOKEN"]
    assert names[-6:] == [
        "KTRDR_METRICS_ENABLED",
        "KTRDR_METRICS_TOKEN",
        "KTRDR_OTEL_ENABLED",
        "KTRDR_OTEL_OTLP_ENDPOINT",
        "KTRDR_OTEL_SERVICE_NAME",
        "KTRDR_OTEL_CONSOLE_OUTPUT",
    ]
    assert len(names) == 32
    assert "KTRDR_DB_PASSWORD" not in names


def test_values_are_written_as_in_the_environment_and_secrets_masked() -> None:
    """Durations as 10s, booleans as false, enums by value; a secret as ********."""
    environ = {"KTRDR_AUTH_WORKER_TOKEN": "real-token-456", "KTRDR_WORKER_HEARTBEAT_INTERVAL": "1m"}
    rows = {row.variable: row for row in effective_values(load("worker", environ))}
    assert rows["KTRDR_WORKER_HEARTBEAT_INTERVAL"].value == "60s"
    assert rows["KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS"].value == "false"
    assert rows["KTRDR_LOG_LEVEL"].value == "INFO"
    assert rows["KTRDR_AUTH_WORKER_TOKEN"].value == "********"
    assert rows["KTRDR_AUTH_WORKER_TOKEN"].secret is True
    assert "real-token-456" not in repr(rows)


def test_sources_describe_env_deprecated_entrypoint_and_derived_defaults() -> None:
    """Each row says where its value came from, including how a derived default reads."""
    config = load("worker", {"WORKER_PORT": "5010"}, worker_type=WorkerType.TRAINING)
    rows = {row.variable: row for row in effective_values(config)}
    assert rows["KTRDR_WORKER_PORT"].source.describe() == "env WORKER_PORT (deprecated)"
    assert rows["KTRDR_WORKER_TYPE"].source.describe() == "set by the entrypoint"
    assert rows["KTRDR_WORKER_ID"].source.describe() == "default (<type>-<hostname>-<port>)"
    assert rows["KTRDR_WORKER_HOST"].source.kind is SourceKind.DEFAULT
    assert rows["KTRDR_WORKER_HOST"].source.describe() == "default"
