"""Upgrade the operations database to the newest schema revision; say where it stands.

The store calls :func:`upgrade_schema` at every backend start and ``ktrdr db`` calls
it and :func:`schema_state` by hand. This module decides what a database is (empty,
made by 0.4.0 before migrations existed, at a known revision, at a revision this
code does not know) and runs Alembic on one connection in one transaction, under a
lock (a PostgreSQL advisory lock, SQLite's ``BEGIN IMMEDIATE``), so two processes
starting at once never both upgrade. It reads no environment and no clock, and never
sees the database password: it is handed an engine.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import attrs
import sqlalchemy as sa
from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from ktrdr.errors import StoreError

__all__ = [
    "BASELINE_REVISION",
    "SchemaState",
    "SchemaUpgrade",
    "head_revision",
    "schema_state",
    "target_schema",
    "upgrade_schema",
]

logger = logging.getLogger(__name__)

#: The directory holding ``env.py`` and ``versions/`` (shipped inside the package).
SCRIPT_LOCATION = Path(__file__).resolve().parent
#: The revision that is the schema ktrdr 0.4.0 created.
BASELINE_REVISION = "0001"
VERSION_TABLE = "alembic_version"
#: What 0.4.0 created; a database holding it without a version table is stamped.
BASELINE_TABLE = "operations"
BASELINE_COLUMNS = frozenset(
    {
        "id",
        "type",
        "status",
        "parameters",
        "progress",
        "result",
        "error",
        "worker_id",
        "resume",
        "created_at",
        "started_at",
        "finished_at",
        "last_reported_at",
    }
)
#: Key of the PostgreSQL advisory lock that serialises upgrades ("ktrdr" + 1).
_UPGRADE_LOCK_KEY = 0x6B74_7264_7201


@attrs.frozen(kw_only=True)
class SchemaState:
    """Where a database's schema stands."""

    #: The stored revision; None when the database has no version yet.
    revision: str | None
    #: The newest revision this code knows.
    head: str
    #: True for a database made by ktrdr 0.4.0: its tables, no version.
    unversioned: bool

    @property
    def current(self) -> bool:
        """True when nothing is left to upgrade."""
        return self.revision == self.head

    def describe(self) -> str:
        """One line for people: the revision and what an upgrade would do."""
        if self.unversioned:
            return (
                f"none (made by ktrdr 0.4.0; an upgrade stamps it {BASELINE_REVISION} "
                f"and upgrades it to {self.head})"
            )
        if self.revision is None:
            return f"none (empty; an upgrade creates the schema at {self.head})"
        if self.current:
            return f"{self.revision} (head)"
        return f"{self.revision} (head is {self.head}; an upgrade brings it there)"


@attrs.frozen(kw_only=True)
class SchemaUpgrade:
    """What :func:`upgrade_schema` did."""

    before: str | None
    after: str
    #: True when a 0.4.0 database was recognised and stamped as the baseline first.
    stamped: bool

    def describe(self) -> str:
        """One line for people."""
        if self.stamped:
            return (
                f"recognised a ktrdr 0.4.0 database, stamped it {BASELINE_REVISION} "
                f"and upgraded it to {self.after}; its operations are kept"
            )
        if self.before is None:
            return f"created the schema at revision {self.after}"
        if self.before == self.after:
            return f"schema is current at revision {self.after}"
        return f"upgraded the schema from revision {self.before} to {self.after}"


def target_schema() -> str | None:
    """The schema a revision's tables go in (None: the default); for ``versions/``.

    The version table lives in the same schema, so the runner passes it as Alembic's
    ``version_table_schema``.
    """
    schema: str | None = op.get_context().version_table_schema
    return schema


def head_revision() -> str:
    """The newest revision this code knows."""
    head = _script().get_current_head()
    assert head is not None  # versions/ holds at least the baseline
    return head


