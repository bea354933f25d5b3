"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

The PostgreSQL variant runs when KTRDR_TEST_POSTGRES_URL is set (CI sets it) and is
skipped otherwise; CI fails on any skipped test whose id contains "postgres". Each
PostgreSQL test gets its own schema, dropped afterwards, so concurrent runs never share
a table.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ktrdr.api.store import OperationStore

POSTGRES_URL_VARIABLE = "KTRDR_TEST_POSTGRES_URL"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


class StoreFactory:
    """Opens stores on one test database (a SQLite file or a PostgreSQL schema)."""

    def __init__(self, backend: str, url: sa.URL, schema: str | None) -> None:
        self.backend = backend
        self.url = url
        self.schema = schema
        self._opened: list[OperationStore] = []

    def open(self, url: sa.URL | None = None) -> OperationStore:
        """A new store (new engine, new connections) on the same data."""
        store = OperationStore.open_url(url or self.url, schema=self.schema)
        self._opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


def postgres_url() -> sa.URL:
    """The test server's URL, or skip when the variable is not set."""
    raw = os.environ.get(POSTGRES_URL_VARIABLE)
    if not raw:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set")
    return sa.make_url(raw)


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of stores on a fresh, private database for this test."""
    if request.param == "sqlite":
        url = sa.URL.create("sqlite+pysqlite", database=str(tmp_path / "db" / "ktrdr.db"))
        factory = StoreFactory("sqlite", url, None)
        yield factory
        factory.close_all()
        return
    url = postgres_url()
    schema = f"ktrdr_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    factory = StoreFactory("postgres", url, schema)
    try:
        yield factory
    finally:
        factory.close_all()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(store_factory: StoreFactory) -> OperationStore:
    """A store on a fresh database (SQLite file or PostgreSQL schema)."""
    return store_factory.open()
