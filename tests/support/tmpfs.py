"""A small tmpfs mounted for one test: a disk that really fills up.

Mounting needs root (CI runs the suite as root); elsewhere the test is skipped with
the reason. The mount is detached lazily at the end, so a process that still holds a
file there (a backend being stopped) cannot make the unmount fail.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (mount's syntax: ``64k``, ``2m``) at ``mount``."""
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory: Path, name: str = "ballast") -> Path:
    """Write a ballast file in ``directory`` until its file system is full (the last
    write failed with ENOSPC); the ballast's path (delete it to free the space).
    """
    ballast = directory / name
    with ballast.open("wb", buffering=0) as handle:
        while True:
            try:
                handle.write(b"\0" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return ballast


__all__ = ["fill", "small_tmpfs"]
