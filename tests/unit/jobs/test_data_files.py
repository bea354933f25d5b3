"""Data files: only regular files inside KTRDR_DATA_DIR, bounded in size, never quoted."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ktrdr.config import ByteSize, DataSettings
from ktrdr.errors import BarsError, DataFileRefused
from ktrdr.jobs.data_files import MAX_LINE_BYTES, data_lines, open_data_file, resolve_data_path

ROWS = "open,high,low,close,volume\n1,2,0.5,1.5,10\n"


@pytest.fixture
def data(tmp_path: Path) -> DataSettings:
    """A data directory ``tmp_path/data`` holding ``bars.csv``, with a 1 MiB limit."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "bars.csv").write_text(ROWS)
    return DataSettings(dir=root, max_file_size=ByteSize(1024 * 1024))


def refusal(data: DataSettings, csv_path: str) -> str:
    with pytest.raises(DataFileRefused) as raised:
        open_data_file(data, csv_path).close()
    return str(raised.value)


def test_a_file_in_the_directory_opens(data: DataSettings) -> None:
    """A relative path to a regular file inside the directory is read as is."""
    with open_data_file(data, "bars.csv") as handle:
        assert handle.read().decode() == ROWS


def test_dot_dot_that_stays_inside_is_allowed(data: DataSettings) -> None:
    """``sub/../bars.csv`` never leaves the directory, so it names bars.csv."""
    (Path(data.dir) / "sub").mkdir()
    with open_data_file(data, "sub/../bars.csv") as handle:
        assert handle.read(4) == b"open"


@pytest.mark.parametrize(
    ("csv_path", "rule"),
    [
        ("/etc/passwd", "not absolute"),
        ("../outside.csv", "'..' leaves it"),
        ("a/../../outside.csv", "'..' leaves it"),
        ("bars\x00.csv", "NUL byte"),
    ],
    ids=["absolute", "dot-dot", "nested-dot-dot", "nul"],
)
def test_paths_that_leave_the_directory_are_refused_by_their_text(
    data: DataSettings, csv_path: str, rule: str
) -> None:
    """Absolute, climbing and NUL paths are refused before touching the file system."""
    (Path(data.dir).parent / "outside.csv").write_text(ROWS)
    assert rule in refusal(data, csv_path)


def test_a_symbolic_link_out_is_refused_without_saying_whether_the_target_exists(
    data: DataSettings, tmp_path: Path
) -> None:
    """Links to an existing and to a missing file outside give the same refusal."""
    (tmp_path / "shadow").write_text("SECRET_API_KEY=hunter2\n")
    os.symlink(tmp_path / "shadow", Path(data.dir) / "exists.csv")
    os.symlink(tmp_path / "nothing-here", Path(data.dir) / "missing.csv")
    os.symlink(tmp_path, Path(data.dir) / "up")

    refusals = [refusal(data, name) for name in ("exists.csv", "missing.csv", "up/shadow")]

    assert all("resolves outside KTRDR_DATA_DIR" in r for r in refusals)
    assert refusals[0].replace("exists", "missing") == refusals[1]
    assert all("hunter2" not in r and str(tmp_path / "shadow") not in r for r in refusals)


def test_a_link_to_dev_zero_is_refused(data: DataSettings) -> None:
    """/dev/zero behind a link is outside the directory: refused, never read."""
    os.symlink("/dev/zero", Path(data.dir) / "zero.csv")
    assert "resolves outside KTRDR_DATA_DIR" in refusal(data, "zero.csv")


def test_a_fifo_is_refused_at_once_without_blocking(data: DataSettings) -> None:
    """A FIFO with no writer is not a regular file: refused, and opening never hangs."""
    os.mkfifo(Path(data.dir) / "pipe.csv")
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(refusal(data, "pipe.csv")))
    thread.start()
    thread.join(timeout=10)

    assert not thread.is_alive()
    assert "is not a regular file" in result[0]


def test_a_directory_is_refused(data: DataSettings) -> None:
    """A directory is not a regular file."""
    (Path(data.dir) / "sub.csv").mkdir()
    assert "is not a regular file" in refusal(data, "sub.csv")


def test_an_oversized_sparse_file_is_refused_unread(data: DataSettings) -> None:
    """A 4 GiB sparse file over a 1 MiB limit is refused naming the limit, before reading."""
    with open(Path(data.dir) / "huge.csv", "wb") as handle:
        handle.truncate(4 * 1024**3)

    message = refusal(data, "huge.csv")

    assert message == "csv_path 'huge.csv' is 4G, over KTRDR_DATA_MAX_FILE_SIZE=1M"


def test_a_missing_data_directory_names_the_variable(tmp_path: Path) -> None:
    """KTRDR_DATA_DIR pointing nowhere is refused naming the variable."""
    data = DataSettings(dir=tmp_path / "nowhere")
    assert f"KTRDR_DATA_DIR={tmp_path / 'nowhere'} is not a directory" in refusal(data, "a.csv")


def test_a_missing_file_inside_is_named(data: DataSettings) -> None:
    """Inside the directory, a missing file is said to be missing there."""
    assert refusal(data, "nope.csv") == "csv_path 'nope.csv' does not exist in KTRDR_DATA_DIR"


def test_reading_stops_at_the_limit_and_at_an_endless_line(data: DataSettings) -> None:
    """data_lines stops past max_bytes in all, and past MAX_LINE_BYTES in one line."""
    (Path(data.dir) / "long.csv").write_bytes(b"x" * (MAX_LINE_BYTES + 10))
    roomy = DataSettings(dir=data.dir, max_file_size=ByteSize(10 * MAX_LINE_BYTES))
    with open_data_file(data, "bars.csv") as handle, pytest.raises(DataFileRefused, match="grew"):
        list(data_lines(handle, csv_path="bars.csv", max_bytes=10))
    with open_data_file(roomy, "long.csv") as handle, pytest.raises(BarsError, match="line 1"):
        list(data_lines(handle, csv_path="long.csv", max_bytes=10 * MAX_LINE_BYTES))


@settings(max_examples=200, deadline=None)
@given(csv_path=st.text(min_size=1, max_size=40))
def test_no_path_text_resolves_outside(
    tmp_path_factory: pytest.TempPathFactory, csv_path: str
) -> None:
    """Any text either resolves inside the data directory or is refused."""
    root = tmp_path_factory.mktemp("data").resolve()
    data = DataSettings(dir=root)
    try:
        resolved = resolve_data_path(data, csv_path)
    except DataFileRefused:
        return
    assert resolved.is_relative_to(root)
