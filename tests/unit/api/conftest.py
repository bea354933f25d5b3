"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

The PostgreSQL variant runs when KTRDR_TEST_POSTGRES_URL is set (CI sets it) and is
skipped otherwise; CI fails on any skipped test whose id contains "postgres". Each
PostgreSQL test gets its own schema, dropped afterwards, so concurrent runs never share
a table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.store_factory import (
    BACKENDS,
    POSTGRES_URL_VARIABLE,
    StoreFactory,
    open_factory,
    postgres_url,
)

from ktrdr.api.store import OperationStore

__all__ = ["BACKENDS", "POSTGRES_URL_VARIABLE", "StoreFactory", "postgres_url"]


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of stores on a fresh, private database for this test."""
    factory = open_factory(request.param, tmp_path)
    try:
        yield factory
    finally:
        factory.finish()


@pytest.fixture
def store(store_factory: StoreFactory) -> OperationStore:
    """A store on a fresh database (SQLite file or PostgreSQL schema)."""
    return store_factory.open()
