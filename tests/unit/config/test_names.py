"""env_name / all_env_names: variable names derived from the field declarations."""

from __future__ import annotations

import attrs
import pytest

from ktrdr.config import (
    ALL_SETTINGS,
    APISettings,
    AuthSettings,
    EnvironmentSettings,
    WorkerSettings,
    all_env_names,
    env_name,
)
from ktrdr.config.fields import declared, setting


def test_env_name_is_the_prefix_plus_the_upper_cased_field() -> None:
    """A field's variable is its class PREFIX plus its name upper-cased."""
    assert env_name(attrs.fields(WorkerSettings).port) == "KTRDR_WORKER_PORT"
    assert env_name(attrs.fields(APISettings).host) == "KTRDR_API_HOST"
    assert env_name(attrs.fields(EnvironmentSettings).env) == "KTRDR_ENV"


def test_env_name_agrees_with_the_declarations_for_every_field() -> None:
    """Every field of every settings class maps to the variable the loader reads."""
    pairs = [
        (env_name(attribute), item.env)
        for cls in ALL_SETTINGS
        for attribute, item in zip(attrs.fields(cls), declared(cls), strict=True)
    ]
    assert [got for got, _ in pairs] == [want for _, want in pairs]


def test_all_env_names_lists_current_deprecated_and_file_forms_in_order() -> None:
    """The loader's precedence order: current name, deprecated names, then NAME_FILE."""
    assert all_env_names(attrs.fields(WorkerSettings).port) == (
        "KTRDR_WORKER_PORT",
        "WORKER_PORT",
        "KTRDR_WORKER_PORT_FILE",
    )
    assert all_env_names(attrs.fields(AuthSettings).worker_token) == (
        "KTRDR_AUTH_WORKER_TOKEN",
        "KTRDR_AUTH_WORKER_TOKEN_FILE",
    )


def test_a_field_of_an_undeclared_class_is_refused() -> None:
    """A field outside ALL_SETTINGS raises ValueError naming it, not a made-up variable."""

    @attrs.frozen(kw_only=True)
    class Stray:
        PREFIX = "KTRDR_STRAY_"
        port: int = setting(1, help="not a real setting")

    with pytest.raises(ValueError, match="'port' is not a field of a settings class"):
        env_name(attrs.fields(Stray).port)


def test_a_misspelt_field_fails_where_it_is_named() -> None:
    """A typo is an AttributeError at the call (and a mypy error), never a wrong name."""
    with pytest.raises(AttributeError, match="prot"):
        env_name(attrs.fields(WorkerSettings).prot)  # type: ignore[attr-defined]
