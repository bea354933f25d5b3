"""Test databases for the operations store: a SQLite file or a private PostgreSQL schema.

The PostgreSQL variant runs when KTRDR_TEST_POSTGRES_URL is set (CI sets it) and is
skipped otherwise. Each database is private to its test (or module), and a
PostgreSQL schema is dropped by :meth:`StoreFactory.finish`, so concurrent runs never
share a table. ``tests/unit/api/conftest.py`` builds its fixtures from this.
"""

from __future__ import annotations

import os
import uuid
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

    def finish(self) -> None:
        """Close every store, then drop the PostgreSQL schema (a SQLite file stays in tmp)."""
        self.close_all()
        if self.schema is None:
            return
        admin = sa.create_engine(self.url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        admin.dispose()


def postgres_url() -> sa.URL:
    """The test server's URL, or skip when the variable is not set."""
    raw = os.environ.get(POSTGRES_URL_VARIABLE)
    if not raw:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set")
    return sa.make_url(raw)


def open_factory(backend: str, directory: Path) -> StoreFactory:
    """A factory on a fresh database: a SQLite file under ``directory``, or a new
    PostgreSQL schema (the test is skipped when none is configured).
    """
    if backend == "sqlite":
        url = sa.URL.create("sqlite+pysqlite", database=str(directory / "db" / "ktrdr.db"))
        return StoreFactory("sqlite", url, None)
    url = postgres_url()
    schema = f"ktrdr_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return StoreFactory("postgres", url, schema)


__all__ = ["BACKENDS", "POSTGRES_URL_VARIABLE", "StoreFactory", "open_factory", "postgres_url"]
