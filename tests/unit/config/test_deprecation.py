"""Deprecated names: the generated table, the warning texts, once per name, on a stream."""

from __future__ import annotations

import io
from pathlib import Path

from config_helpers import load

from ktrdr.config import ALL_SETTINGS, DeprecationReporter, deprecated_names
from ktrdr.config.deprecation import REMOVAL_DATE, REMOVAL_VERSION, message_for
from ktrdr.config.fields import declared
from ktrdr.config.loader import DeprecatedUse

REPO = Path(__file__).resolve().parents[3]


def test_table_is_generated_from_the_declarations() -> None:
    """deprecated_names() is exactly the old names declared on the fields."""
    expected = {
        old: item.env
        for cls in ALL_SETTINGS
        for item in declared(cls)
        for old in item.spec.deprecated
    }
    assert deprecated_names() == expected
    assert deprecated_names()["WORKER_PORT"] == "KTRDR_WORKER_PORT"
    assert len(deprecated_names()) == 36


def test_no_old_name_is_ambiguous() -> None:
    """An old name replaces one variable only and is never also a current name."""
    olds = [old for cls in ALL_SETTINGS for item in declared(cls) for old in item.spec.deprecated]
    current = {item.env for cls in ALL_SETTINGS for item in declared(cls)}
    assert len(olds) == len(set(olds))
    assert not set(olds) & current


def test_message_when_only_the_old_name_is_set() -> None:
    """The warning names the old and the new variable and when the old one stops working."""
    assert message_for(DeprecatedUse("WORKER_PORT", "KTRDR_WORKER_PORT")) == (
        "WORKER_PORT is deprecated; rename it to KTRDR_WORKER_PORT. WORKER_PORT stops "
        f"working in ktrdr {REMOVAL_VERSION} (not before {REMOVAL_DATE})."
    )


def test_both_set_with_the_same_value() -> None:
    """New wins; the warning says the old one was ignored."""
    config = load("worker", {"WORKER_PORT": "5010", "KTRDR_WORKER_PORT": "5010"})
    assert config.worker.port == 5010
    (use,) = config.report.deprecations
    assert use == DeprecatedUse("WORKER_PORT", "KTRDR_WORKER_PORT", "KTRDR_WORKER_PORT", False)
    assert message_for(use).startswith(
        "WORKER_PORT is deprecated and was ignored: KTRDR_WORKER_PORT is also set (same value) "
        "and wins. Remove WORKER_PORT."
    )


def test_both_set_with_different_values_is_louder() -> None:
    """New wins; a conflict is shouted: CONFLICT, IGNORED, DIFFERENT."""
    config = load("worker", {"WORKER_PORT": "5010", "KTRDR_WORKER_PORT": "5020"})
    assert config.worker.port == 5020
    (use,) = config.report.deprecations
    assert use.values_differ is True
    assert message_for(use).startswith(
        "CONFLICT: WORKER_PORT is deprecated and was IGNORED: KTRDR_WORKER_PORT is also set, "
        "to a DIFFERENT value, and wins. Remove WORKER_PORT."
    )


def test_whitespace_only_difference_is_not_a_conflict() -> None:
    """Values that differ only by surrounding spaces are the same value."""
    config = load("worker", {"WORKER_PORT": " 5010", "KTRDR_WORKER_PORT": "5010 "})
    assert config.report.deprecations[0].values_differ is False


def test_reporter_writes_each_old_name_once() -> None:
    """A reporter writes a warning per old name once, however often it is reported."""
    stream = io.StringIO()
    reporter = DeprecationReporter(stream)
    use = DeprecatedUse("DB_HOST", "KTRDR_DB_HOST")
    first = reporter.report([use, use])
    second = reporter.report([use, DeprecatedUse("DB_PORT", "KTRDR_DB_PORT")])
    assert first == ["ktrdr: warning: " + message_for(use)]
    assert len(second) == 1
    assert second[0].startswith("ktrdr: warning: DB_PORT is deprecated")
    assert stream.getvalue().splitlines() == first + second


def test_changelog_lists_every_deprecated_name_with_its_replacement() -> None:
    """CHANGELOG.md names each old variable, its replacement and the removal version."""
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    for old, new in deprecated_names().items():
        assert f"| `{old}` | `{new}` |" in changelog
    assert f"ktrdr {REMOVAL_VERSION}" in changelog
    assert str(REMOVAL_DATE) in changelog
