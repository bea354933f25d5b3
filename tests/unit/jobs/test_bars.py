"""Bars: the seeded generator and the CSV loader's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ktrdr.config import DataSettings
from ktrdr.errors import BarsError
from ktrdr.jobs.bars import (
    Bars,
    generate_bars,
    load_bars,
    load_csv,
    moving_average,
)

HEADER = "timestamp,open,high,low,close,volume\n"


def load(path: Path) -> Bars:
    """``load_csv`` of ``path`` with its directory as the data directory."""
    return load_csv(DataSettings(dir=path.parent), path.name)


def write_csv(path: Path, bars: Bars, *, header: str = HEADER) -> Path:
    lines = [header]
    for i in range(len(bars)):
        values = (bars.open[i], bars.high[i], bars.low[i], bars.close[i], bars.volume[i])
        lines.append(f"2024-01-{i:05d}," + ",".join(repr(float(v)) for v in values) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_generator_is_deterministic_per_seed() -> None:
    """The same seed gives identical bars; another seed gives different ones."""
    first = generate_bars(count=500, seed=3)
    again = generate_bars(count=500, seed=3)
    other = generate_bars(count=500, seed=4)
    assert first.fingerprint() == again.fingerprint()
    assert np.array_equal(first.close, again.close)
    assert not np.array_equal(first.close, other.close)


def test_generated_bars_are_consistent_ohlcv() -> None:
    """Generated bars have the asked length, positive prices and low <= open, close <= high."""
    bars = generate_bars(count=1000, seed=1)
    assert len(bars) == 1000
    assert np.all(bars.low > 0)
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.all(bars.volume > 0)


def test_generator_refuses_zero_bars() -> None:
    """Asking for no bars is an error naming the count."""
    with pytest.raises(BarsError, match="count=0"):
        generate_bars(count=0, seed=1)


def test_csv_round_trip_keeps_values(tmp_path: Path) -> None:
    """A CSV written from bars loads back to the same values (extra columns are allowed)."""
    bars = generate_bars(count=50, seed=2)
    loaded = load(write_csv(tmp_path / "bars.csv", bars))
    assert loaded.fingerprint() == bars.fingerprint()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 40))
def test_csv_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, seed: int, count: int
) -> None:
    """Any generated bars survive a CSV round trip exactly."""
    bars = generate_bars(count=count, seed=seed)
    path = write_csv(tmp_path_factory.mktemp("bars") / "bars.csv", bars)
    assert np.array_equal(load(path).close, bars.close)
    assert np.array_equal(load(path).volume, bars.volume)


def test_csv_header_is_case_insensitive_and_blank_lines_skipped(tmp_path: Path) -> None:
    """Header names in any case and order are found; blank lines are not rows."""
    path = tmp_path / "bars.csv"
    path.write_text("Close,OPEN,Volume,High,Low\n\n10,9,100,11,8\n\n12,10,5,12.5,9.5\n")
    bars = load(path)
    assert bars.close.tolist() == [10.0, 12.0]
    assert bars.open.tolist() == [9.0, 10.0]
    assert bars.volume.tolist() == [100.0, 5.0]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    """A missing file in the data directory is an error naming it and the directory."""
    path = tmp_path / "nope.csv"
    with pytest.raises(BarsError, match=r"'nope\.csv' does not exist in KTRDR_DATA_DIR"):
        load(path)


def test_directory_instead_of_file_is_a_clear_error(tmp_path: Path) -> None:
    """A path that is a directory is refused as not a regular file."""
    (tmp_path / "sub").mkdir()
    with pytest.raises(BarsError, match="is not a regular file"):
        load_csv(DataSettings(dir=tmp_path), "sub")


def test_empty_file_is_refused(tmp_path: Path) -> None:
    """An empty file is an error asking for a header row."""
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(BarsError, match="is empty; expected a header row"):
        load(path)


def test_header_only_file_is_refused(tmp_path: Path) -> None:
    """A header without rows is an error."""
    path = tmp_path / "header.csv"
    path.write_text(HEADER)
    with pytest.raises(BarsError, match="no rows"):
        load(path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    """A header without a required column names the column and line 1."""
    path = tmp_path / "bars.csv"
    path.write_text("open,high,low,close\n1,2,1,2\n")
    with pytest.raises(BarsError, match=r"line 1: missing column\(s\) volume"):
        load(path)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("d,1,2,0.5,abc,10", r"line 3, column 5 \(close\): not a number$"),
        ("d,1,2,0.5,1", r"line 3: expected 6 fields like the header, found 5$"),
        ("d,1,2,0.5,nan,10", r"line 3, column 5 \(close\): not a finite number$"),
        ("d,-1,2,-2,1,10", r"line 3, column 2 \(open\): a price must be positive$"),
        ("d,1,2,0.5,1,-3", r"line 3, column 6 \(volume\): the volume must not be negative$"),
        ("d,1,0.9,0.5,1,10", r"line 3: expected low <= open, close <= high$"),
    ],
)
def test_bad_row_names_the_line_and_column(tmp_path: Path, row: str, expected: str) -> None:
    """A bad row is refused with its line and column and what rule it breaks."""
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + "d,1,2,0.5,1.5,10\n" + row + "\n")
    with pytest.raises(BarsError, match=expected):
        load(path)


@pytest.mark.parametrize(
    "content",
    [
        "open,high,low,close,volume\n1,2,0.5,SECRET_API_KEY=hunter2,1\n",
        "open,high,low,close,volume\nSECRET_API_KEY=hunter2\n",
        "SECRET_API_KEY=hunter2\n",
        'open,high,low,close,volume\n1,2,0.5,1,1\n"SECRET_API_KEY=hunter2\n',
        "open,high,low,close,volume\n-1e308,SECRET_API_KEY,0,1,1\n",
    ],
    ids=["value", "short-row", "header", "open-quote", "negative-price"],
)
def test_errors_never_quote_the_files_content(tmp_path: Path, content: str) -> None:
    """Whatever is wrong with a file, its error names line and column, never its text."""
    path = tmp_path / "secret.env"
    path.write_text(content)
    with pytest.raises(BarsError) as raised:
        load(path)
    assert "SECRET" not in str(raised.value)
    assert "hunter2" not in str(raised.value)
    assert "line" in str(raised.value) or "missing column" in str(raised.value)


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 give a clear error, not a UnicodeDecodeError."""
    path = tmp_path / "bars.csv"
    path.write_bytes(b"open,high,low,close,volume\n1,\xff\xfe,1,1,1\n")
    with pytest.raises(BarsError, match="line 2, column 3: not UTF-8 text"):
        load(path)


