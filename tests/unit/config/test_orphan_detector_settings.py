"""OrphanDetectorSettings: defaults, KTRDR_ORPHAN_* overrides, old names, the heartbeat rule."""

from __future__ import annotations

import datetime

import attrs
import pytest
from config_helpers import load, problems_of

from ktrdr.config import EnvLoader, OrphanDetectorSettings
from ktrdr.config.loader import DeprecatedUse


def test_defaults() -> None:
    """Orphans are operations unreported for 60s, checked every 15s, 100 per transaction."""
    assert EnvLoader({}, env_file=None).load(OrphanDetectorSettings) == OrphanDetectorSettings(
        timeout=datetime.timedelta(seconds=60),
        check_interval=datetime.timedelta(seconds=15),
        batch_size=100,
    )


def test_variables_override() -> None:
    """KTRDR_ORPHAN_TIMEOUT, _CHECK_INTERVAL and _BATCH_SIZE set their fields."""
    config = load(
        "backend",
        {
            "KTRDR_ORPHAN_TIMEOUT": "2m",
            "KTRDR_ORPHAN_CHECK_INTERVAL": "20s",
            "KTRDR_ORPHAN_BATCH_SIZE": "7",
        },
    )
    assert config.orphan == OrphanDetectorSettings(
        timeout=datetime.timedelta(minutes=2),
        check_interval=datetime.timedelta(seconds=20),
        batch_size=7,
    )


def test_batch_size_is_bounded() -> None:
    """A batch of 0 (or absurdly many) orphans per transaction is refused, naming the range."""
    assert problems_of("backend", {"KTRDR_ORPHAN_BATCH_SIZE": "0"}) == [
        "KTRDR_ORPHAN_BATCH_SIZE='0': expected a whole number between 1 and 10000"
    ]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("ORPHAN_TIMEOUT_SECONDS", "KTRDR_ORPHAN_TIMEOUT"),
        ("KTRDR_ORPHAN_TIMEOUT_SECONDS", "KTRDR_ORPHAN_TIMEOUT"),
        ("ORPHAN_CHECK_INTERVAL_SECONDS", "KTRDR_ORPHAN_CHECK_INTERVAL"),
        ("KTRDR_ORPHAN_CHECK_INTERVAL_SECONDS", "KTRDR_ORPHAN_CHECK_INTERVAL"),
    ],
)
def test_deprecated_seconds_names_still_work(old: str, new: str) -> None:
    """The old *_SECONDS names take bare seconds and are reported as deprecated."""
    config = load("backend", {old: "45"})
    field = new.removeprefix("KTRDR_ORPHAN_").lower()
    assert getattr(config.orphan, field) == datetime.timedelta(seconds=45)
    assert config.report.deprecations == (DeprecatedUse(old, new),)


def test_timeout_must_exceed_twice_the_heartbeat() -> None:
    """The orphan timeout must be more than 2 x the heartbeat, or live workers look dead."""
    environ = {"KTRDR_ORPHAN_TIMEOUT": "20s", "KTRDR_WORKER_HEARTBEAT_INTERVAL": "10s"}
    assert problems_of("backend", environ) == [
        "KTRDR_ORPHAN_TIMEOUT='20s': expected more than twice "
        "KTRDR_WORKER_HEARTBEAT_INTERVAL (10s), so a live worker is never mistaken "
        "for a dead one"
    ]
    ok = load("backend", {**environ, "KTRDR_ORPHAN_TIMEOUT": "21s"})
    assert ok.orphan.timeout == datetime.timedelta(seconds=21)


def test_rule_names_the_deprecated_variable_actually_set() -> None:
    """When the timeout came from an old name, the problem names it and quotes what was typed."""
    problems = problems_of("backend", {"ORPHAN_TIMEOUT_SECONDS": "15"})
    assert problems[0].startswith("ORPHAN_TIMEOUT_SECONDS='15' (15s): expected more than twice")


def test_frozen() -> None:
    """Assigning to a field raises."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        OrphanDetectorSettings().timeout = datetime.timedelta(0)  # type: ignore[misc]


def test_rule_names_the_heartbeat_when_only_the_heartbeat_was_set() -> None:
    """A heartbeat too slow for the default orphan timeout is reported under the heartbeat."""
    assert problems_of("backend", {"KTRDR_WORKER_HEARTBEAT_INTERVAL": "30s"}) == [
        "KTRDR_WORKER_HEARTBEAT_INTERVAL='30s': expected less than half of "
        "KTRDR_ORPHAN_TIMEOUT (60s), so a live worker is never mistaken for a dead one"
    ]
