"""OperationsSettings: defaults, KTRDR_OPS_* overrides, the old cache name, ranges."""

from __future__ import annotations

import datetime

import attrs
import pytest
from config_helpers import load, problems_of

from ktrdr.config import EnvLoader, OperationsSettings
from ktrdr.config.loader import DeprecatedUse


def test_defaults() -> None:
    """1s status cache, 10000 live operations, hourly cleanup in batches of 1000, 7 days."""
    assert EnvLoader({}, env_file=None).load(OperationsSettings) == OperationsSettings(
        cache_ttl=datetime.timedelta(seconds=1),
        max_operations=10000,
        cleanup_interval=datetime.timedelta(seconds=3600),
        retention_days=7,
        cleanup_batch_size=100,
    )


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("KTRDR_OPS_CACHE_TTL", "0", "cache_ttl", datetime.timedelta(0)),
        ("KTRDR_OPS_MAX_OPERATIONS", "25", "max_operations", 25),
        ("KTRDR_OPS_CLEANUP_INTERVAL", "10m", "cleanup_interval", datetime.timedelta(minutes=10)),
        ("KTRDR_OPS_RETENTION_DAYS", "30", "retention_days", 30),
        ("KTRDR_OPS_CLEANUP_BATCH_SIZE", "250", "cleanup_batch_size", 250),
    ],
)
def test_each_variable_overrides_its_field(
    variable: str, raw: str, field: str, expected: object
) -> None:
    """Each KTRDR_OPS_* variable sets its field (a cache TTL of 0 disables the cache)."""
    assert getattr(load("backend", {variable: raw}).operations, field) == expected


def test_deprecated_cache_name_still_works() -> None:
    """OPERATIONS_CACHE_TTL still sets the cache TTL and is reported as deprecated."""
    config = load("backend", {"OPERATIONS_CACHE_TTL": "250ms"})
    assert config.operations.cache_ttl == datetime.timedelta(milliseconds=250)
    assert config.report.deprecations == (
        DeprecatedUse("OPERATIONS_CACHE_TTL", "KTRDR_OPS_CACHE_TTL"),
    )


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("KTRDR_OPS_MAX_OPERATIONS", "0", "expected a whole number of at least 1"),
        ("KTRDR_OPS_RETENTION_DAYS", "0", "expected a whole number between 1 and 36500"),
        ("KTRDR_OPS_CLEANUP_BATCH_SIZE", "0", "expected a whole number between 1 and 100000"),
        ("KTRDR_OPS_CLEANUP_INTERVAL", "0", "expected a duration of at least 0.001s"),
        (
            "KTRDR_OPS_CACHE_TTL",
            "-1s",
            "expected a duration that is not negative, e.g. 90s, 5m or 1h",
        ),
    ],
)
def test_invalid_values_are_reported(variable: str, raw: str, expected: str) -> None:
    """Ranges are checked and reported with the variable name."""
    assert problems_of("backend", {variable: raw}) == [f"{variable}={raw!r}: {expected}"]


def test_frozen() -> None:
    """Assigning to a field raises."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        OperationsSettings().max_operations = 1  # type: ignore[misc]
