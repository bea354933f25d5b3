"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tmpfs import small_tmpfs


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that really fills up (CI runs the suite as root)."""
    with small_tmpfs(tmp_path / "small", "64k") as mount:
        yield mount


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, what ktrdr runs on, even where trio is installed.

    anyio's plugin otherwise runs each async test once per installed backend, and
    selenium (the browser tests' driver) brings trio along.
    """
    return "asyncio"
