"""Print the PostgreSQL URL the test suite should use, or nothing when there is none.

`make test` runs the PostgreSQL variants of the store tests whenever a server answers:
``KTRDR_TEST_POSTGRES_URL`` when it is set (set it empty to skip them), otherwise the
local default (127.0.0.1:5432, database ``test``) if a connection succeeds within two
seconds. Why a script: the Makefile has no portable way to try a connection, and the
probe must use the driver the tests use (psycopg), not a client binary that may be
missing.
"""

from __future__ import annotations

import sys

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def reachable(url: str) -> bool:
    """Whether a connection to ``url`` (a SQLAlchemy URL) succeeds quickly."""
    import psycopg
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    try:
        with psycopg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.database,
            connect_timeout=2,
        ):
            return True
    except psycopg.Error:
        return False


def main() -> int:
    if reachable(DEFAULT_URL):
        print(DEFAULT_URL)
    else:
        print(
            "make test: no PostgreSQL at 127.0.0.1:5432 (database test); its store tests "
            "are skipped (set KTRDR_TEST_POSTGRES_URL to run them elsewhere)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
