"""The project's converter: strings to typed values, with errors that say what is expected."""

from __future__ import annotations

import datetime
from pathlib import Path

import cattrs
import pytest
from config_helpers import refusal
from hypothesis import given
from hypothesis import strategies as st

from ktrdr.config import ALL_SETTINGS, ByteSize, LogLevel, Secret, WorkerType
from ktrdr.config.converter import (
    expectation,
    make_converter,
    optional_inner_type,
    parse_bool,
    parse_byte_size,
    parse_duration,
    parse_int,
    parse_path,
    parse_secret,
    parse_str,
)
from ktrdr.config.fields import declared, format_duration


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[("true", True), (" YES ", True), ("1", True), ("On", True)],
        *[("false", False), ("No", False), ("0", False), (" off", False)],
    ],
)
def test_booleans_accept_the_usual_spellings(raw: str, expected: bool) -> None:
    """true/false, 1/0, yes/no, on/off in any case and with surrounding spaces."""
    assert parse_bool(raw) is expected


def test_boolean_error_lists_every_accepted_spelling() -> None:
    """A bad boolean names every spelling that would have worked."""
    assert refusal(parse_bool, "maybe") == (
        "expected a boolean, one of: true, 1, yes, on, false, 0, no, off"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        (" 10 S ", 10.0),
        ("0", 0.0),
    ],
)
def test_durations(raw: str, expected: float) -> None:
    """A bare number is seconds; ms, s, m, h and d are units."""
    assert parse_duration(raw) == datetime.timedelta(seconds=expected)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("-5s", "expected a duration that is not negative, e.g. 90s, 5m or 1h"),
        ("-5", "expected a duration that is not negative, e.g. 90s, 5m or 1h"),
        ("5 minutes", "expected a duration such as 90 (seconds), 90s, 5m or 1h"),
        ("1e3", "expected a duration such as 90 (seconds), 90s, 5m or 1h"),
        ("٥s", "expected a duration such as 90 (seconds), 90s, 5m or 1h"),
        ("9" * 400, "expected a duration of at most 100 years"),
        ("36501d", "expected a duration of at most 100 years"),
    ],
)
def test_bad_durations(raw: str, message: str) -> None:
    """Negative, unitless words, exponents, non-ASCII digits and huge values are refused."""
    assert refusal(parse_duration, raw) == message


@given(st.integers(min_value=0, max_value=100 * 365 * 86400 * 1000))
def test_formatted_durations_parse_back(milliseconds: int) -> None:
    """What config show prints for a duration reads back as the same duration."""
    value = datetime.timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(("raw", "expected"), [("42", 42), (" -7 ", -7), ("+3", 3), ("0", 0)])
def test_integers(raw: str, expected: int) -> None:
    """Decimal whole numbers, optionally signed, surrounded by spaces."""
    assert parse_int(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("4.0", "expected a whole number"),
        ("1_000", "expected a whole number"),
        ("--1", "expected a whole number"),
        ("٣", "expected a whole number"),
        ("0x10", "expected a whole number"),
        ("9" * 19, "expected a whole number of at most 18 digits"),
    ],
)
def test_bad_integers(raw: str, message: str) -> None:
    """Floats, underscores, double signs, non-ASCII digits, hex and huge numbers are refused."""
    assert refusal(parse_int, raw) == message


@pytest.mark.parametrize(
    ("raw", "expected", "shown"),
    [
        ("512M", 512 * 1024**2, "512M"),
        ("2g", 2 * 1024**3, "2G"),
        ("300MiB", 300 * 1024**2, "300M"),
        ("64 KB", 64 * 1024, "64K"),
        ("1500", 1500, "1500"),
        (" 1T ", 1024**4, "1T"),
    ],
)
def test_byte_sizes(raw: str, expected: int, shown: str) -> None:
    """Byte sizes take K/M/G/T (powers of 1024), optional B/iB, and show as written."""
    value = parse_byte_size(raw)
    assert value == expected
    assert str(value) == shown


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("lots", "expected a size in bytes such as 512M, 2G or 1048576"),
        ("1.5G", "expected a size in bytes such as 512M, 2G or 1048576"),
        ("-1M", "expected a size in bytes such as 512M, 2G or 1048576"),
        ("0", "expected a size of at least 1 byte and at most 1024T"),
        ("2048T", "expected a size of at least 1 byte and at most 1024T"),
    ],
)
def test_bad_byte_sizes(raw: str, message: str) -> None:
    """Words, fractions, negatives, zero and absurd sizes are refused with what is expected."""
    assert refusal(parse_byte_size, raw).startswith(message)


def test_strings_paths_and_secrets() -> None:
    """Text is stripped; NUL bytes and empty paths or secrets are refused."""
    assert parse_str("  a b ") == "a b"
    assert parse_path(" data/x ") == Path("data/x")
    assert parse_secret(" s3 \n") == Secret("s3")
    for parse, raw in ((parse_str, "a\x00"), (parse_path, " "), (parse_secret, "\n")):
        assert refusal(parse, raw).startswith("expected ")


def test_converter_structures_enums_case_insensitively() -> None:
    """Enums match their values in any case; optional enums structure as the enum."""
    converter = make_converter()
    assert converter.structure("Backtest", WorkerType | None) is WorkerType.BACKTEST
    assert converter.structure("warning", LogLevel) is LogLevel.WARNING
    assert refusal(converter.structure, "gpu", WorkerType) == "expected one of: training, backtest"


def test_converter_is_private_and_new_each_time() -> None:
    """Each call builds a new converter; the global cattrs converter is never touched."""
    first, second = make_converter(), make_converter()
    assert first is not second
    assert first is not cattrs.global_converter
    assert cattrs.structure("5", int) == 5  # the global one keeps its own behaviour


def test_every_declared_type_has_a_hook_and_an_expectation() -> None:
    """Every field type of every settings class structures a valid string and is described."""
    converter = make_converter()
    samples = {
        bool: "true",
        int: "5",
        str: "x",
        Path: "p",
        Secret: "s",
        datetime.timedelta: "5s",
        ByteSize: "512M",
    }
    for cls in ALL_SETTINGS:
        for item in declared(cls):
            assert expectation(item.attribute.type)
            default = item.attribute.default
            declared_type = item.attribute.type
            sample = samples.get(optional_inner_type(declared_type) or declared_type)
            if sample is None:  # an enum, possibly optional: use its first member
                members = list(default.__class__) if default is not None else list(WorkerType)
                sample = members[0].value
            assert converter.structure(sample, item.attribute.type) is not None
