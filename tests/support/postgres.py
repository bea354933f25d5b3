"""A fresh PostgreSQL database per test, and the backend variables that name it.

Tests that use it must have "postgres" in their name (CI checks that none of them was
skipped); without ``KTRDR_TEST_POSTGRES_URL`` they are skipped.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa


@contextlib.contextmanager
def fresh_database(prefix: str = "ktrdr_test") -> Iterator[sa.URL]:
    """Create an empty database on ``KTRDR_TEST_POSTGRES_URL``'s server; drop it after."""
    raw = os.environ.get("KTRDR_TEST_POSTGRES_URL")
    if not raw:
        pytest.skip("KTRDR_TEST_POSTGRES_URL is not set")
    server = sa.make_url(raw)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def backend_database_env(url: sa.URL) -> dict[str, str]:
    """The ``KTRDR_DB_*`` variables of a backend storing its operations at ``url``."""
    return {
        "KTRDR_DB_ENGINE": "postgresql",
        "KTRDR_DB_HOST": url.host or "127.0.0.1",
        "KTRDR_DB_PORT": str(url.port or 5432),
        "KTRDR_DB_NAME": url.database or "",
        "KTRDR_DB_USER": url.username or "postgres",
        "KTRDR_DB_PASSWORD": url.password or "unused-with-trust-auth",
    }


__all__ = ["backend_database_env", "fresh_database"]
