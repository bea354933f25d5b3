"""CheckpointSettings: defaults, KTRDR_CHECKPOINT_* overrides, old names, ranges."""

from __future__ import annotations

import datetime
from pathlib import Path

import attrs
import pytest
from config_helpers import load, problems_of

from ktrdr.config import CheckpointSettings, EnvLoader
from ktrdr.config.loader import DeprecatedUse


def test_defaults() -> None:
    """Checkpoints every 10 epochs / 10000 bars / 300s, under data/checkpoints, kept 30 days."""
    assert EnvLoader({}, env_file=None).load(CheckpointSettings) == CheckpointSettings(
        epoch_interval=10,
        time_interval=datetime.timedelta(seconds=300),
        bar_interval=10000,
        dir=Path("data/checkpoints"),
        max_age_days=30,
    )


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("KTRDR_CHECKPOINT_EPOCH_INTERVAL", "3", "epoch_interval", 3),
        ("KTRDR_CHECKPOINT_TIME_INTERVAL", "2m", "time_interval", datetime.timedelta(minutes=2)),
        ("KTRDR_CHECKPOINT_BAR_INTERVAL", "250", "bar_interval", 250),
        ("KTRDR_CHECKPOINT_DIR", "/srv/ckpt", "dir", Path("/srv/ckpt")),
        ("KTRDR_CHECKPOINT_MAX_AGE_DAYS", "2", "max_age_days", 2),
    ],
)
def test_each_variable_overrides_its_field(
    variable: str, raw: str, field: str, expected: object
) -> None:
    """Each KTRDR_CHECKPOINT_* variable sets its field."""
    assert getattr(load("worker", {variable: raw}).checkpoint, field) == expected


@pytest.mark.parametrize(
    ("old", "raw", "field", "expected"),
    [
        ("CHECKPOINT_EPOCH_INTERVAL", "4", "epoch_interval", 4),
        ("CHECKPOINT_TIME_INTERVAL_SECONDS", "90", "time_interval", datetime.timedelta(seconds=90)),
        (
            "KTRDR_CHECKPOINT_TIME_INTERVAL_SECONDS",
            "30",
            "time_interval",
            datetime.timedelta(seconds=30),
        ),
        ("CHECKPOINT_DIR", "old/dir", "dir", Path("old/dir")),
        ("CHECKPOINT_MAX_AGE_DAYS", "9", "max_age_days", 9),
    ],
)
def test_each_deprecated_name_still_works_and_is_reported(
    old: str, raw: str, field: str, expected: object
) -> None:
    """The old CHECKPOINT_* names still set the field and are reported as deprecated."""
    config = load("worker", {old: raw})
    assert getattr(config.checkpoint, field) == expected
    assert config.report.deprecations == (DeprecatedUse(old, "KTRDR_CHECKPOINT_" + field.upper()),)


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("KTRDR_CHECKPOINT_EPOCH_INTERVAL", "0", "expected a whole number of at least 1"),
        ("KTRDR_CHECKPOINT_BAR_INTERVAL", "-5", "expected a whole number of at least 1"),
        ("KTRDR_CHECKPOINT_MAX_AGE_DAYS", "40000", "expected a whole number between 1 and 36500"),
        (
            "KTRDR_CHECKPOINT_TIME_INTERVAL",
            "soon",
            "expected a duration such as 90 (seconds), 90s, 5m or 1h",
        ),
    ],
)
def test_invalid_values_are_reported(variable: str, raw: str, expected: str) -> None:
    """Out-of-range and malformed values name the variable and the expectation."""
    assert problems_of("worker", {variable: raw}) == [f"{variable}={raw!r}: {expected}"]


def test_frozen() -> None:
    """Assigning to a field raises."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        CheckpointSettings().epoch_interval = 1  # type: ignore[misc]
