"""Nothing set is silently without effect; labels never decide strictness; notes for others."""

from __future__ import annotations

import pytest
from config_helpers import PRODUCTION, PRODUCTION_POSTGRESQL, load, problems_of

from ktrdr.config import DbEngine, Environment, LogFormat
from ktrdr.config.effects import elsewhere
from ktrdr.config.loader import SourceKind


@pytest.mark.parametrize("host", ["DB_HOST", "KTRDR_DB_HOST"])
def test_a_postgresql_host_without_an_engine_means_postgresql(host: str) -> None:
    """As in the system ktrdr replaces, a configured host means PostgreSQL; the source says why."""
    config = load("backend", {host: "db"})
    assert config.database.engine is DbEngine.POSTGRESQL
    source = config.report.sources["KTRDR_DB_ENGINE"]
    assert source.kind is SourceKind.INFERRED
    assert source.describe() == f"inferred from {host} (a PostgreSQL host is set)"


def test_an_explicit_engine_is_never_overridden_by_inference() -> None:
    """KTRDR_DB_ENGINE=sqlite stays sqlite, and the host is then reported as without effect."""
    config = load("backend", {"KTRDR_DB_ENGINE": "sqlite", "DB_HOST": "db"})
    assert config.database.engine is DbEngine.SQLITE
    assert config.report.warnings[-1] == (
        "DB_HOST='db': has no effect: KTRDR_DB_ENGINE is sqlite (env KTRDR_DB_ENGINE), and "
        "KTRDR_DB_HOST applies only when KTRDR_DB_ENGINE=postgresql; set "
        "KTRDR_DB_ENGINE=postgresql or remove DB_HOST"
    )


def test_without_effect_is_an_error_in_production_and_never_shows_a_secret() -> None:
    """On SQLite a database password has no effect: an error in production, value masked."""
    environ = {**PRODUCTION, "KTRDR_DB_PASSWORD": "pw-secret-31"}
    (problem,) = problems_of("backend", environ)
    assert problem.startswith("KTRDR_DB_PASSWORD='********': has no effect")
    assert "pw-secret-31" not in problem


def test_the_sqlite_path_has_no_effect_on_postgresql() -> None:
    """KTRDR_DB_PATH with PostgreSQL: reported, naming the engine that makes it moot."""
    (problem,) = problems_of("backend", {**PRODUCTION_POSTGRESQL, "KTRDR_DB_PATH": "x.db"})
    assert problem.startswith("KTRDR_DB_PATH='x.db': has no effect: KTRDR_DB_ENGINE is postgresql")


@pytest.mark.parametrize("name", ["ENVIRONMENT", "KTRDR_ENVIRONMENT", "KTRDR_API_ENVIRONMENT"])
@pytest.mark.parametrize("env", ["production", "development", "test"])
def test_an_old_label_that_is_a_strictness_is_read_as_one(name: str, env: str) -> None:
    """Old labels that name a strictness set it (with a deprecation warning)."""
    environ = {"KTRDR_AUTH_WORKER_TOKEN": PRODUCTION["KTRDR_AUTH_WORKER_TOKEN"], name: env}
    assert load("worker", environ).environment.env is Environment(env)


@pytest.mark.parametrize("name", ["ENVIRONMENT", "KTRDR_API_ENVIRONMENT"])
def test_an_old_label_that_is_not_a_strictness_never_stops_a_start(name: str) -> None:
    """canary, homelab: reported and ignored, in every mode, with what to set instead."""
    config = load("backend", {name: "canary"})
    assert config.environment.env is Environment.DEVELOPMENT
    assert config.report.warnings[-1].startswith(
        f"{name}='canary' is ignored: not one of development, production, test"
    )
    assert "set KTRDR_ENV" in config.report.warnings[-1]
    assert (
        load("backend", {**PRODUCTION, name: "homelab"}).environment.env is Environment.PRODUCTION
    )


def test_staging_is_production_like() -> None:
    """ENVIRONMENT=staging maps to production strictness: never weaker than meant."""
    assert load("backend", {**PRODUCTION, "ENVIRONMENT": "staging"}).environment.env is (
        Environment.PRODUCTION
    )
    assert problems_of("backend", {"ENVIRONMENT": "staging"})[0].startswith(
        "KTRDR_AUTH_WORKER_TOKEN: still the insecure development default"
    )


