"""Data files a job may read: regular files inside ``KTRDR_DATA_DIR``, up to a size.

An operation names its data by a path relative to the workers' data directory
(``csv_path``); anyone who can create an operation chooses it, so the job opens it
through :func:`open_data_file` and nothing else. Refused, with a reason that names the
rule and quotes nothing from the file (:class:`~ktrdr.errors.DataFileRefused`):

- a path that is absolute, contains a NUL byte or climbs out with ``..``;
- a path that resolves, symbolic links included, outside the directory: nothing
  outside is opened, and whether such a path exists is never told;
- anything but a regular file (a directory, a FIFO, a device): the file is opened
  non-blocking and checked on its descriptor, so a FIFO cannot hang the job;
- a file larger than ``KTRDR_DATA_MAX_FILE_SIZE``, checked on the open file before
  reading; :func:`data_lines` also stops at that size (a file that grows meanwhile)
  and at :data:`MAX_LINE_BYTES` per line, so memory stays bounded.

Errors about a file's content give its line and column, never the content.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import attrs

from ktrdr.config import ByteSize, DataSettings, env_name
from ktrdr.errors import BarsError, DataFileRefused
from ktrdr.protocol import data_path_problem

__all__ = ["MAX_LINE_BYTES", "data_lines", "open_data_file", "resolve_data_path"]

_FIELDS = attrs.fields(DataSettings)
DATA_DIR = env_name(_FIELDS.dir)
MAX_FILE_SIZE = env_name(_FIELDS.max_file_size)
#: Longest line a data file may have (a bar is a few dozen bytes).
MAX_LINE_BYTES = 1024 * 1024
_OPEN_FLAGS = (
    os.O_RDONLY
    | os.O_NONBLOCK
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
)


def _size(count: int) -> str:
    """``4G``, or ``1048586 bytes`` when no unit divides it."""
    text = str(ByteSize(count))
    return f"{text} bytes" if text.isdigit() else text


def _refused(csv_path: str, rule: str) -> DataFileRefused:
    return DataFileRefused(f"csv_path {csv_path!r} {rule}")


def _root(data: DataSettings) -> Path:
    root = Path(data.dir)
    try:
        resolved = root.resolve()
        is_dir = resolved.is_dir()
    except (OSError, RuntimeError):
        is_dir = False
    if not is_dir:
        message = f"{DATA_DIR}={data.dir} is not a directory on this worker"
        raise DataFileRefused(message)
    return resolved


def resolve_data_path(data: DataSettings, csv_path: str) -> Path:
    """The real path ``csv_path`` names inside the data directory; raises ``DataFileRefused``."""
    problem = data_path_problem(csv_path)
    if problem is not None:
        raise _refused(csv_path, problem)
    root = _root(data)
    try:
        target = (root / csv_path).resolve()
    except (OSError, RuntimeError):  # a symbolic link loop
        raise _refused(csv_path, "cannot be resolved (a loop of symbolic links)") from None
    if not target.is_relative_to(root):
        rule = f"resolves outside {DATA_DIR} (symbolic links included); data files live in it"
        raise _refused(csv_path, rule)
    return target


def _within(fd: int, root: Path) -> bool:
    """Whether the open file is still inside ``root`` (a directory swapped meanwhile)."""
    link = Path(f"/proc/self/fd/{fd}")
    try:
        return Path(os.readlink(link)).is_relative_to(root)
    except OSError:  # no /proc: the resolved path was checked just before opening
        return True


def open_data_file(data: DataSettings, csv_path: str) -> BinaryIO:
    """Open ``csv_path`` (relative to ``KTRDR_DATA_DIR``) for reading, after every check.

    Raises :class:`~ktrdr.errors.DataFileRefused` naming the rule it breaks.
    """
    target = resolve_data_path(data, csv_path)
    try:
        fd = os.open(target, _OPEN_FLAGS)
    except FileNotFoundError:
        raise _refused(csv_path, f"does not exist in {DATA_DIR}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refused(csv_path, "changed into a symbolic link while being opened") from None
        raise _refused(csv_path, f"cannot be opened ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            rule = "is not a regular file (directories, FIFOs and devices are refused)"
            raise _refused(csv_path, rule)
        if info.st_size > data.max_file_size:
            rule = f"is {_size(info.st_size)}, over {MAX_FILE_SIZE}={data.max_file_size}"
            raise _refused(csv_path, rule)
        if not _within(fd, _root(data)):
            raise _refused(csv_path, f"moved outside {DATA_DIR} while being opened")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def data_lines(handle: BinaryIO, *, csv_path: str, max_bytes: int) -> Iterator[str]:
    """The file's lines as text, decoded one by one; raises ``BarsError``.

    A line that is not UTF-8 is reported by line and byte column; reading stops with
    an error past ``max_bytes`` in all or :data:`MAX_LINE_BYTES` in one line.
    """
    total = 0
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        total += len(raw)
        if total > max_bytes:
            rule = f"grew past {MAX_FILE_SIZE}={ByteSize(max_bytes)} while being read"
            raise _refused(csv_path, rule)
        if len(raw) > MAX_LINE_BYTES:
            message = (
                f"bars file {csv_path}, line {number}: longer than {MAX_LINE_BYTES} bytes; "
                "expected one bar per line"
            )
            raise BarsError(message)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = (
                f"bars file {csv_path}, line {number}, column {exc.start + 1}: "
                "not UTF-8 text; expected a CSV file"
            )
            raise BarsError(message) from None
