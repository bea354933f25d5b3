"""validate_all: bundles per component, every problem at once, strictness per KTRDR_ENV."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_helpers import PRODUCTION, load, problems_of

from ktrdr.config import (
    BackendConfig,
    ConfigurationError,
    FullConfig,
    WorkerConfig,
    validate_all,
)
from ktrdr.config.validation import STRICTNESS, Severity


def test_each_component_gets_its_bundle() -> None:
    """worker, backend and all return their typed bundles, with defaults from {}."""
    assert isinstance(load("worker", {}), WorkerConfig)
    assert isinstance(load("backend", {}), BackendConfig)
    assert isinstance(load("all", {}), FullConfig)


def test_worker_bundle_has_no_database() -> None:
    """A worker never receives the database settings (it talks to the backend only)."""
    assert not hasattr(load("worker", {}), "database")


def test_unknown_component_is_a_configuration_error() -> None:
    """A component name that does not exist is reported like any other problem."""
    with pytest.raises(ConfigurationError) as caught:
        validate_all("gpu", {}, env_file=None)  # type: ignore[call-overload]
    assert caught.value.problems == (
        "unknown component 'gpu'; expected one of: worker, backend, all",
    )


def test_every_problem_is_reported_at_once() -> None:
    """Type errors, ranges, rules and unknown names across classes come in one report."""
    environ = {
        **PRODUCTION,
        "KTRDR_WORKER_PORT": "abc",
        "DB_PORT": "0",
        "KTRDR_LOG_LEVEL": "loud",
        "KTRDR_ORPHAN_TIMEOUT": "1s",
        "KTRDR_WORKER_PROT": "5010",
    }
    with pytest.raises(ConfigurationError) as caught:
        load("backend", environ)
    assert caught.value.problems == (
        "DB_PORT='0': expected a whole number between 1 and 65535",
        "KTRDR_WORKER_PORT='abc': expected a whole number",
        "KTRDR_LOG_LEVEL='loud': expected one of: DEBUG, INFO, WARNING, ERROR, CRITICAL",
        "KTRDR_WORKER_PROT: not a ktrdr setting; did you mean KTRDR_WORKER_PORT?",
    )
    assert str(caught.value).splitlines()[0] == "Invalid configuration (4 problems):"
    assert caught.value.warnings == (
        "DB_PORT is deprecated; rename it to KTRDR_DB_PORT. DB_PORT stops working in ktrdr "
        "1.0.0 (not before 2027-06-30).",
        "used by another ktrdr component, not by this backend (workers: KTRDR_WORKER_PORT)",
    )


def test_configuration_error_is_a_value_error() -> None:
    """Generic callers that guard against bad values catch it too."""
    with pytest.raises(ValueError, match="KTRDR_API_PORT='x'"):
        load("backend", {"KTRDR_API_PORT": "x"})


# --- insecure defaults ---------------------------------------------------------------


def test_development_warns_about_insecure_defaults_in_a_box() -> None:
    """In development an insecure default is a boxed warning, not an error."""
    config = load("worker", {})
    (box,) = config.report.warnings
    lines = box.splitlines()
    assert lines[0].startswith("+--")
    assert lines[-1].startswith("+--")
    assert "| INSECURE DEFAULTS IN USE" in lines[1]
    assert "KTRDR_AUTH_WORKER_TOKEN is still the development default" in box
    assert "local-dev-worker-token" not in box


def test_acknowledging_silences_the_development_warning() -> None:
    """KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS=true removes the box in development."""
    assert load("worker", {"KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "true"}).report.warnings == ()


def test_production_refuses_insecure_defaults_even_when_acknowledged() -> None:
    """In production a development secret is an error; acknowledging does not help."""
    environ = {"KTRDR_ENV": "production", "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "true"}
    assert problems_of("worker", environ) == [
        "KTRDR_AUTH_WORKER_TOKEN: still the insecure development default; "
        "KTRDR_ENV=production needs a real secret (set KTRDR_AUTH_WORKER_TOKEN or "
        "KTRDR_AUTH_WORKER_TOKEN_FILE)"
    ]


def test_production_refuses_the_development_value_set_explicitly() -> None:
    """Setting the development token by hand is as insecure as leaving the default."""
    environ = {"KTRDR_ENV": "production", "KTRDR_AUTH_WORKER_TOKEN": "local-dev-worker-token"}
    assert problems_of("worker", environ)[0].startswith(
        "KTRDR_AUTH_WORKER_TOKEN: still the insecure development default"
    )


def test_test_environment_accepts_insecure_defaults_silently() -> None:
    """KTRDR_ENV=test runs with the development secrets and no box."""
    config = load("backend", {"KTRDR_ENV": "test", "KTRDR_DB_ENGINE": "postgresql"})
    assert config.report.warnings == ()


def test_only_the_backend_is_checked_for_the_operator_token() -> None:
    """Workers never read the operator token: its default fails only a production backend."""
    workers_only = {"KTRDR_ENV": "production", "KTRDR_AUTH_WORKER_TOKEN": "real-token-1"}
    assert load("worker", workers_only).report.warnings == ()
    assert problems_of("backend", workers_only) == [
        "KTRDR_AUTH_OPERATOR_TOKEN: still the insecure development default; KTRDR_ENV=production "
        "needs a real secret (set KTRDR_AUTH_OPERATOR_TOKEN or KTRDR_AUTH_OPERATOR_TOKEN_FILE)"
    ]


@pytest.mark.parametrize("name", ["KTRDR_AUTH_WORKER_TOKEN", "KTRDR_AUTH_OPERATOR_TOKEN"])
def test_a_token_a_header_cannot_carry_stops_the_backend(name: str) -> None:
    """A non-ASCII token is a configuration error naming its variable, the value masked."""
    (problem,) = problems_of("backend", {name: "s\u00e9same-token"})
    assert problem.startswith(f"{name}='********': expected a token of visible ASCII")
    assert "same-token" not in problem


def test_worker_is_never_checked_for_the_database_password() -> None:
    """A production worker with PostgreSQL configured is not failed for DB_PASSWORD."""
    environ = {**PRODUCTION, "KTRDR_DB_ENGINE": "postgresql"}
    config = load("worker", environ)
    assert config.report.warnings == ()
    assert (
        load("worker", {"KTRDR_DB_ENGINE": "postgresql"})
        .report.warnings[0]
        .count("KTRDR_DB_PASSWORD")
        == 0
    )


def test_backend_on_sqlite_is_not_checked_for_the_database_password() -> None:
    """With SQLite the password is unused, so its development value is fine in production."""
    environ = {
        "KTRDR_ENV": "production",
        "KTRDR_AUTH_WORKER_TOKEN": "real-token-1",
        "KTRDR_AUTH_OPERATOR_TOKEN": "real-operator-token-1",
    }
    assert load("backend", environ).report.warnings == ()


def test_backend_on_postgresql_needs_a_real_password_in_production() -> None:
    """With PostgreSQL the development password is refused in production."""
    environ = {
        "KTRDR_ENV": "production",
        "KTRDR_AUTH_WORKER_TOKEN": "real-token-1",
        "KTRDR_AUTH_OPERATOR_TOKEN": "real-operator-token-1",
        "KTRDR_DB_ENGINE": "postgresql",
    }
    assert problems_of("backend", environ) == [
        "KTRDR_DB_PASSWORD: still the insecure development default; KTRDR_ENV=production "
        "needs a real secret (set KTRDR_DB_PASSWORD or KTRDR_DB_PASSWORD_FILE)"
    ]


def test_strictness_table() -> None:
    """development warns, test allows secrets but refuses unknown names, production refuses."""
    assert {
        env.value: (s.insecure_defaults, s.unknown_variables) for env, s in STRICTNESS.items()
    } == {
        "development": (Severity.WARN, Severity.WARN),
        "test": (Severity.ALLOW, Severity.ERROR),
        "production": (Severity.ERROR, Severity.ERROR),
    }


# --- unknown variables ------------------------------------------------------------------


def test_unknown_variable_is_a_warning_in_development() -> None:
    """A typo is reported with a suggestion but does not stop a development process."""
    config = load(
        "worker", {"KTRDR_WORKER_PROT": "5010", "KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "1"}
    )
    assert config.report.warnings == (
        "KTRDR_WORKER_PROT: not a ktrdr setting; did you mean KTRDR_WORKER_PORT?",
    )
    assert config.worker.port == 5003


@pytest.mark.parametrize("env", ["production", "test"])
def test_unknown_variable_is_an_error_in_production_and_test(env: str) -> None:
    """In production and test a typo stops the process."""
    environ = {**PRODUCTION, "KTRDR_ENV": env, "KTRDR_WORKER_PROT": "5010"}
    assert problems_of("worker", environ) == [
        "KTRDR_WORKER_PROT: not a ktrdr setting; did you mean KTRDR_WORKER_PORT?"
    ]


def test_unknown_variable_in_the_dotenv_file_says_so(tmp_path: Path) -> None:
    """An unknown name that only the dotenv file sets is reported with the file."""
    env_file = tmp_path / ".env.local"
    env_file.write_text("KTRDR_LOG_LEVL=DEBUG\n")
    config = load("worker", {"KTRDR_ACKNOWLEDGE_INSECURE_DEFAULTS": "1"}, env_file=env_file)
    assert config.report.warnings == (
        f"KTRDR_LOG_LEVL (set in {env_file}): not a ktrdr setting; did you mean KTRDR_LOG_LEVEL?",
    )


def test_known_names_of_other_components_are_not_unknown() -> None:
    """A worker does not complain about backend variables set in a shared environment."""
    environ = {
        **PRODUCTION,
        "KTRDR_API_PORT": "8001",
        "DB_HOST": "db",
        "KTRDR_TEST_POSTGRES_URL": "x",
    }
    assert load("worker", environ).report.warnings == ()


# --- cross-field rules --------------------------------------------------------------


def test_removal_threshold_must_cover_the_stale_period() -> None:
    """The backend refuses to forget a worker before it would be marked unavailable."""
    environ = {"KTRDR_WORKER_REMOVAL_THRESHOLD": "20s", "KTRDR_WORKER_HEARTBEAT_INTERVAL": "10s"}
    assert problems_of("backend", environ) == [
        "KTRDR_WORKER_REMOVAL_THRESHOLD='20s': expected at least KTRDR_WORKER_STALE_AFTER x "
        "KTRDR_WORKER_HEARTBEAT_INTERVAL (30s): a worker must become unavailable before it "
        "is removed"
    ]
    assert load("worker", environ).worker.removal_threshold.total_seconds() == 20


def test_production_configuration_passes_cleanly() -> None:
    """A complete production configuration loads with no warnings and no deprecations."""
    config = load("all", PRODUCTION)
    assert (config.report.warnings, config.report.deprecations) == ((), ())


def test_rule_broken_by_a_file_value_names_the_file(tmp_path: Path) -> None:
    """A cross-field problem about a value read from NAME_FILE names the variable and file."""
    timeout = tmp_path / "timeout"
    timeout.write_text("5s\n")
    assert problems_of("backend", {"KTRDR_ORPHAN_TIMEOUT_FILE": str(timeout)}) == [
        f"KTRDR_ORPHAN_TIMEOUT_FILE={str(timeout)!r}: the file's content (5s): expected more "
        "than twice KTRDR_WORKER_HEARTBEAT_INTERVAL (10s), so a live worker is never "
        "mistaken for a dead one"
    ]


def test_removal_rule_names_the_liveness_variable_that_was_set() -> None:
    """With the removal threshold at its default, the rule blames what the user changed."""
    assert problems_of("backend", {"KTRDR_WORKER_STALE_AFTER": "100"}) == [
        "KTRDR_WORKER_STALE_AFTER='100': expected KTRDR_WORKER_STALE_AFTER x "
        "KTRDR_WORKER_HEARTBEAT_INTERVAL (1000s) to be at most KTRDR_WORKER_REMOVAL_THRESHOLD "
        "(300s): a worker must become unavailable before it is removed"
    ]