def test_an_ignored_label_lets_the_next_old_name_decide() -> None:
    """KTRDR_API_ENVIRONMENT=homelab is skipped, so ENVIRONMENT=production decides."""
    environ = {"KTRDR_API_ENVIRONMENT": "homelab", "ENVIRONMENT": "production"}
    assert problems_of("backend", environ)[0].startswith("KTRDR_AUTH_WORKER_TOKEN")


def test_a_new_name_with_a_value_it_cannot_take_is_still_an_error() -> None:
    """Only old labels are forgiving: KTRDR_ENV=canary is refused, listing the choices."""
    assert problems_of("worker", {"KTRDR_ENV": "canary"}) == [
        "KTRDR_ENV='canary': expected one of: development, production, test"
    ]


def test_json_output_true_selects_json_and_an_old_format_string_is_ignored() -> None:
    """KTRDR_LOG_FORMAT='%(...)s' (its old meaning) gives way to KTRDR_LOG_JSON_OUTPUT=true."""
    environ = {"KTRDR_LOG_FORMAT": "%(asctime)s %(message)s", "KTRDR_LOG_JSON_OUTPUT": "true"}
    config = load("worker", environ)
    assert config.logging.format is LogFormat.JSON
    assert config.report.warnings[-1].startswith(
        "KTRDR_LOG_FORMAT='%(asctime)s %(message)s' is ignored: a logging format string"
    )
    assert load("worker", {"KTRDR_LOG_JSON_OUTPUT": "no"}).logging.format is LogFormat.TEXT


def test_old_seconds_names_set_their_durations() -> None:
    """KTRDR_OPS_CLEANUP_INTERVAL_SECONDS, like its siblings, sets its duration setting."""
    config = load("backend", {"KTRDR_OPS_CLEANUP_INTERVAL_SECONDS": "7200"})
    assert config.operations.cleanup_interval.total_seconds() == 7200


def test_messages_quote_what_was_typed_then_the_normalised_value() -> None:
    """A rule broken by '30' shows '30' as typed, then (30s)."""
    (problem,) = problems_of("backend", {"KTRDR_WORKER_HEARTBEAT_INTERVAL": "30"})
    assert problem.startswith("KTRDR_WORKER_HEARTBEAT_INTERVAL='30' (30s): expected less than")


def test_retired_variables_are_warnings_in_every_mode() -> None:
    """A variable whose behaviour is gone is named with its replacement, never an error."""
    config = load("backend", {**PRODUCTION, "KTRDR_WORKER_HEALTH_CHECK_TIMEOUT": "5"})
    assert config.report.warnings == (
        "KTRDR_WORKER_HEALTH_CHECK_TIMEOUT has no effect since ktrdr 0.4: the backend no "
        "longer polls workers: workers send heartbeats (KTRDR_WORKER_HEARTBEAT_INTERVAL); "
        "remove it",
    )


def test_other_components_variables_are_one_note_never_an_error() -> None:
    """The IB gateway, data paths, the database in a worker: one note in production, no problem."""
    environ = {
        "KTRDR_ENV": "production",
        "KTRDR_AUTH_WORKER_TOKEN": "prod-token-8c1f",
        "KTRDR_IB_HOST": "ib-gateway",
        "KTRDR_DATA_MODELS_DIR": "/models",
        "DB_HOST": "db",
    }
    config = load("worker", environ)
    assert config.report.warnings == ()
    assert config.report.notes == (
        "used by another ktrdr component, not by this worker (the backend: DB_HOST; "
        "data paths: KTRDR_DATA_MODELS_DIR; IB gateway and IB host service: KTRDR_IB_HOST)",
    )


def test_a_backend_mentions_worker_only_settings_without_renaming_them() -> None:
    """The backend notes KTRDR_API_URL (a worker's) and warns no deprecation for it."""
    config = load("backend", {"KTRDR_API_URL": "http://backend:8000"})
    assert config.report.deprecations == ()
    assert elsewhere(["KTRDR_API_URL", "KTRDR_WORKER_HEARTBEAT_INTERVAL"], "backend") == [
        ("KTRDR_API_URL", "workers")
    ]
