"""Value mappings: old values read as the new setting reads them, labels ignored, bad refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ktrdr.config.mappings import BoolChoice, FormatString, Ignored, Label, Spellings, TrimSuffix

LABEL = Label(("development", "production"), (("staging", "production"),), hint="set X")


def test_spellings_map_any_case_and_pass_others_unchanged() -> None:
    """backtesting (any case) → backtest; other values pass through for the converter."""
    spellings = Spellings((("backtesting", "backtest"),))
    assert spellings(" BackTesting ") == "backtest"
    assert spellings("gpu") == "gpu"
    assert spellings.described == "`backtesting` → `backtest`"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://b:8000/api/v1", "http://b:8000"),
        ("http://b:8000/api/v1/", "http://b:8000"),
        ("http://b:8000", "http://b:8000"),
        ("http://b:8000/api/v2", "http://b:8000/api/v2"),
    ],
)
def test_trim_suffix_drops_only_the_api_root(raw: str, expected: str) -> None:
    """A trailing /api/v1 (with or without a slash) goes; anything else stays."""
    assert TrimSuffix("/api/v1")(raw) == expected


def test_bool_choice_maps_booleans_and_refuses_others() -> None:
    """true → json, false → text; anything else is 'expected a boolean' naming both choices."""
    choice = BoolChoice(true="json", false="text")
    assert (choice("TRUE"), choice("0")) == ("json", "text")
    with pytest.raises(ValueError, match=r"^expected a boolean.*selects json or text"):
        choice("maybe")


def test_label_passes_accepted_values_maps_listed_ones_and_ignores_the_rest() -> None:
    """A label never fails: its accepted values pass, staging maps, canary is ignored."""
    assert LABEL("Production") == "Production"
    assert LABEL("staging") == "production"
    ignored = LABEL("canary")
    assert isinstance(ignored, Ignored)
    assert ignored.reason.endswith("set X")


@given(st.text(max_size=30))
def test_a_label_never_raises(raw: str) -> None:
    """Any string gives a value or an Ignored, never an exception (labels never stop a start)."""
    assert isinstance(LABEL(raw), (str, Ignored))


@pytest.mark.parametrize("raw", ["%(asctime)s %(message)s", "{asctime} {message}"])
def test_format_strings_are_ignored(raw: str) -> None:
    """What KTRDR_LOG_FORMAT held before 0.4 (a format string) carries no choice."""
    assert isinstance(FormatString()(raw), Ignored)
    assert FormatString()("json") == "json"
