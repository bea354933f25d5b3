"""Bad input, by property: any string in any variable gives a value or a clear report.

For every declared variable (new and deprecated names, and every NAME_FILE form),
hypothesis tries arbitrary text (unicode, surrogates, NUL, whitespace), numbers of
every size and sign, and near-miss spellings. The only exception ever raised is
ConfigurationError; its report names the variable; a secret's value never shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ktrdr.config import ALL_SETTINGS, ConfigurationError, FullConfig, validate_all
from ktrdr.config.fields import Declared, declared

ITEMS = [item for cls in ALL_SETTINGS for item in declared(cls)]
NAMES = [(item, name) for item in ITEMS for name in item.names]
#: Real secrets, so that KTRDR_ENV=production is valid unless the variable under test breaks it
#: (on PostgreSQL, where the database password has an effect).
BASE = {
    "KTRDR_AUTH_WORKER_TOKEN": "base-token-1234",
    "KTRDR_AUTH_OPERATOR_TOKEN": "base-operator-token-1234",
    "KTRDR_DB_ENGINE": "postgresql",
    "KTRDR_DB_PASSWORD": "base-password-1234",
}

raw_values = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.integers().map(str),
    st.integers(min_value=-(10**30), max_value=10**30).map(lambda n: f" {n} "),
    st.from_regex(r"\A\s?-?\d{1,25}(\.\d{1,5})?\s?(ms|s|m|h|d|S|M|H|D|us)?\s?\Z"),
    st.sampled_from(
        [
            "",
            " ",
            "\t\n",
            "true",
            "FALSE",
            "maybe",
            "production",
            " Test ",
            "training",
            "BACKTEST",
            "debug",
            "json",
            "PostgreSQL",
            "http://h:1",
            "https://x.example/p",
            "http://[::1",
            "http://h:99999",
            "ftp://x",
            "1e309",
            "nan",
            "inf",
            "-0",
            "0",
            "a\x00b",
            "٣",
            "５",
            "local-dev-worker-token",
        ]
    ),
)


def _environ_with(item: Declared, name: str, raw: str) -> dict[str, str]:
    """BASE without the field under test (its new name would win), plus name=raw."""
    environ = {k: v for k, v in BASE.items() if k not in item.names}
    environ[name] = raw
    return environ


def _outcome(environ: dict[str, str]) -> ConfigurationError | None:
    """The ConfigurationError validate_all raises, or None when the configuration is valid.

    Any other exception propagates and fails the test.
    """
    try:
        config = validate_all("all", environ, env_file=None)
    except ConfigurationError as exc:
        return exc
    assert isinstance(config, FullConfig)
    return None


def _outcome(environ: dict[str, str]) -> ConfigurationError | None:
    """The ConfigurationError validate_all raises, or None when the configuration is valid.

    Any other exception propagates and fails the test.
    """
    try:
        config = validate_all("all", environ, env_file=None)
    except ConfigurationError as exc:
        return exc
    assert isinstance(config, FullConfig)
    return None


@pytest.mark.parametrize(("item", "name"), NAMES, ids=[n for _, n in NAMES])
@settings(max_examples=40, deadline=None)
@given(raw=raw_values)
def test_any_string_in_any_variable(item: Declared, name: str, raw: str) -> None:
    """A value or a ConfigurationError naming the variable; never another exception."""
    error = _outcome(_environ_with(item, name, raw))
    if error is None:
        return
    assert name in str(error)
    if item.spec.secret and raw.strip():
        refusals = {"expected a non-empty secret"}
        if item.spec.check is not None:  # the tokens: visible ASCII only
            refusals.add(f"expected {item.spec.check.expected}")
        assert error.problems in {(f"{name}='********': {r}",) for r in refusals}
    elif item.spec.secret:
        default = item.default_text()  # "(insecure development value)" or "(unset)"
        assert error.problems == (
            f"{name}={raw!r}: set but empty; expected a non-empty secret, or unset it "
            f"to use the default {default}",
        )


@pytest.fixture(scope="module")
def value_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the NAME_FILE files of the property below."""
    return tmp_path_factory.mktemp("value-files")


@pytest.mark.parametrize("item", ITEMS, ids=[i.file_var for i in ITEMS])
@settings(max_examples=15, deadline=None)
@given(content=raw_values)
def test_any_content_in_any_value_file(item: Declared, content: str, value_files: Path) -> None:
    """A NAME_FILE with any content gives a value or a report naming it, not the content."""
    path = value_files / "value"
    path.write_bytes(content.encode("utf-8", "surrogatepass"))
    error = _outcome(_environ_with(item, item.file_var, str(path)))
    if error is None:
        return
    report = str(error)
    # The file variable itself, or (for a valid value breaking a cross-field rule) the field.
    assert item.file_var in report or item.env in report
    stripped = content.strip()
    if item.spec.secret and len(stripped) >= 4:
        assert stripped not in report
    for line in error.problems:
        if line.startswith(f"{item.file_var}="):  # shows the path, never the content
            assert line.startswith(f"{item.file_var}={str(path)!r}: ")


@settings(max_examples=150, deadline=None)
@given(
    environ=st.dictionaries(st.sampled_from([name for _, name in NAMES]), raw_values, max_size=6)
)
def test_any_combination_of_variables(environ: dict[str, str]) -> None:
    """Several bad variables at once: one ConfigurationError, each line about a set variable."""
    full = {**BASE, **environ}
    error = _outcome(full)
    if error is None:
        return
    assert error.problems
    for line in error.problems:
        assert any(name in line for name in full), line
