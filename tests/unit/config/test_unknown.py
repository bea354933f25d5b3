"""Unknown KTRDR_* variables: which names are known, and the "did you mean" suggestions."""

from __future__ import annotations

import pytest

from ktrdr.config.unknown import (
    RETIRED,
    known_variables,
    near_miss,
    other_component,
    suggest,
    unknown_message,
    unknown_variables,
)


def test_known_names_include_new_old_and_file_forms() -> None:
    """Current names, deprecated names, NAME_FILE forms and test-only names are known."""
    known = known_variables()
    assert {"KTRDR_WORKER_PORT", "WORKER_PORT", "KTRDR_WORKER_PORT_FILE"} <= known
    assert "KTRDR_TEST_POSTGRES_URL" in known


def test_only_ktrdr_prefixed_unknown_names_are_reported() -> None:
    """Other variables (PATH, WORKER_PORTT) are not ktrdr's business; output is sorted."""
    names = ["PATH", "KTRDR_ZZZ", "KTRDR_WORKER_PORT", "KTRDR_AAA", "WORKER_PORTT"]
    assert unknown_variables(names) == ["KTRDR_AAA", "KTRDR_ZZZ"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("KTRDR_WORKER_PROT", ["KTRDR_WORKER_PORT"]),
        ("KTRDR_WORKR_PORT", ["KTRDR_WORKER_PORT"]),
        ("KTRDR_WORKERS_PORT", ["KTRDR_WORKER_PORT"]),
        ("KTRDR_ORPHAN_TIMOUT", ["KTRDR_ORPHAN_TIMEOUT"]),
        ("KTRDR_LOG_LEVL", ["KTRDR_LOG_LEVEL"]),
        ("KTRDR_ENVIROMENT", ["KTRDR_ENV"]),
        ("KTRDR_DB_PASSWD_FILE", ["KTRDR_DB_PASSWORD_FILE"]),
        ("KTRDR_HEARTBEAT_INTERVAL", ["KTRDR_WORKER_HEARTBEAT_INTERVAL"]),
        ("KTRDR_PORT", ["KTRDR_API_PORT", "KTRDR_DB_PORT", "KTRDR_WORKER_PORT"]),
        ("KTRDR_TOTALLY_UNRELATED", []),
        ("KTRDR_DB_HOTS", ["KTRDR_DB_HOST"]),
        ("KTRDR_XB_HOST", []),
        ("KTRDR_WORKER_NAME", []),
        ("KTRDR_X", []),
    ],
)
def test_suggestions(name: str, expected: list[str]) -> None:
    """Near misses get their closest name; a bare field name gets every concern's; noise none."""
    assert suggest(name) == expected


def test_messages() -> None:
    """One match reads 'did you mean X?'; several list them; none points at the docs."""
    assert unknown_message("KTRDR_WORKER_PROT") == (
        "not a ktrdr setting; did you mean KTRDR_WORKER_PORT?"
    )
    assert unknown_message("KTRDR_HOST") == (
        "not a ktrdr setting; did you mean one of KTRDR_API_HOST, KTRDR_DB_HOST, KTRDR_WORKER_HOST?"
    )
    assert unknown_message("KTRDR_X") == (
        "not a ktrdr setting; see docs/configuration.md for every setting"
    )


def test_other_components_variables_are_known_never_unknown() -> None:
    """Tracing, IB, agents, data paths, JWT, tooling: by name or prefix, never 'unknown'."""
    names = [
        "KTRDR_OTEL_OTLP_ENDPOINT",
        "KTRDR_IB_HOST",
        "KTRDR_IB_HOST_PORT",
        "KTRDR_AGENT_DAILY_BUDGET",
        "KTRDR_DATA_MODELS_DIR",
        "KTRDR_AUTH_JWT_SECRET",
        "KTRDR_API_CORS_MAX_AGE",
        "KTRDR_GIT_REF",
        *RETIRED,
    ]
    assert unknown_variables(names) == []
    assert other_component("KTRDR_IB_HOST") == "IB gateway and IB host service"
    assert other_component("KTRDR_AGENT_DAILY_BUDGET") == "research agents"


def test_a_declared_name_is_never_another_components() -> None:
    """KTRDR_API_CLIENT_BASE_URL is ours (a deprecated name) despite the API-client prefix."""
    assert other_component("KTRDR_API_CLIENT_BASE_URL") is None
    assert other_component("KTRDR_API_CLIENT_TIMEOUT") == "API clients (CLI, MCP server)"


@pytest.mark.parametrize(
    ("typed", "known", "expected"),
    [
        ("WORKER_PROT", "WORKER_PORT", True),
        ("DB_HOTS", "DB_HOST", True),
        ("IB_HOST", "DB_HOST", False),
        ("WORKER_PORT", "WORKER_PORT", False),
        ("ORPHAN_TIMOUT", "ORPHAN_TIMEOUT", True),
        ("WORKER_HOST", "WORKER_PORT", False),
    ],
)
def test_near_misses_are_typos_and_transpositions_only(
    typed: str, known: str, expected: bool
) -> None:
    """One edit (two in long names); a two-letter concern must match exactly."""
    assert near_miss(typed, known) is expected


def test_a_typo_of_a_data_setting_is_reported_not_taken_for_another_component() -> None:
    """KTRDR_DATA_DIRR is unknown with a suggestion; the old data paths stay another's."""
    assert unknown_variables(["KTRDR_DATA_DIRR", "KTRDR_DATA_MODELS_DIR"]) == ["KTRDR_DATA_DIRR"]
    assert suggest("KTRDR_DATA_DIRR") == ["KTRDR_DATA_DIR"]
    assert other_component("KTRDR_DATA_DIRR") is None