def test_load_bars_uses_the_csv_tail(tmp_path: Path) -> None:
    """With a CSV, the most recent ``count`` rows are used."""
    bars = generate_bars(count=300, seed=5)
    path = write_csv(tmp_path / "bars.csv", bars)
    data = DataSettings(dir=tmp_path)
    loaded = load_bars(csv_path=path.name, count=120, seed=0, min_bars=100, data=data)
    assert len(loaded) == 120
    assert np.array_equal(loaded.close, bars.close[-120:])


def test_load_bars_generates_without_csv() -> None:
    """Without a CSV, the generator makes ``count`` bars from the seed."""
    loaded = load_bars(csv_path=None, count=150, seed=9, min_bars=100, data=DataSettings())
    assert loaded.fingerprint() == generate_bars(count=150, seed=9).fingerprint()


def test_load_bars_refuses_too_few(tmp_path: Path) -> None:
    """A file with fewer rows than the operation needs is an error with both numbers."""
    path = write_csv(tmp_path / "bars.csv", generate_bars(count=30, seed=5))
    data = DataSettings(dir=tmp_path)
    with pytest.raises(BarsError, match="gave 30 bars; this operation needs at least 100"):
        load_bars(csv_path=path.name, count=500, seed=0, min_bars=100, data=data)


def test_moving_average_is_trailing_and_nan_before_window() -> None:
    """The moving average is NaN until the window fills, then the trailing mean."""
    values = np.array([1.0, 2.0, 3.0, 4.0])
    averages = moving_average(values, 2)
    assert np.isnan(averages[0])
    assert averages[1:].tolist() == [1.5, 2.5, 3.5]