def schema_state(engine: Engine, *, schema: str | None = None) -> SchemaState:
    """Where the database behind ``engine`` stands (reads only).

    Raises :class:`StoreError` for a revision this code does not know (the database
    was upgraded by a newer ktrdr) or a table that 0.4.0 did not create.
    """
    script = _script()
    with engine.connect() as conn:
        return _read_state(conn, schema=schema, script=script)


def upgrade_schema(engine: Engine, *, schema: str | None = None) -> SchemaUpgrade:
    """Bring the database to the newest revision; a 0.4.0 database is stamped first.

    Idempotent; the data stays. ``schema`` names a PostgreSQL schema that must exist
    (the tests use one per test). Connection failures propagate as SQLAlchemy's
    ``OperationalError`` (the store names the variables to check); a revision that
    cannot be applied or a database this code cannot read is a :class:`StoreError`.
    """
    script = _script()
    with _locked_transaction(engine) as conn:
        state = _read_state(conn, schema=schema, script=script)
        if state.current:
            return SchemaUpgrade(before=state.revision, after=state.head, stamped=False)
        config = _config(conn, schema=schema)
        try:
            if state.unversioned:
                command.stamp(config, BASELINE_REVISION)
            command.upgrade(config, "head")
        except sa.exc.OperationalError:
            raise
        except sa.exc.DBAPIError as exc:
            reason = " ".join(str(exc.orig).split())
            message = (
                f"cannot upgrade the operations database from revision "
                f"{state.revision or 'none'} to {state.head}: {reason}"
            )
            raise StoreError(message) from None
        after = _stored_revision(conn, schema=schema)
    assert after is not None
    done = SchemaUpgrade(before=state.revision, after=after, stamped=state.unversioned)
    logger.info("operations database: %s", done.describe())
    return done


def _script() -> ScriptDirectory:
    return ScriptDirectory(str(SCRIPT_LOCATION))


def _config(connection: Connection, *, schema: str | None) -> Config:
    """Alembic's configuration, in code: where the scripts are and the connection."""
    config = Config()
    # Config values go through configparser interpolation: a literal % is doubled.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def _stored_revision(conn: Connection, *, schema: str | None) -> str | None:
    context = MigrationContext.configure(conn, opts={"version_table_schema": schema})
    heads = context.get_current_heads()
    if len(heads) > 1:
        message = f"the operations database has several schema revisions: {', '.join(heads)}"
        raise StoreError(message)
    return heads[0] if heads else None


def _read_state(conn: Connection, *, schema: str | None, script: ScriptDirectory) -> SchemaState:
    head = script.get_current_head()
    assert head is not None
    tables = set(sa.inspect(conn).get_table_names(schema=schema))
    revision = _stored_revision(conn, schema=schema) if VERSION_TABLE in tables else None
    if revision is not None:
        known = {r.revision for r in script.walk_revisions()}
        if revision not in known:
            message = (
                f"the operations database is at schema revision {revision!r}, which this "
                f"ktrdr does not know (newest: {head}): a newer ktrdr upgraded it; run that "
                f"version or restore a backup taken before the upgrade"
            )
            raise StoreError(message)
    unversioned = revision is None and BASELINE_TABLE in tables
    if unversioned:
        columns = {c["name"] for c in sa.inspect(conn).get_columns(BASELINE_TABLE, schema=schema)}
        missing = sorted(BASELINE_COLUMNS - columns)
        if missing:
            message = (
                f"the database has an {BASELINE_TABLE!r} table that ktrdr did not create "
                f"(no {VERSION_TABLE}, missing columns: {', '.join(missing)}); "
                f"point the backend at another database"
            )
            raise StoreError(message)
    return SchemaState(revision=revision, head=head, unversioned=unversioned)


@contextlib.contextmanager
def _locked_transaction(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction that no other upgrade can enter at once.

    SQLite: ``BEGIN IMMEDIATE`` takes the write lock before the state is read, so a
    second process waits (the busy timeout) and then finds the work done. PostgreSQL:
    a transaction-scoped advisory lock does the same.
    """
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")  # we issue BEGIN ourselves
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
        yield conn
