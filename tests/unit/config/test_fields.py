"""Declarations: one place per setting, one check mechanism, cached tables, formatting."""

from __future__ import annotations

import datetime
from pathlib import Path

import attrs
import pytest

from ktrdr.config import ALL_SETTINGS, AuthSettings, DbEngine, Secret, WorkerSettings
from ktrdr.config.checks import PORT
from ktrdr.config.fields import (
    InvalidSetting,
    declared,
    format_duration,
    format_value,
)


def test_declared_table_is_computed_once_per_class() -> None:
    """The per-class table is cached: the same tuple comes back."""
    assert declared(WorkerSettings) is declared(WorkerSettings)


def test_a_field_without_setting_is_refused() -> None:
    """Every field must be declared with setting() so docs and loader know it."""

    @attrs.frozen(kw_only=True)
    class Bare:
        PREFIX = "KTRDR_BARE_"
        x: int = 1

    with pytest.raises(TypeError, match=r"^Bare.x is not declared with setting\(\)$"):
        declared(Bare)


def test_check_is_the_attrs_validator() -> None:
    """A declared check runs as the field's attrs validator (one mechanism)."""
    port_field = attrs.fields(WorkerSettings).port
    assert port_field.validator.check is PORT  # type: ignore[union-attr]
    with pytest.raises(InvalidSetting) as caught:
        WorkerSettings(port=70000)
    assert (caught.value.field, caught.value.expected) == (
        "port",
        "expected a whole number between 1 and 65535",
    )


def test_invalid_secret_is_masked_in_the_validator_error() -> None:
    """A secret refused at construction is not echoed in the exception."""
    with pytest.raises(InvalidSetting) as caught:
        AuthSettings(worker_token=Secret(" \t"))
    assert str(caught.value) == (
        "AuthSettings.worker_token=********: expected a token of visible ASCII characters "
        "(no spaces, no accents), e.g. the output of `openssl rand -hex 24`"
    )


def test_secret_fields_are_hidden_from_repr() -> None:
    """setting(secret=True) turns the field's repr off."""
    secrets = [item.attribute for cls in ALL_SETTINGS for item in declared(cls) if item.spec.secret]
    assert [a.name for a in secrets] == ["password", "worker_token", "operator_token", "token"]
    assert all(a.repr is False for a in secrets)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (datetime.timedelta(seconds=90), "90s"),
        (datetime.timedelta(milliseconds=250), "0.25s"),
        (datetime.timedelta(days=36500), "3153600000s"),
        (DbEngine.POSTGRESQL, "postgresql"),
        (Path("a/b"), "a/b"),
        (None, ""),
        (Secret("x"), "********"),
        (5003, "5003"),
    ],
)
def test_format_value(value: object, expected: str) -> None:
    """Values render the way a user would write them in the environment."""
    assert format_value(value) == expected


def test_format_value_masks_anything_declared_secret() -> None:
    """secret=True masks even a plain string."""
    assert format_value("raw", secret=True) == "********"


def test_format_duration_never_uses_exponents() -> None:
    """Large durations stay plain digits so they parse back."""
    assert format_duration(datetime.timedelta(days=10000)) == "864000000s"
