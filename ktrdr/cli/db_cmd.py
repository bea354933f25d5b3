"""``ktrdr db``: show or upgrade the schema of the backend's operations database.

The backend upgrades its database at every start; these commands do it by hand
(before starting a new version, or to see where a database stands) with exactly the
backend's settings: the ``KTRDR_DB_*`` variables, validated as the backend validates
them. Errors are one line on stderr naming the variable to check and exit code 1,
never a traceback; the password is never printed. The environment read is
``os.environ`` (this is an entrypoint), or the mapping a test passes as the click
context ``obj``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ktrdr.api.migrations import schema_state, upgrade_schema
from ktrdr.api.store import database_url, make_engine, unreachable_error
from ktrdr.config import DEFAULT_ENV_FILE, ConfigurationError, DatabaseSettings, DbEngine
from ktrdr.errors import StoreError
from ktrdr.startup import EXIT_CONFIG_ERROR, load_or_exit

#: How long a PostgreSQL server may take to accept the connection (a firewalled host
#: would otherwise hang the command for minutes).
CONNECT_TIMEOUT_S = 10

_env_file_option = click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_ENV_FILE,
    show_default=True,
    help="dotenv file read after the environment (ignored when missing), as the backend",
)


def register(group: click.Group) -> None:
    """Add the ``db`` command group to ``group``."""
    group.add_command(db)


@click.group("db")
def db() -> None:
    """Show or upgrade the operations database's schema (the backend's KTRDR_DB_*)."""


@db.command("current")
@_env_file_option
def current(env_file: Path) -> None:
    """Print the database and its schema revision; change nothing."""
    settings = _settings(env_file)
    click.echo(f"database  {_shown(settings)}")
    if settings.engine is DbEngine.SQLITE and not settings.path.exists():
        click.echo("revision  none (no database file yet; an upgrade creates it)")
        return
    with _engine(settings) as engine:
        state = schema_state(engine)
    click.echo(f"revision  {state.describe()}")


@db.command("upgrade")
@_env_file_option
def upgrade(env_file: Path) -> None:
    """Upgrade the schema to the newest revision (a 0.4.0 database is stamped first)."""
    settings = _settings(env_file)
    click.echo(f"database  {_shown(settings)}")
    with _engine(settings) as engine:
        done = upgrade_schema(engine)
    click.echo(done.describe())


def _settings(env_file: Path) -> DatabaseSettings:
    """The backend's validated database settings; on a bad configuration, exit 1."""
    obj = click.get_current_context().obj
    environ = obj if isinstance(obj, Mapping) else os.environ
    # click.testing swaps sys.stderr; get_text_stream is deprecated.
    return load_or_exit("backend", environ, env_file=env_file, stderr=sys.stderr).database


def _shown(settings: DatabaseSettings) -> str:
    return database_url(settings).render_as_string(hide_password=True)


@contextmanager
def _engine(settings: DatabaseSettings) -> Iterator[Engine]:
    """An engine on the settings' database; every failure becomes one line and exit 1."""
    url = database_url(settings)
    if settings.engine is DbEngine.POSTGRESQL:
        url = url.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
    try:
        engine = make_engine(url)
    except ConfigurationError as exc:
        _fail(str(exc))
    try:
        yield engine
    except sa.exc.OperationalError as exc:
        _fail(str(unreachable_error(settings, exc)))
    except StoreError as exc:
        _fail(str(exc))
    finally:
        engine.dispose()


def _fail(message: str) -> NoReturn:
    """Print ``message`` to stderr and exit 1 (no traceback)."""
    click.echo(f"ktrdr db: {message}", err=True)
    raise SystemExit(EXIT_CONFIG_ERROR)
