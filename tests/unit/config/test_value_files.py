"""read_value_file: a <NAME>_FILE variable's file, bounded and never echoed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ktrdr.config.results import Problem
from ktrdr.config.value_files import MAX_VALUE_FILE_BYTES, read_value_file

VAR = "KTRDR_DB_PASSWORD_FILE"
WANTED = "expected the path of a readable file holding the value"


def test_the_content_of_a_regular_file_is_returned(tmp_path: Path) -> None:
    """A UTF-8 file's content comes back as is (the loader strips it later)."""
    secret = tmp_path / "password"
    secret.write_text("s3cr\u00e9t\n", encoding="utf-8")

    assert read_value_file(VAR, str(secret)) == "s3cr\u00e9t\n"


def test_a_file_at_the_limit_is_read_and_one_byte_more_is_refused(tmp_path: Path) -> None:
    """MAX_VALUE_FILE_BYTES is accepted; one byte over is a problem naming the limit."""
    at_limit, over = tmp_path / "at", tmp_path / "over"
    at_limit.write_bytes(b"x" * MAX_VALUE_FILE_BYTES)
    over.write_bytes(b"x" * (MAX_VALUE_FILE_BYTES + 1))

    assert read_value_file(VAR, str(at_limit)) == "x" * MAX_VALUE_FILE_BYTES
    assert read_value_file(VAR, str(over)) == Problem(
        VAR, str(over), f"expected a file of at most {MAX_VALUE_FILE_BYTES} bytes"
    )


def test_unusable_paths_are_problems_naming_the_variable_and_path(tmp_path: Path) -> None:
    """Empty, missing, directory, FIFO and binary: each a problem, none shows content."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe secret")
    cases = {
        " ": WANTED,
        str(tmp_path / "missing"): f"file not found; {WANTED}",
        str(tmp_path): f"is a directory; {WANTED}",
        str(fifo): f"is not a regular file; {WANTED}",
        str(binary): "expected a UTF-8 text file",
    }

    for path, expected in cases.items():
        assert read_value_file(VAR, path) == Problem(VAR, path, expected)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_permission_denied(tmp_path: Path) -> None:
    """A file without read permission is a problem saying so."""
    locked = tmp_path / "locked"
    locked.write_text("x")
    locked.chmod(0)

    assert read_value_file(VAR, str(locked)) == Problem(
        VAR, str(locked), f"permission denied; {WANTED}"
    )
